"""Money keeps every digit through every door: REST JSON (numbers, or strings with `?decimals=string`), CSV, Arrow,
semantic SQL and GraphQL (the `Decimal` scalar), checked against hand-written SQL.

A ledger whose `big` book sums to 1234567890123456.78 — 18 significant digits, which a double cannot hold
(it reads back as 1234567890123456.75) — and the demo shop's revenue against `sum(total)` over its raw orders.
"""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal

import httpx
import pyarrow as pa
import pytest

from server.app import create_app
from tests.server.conftest import LiveServer

BIG = Decimal("1234567890123456.78")
LEDGER = """
views:
  - name: entries
    sql: >-
      select * from (values
        (1, 'big', 1234567890123456.00::decimal(38,2), date '2024-01-05'),
        (2, 'big', 0.78::decimal(38,2), date '2024-01-06'),
        (3, 'small', -0.10::decimal(38,2), date '2024-02-01'),
        (4, 'small', 0.00::decimal(38,2), date '2024-02-02')) t(entry_id, book, amount, booked_on)
    primary_key: entry_id
    time: booked_on
    dimensions: [book, {name: booked_on, type: time}]
    measures: [{name: amount, agg: sum}, {name: entries, agg: count}]
  - name: postings  # more rows than one answer body is made at once: large answers are streamed
    sql: "select i as posting_id, (i * 100000000000000 + 0.01)::decimal(38,2) as amount from range(70000) t(i)"
    primary_key: posting_id
    dimensions: [posting_id]
    measures: [{name: amount, agg: sum}]
metrics:
  - {name: balance, measure: entries.amount, format: currency}
  - {name: entries, measure: entries.entries}
  - {name: posted, measure: postings.amount, format: currency}
"""
BY_BOOK = {"metrics": ["balance", "entries"], "dimensions": ["book"], "order_by": ["book"]}
SQL_BY_BOOK = {"sql": "SELECT book, MEASURE(balance) AS balance, MEASURE(entries) AS entries FROM metrics "
                      "GROUP BY 1 ORDER BY 1"}
WANT = [["big", BIG, 2], ["small", Decimal("-0.10"), 2]]


@pytest.fixture(scope="module")
def ledger(tmp_path_factory):
    root = tmp_path_factory.mktemp("ledger")
    (root / "phloem.yml").write_text("name: ledger\nwarehouse: {engine: duckdb, database: data/ledger.duckdb}\n")
    (root / "models").mkdir()
    (root / "models" / "ledger.yml").write_text(LEDGER)
    app = create_app(root)
    app.state.runtime.project.build()
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def exact_json(response: httpx.Response):
    """The body as an exact reader sees it: every JSON number with a fraction is a Decimal."""
    assert response.status_code == 200, response.text
    return json.loads(response.content, parse_float=Decimal)


def test_the_ledger_is_beyond_a_double():
    assert Decimal(float(BIG)) != BIG  # so every check below would fail if a float were in the way


@pytest.mark.parametrize(("path", "body"), [("/api/v1/query", BY_BOOK), ("/api/v1/sql", SQL_BY_BOOK)])
def test_rest_json_writes_decimals_as_exact_numbers(ledger, path, body):
    r = ledger.post(path, json=body)
    assert b'["big",1234567890123456.78,2]' in r.content and b'["small",-0.10,2]' in r.content
    out = exact_json(r)
    assert out["rows"] == WANT
    assert [c["type"] for c in out["columns"]] == ["string", "decimal(38,2)", "integer"]


@pytest.mark.parametrize(("path", "body"), [("/api/v1/query", BY_BOOK), ("/api/v1/sql", SQL_BY_BOOK)])
def test_rest_json_writes_decimals_as_strings_when_asked(ledger, path, body):
    out = exact_json(ledger.post(path, params={"decimals": "string"}, json=body))
    assert out["rows"] == [["big", "1234567890123456.78", 2], ["small", "-0.10", 2]]  # the scale's zeros kept
    assert out["columns"][1]["type"] == "decimal(38,2)"
    again = exact_json(ledger.post(path, json=body))  # the same cached answer, encoded per option
    assert again["rows"] == WANT


def test_an_unknown_decimals_option_is_a_422(ledger):
    r = ledger.post("/api/v1/query", params={"decimals": "float"}, json=BY_BOOK)
    message = r.json()["error"]["message"]
    assert r.status_code == 422 and "`query.decimals`: Input should be 'number' or 'string'" in message, r.text


@pytest.mark.parametrize("decimals", ["number", "string"])
def test_a_large_answer_keeps_the_digits_too(ledger, decimals):
    big = {"metrics": ["posted"], "dimensions": ["posting_id"], "order_by": ["posting_id"]}
    rows = exact_json(ledger.post("/api/v1/query", params={"decimals": decimals}, json=big))["rows"]
    assert len(rows) == 70000
    digits = [f"{i * 10**14}.01" for i in range(70000)]  # up to 6999900000000000000.01: 21 digits
    assert rows == [[i, Decimal(d) if decimals == "number" else d] for i, d in enumerate(digits)]


def test_csv_and_arrow_keep_the_digits(ledger):
    text = ledger.post("/api/v1/query", json=BY_BOOK, headers={"accept": "text/csv"}).text
    rows = list(csv.reader(io.StringIO(text)))
    assert rows == [["book", "balance", "entries"], ["big", "1234567890123456.78", "2"], ["small", "-0.10", "2"]]
    body = ledger.post("/api/v1/query", json=BY_BOOK, headers={"accept": "application/vnd.apache.arrow.stream"})
    table = pa.ipc.open_stream(body.content).read_all()
    assert table.schema.field("balance").type == pa.decimal128(38, 2)
    assert table.column("balance").to_pylist() == [BIG, Decimal("-0.10")]


def test_graphql_money_is_a_decimal_string(ledger):
    out = exact_json(ledger.post("/graphql", json={"query": "{ query(orderBy: [{field: book}]) { book balance entries } "
                                                            "meta { fields { field type } } }"}))
    assert "errors" not in out, out
    assert out["data"]["query"] == [{"book": "big", "balance": "1234567890123456.78", "entries": 2},
                                    {"book": "small", "balance": "-0.10", "entries": 2}]
    types = {f["field"]: f["type"] for f in out["data"]["meta"]["fields"]}
    assert (types["balance"], types["entries"]) == ("Decimal", "Int")
    field = exact_json(ledger.post("/graphql", json={"query": '{ __type(name: "Row") { fields { name type { name } } } }'}))
    assert {f["name"]: f["type"]["name"] for f in field["data"]["__type"]["fields"]}["balance"] == "Decimal"


def test_every_door_gives_the_demo_revenue_of_hand_written_sql(live):
    """Revenue and discounts by channel on the demo, digit for digit, against sums over the raw orders."""
    project = live.app.state.runtime.project
    hand = [[c, Decimal(r), Decimal(d)] for c, r, d in project.engine.rows(
        "SELECT channel, sum(total), sum(discount) FROM raw.orders GROUP BY 1 ORDER BY 1")]
    assert len(hand) >= 2 and all(r.as_tuple().exponent == -2 for _, r, _ in hand)
    query = {"metrics": ["revenue", "discounts"], "dimensions": ["channel"], "order_by": ["channel"]}
    sql = {"sql": "SELECT channel, MEASURE(revenue), MEASURE(discounts) FROM metrics GROUP BY 1 ORDER BY 1"}
    with httpx.Client(base_url=live.url, timeout=30) as client:
        assert exact_json(client.post("/api/v1/query", json=query))["rows"] == hand
        assert exact_json(client.post("/api/v1/sql", json=sql))["rows"] == hand
        strings = exact_json(client.post("/api/v1/query", params={"decimals": "string"}, json=query))["rows"]
        assert strings == [[c, str(r), str(d)] for c, r, d in hand]
        text = client.post("/api/v1/query", json=query, headers={"accept": "text/csv"}).text
        assert [[c, Decimal(r), Decimal(d)] for c, r, d in list(csv.reader(io.StringIO(text)))[1:]] == hand
        graphql = exact_json(client.post("/graphql", json={
            "query": "{ query(orderBy: [{field: channel}]) { channel revenue discounts } }"}))["data"]["query"]
        assert [[g["channel"], g["revenue"], g["discounts"]] for g in graphql] == \
            [[c, str(r), str(d)] for c, r, d in hand]


def test_a_datasets_rows_keep_their_money_exact(live):
    with httpx.Client(base_url=live.url, timeout=30) as client:
        numbers = exact_json(client.get("/api/v1/datasets/orders", params={"limit": 50}))
        strings = exact_json(client.get("/api/v1/datasets/orders", params={"limit": 50, "decimals": "string"}))
    money = [i for i, c in enumerate(numbers["columns"]) if c["type"].startswith("decimal(")]
    assert money and numbers["columns"] == strings["columns"] and len(numbers["rows"]) == 50
    for n, s in zip(numbers["rows"], strings["rows"], strict=True):
        assert all(s[i] == (None if n[i] is None else str(n[i])) for i in money)  # the same digits, quoted
        assert [v for i, v in enumerate(n) if i not in money] == [v for i, v in enumerate(s) if i not in money]
