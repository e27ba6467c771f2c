"""One question, one answer: profit (and cogs, one node of its tree) of the demo's last full month against the
month before, asked through every door — the explorer page in headless Chromium, REST /api/v1/tree, GraphQL
metricTree, semantic SQL over HTTP, the PostgreSQL wire (psycopg) — and answered by hand-written SQL over the demo's raw tables.

The periods are worked out here by hand from the raw data's last day, not with semantic.metrics.periods: the
page and the doors must agree with each other and with the calendar.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
from decimal import Decimal
from pathlib import Path

import httpx
import psycopg
import pytest
from selenium.webdriver.common.by import By

from server.pgwire import PgConfig, PgServer, ServerThread

_spec = importlib.util.spec_from_file_location(
    "phloem_tests_explorer_conftest", Path(__file__).resolve().parents[1] / "explorer" / "conftest.py")
_explorer = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_explorer)
browser = _explorer.browser  # re-exported fixture: one headless Chromium
Page = _explorer.Page

CENT = Decimal("0.01")

# MODEL.md's profit restated over raw.* (as tests/query/test_demo_queries.py does): an order's refunds,
# shipping and payment fees count at the order's time; cogs are its lines' quantity × unit cost.
HAND = """
with o as (
    select o.order_id, o.total, o.discount, coalesce(r.amount, 0) as refunded, coalesce(s.cost, 0) as shipping,
           coalesce(p.fee, 0) as fees
    from raw.orders o
    left join (select order_id, sum(amount) as amount from raw.refunds group by 1) r on r.order_id = o.order_id
    left join (select order_id, sum(shipping_cost) as cost from raw.shipments group by 1) s
        on s.order_id = o.order_id
    left join (select order_id, sum(fee) as fee from raw.payments group by 1) p on p.order_id = o.order_id
    where o.ordered_at >= DATE '{start}' and o.ordered_at < DATE '{stop}'
),
l as (
    select sum(quantity * unit_cost) as cogs from raw.order_lines
    where ordered_at >= DATE '{start}' and ordered_at < DATE '{stop}'
)
select (sum(total) - sum(discount) - sum(refunded)) - ((select cogs from l) + sum(shipping) + sum(fees)) as profit,
       (select cogs from l) as cogs
from o
"""


def cents(x) -> Decimal:
    """Any door's number (exact decimal, float or the page's text) to the cent."""
    return Decimal(str(x)).quantize(CENT)


def month_of(day: dt.date, shift: int) -> tuple[dt.date, dt.date]:
    y, m = divmod(day.year * 12 + day.month - 1 + shift, 12)
    first = dt.date(y, m + 1, 1)
    y2, m2 = divmod(y * 12 + m + 1, 12)
    return first, dt.date(y2, m2 + 1, 1) - dt.timedelta(days=1)


@pytest.fixture(scope="module")
def project(live):
    return live.app.state.runtime.project


@pytest.fixture(scope="module")
def question(project) -> dict:
    """The last full calendar month of orders, the calendar month before it, and the hand-written answers."""
    last = project.engine.arrow("select max(ordered_at)::date as d from raw.orders").column(0)[0].as_py()
    full = 0 if (last + dt.timedelta(days=1)).day == 1 else -1
    now, before = month_of(last, full), month_of(last, full - 1)

    def hand(period):
        stop = period[1] + dt.timedelta(days=1)
        row = project.engine.arrow(HAND.format(start=period[0], stop=stop)).to_pylist()[0]
        return {k: cents(v) for k, v in row.items()}

    return {"period": now, "comparison": before, "now": hand(now), "before": hand(before)}


@pytest.fixture(scope="module")
def pg(live):
    with ServerThread(PgServer(live.app.state.runtime, PgConfig(port=0, users=None, trust="loopback"))) as handle:
        yield handle.port


def iso(period) -> dict:
    return {"start": period[0].isoformat(), "end": period[1].isoformat()}


def test_the_hand_answer_is_a_real_question(question):
    # the months are whole calendar months, different lengths do not matter, and the numbers differ
    (s, e), (cs, ce) = question["period"], question["comparison"]
    assert s.day == cs.day == 1 and (e + dt.timedelta(days=1)).day == 1 and ce + dt.timedelta(days=1) == s
    assert question["now"]["profit"] != question["before"]["profit"]
    assert question["now"]["cogs"] > 0 and question["before"]["cogs"] > 0


def test_rest_tree_answers_the_calendar_months(live, question):
    tree = httpx.get(live.url + "/api/v1/tree", params={"root": "profit", **iso(question["period"])},
                     timeout=30).json()
    assert tree["comparison_rule"] == "previous"
    assert (tree["period"], tree["comparison"]) == (iso(question["period"]), iso(question["comparison"]))
    nodes = {n["name"]: n for n in tree["nodes"]}
    for name in ("profit", "cogs"):
        assert cents(nodes[name]["value"]) == question["now"][name], name
        assert cents(nodes[name]["comparison"]) == question["before"][name], name
        assert cents(nodes[name]["change"]) == question["now"][name] - question["before"][name], name


def test_graphql_metric_tree_answers_the_same(live, question):
    query = """query ($p: PeriodInput!) { metricTree(root: "profit", period: $p) {
        period { start end } comparison { start end } nodes { name value comparisonValue } } }"""
    out = httpx.post(live.url + "/graphql", json={"query": query, "variables": {"p": iso(question["period"])}},
                     timeout=30).json()
    tree = out["data"]["metricTree"]
    assert (tree["period"], tree["comparison"]) == (iso(question["period"]), iso(question["comparison"]))
    nodes = {n["name"]: n for n in tree["nodes"]}
    for name in ("profit", "cogs"):
        assert cents(nodes[name]["value"]) == question["now"][name], name
        assert cents(nodes[name]["comparisonValue"]) == question["before"][name], name


SQL = "SELECT MEASURE(profit), MEASURE(cogs) FROM metrics WHERE metric_time >= {} AND metric_time < {}"


def test_semantic_sql_over_http_answers_the_same(live, question):
    for key, period in (("now", question["period"]), ("before", question["comparison"])):
        sql = SQL.format(f"DATE '{period[0]}'", f"DATE '{period[1] + dt.timedelta(days=1)}'")
        r = httpx.post(live.url + "/api/v1/sql", json={"sql": sql}, timeout=30)
        assert r.status_code == 200, r.text
        (profit, cogs), = r.json(parse_float=Decimal)["rows"]
        assert (cents(profit), cents(cogs)) == (question[key]["profit"], question[key]["cogs"]), key


def test_the_pg_wire_answers_the_same(pg, question):
    dsn = f"host=127.0.0.1 port={pg} user=phloem dbname=shop connect_timeout=10"
    sql = SQL.format("%s", "%s")
    with psycopg.connect(dsn, autocommit=True) as conn:
        for key, period in (("now", question["period"]), ("before", question["comparison"])):
            profit, cogs = conn.execute(sql, (period[0], period[1] + dt.timedelta(days=1))).fetchone()
            assert (cents(profit), cents(cogs)) == (question[key]["profit"], question[key]["cogs"]), key


def test_the_explorer_page_shows_the_same(browser, live, question):
    page = Page(browser, live.url).open()
    params = page.params()
    assert (params["start"], params["end"]) == ([question["period"][0].isoformat()],
                                                [question["period"][1].isoformat()])
    shown = [page.d.find_element(By.ID, i).get_attribute("value") for i in ("compare_start", "compare_end")]
    assert shown == [d.isoformat() for d in question["comparison"]]
    cards = page.cards()
    for name in ("profit", "cogs"):
        assert cents(cards[name]["value"]) == question["now"][name], name
        assert cents(cards[name]["comparison"]) == question["before"][name], name
    summary = page.d.find_element(By.ID, "summary").text
    assert summary.startswith("profit $")


def test_the_page_and_rest_agree_on_a_leap_february_and_a_year_ago(browser, live, project):
    # February 2024 (29 days) against January: a 29-day shift would start on Jan 3
    page = Page(browser, live.url).open("?root=profit&grain=month&start=2024-02-01&end=2024-02-29&compare=previous")
    shown = [page.d.find_element(By.ID, i).get_attribute("value") for i in ("compare_start", "compare_end")]
    assert shown == ["2024-01-01", "2024-01-31"]
    rest = httpx.get(live.url + "/api/v1/tree", params={"root": "profit", "start": "2024-02-01",
                                                        "end": "2024-02-29"}, timeout=30).json()
    assert rest["comparison"] == {"start": "2024-01-01", "end": "2024-01-31"}
    assert cents(page.cards()["profit"]["comparison"]) == cents(rest["nodes"][0]["comparison"])
    page = Page(browser, live.url).open("?root=profit&grain=month&start=2024-02-01&end=2024-02-29&compare=yoy")
    shown = [page.d.find_element(By.ID, i).get_attribute("value") for i in ("compare_start", "compare_end")]
    assert shown == ["2023-02-01", "2023-02-28"]
    then = project.query(metrics=["profit"], time_range={"start": "2023-02-01", "end": "2023-02-28"}).to_pylist()
    assert cents(page.cards()["profit"]["comparison"]) == cents(then[0]["profit"] or 0)
