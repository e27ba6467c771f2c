"""The inputs issue 11 names, at every door that takes them: each is a 400 (or 422) with a message and a
suggestion, and nothing internal in the text; GraphQL shows generated SQL only under `@explain`."""

from __future__ import annotations

import logging

import duckdb
import pytest
from hostile import leaks

DEEP = "(" * 5000 + "channel = 'web'" + ")" * 5000  # past the length limit
NESTED = "(" * 3000 + "channel = 'web'" + ")" * 3000  # within it, past the nesting limit
# filter text -> words the message must contain
FILTERS = {
    "'": "quote",
    DEEP: "the limit is 10,000",
    NESTED: "nests too deeply",
    "1=1; drop table x": "not several statements",
    "nosuch_fn(channel) = 1": "nosuch_fn",
    "total > 'abc'": "total` is a number dimension",
    "ordered_at > 5": "ordered_at` is a time dimension",
    "is_first_order = 'maybe'": "`is_first_order` is a boolean dimension",
}
TREE = {"root": "order_value", "start": "2024-01-01", "end": "2024-01-31"}


def refused(response, words: str, sent: str) -> None:
    assert response.status_code in (400, 422), (response.status_code, response.text[:300])
    error = response.json()["error"]
    assert words in error["message"], error
    assert error["suggestion"], error
    assert not leaks(response.text, sent), leaks(response.text, sent)


@pytest.mark.parametrize("text", FILTERS, ids=lambda t: t[:20])
def test_rest_query_and_explain_filters(client, text):
    for path in ("/api/v1/query", "/api/v1/explain"):
        refused(client.post(path, json={"metrics": ["order_value"], "filters": [text]}), FILTERS[text], text)


@pytest.mark.parametrize("text", FILTERS, ids=lambda t: t[:20])
def test_explorer_where(client, text):
    refused(client.post("/api/v1/whatif", json={**TREE, "where": [text], "changes": {"order_value": 5}}),
            FILTERS[text], text)
    if len(text) < 2000:  # 10,000 parentheses do not fit a URL; the body doors above take them
        refused(client.get("/api/v1/tree", params={**TREE, "where": text}), FILTERS[text], text)
        refused(client.get("/api/v1/drill", params={"metric": "order_value", "start": "2024-01-01",
                                                    "end": "2024-01-31", "where": text}), FILTERS[text], text)
        refused(client.get("/api/v1/tree/series", params={"root": "order_value", "where": text}), FILTERS[text],
                text)


SQL = {
    "select measure(order_value) from order_totals where '": "quote",
    "select " + "(" * 5000 + "1" + ")" * 5000: "nested too deeply",
    "select 1=1; drop table x": "2 statements",
    "select measure(order_value) from order_totals where nosuch_fn(channel) = 1": "nosuch_fn",
    "select measure(order_value) from order_totals where total > 'abc'": "total` is a number dimension",
    "select measure(order_value) from order_totals where ordered_at > 5": "ordered_at` is a time dimension",
}


@pytest.mark.parametrize("sql", SQL, ids=lambda t: t[:30])
def test_semantic_sql(client, sql):
    refused(client.post("/api/v1/sql", json={"sql": sql}), SQL[sql], sql)


WHERE = {
    '{total: {gt: "abc"}}': "Float",
    '{orderedAt: {day: {gt: 5}}}': "Date",
    '{isFirstOrder: {equals: "maybe"}}': "Boolean",
    "{not: " * 3000 + '{channel: {equals: "web"}}' + "}" * 3000: "",
    '{channel: {nosuch: "x"}}': "nosuch",
}


@pytest.mark.parametrize("where", WHERE, ids=lambda t: t[:20])
def test_graphql_where(client, where):
    out = client.post("/graphql", json={"query": f"{{ query(where: {where}) {{ orderValue }} }}"})
    assert out.status_code in (200, 400)
    (error, *_) = out.json()["errors"]
    assert error["extensions"]["code"] in ("GRAPHQL_PARSE_FAILED", "GRAPHQL_VALIDATION_FAILED", "BAD_QUERY"), error
    assert WHERE[where] in error["message"] and not leaks(error["message"], where), error


def test_graphql_quote_is_a_value_not_syntax(client):
    """GraphQL values are always literals: a quote or `; drop` matches nothing, it is not a refusal."""
    out = client.post("/graphql", json={"query": '{ query(where: {channel: {in: ["\'", "1=1; drop table x"]}}) '
                                                 '{ orderValue } }'}).json()
    assert out["data"]["query"] == [{"orderValue": None}]


def test_graphql_sql_only_under_explain(client, app):
    plain = client.post("/graphql", json={"query": "{ query { orderValue channel } }"}).json()
    assert plain["extensions"]["phloem"] == {"cached": plain["extensions"]["phloem"]["cached"]}
    asked = client.post("/graphql", json={"query": "query @explain { query { orderValue channel } }"}).json()
    compiled = app.state.runtime.project.compile(metrics=["order_value"], dimensions=["channel"])
    assert asked["data"] == plain["data"] and asked["extensions"]["phloem"]["sql"] == [compiled.sql]
    assert asked["extensions"]["phloem"]["tables"] == [compiled.plan.tables()]
    misplaced = client.post("/graphql", json={"query": "{ query @explain { orderValue } }"}).json()
    assert misplaced["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"


def test_warehouse_failure_is_a_503_with_an_id_the_log_has(client, app, caplog):
    engine = app.state.runtime.project.engine
    gone = duckdb.connect()
    gone.close()
    con, engine.con = engine.con, gone  # the warehouse connection is gone: the driver raises on use
    try:
        with caplog.at_level(logging.ERROR, "phloem.server"):
            r = client.post("/api/v1/query", json={"metrics": ["order_value"], "dimensions": ["channel"],
                                                   "filters": ["channel = 'gone'"]})
    finally:
        engine.con = con
    assert r.status_code == 503, r.text
    error = r.json()["error"]
    assert error["id"] in error["message"] and not leaks(r.text)
    assert any(error["id"] in m for m in caplog.messages)


def test_pg_door_errors_say_what_without_the_warehouse_text(caplog):
    from semantic.errors import WarehouseError
    from server.pgwire.server import error_of

    secret = 'connection to server at "10.0.0.5" failed: FATAL: password authentication failed for "phloem_reader"'
    with caplog.at_level(logging.ERROR):
        failed = error_of(WarehouseError(secret), canceled=False)
    assert failed.sqlstate == "58000" and "10.0.0.5" not in failed.message and "error id" in failed.message
    assert any(secret in m for m in caplog.messages)  # the detail is in the server log, under the id
    con = duckdb.connect()
    con.execute("create table t (ts timestamp)")
    with pytest.raises(duckdb.BinderException) as refused_by_duckdb:
        con.execute('select * from "t" where ts > 5')
    refused = error_of(refused_by_duckdb.value, canceled=False)
    assert refused.message == "the warehouse rejected the query: cannot compare timestamp values with integer values"
    assert refused.sqlstate == "42804" and not leaks(refused.message)


@pytest.mark.parametrize("accept", ["application/json", "text/csv", "application/vnd.apache.arrow.stream"])
def test_unusual_column_types_are_answered_in_every_format(client, accept):
    """Types the fuzzer found a 500 in: INTERVAL (JSON and CSV), BLOB (JSON), a literal past 128 bits."""
    for sql in ("select interval '1 month 2 days 3.5 seconds' as i from metrics",
                "select 'ab'::bytea as b from metrics", "select -170141183460469231731687303715884105729 from metrics"):
        r = client.post("/api/v1/sql", json={"sql": sql}, headers={"accept": accept})
        assert r.status_code == 200, (sql, r.text[:300])
    if accept == "application/json":
        r = client.post("/api/v1/sql", json={"sql": "select interval '1 month 2 days 3.5 seconds' as i from metrics"})
        assert r.json()["rows"] == [["P1M2DT3.5S"]]
