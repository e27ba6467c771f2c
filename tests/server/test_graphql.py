"""The GraphQL door: every answer equals the Python API's answer to the equivalent query.

A copy of the demo shop (scale 2000) with two test-only views: `order_values`, whose number dimension
`revenue` clashes with the metric `revenue` (so it is the field `revenueDim`) and whose `refund_status`
is NULL for orders without refunds; and `endless`, too big to finish within the query time limit.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import socket
import threading
import time
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from graphql import build_client_schema, get_introspection_query, print_schema

from semantic.demo import create
from semantic.meta import describe
from semantic.query.query import make_query
from server.graphql import LiveSchema, build_schema, graphql_router
from server.graphql.names import camel, catalog
from server.graphql.where import compile_where
from server.runtime import Runtime

TEST_MODELS = """
views:
  - name: order_values
    dataset: orders
    primary_key: order_id
    time: ordered_at
    dimensions:
      - channel
      - {name: revenue, type: number, expr: gross_revenue}
      - {name: refund_status, expr: "case when refunded > 0 then 'refunded' end"}
    measures:
      - {name: value, agg: sum, expr: gross_revenue}
      - {name: order_rows, agg: count}
  - name: endless  # 20 billion rows: for the query time limit
    sql: "select i, i % 7 as remainder from range(20000000000) t(i)"
    dimensions: [remainder]
    measures: [{name: distinct_hashes, agg: count_distinct, expr: hash(i)}]
metrics:
  - {name: order_value, measure: order_values.value, format: currency}
  - {name: order_rows, measure: order_values.order_rows}
  - {name: value_per_order, expr: order_value / order_rows, format: integer}
  - {name: slow_hashes, measure: endless.distinct_hashes}
"""



def make_shop(root: Path, scale: int) -> Runtime:
    create(root, scale=scale)
    (root / "models" / "graphql_tests.yml").write_text(TEST_MODELS)
    runtime = Runtime(root)
    runtime.project.build()
    return runtime


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    runtime = make_shop(tmp_path_factory.mktemp("graphql") / "shop", scale=2000)
    yield runtime
    runtime.close()


@pytest.fixture(scope="module")
def project(runtime):
    return runtime.project


@pytest.fixture(scope="module")
def schema(project):
    return build_schema(project)


# ------------------------------------------------------------------ helpers


def run(schema, text: str, **variables) -> dict:
    """The whole response (data, errors, extensions) as a client would see it."""
    result = schema.execute_sync(text, variable_values=variables or None)
    out = {"data": result.data}
    if result.errors:
        out["errors"] = [e.formatted for e in result.errors]
    if result.extensions:
        out["extensions"] = result.extensions
    return out


def data(schema, text: str, **variables) -> dict:
    out = run(schema, text, **variables)
    assert "errors" not in out, out["errors"]
    return out["data"]


def plain(value):
    """A Python-API value as GraphQL writes it: dates as ISO text (numbers: see `exact`)."""
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    return value


def api(project, **query) -> list[dict]:
    """The Python API's answer, bypassing the result cache."""
    return [{k: plain(v) for k, v in row.items()} for row in
            project.run(make_query(**query), use_cache=False).table.to_pylist()]


def flat(row: dict, prefix: str = "") -> dict:
    """{"metricTime": {"month": x}} → {"metricTime.month": x}."""
    out = {}
    for k, v in row.items():
        if isinstance(v, dict):
            out.update(flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?")


def exact(value):
    """A number as an exact Decimal, so GraphQL's Decimal strings, Floats and the API's decimals compare digit for
    digit (a double by its shortest digits)."""
    if isinstance(value, float) or (isinstance(value, str) and NUMBER.fullmatch(value)):
        return Decimal(repr(value) if isinstance(value, float) else value)
    return value


def same_rows(got: list[dict], want: list[dict], columns: dict[str, str], ordered: bool = False) -> None:
    """GraphQL rows (fields as in `columns`) equal the API's rows (columns as named in `columns`' values)."""
    g = [tuple(exact(flat(r)[f]) for f in columns) for r in got]
    w = [tuple(exact(r[c]) for c in columns.values()) for r in want]
    assert w, "the comparison needs rows"
    if not ordered:
        key = lambda row: tuple((v is None, str(v)) for v in row)  # noqa: E731
        g, w = sorted(g, key=key), sorted(w, key=key)
    assert g == w


# ------------------------------------------------------------------ the selection set is the query


def test_selected_metrics_and_dimensions_are_the_query(schema, project):
    rows = data(schema, "{ query { revenue orders margin channel } }")["query"]
    same_rows(rows, api(project, metrics=["revenue", "orders", "margin"], dimensions=["channel"]),
              {"revenue": "revenue", "orders": "orders", "margin": "margin", "channel": "channel"})
    assert all(isinstance(r["orders"], int) and isinstance(r["margin"], float) for r in rows)
    assert all(isinstance(r["revenue"], str) and Decimal(r["revenue"]).as_tuple().exponent == -2 for r in rows)


def test_a_total_without_dimensions(schema, project):
    rows = data(schema, "{ query { profit netRevenue signups } }")["query"]
    want = api(project, metrics=["profit", "net_revenue", "signups"])
    same_rows(rows, want, {"profit": "profit", "netRevenue": "net_revenue", "signups": "signups"})


@pytest.mark.parametrize("grain", ["hour", "day", "week", "month", "quarter", "year"])
def test_every_grain_of_metric_time(schema, project, grain):
    rows = data(schema, f"{{ query {{ revenue metricTime {{ {grain} }} }} }}")["query"]
    same_rows(rows, api(project, metrics=["revenue"], dimensions=[f"metric_time__{grain}"]),
              {"revenue": "revenue", f"metricTime.{grain}": f"metric_time__{grain}"})
    sample = rows[0]["metricTime"][grain]
    assert ("T" in sample) if grain == "hour" else (len(sample) == 10 and dt.date.fromisoformat(sample))
    if grain in ("week", "month", "quarter", "year"):
        starts = {r["metricTime"][grain] for r in rows}
        first = {"week": lambda d: d.weekday() == 0, "month": lambda d: d.day == 1,
                 "quarter": lambda d: d.day == 1 and d.month in (1, 4, 7, 10),
                 "year": lambda d: (d.month, d.day) == (1, 1)}[grain]
        assert all(first(dt.date.fromisoformat(s)) for s in starts)


def test_several_grains_of_several_time_dimensions(schema, project):
    rows = data(schema, """{ query { revenue metricTime { month year } orders_orderedAt { week }
                                      signedUpAt { quarter } } }""")["query"]
    want = api(project, metrics=["revenue"], dimensions=["metric_time__month", "metric_time__year",
                                                         "orders.ordered_at__week", "signed_up_at__quarter"])
    same_rows(rows, want, {"revenue": "revenue", "metricTime.month": "metric_time__month",
                           "metricTime.year": "metric_time__year", "orders_orderedAt.week": "ordered_at__week",
                           "signedUpAt.quarter": "signed_up_at__quarter"})


def test_aliases_fragments_and_directives_shape_the_query(schema, project):
    rows = data(schema, """query ($withOrders: Boolean!, $skipChannel: Boolean!) {
        query { total: revenue again: revenue ...Counts channel @skip(if: $skipChannel)
                t: metricTime { ... on TimeBuckets { year } } }
    }
    fragment Counts on Row { orders @include(if: $withOrders) buyers @include(if: false) }""",
                withOrders=True, skipChannel=True)["query"]
    assert set(rows[0]) == {"total", "again", "orders", "t"}
    same_rows(rows, api(project, metrics=["revenue", "orders"], dimensions=["metric_time__year"]),
              {"total": "revenue", "again": "revenue", "orders": "orders", "t.year": "metric_time__year"})


def test_a_shared_dimension_name_resolves_as_the_library_does(schema, project):
    # bare `country`: revenue reads the orders' country, signups the customers'
    rows = data(schema, "{ query { revenue signups country } }")["query"]
    same_rows(rows, api(project, metrics=["revenue", "signups"], dimensions=["country"]),
              {"revenue": "revenue", "signups": "signups", "country": "country"})
    both = data(schema, "{ query { revenue orders_country customers_country } }")["query"]
    same_rows(both, api(project, metrics=["revenue"], dimensions=["orders.country", "customers.country"]),
              {"revenue": "revenue", "orders_country": "orders__country", "customers_country": "customers__country"})


def test_a_metric_wins_its_name_and_the_dimension_takes_a_suffix(schema, project):
    fields = {f["name"]: f["type"] for f in data(schema, """{ __type(name: "Row") { fields { name
                type { name kind ofType { name } } } } }""")["__type"]["fields"]}
    assert fields["revenue"]["name"] == "Decimal" and fields["revenueDim"]["name"] == "Float"
    assert fields["orderValues_revenue"]["name"] == "Float"
    rows = data(schema, "{ query(where: {revenueDim: {gte: 300}}) { orderValue revenueDim } }")["query"]
    same_rows(rows, api(project, metrics=["order_value"], dimensions=["revenue"], filters=["revenue >= 300"]),
              {"orderValue": "order_value", "revenueDim": "revenue"})
    assert all(r["revenueDim"] >= 300 for r in rows)


def test_graphql_types_of_metrics_and_dimensions(schema):
    fields = {f["name"]: f["type"] for f in data(schema, """{ __type(name: "Row") { fields { name
                type { name kind ofType { name } } } } }""")["__type"]["fields"]}
    assert {n: fields[n]["name"] for n in ("orders", "buyers", "signups", "orderRows", "valuePerOrder")} == \
        dict.fromkeys(("orders", "buyers", "signups", "orderRows", "valuePerOrder"), "Int")
    assert {fields[n]["name"] for n in ("margin", "signupToOrder")} == {"Float"}
    assert {fields[n]["name"] for n in ("revenue", "aov", "revenueMtd", "profit")} == {"Decimal"}  # money
    assert fields["channel"]["name"] == "String" and fields["isFirstOrder"]["name"] == "Boolean"
    assert fields["metricTime"] == {"name": None, "kind": "NON_NULL", "ofType": {"name": "TimeBuckets"}}
    grains = data(schema, '{ __type(name: "TimeBuckets") { fields { name type { name } } } }')["__type"]["fields"]
    assert {g["name"]: g["type"]["name"] for g in grains} == {
        "hour": "DateTime", "day": "Date", "week": "Date", "month": "Date", "quarter": "Date", "year": "Date"}


def test_an_integer_format_metric_is_rounded_to_an_int(schema, project):
    rows = data(schema, "{ query { valuePerOrder channel } }")["query"]
    want = api(project, metrics=["value_per_order"], dimensions=["channel"])
    assert {r["channel"]: r["valuePerOrder"] for r in rows} == \
        {w["channel"]: round(w["value_per_order"]) for w in want}


# ------------------------------------------------------------------ filters

FILTERS = [  # (Where, the same filter for the Python API)
    ('{channel: {equals: "web"}}', "channel = 'web'"),
    ('{channel: {notEquals: "web"}}', "channel <> 'web'"),
    ('{country: {in: ["US", "CA"]}}', "country in ('US', 'CA')"),
    ('{country: {notIn: ["US", "CA"]}}', "country not in ('US', 'CA')"),
    ('{country: {gt: "DE"}}', "country > 'DE'"),
    ('{country: {gte: "DE"}}', "country >= 'DE'"),
    ('{country: {lt: "DE"}}', "country < 'DE'"),
    ('{country: {lte: "DE"}}', "country <= 'DE'"),
    ('{country: {between: ["CA", "FR"]}}', "country between 'CA' and 'FR'"),
    ('{channel: {contains: "eb"}}', "channel like '%eb%'"),
    ('{refundStatus: {isNull: true}}', "refund_status is null"),
    ('{refundStatus: {isNull: false}}', "refund_status is not null"),
    ('{refundStatus: {equals: null}}', "refund_status is null"),
    ('{refundStatus: {notEquals: null}}', "refund_status is not null"),
    ('{isFirstOrder: {equals: true}}', "is_first_order"),
    ('{isFirstOrder: {in: [false]}}', "not is_first_order"),
    ('{revenueDim: {gt: 100, lte: 250.5}}', "revenue > 100 and revenue <= 250.5"),
    ('{revenueDim: {between: [50, 60]}}', "revenue between 50 and 60"),
    ('{metricTime: {month: {equals: "2024-03-01"}}}', "metric_time__month = date '2024-03-01'"),
    ('{metricTime: {quarter: {in: ["2024-01-01", "2024-07-01"]}}}',
     "metric_time__quarter in (date '2024-01-01', date '2024-07-01')"),
    ('{orderedAt: {day: {between: ["2024-02-01", "2024-02-10"]}}}',
     "ordered_at__day between date '2024-02-01' and date '2024-02-10'"),
    ('{metricTime: {hour: {gte: "2024-02-01T10:00:00", lt: "2024-02-01T20:00:00"}}}',
     "metric_time__hour >= timestamp '2024-02-01 10:00:00' and metric_time__hour < timestamp '2024-02-01 20:00:00'"),
    ('{metricTime: {week: {lte: "2023-03-06"}, year: {notEquals: "2024-01-01"}}}',
     "metric_time__week <= date '2023-03-06' and metric_time__year <> date '2024-01-01'"),
    ('{or: [{channel: {equals: "web"}}, {country: {equals: "US"}}]}', "channel = 'web' or country = 'US'"),
    ('{not: {channel: {in: ["web", "app"]}}}', "not (channel in ('web', 'app'))"),
    ('{and: [{country: {in: ["US", "GB"]}}, {or: [{channel: {equals: "app"}}, {not: {isFirstOrder: {equals: false}}}]}]'
     ', metricTime: {year: {equals: "2024-01-01"}}}',
     "country in ('US', 'GB') and (channel = 'app' or not (is_first_order = false)) "
     "and metric_time__year = date '2024-01-01'"),
    ('{and: [], country: {equals: "FR"}}', "country = 'FR'"),
]


@pytest.mark.parametrize("where, sql", FILTERS, ids=[w for w, _ in FILTERS])
def test_filters_equal_the_python_api(schema, project, where, sql):
    # order_value reads the order_values view (refund_status, revenueDim) and orders (via the bare names)
    metric = "orderValue" if ("refundStatus" in where or "revenueDim" in where) else "revenue"
    name = "order_value" if metric == "orderValue" else "revenue"
    rows = data(schema, f"{{ query(where: {where}) {{ {metric} channel metricTime {{ year }} }} }}")["query"]
    want = api(project, metrics=[name], dimensions=["channel", "metric_time__year"], filters=[sql])
    same_rows(rows, want, {metric: name, "channel": "channel", "metricTime.year": "metric_time__year"})
    unfiltered = api(project, metrics=[name], dimensions=["channel", "metric_time__year"])
    assert want != unfiltered  # every filter here does filter something


def test_an_empty_or_matches_nothing_and_an_empty_in_too(schema, project):
    for where in ("{or: []}", "{channel: {in: []}}"):
        rows = data(schema, f"{{ query(where: {where}) {{ revenue orders }} }}")["query"]
        assert rows == [{"revenue": None, "orders": 0}] == [
            {"revenue": r["revenue"], "orders": r["orders"]} for r in api(project, metrics=["revenue", "orders"],
                                                                            filters=["false"])]
    everything = data(schema, '{ query(where: {channel: {notIn: []}}) { revenue } }')["query"]
    assert everything == [{"revenue": str(api(project, metrics=["revenue"])[0]["revenue"])}]  # money: exact digits


def test_null_bounds_are_no_bounds(schema, project):
    query = "query ($from: Date, $to: Date) { query(where: {metricTime: {day: {gte: $from, lte: $to}}}) { revenue } }"
    assert data(schema, query, **{"from": None, "to": None})["query"] == [
        {"revenue": str(api(project, metrics=["revenue"])[0]["revenue"])}]
    assert data(schema, query, **{"from": "2024-01-01", "to": None})["query"] == [{"revenue": str(
        api(project, metrics=["revenue"], filters=["metric_time__day >= date '2024-01-01'"])[0]["revenue"])}]


def test_values_are_literals_never_sql(schema, project):
    for where in ('{channel: {equals: "web\' or \'1\'=\'1"}}',
                  '{or: [{channel: {equals: "web\' or \'1\'=\'1"}}, {channel: {contains: "%\')) or ((\'"}}]}'):
        rows = data(schema, f"{{ query(where: {where}) {{ orders }} }}")["query"]
        assert rows == [{"orders": 0}]


def test_a_plain_and_compiles_to_structured_filters_else_one_sql_boolean(project):
    names = catalog(project.compiler)

    def where(**fields):
        return SimpleNamespace(**fields)

    assert compile_where(where(country=where(in_=["US", "CA"]), metricTime=where(month=where(gte=dt.date(2024, 1, 1))),
                               and_=[where(isFirstOrder=where(equals=True))]), names) == [
        {"dimension": "metric_time__month", "op": ">=", "values": [dt.date(2024, 1, 1)]},  # in the order of `Where`
        {"dimension": "country", "op": "in", "values": ["US", "CA"]},
        {"dimension": "is_first_order", "op": "=", "values": [True]}]
    assert compile_where(where(orders_country=where(equals=None, not_in=["x"])), names) == [
        {"dimension": "orders.country", "op": "is null", "values": []},
        {"dimension": "orders.country", "op": "not in", "values": ["x"]}]
    assert compile_where(where(or_=[where(channel=where(equals="it's")), where(not_=where(
        orders_orderedAt=where(year=where(lt=dt.date(2024, 1, 1)))))]), names) == [
        "(\"channel\" = 'it''s') OR (NOT (\"orders\".\"ordered_at__year\" < CAST('2024-01-01' AS DATE)))"]
    assert compile_where(where(channel=where(contains="a_b%")), names) == ["STRPOS(\"channel\", 'a_b%') > 0"]
    assert compile_where(None, names) == [] and compile_where(where(), names) == []


# ------------------------------------------------------------------ time range, order, limit, offset


def test_time_range_with_dates_and_date_times(schema, project):
    rows = data(schema, '{ query(timeRange: {start: "2024-01-01", end: "2024-03-31"}) { revenue metricTime '
                        '{ month } } }')["query"]
    same_rows(rows, api(project, metrics=["revenue"], dimensions=["metric_time__month"],
                        time_range={"start": "2024-01-01", "end": "2024-03-31"}),
              {"revenue": "revenue", "metricTime.month": "metric_time__month"})
    assert len(rows) == 3
    instants = data(schema, '{ query(timeRange: {start: "2024-01-01T06:00:00", end: "2024-01-02T07:30:00+01:00"}) '
                            '{ orders } }')["query"]
    assert instants == [{"orders": api(project, metrics=["orders"], time_range={
        "start": dt.datetime(2024, 1, 1, 6), "end": dt.datetime(2024, 1, 2, 6, 30)})[0]["orders"]}]


def test_order_limit_and_offset(schema, project):
    rows = data(schema, """{ query(orderBy: [{field: revenue, desc: true}], limit: 4, offset: 2) {
                              revenue country channel } }""")["query"]
    same_rows(rows, api(project, metrics=["revenue"], dimensions=["country", "channel"], order_by=["-revenue"],
                        limit=4, offset=2), {"revenue": "revenue", "country": "country", "channel": "channel"},
              ordered=True)
    assert len(rows) == 4 and rows == sorted(rows, key=lambda r: -Decimal(r["revenue"]))


def test_order_by_several_fields_and_by_a_time_field(schema, project):
    rows = data(schema, """{ query(orderBy: [{field: channel}, {field: metricTime, desc: true}], limit: 30) {
                              orders channel metricTime { month quarter } } }""")["query"]
    want = api(project, metrics=["orders"], dimensions=["channel", "metric_time__month", "metric_time__quarter"],
               order_by=["channel", "-metric_time__quarter", "-metric_time__month"], limit=30)
    same_rows(rows, want, {"orders": "orders", "channel": "channel", "metricTime.month": "metric_time__month",
                           "metricTime.quarter": "metric_time__quarter"}, ordered=True)
    months = [(r["channel"], r["metricTime"]["month"]) for r in rows]
    assert months == sorted(months, key=lambda m: (m[0], tuple(-ord(c) for c in m[1])))


def test_order_by_qualified_fields_that_share_a_name(schema, project):
    rows = data(schema, """{ query(orderBy: [{field: customers_country, desc: true}, {field: orders_country}]) {
                              revenue orders_country customers_country } }""")["query"]
    same_rows(rows, api(project, metrics=["revenue"], dimensions=["orders.country", "customers.country"],
                        order_by=["-customers__country", "orders__country"]),
              {"revenue": "revenue", "orders_country": "orders__country", "customers_country": "customers__country"},
              ordered=True)


# ------------------------------------------------------------------ the metric tree

TREE = """query ($root: String!, $period: PeriodInput!, $comparison: PeriodInput, $where: Where) {
  metricTree(root: $root, period: $period, comparison: $comparison, where: $where) {
    root period { start end } comparison { start end }
    nodes { name field label kind formula format good depth level value comparisonValue change changePct
            children { parent child operator sign } }
    edges { parent child operator sign alias offset }
  }
}"""


def check_tree(project, tree: dict, period: tuple[str, str], comparison: tuple[str, str], filters=()) -> None:
    by_name = {n["name"]: n for n in tree["nodes"]}
    for node in tree["nodes"]:  # each value equals the metric queried directly over the period
        for key, (start, end) in (("value", period), ("comparisonValue", comparison)):
            want = api(project, metrics=[node["name"]], filters=list(filters),
                       time_range={"start": start, "end": end})[0][node["name"]]
            assert node[key] == pytest.approx(None if want is None else float(want), rel=1e-12), (node["name"], key)
        v, c = node["value"], node["comparisonValue"]
        assert node["change"] == pytest.approx(v - c, rel=1e-9, abs=1e-9)
        assert node["changePct"] == (None if c == 0 else pytest.approx((v - c) / abs(c), rel=1e-9))
    for parent, node in by_name.items():
        assert [(e["child"], e["operator"], e["sign"]) for e in node["children"]] == [
            (e.child, e.operator, e.sign) for e in project.compiler.tree.children(parent)]


def test_metric_tree_values_and_changes_against_direct_queries(schema, project):
    period = {"start": "2024-04-01", "end": "2024-06-30"}
    out = run(schema, TREE, root="profit", period=period)
    tree = out["data"]["metricTree"]
    assert tree["root"] == "profit" and tree["period"] == period
    assert tree["comparison"] == {"start": "2024-01-01", "end": "2024-03-31"}  # the quarter before
    names = [n["name"] for n in tree["nodes"]]
    assert names[0] == "profit" and set(names) == {"profit", "net_revenue", "costs", "revenue", "discounts",
                                                   "refunds", "cogs", "shipping", "payment_fees"}
    levels = {n["name"]: n["level"] for n in tree["nodes"]}
    assert levels == {"profit": 0, "net_revenue": 1, "costs": 1, "revenue": 2, "discounts": 2, "refunds": 2,
                      "cogs": 2, "shipping": 2, "payment_fees": 2}
    assert {(e["parent"], e["child"], e["operator"], e["sign"]) for e in tree["edges"]} >= {
        ("profit", "net_revenue", "+", 1), ("profit", "costs", "-", -1), ("net_revenue", "discounts", "-", -1)}
    check_tree(project, tree, ("2024-04-01", "2024-06-30"), ("2024-01-01", "2024-03-31"))
    profit = tree["nodes"][0]
    assert profit["field"] == "profit" and profit["kind"] == "derived" and profit["formula"] == "net_revenue - costs"
    assert profit["depth"] == 2 and profit["format"] == "currency" and profit["good"] == "up"
    explained = run(schema, TREE.replace(") {", ") @explain {", 1), root="profit", period=period)
    assert len(explained["extensions"]["phloem"]["sql"]) == 2  # one metric query per period
    assert "sql" not in out["extensions"]["phloem"]  # only under @explain


def test_metric_tree_with_a_comparison_a_filter_and_a_field_name(schema, project):
    tree = data(schema, TREE, root="netRevenue", period={"start": "2024-11-01", "end": "2024-11-30"},
                comparison={"start": "2023-11-01", "end": "2023-11-30"},
                where={"channel": {"equals": "app"}})["metricTree"]
    assert tree["root"] == "net_revenue" and [n["name"] for n in tree["nodes"]] == [
        "net_revenue", "revenue", "discounts", "refunds"]
    check_tree(project, tree, ("2024-11-01", "2024-11-30"), ("2023-11-01", "2023-11-30"),
               filters=["channel = 'app'"])


def test_metric_tree_of_ratios_and_conversions(schema, project):
    for root in ("aov", "margin", "signup_to_order", "revenue_mtd"):
        tree = data(schema, TREE, root=root, period={"start": "2024-02-01", "end": "2024-02-29"})["metricTree"]
        assert tree["comparison"] == {"start": "2024-01-01", "end": "2024-01-31"}  # the calendar month before
        check_tree(project, tree, ("2024-02-01", "2024-02-29"), ("2024-01-01", "2024-01-31"))


def test_metric_tree_change_pct_is_null_against_zero(schema):
    tree = data(schema, TREE, root="orders", period={"start": "2024-01-01", "end": "2024-01-31"},
                comparison={"start": "2010-01-01", "end": "2010-01-31"})["metricTree"]
    node = tree["nodes"][0]
    assert node["comparisonValue"] == 0 and node["change"] == node["value"] > 0 and node["changePct"] is None


def test_metric_tree_errors(schema):
    unknown = run(schema, TREE, root="proft", period={"start": "2024-01-01", "end": "2024-01-31"})
    assert unknown["data"] is None
    assert "did you mean `profit`" in unknown["errors"][0]["message"]
    assert unknown["errors"][0]["extensions"]["code"] == "BAD_QUERY"
    offset = run(schema, TREE, root="revenue_mom", period={"start": "2024-01-01", "end": "2024-01-31"})
    assert "metricTime" in offset["errors"][0]["message"]
    backwards = run(schema, TREE, root="profit", period={"start": "2024-02-01", "end": "2024-01-01"})
    assert "swap start and end" in backwards["errors"][0]["message"]


# ------------------------------------------------------------------ meta and introspection

META = """{ meta { project version timeDimension grains
  views { name label time primaryKey entities { name column } joins { to on }
          dimensions { name qualified type grains field } measures { name qualified agg expr filter } }
  metrics { name field graphqlType kind formula measure format good owner depth joinToTimespine
            children { metric operator sign alias offset } }
  tree { roots edges { parent child operator sign } }
  fields { field kind name type } } }"""


def test_meta_mirrors_describe(schema, project):
    meta = data(schema, META)["meta"]
    d = describe(project.compiler)
    assert (meta["project"], meta["version"], meta["timeDimension"], meta["grains"]) == (
        d["project"], d["version"], d["time_dimension"], d["grains"])
    assert [v["name"] for v in meta["views"]] == [v["name"] for v in d["views"]]
    for got, want in zip(meta["views"], d["views"], strict=True):
        assert [(x["name"], x["type"], x["grains"]) for x in got["dimensions"]] == [
            (x["name"], x["type"], x["grains"]) for x in want["dimensions"]]
        assert [(x["name"], x["agg"], x["expr"], x["filter"]) for x in got["measures"]] == [
            (x["name"], x["agg"], x["expr"], x["filter"]) for x in want["measures"]]
        assert got["joins"] == want["joins"] and got["entities"] == want["entities"]
        assert all(x["field"] == f"{camel(got['name'])}_{camel(x['name'])}" for x in got["dimensions"])
    for got, want in zip(meta["metrics"], d["metrics"], strict=True):
        assert {k: got[camel(k)] for k in ("name", "kind", "formula", "measure", "format", "good", "owner", "depth",
                                           "join_to_timespine")} == {k: want[k] for k in (
            "name", "kind", "formula", "measure", "format", "good", "owner", "depth", "join_to_timespine")}
        assert got["children"] == want["children"]
    assert meta["tree"] == d["tree"]
    fields = {f["field"]: (f["kind"], f["name"], f["type"]) for f in meta["fields"]}
    assert fields["netRevenue"] == ("metric", "net_revenue", "Decimal")
    assert fields["margin"] == ("metric", "margin", "Float")
    assert fields["orders"] == ("metric", "orders", "Int")
    assert fields["revenueDim"] == ("dimension", "revenue", "Float")
    assert fields["metricTime"] == ("dimension", "metric_time", "TimeBuckets")
    assert fields["orderLines_orderedAt"] == ("dimension", "order_lines.ordered_at", "TimeBuckets")
    assert fields["refundStatus"] == ("dimension", "refund_status", "String")


def test_the_standard_introspection_query(schema):
    result = data(schema, get_introspection_query(descriptions=True))
    client = build_client_schema(result)  # what GraphiQL, Apollo and codegen tools do with it
    row = client.get_type("Row")
    assert {"revenue", "netRevenue", "metricTime", "country", "orders_country", "revenueDim"} <= set(row.fields)
    assert "metric `net_revenue`" in row.fields["netRevenue"].description
    assert set(client.get_type("Where").fields) >= {"and", "or", "not", "country", "metricTime"}
    assert "netRevenue" in client.get_type("RowField").values
    assert "type Query" in print_schema(client)


# ------------------------------------------------------------------ errors and cache status


def test_an_unknown_field_is_refused_with_a_suggestion(schema):
    out = run(schema, "{ query { revnue chanel } }")
    assert out["data"] is None
    messages = [e["message"] for e in out["errors"]]
    assert any("Did you mean 'revenue'" in m for m in messages) and any("'channel'" in m for m in messages)
    assert {e["extensions"]["code"] for e in out["errors"]} == {"GRAPHQL_VALIDATION_FAILED"}


def test_a_query_error_is_bad_query_with_the_suggestion_and_no_trace(schema):
    out = run(schema, "{ query { revenue category } }")  # category is a dimension of order_lines only
    assert out["data"] is None
    (error,) = out["errors"]
    assert error["extensions"]["code"] == "BAD_QUERY" and error["path"] == ["query"]
    assert "cannot be reached from view `orders`" in error["message"]
    assert error["extensions"]["suggestion"] in error["message"]
    assert set(error) == {"message", "locations", "path", "extensions"}
    assert set(error["extensions"]) == {"code", "suggestion"}
    assert "Traceback" not in str(out)


@pytest.mark.parametrize("text, expected", [
    ('{ query(where: {country: {between: ["A"]}}) { revenue } }', "`between` on `country` takes two values"),
    ("{ query(orderBy: [{field: channel}]) { revenue } }", "cannot order by `channel`: it is not selected"),
    ("{ query { channel } }", "select at least one metric field"),
    ("{ query(limit: -1) { revenue } }", "invalid query field `limit`"),
    ('{ query(timeRange: {start: "2024-02-01", end: "2024-01-01"}) { revenue } }', "swap start and end"),
    ("{ query { revenueMom } }", "add e.g. `metric_time__month`"),
])
def test_bad_queries(schema, text, expected):
    out = run(schema, text)
    assert out["errors"][0]["extensions"]["code"] == "BAD_QUERY" and expected in out["errors"][0]["message"]


def test_a_bad_time_point_is_refused(schema):
    out = run(schema, '{ query(timeRange: {start: "last tuesday"}) { revenue } }')
    assert "not an ISO date" in out["errors"][0]["message"]


def test_a_query_past_the_time_limit_is_cancelled(project):
    started = time.monotonic()
    out = run(build_schema(project, timeout=0.5), "{ query { slowHashes } }")
    assert time.monotonic() - started < 10
    assert out["errors"][0]["extensions"]["code"] == "TIMEOUT" and "cancelled" in out["errors"][0]["message"]


def test_cache_status_and_sql_in_extensions(schema, project):
    text = ('query @explain { query(where: {country: {equals: "NL"}, channel: {equals: "app"}}) '
            '{ revenue metricTime { quarter } } }')
    first, second = run(schema, text), run(schema, text)
    assert first["data"] == second["data"]
    assert first["extensions"]["phloem"]["cached"] is False and second["extensions"]["phloem"]["cached"] is True
    compiled = project.compile(metrics=["revenue"], dimensions=["metric_time__quarter"],
                               filters=[{"dimension": "channel", "op": "=", "values": ["app"]},
                                        {"dimension": "country", "op": "=", "values": ["NL"]}])
    assert first["extensions"]["phloem"]["sql"] == [compiled.sql]
    assert set(run(schema, text.replace(" @explain", ""))["extensions"]["phloem"]) == {"cached"}  # no SQL unasked
    both = run(schema, "query @explain { a: query { orders } b: query { signups } }")
    assert len(both["extensions"]["phloem"]["sql"]) == 2
    assert "extensions" not in run(schema, "{ meta { project } }")  # no metric query, nothing to report


# ------------------------------------------------------------------ reload


def test_a_reload_swaps_the_schema(tmp_path):
    runtime = make_shop(tmp_path / "shop", scale=300)
    try:
        live = LiveSchema(runtime)
        before = live.schema
        assert "Cannot query field 'grossPerOrder'" in run(before, "{ query { grossPerOrder } }")["errors"][0]["message"]
        (runtime.root / "models" / "more.yml").write_text(
            "metrics:\n  - {name: gross_per_order, expr: revenue / orders, format: currency}\n")
        assert runtime.reload() is True
        assert live.schema is not before and live.project is runtime.project
        rows = data(live.schema, "{ query { grossPerOrder channel } }")["query"]
        same_rows(rows, api(runtime.project, metrics=["gross_per_order"], dimensions=["channel"]),
                  {"grossPerOrder": "gross_per_order", "channel": "channel"})
        assert "errors" in run(before, "{ query { grossPerOrder } }")  # the old schema is untouched
        assert runtime.reload() is False and live.schema is not before  # unchanged model: nothing rebuilt
    finally:
        runtime.close()


# ------------------------------------------------------------------ through a real HTTP server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def http(tmp_path_factory):
    """uvicorn on a loopback port serving a FastAPI app with the GraphQL router, on its own project copy."""
    runtime = make_shop(tmp_path_factory.mktemp("graphql_http") / "shop", scale=500)
    app = FastAPI()
    app.include_router(graphql_router(runtime), prefix="/graphql")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    with httpx.Client(base_url=url, timeout=30) as client:
        yield SimpleNamespace(client=client, runtime=runtime)
    server.should_exit = True
    thread.join(10)
    runtime.close()


def test_http_graphiql_on_get(http):
    r = http.client.get("/graphql", headers={"accept": "text/html"})
    assert r.status_code == 200 and "text/html" in r.headers["content-type"] and "graphiql" in r.text.lower()
    got = http.client.get("/graphql", params={"query": "{ query { orders } }"})
    assert got.json()["data"]["query"] == [{"orders": api(http.runtime.project, metrics=["orders"])[0]["orders"]}]


def test_http_post_equals_the_python_api(http):
    body = {"query": "query ($c: [String!]) { query(where: {country: {in: $c}}, orderBy: [{field: metricTime}]) "
                     "{ revenue orders metricTime { year } } }", "variables": {"c": ["US", "GB"]}}
    r = http.client.post("/graphql", json=body)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    out = r.json()
    same_rows(out["data"]["query"], api(http.runtime.project, metrics=["revenue", "orders"],
                                        dimensions=["metric_time__year"], filters=["country in ('US', 'GB')"],
                                        order_by=["metric_time__year"]),
              {"revenue": "revenue", "orders": "orders", "metricTime.year": "metric_time__year"}, ordered=True)
    assert isinstance(out["extensions"]["phloem"]["cached"], bool) and "sql" not in out["extensions"]["phloem"]
    explained = http.client.post("/graphql", json={**body, "query": body["query"].replace(") {", ") @explain {", 1)})
    assert explained.json()["extensions"]["phloem"]["sql"]


def test_http_errors(http):
    bad = http.client.post("/graphql", json={"query": "{ query { revenue category } }"})
    assert bad.status_code == 200
    (error,) = bad.json()["errors"]
    assert error["extensions"]["code"] == "BAD_QUERY" and "Traceback" not in bad.text
    assert http.client.post("/graphql", content=b"{nope").status_code == 400
    assert http.client.post("/graphql", json={"variables": {}}).status_code == 400
    syntax = http.client.post("/graphql", json={"query": "{ query { revenue "}).json()
    assert syntax["errors"][0]["extensions"]["code"] == "GRAPHQL_PARSE_FAILED"


def test_http_reload_swaps_the_schema_without_restarting(http):
    models = http.runtime.root / "models" / "http_more.yml"
    assert "errors" in http.client.post("/graphql", json={"query": "{ query { netPerOrder } }"}).json()
    try:
        models.write_text("metrics:\n  - {name: net_per_order, expr: net_revenue / orders}\n")
        assert http.runtime.reload() is True
        out = http.client.post("/graphql", json={"query": "{ query { netPerOrder } }"}).json()
        want = api(http.runtime.project, metrics=["net_per_order"])[0]["net_per_order"]
        assert out["data"]["query"] == [{"netPerOrder": want}] and math.isfinite(want)
    finally:
        models.unlink()
        http.runtime.reload()
    assert "errors" in http.client.post("/graphql", json={"query": "{ query { netPerOrder } }"}).json()


def test_extensions_name_the_tables_each_query_read(schema, project):
    out = run(schema, "query @explain { query { revenue channel metricTime { month } } }")
    (tables,) = out["extensions"]["phloem"]["tables"]
    (leaf,) = tables
    assert leaf["rollup"] == "orders_monthly" and leaf["table"] == "phloem.orders_monthly"
    assert {"rollup": "buyers_weekly", "reason": "lacks dimension channel"} in leaf["rejected"]
    assert next(r for r in leaf["rejected"] if r["rollup"] == "orders_daily")["reason"].startswith("larger:")
    raw = run(schema, "query @explain { query { revenue acquisitionChannel } }")["extensions"]["phloem"]["tables"][0][0]
    assert raw["rollup"] is None and raw["table"] == "phloem.orders"
    assert {"rollup": "orders_monthly", "reason": "lacks dimension acquisition_channel"} in raw["rejected"]
