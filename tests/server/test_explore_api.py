"""The explorer's REST endpoints (tree, tree/series, drill, whatif) through a real HTTP server, against the
Python API on the demo shop; and the GraphQL metricTree's contributions."""

from __future__ import annotations

import datetime as dt
import decimal
import math

import httpx
import pytest

from semantic.query.query import make_query

NOV = {"start": "2025-11-01", "end": "2025-11-30"}
OCT = {"compare_start": "2025-10-01", "compare_end": "2025-10-31"}
METHODS = ["shapley", "lmdi", "sequential_volume_first", "sequential_rate_first", "integrated_gradients",
           "leave_one_out"]


@pytest.fixture(scope="module")
def client(live):
    with httpx.Client(base_url=live.url, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def project(live):
    return live.app.state.runtime.project


def direct(project, metrics, start, end, filters=()) -> dict:
    rows = project.run(make_query(metrics=metrics, filters=list(filters), time_range={"start": start, "end": end}),
                       use_cache=False).table.to_pylist()
    return rows[0]


def leaves(tree: dict) -> list[dict]:
    parents = {e["parent"] for e in tree["edges"]}
    return [n for n in tree["nodes"] if n["name"] not in parents]


def check_values(project, tree: dict, filters=()) -> None:
    names = [n["name"] for n in tree["nodes"]]
    now = direct(project, names, tree["period"]["start"], tree["period"]["end"], filters)
    before = direct(project, names, tree["comparison"]["start"], tree["comparison"]["end"], filters)
    for n in tree["nodes"]:
        assert n["value"] == now[n["name"]] and n["comparison"] == before[n["name"]], n["name"]
        assert n["change"] == now[n["name"]] - before[n["name"]]


def check_contributions(tree: dict) -> None:
    root = tree["nodes"][0]
    assert root["name"] == tree["root"] and root["contribution"] == pytest.approx(float(root["change"]))
    total = math.fsum(n["contribution"] for n in leaves(tree))
    assert total == pytest.approx(float(root["change"]), rel=1e-9, abs=1e-9)
    assert tree["exact"] is True and tree["residual"] == 0
    assert math.fsum(n["share"] for n in leaves(tree)) == pytest.approx(1.0)


# ------------------------------------------------------------------ /tree


def test_tree_values_equal_direct_queries_and_contributions_sum_to_the_change(client, project):
    r = client.get("/api/v1/tree", params={"root": "profit", **NOV, **OCT, "method": "shapley"})
    assert r.status_code == 200, r.text
    tree = r.json(parse_float=decimal.Decimal)  # decimals travel exactly
    assert set(tree) >= {"root", "method", "exact", "period", "comparison", "nodes", "edges", "residual"}
    assert (tree["root"], tree["method"], tree["period"]) == ("profit", "shapley", NOV)
    assert tree["comparison"] == {"start": "2025-10-01", "end": "2025-10-31"}
    assert [n["name"] for n in tree["nodes"]] == ["profit", "net_revenue", "costs", "revenue", "discounts", "refunds",
                                                  "cogs", "shipping", "payment_fees"]
    node = tree["nodes"][0]
    assert set(node) >= {"name", "label", "kind", "formula", "format", "good", "depth", "level", "value",
                         "comparison", "change", "change_pct", "contribution", "share"}
    assert (node["kind"], node["formula"], node["depth"], node["level"]) == ("derived", "net_revenue - costs", 2, 0)
    assert {"parent": "profit", "child": "costs", "operator": "-", "sign": -1} in tree["edges"]
    check_values(project, tree)
    check_contributions(json_floats(tree))
    by_name = {n["name"]: n for n in json_floats(tree)["nodes"]}
    for name in ("costs", "cogs", "discounts", "refunds"):  # subtracted: the sign flips
        assert by_name[name]["contribution"] == pytest.approx(-by_name[name]["change"])
    assert by_name["revenue"]["contribution"] == pytest.approx(by_name["revenue"]["change"])


def json_floats(tree: dict) -> dict:
    def f(x):
        return float(x) if isinstance(x, decimal.Decimal) else x
    return {**tree, "nodes": [{k: f(v) for k, v in n.items()} for n in tree["nodes"]]}


@pytest.mark.parametrize("method", METHODS)
def test_every_method_over_a_dag_of_ratios(client, project, method):
    tree = client.get("/api/v1/tree", params={"root": "margin", **NOV, **OCT, "method": method}).json()
    assert tree["method"] == method
    names = [n["name"] for n in tree["nodes"]]
    assert names[:3] == ["margin", "profit", "net_revenue"] and "payment_fees" in names
    check_values(project, {**tree, "nodes": tree["nodes"][:1]})
    if method == "leave_one_out":
        assert tree["exact"] is False and tree["residual"] != 0
        total = math.fsum(n["contribution"] for n in leaves(tree))
        assert total + tree["residual"] == pytest.approx(tree["nodes"][0]["change"])
    else:
        check_contributions(tree)


def test_default_comparison_filters_and_a_ratio(client, project):
    params = [("root", "aov"), ("start", "2025-11-01"), ("end", "2025-11-30"), ("where", "country in ('US', 'DE')"),
              ("where", "channel != 'marketplace'")]
    tree = client.get("/api/v1/tree", params=params).json()
    # a calendar month is compared with the calendar month before, not the 30 days before
    assert tree["comparison"] == {"start": "2025-10-01", "end": "2025-10-31"}
    assert tree["comparison_rule"] == "previous"
    assert [(n["name"], n["level"]) for n in tree["nodes"]] == [("aov", 0), ("revenue", 1), ("orders", 1)]
    filters = ["country in ('US', 'DE')", "channel != 'marketplace'"]
    now = direct(project, ["aov", "revenue", "orders"], "2025-11-01", "2025-11-30", filters)
    before = direct(project, ["aov", "revenue", "orders"], "2025-10-01", "2025-10-31", filters)
    for n in tree["nodes"]:
        assert n["value"] == pytest.approx(float(now[n["name"]]), rel=1e-12)
        assert n["comparison"] == pytest.approx(float(before[n["name"]]), rel=1e-12)
    check_contributions(tree)
    aov = tree["nodes"][0]
    assert aov["change_pct"] == pytest.approx(aov["change"] / abs(aov["comparison"]))


def test_offset_metrics_are_leaves_without_a_period_value(client):
    tree = client.get("/api/v1/tree", params={"root": "revenue_mom", **NOV}).json()
    (node,) = tree["nodes"]
    assert node["value"] is None and node["contribution"] is None and "time grain" in node["reason"]
    cumulative = client.get("/api/v1/tree", params={"root": "revenue_mtd", **NOV}).json()
    assert [n["name"] for n in cumulative["nodes"]] == ["revenue_mtd"] and cumulative["edges"] == []


def test_tree_errors(client):
    unknown = client.get("/api/v1/tree", params={"root": "proft", **NOV})
    assert unknown.status_code == 400 and "did you mean `profit`" in unknown.json()["error"]["suggestion"]
    bad_where = client.get("/api/v1/tree", params={"root": "profit", **NOV, "where": "contry = 'US'"})
    assert bad_where.status_code == 400 and bad_where.json()["error"]["type"] == "query"
    for params in ({"root": "profit", **NOV, "method": "banzhaf"}, {"root": "profit", "start": "2025-11-31",
                                                                    "end": "2025-12-01"},
                   {"root": "profit", "start": "2025-12-01", "end": "2025-11-01"},
                   {"root": "profit", **NOV, "compare_start": "2025-10-01"}, {"start": "2025-11-01"}):
        r = client.get("/api/v1/tree", params=params)
        assert r.status_code == 422, params
        assert r.json()["error"]["type"] == "validation"
    backwards = client.get("/api/v1/tree", params={"root": "profit", "start": "2025-12-01", "end": "2025-11-01"})
    assert backwards.json()["error"]["fields"][0]["field"] == "query.end"


@pytest.mark.parametrize(("params", "rule", "comparison"), [
    ({"start": "2025-03-01", "end": "2025-03-31"}, "previous", ("2025-02-01", "2025-02-28")),
    ({"start": "2024-03-01", "end": "2024-03-31", "comparison": "previous"}, "previous", ("2024-02-01", "2024-02-29")),
    ({"start": "2025-10-01", "end": "2025-12-31"}, "previous", ("2025-07-01", "2025-09-30")),  # a quarter
    ({"start": "2025-11-03", "end": "2025-11-09"}, "previous", ("2025-10-27", "2025-11-02")),  # an ISO week
    ({"start": "2025-11-02", "end": "2025-11-30"}, "previous", ("2025-10-04", "2025-11-01")),  # 29 days
    ({"start": "2025-02-01", "end": "2025-02-28", "comparison": "year_ago"}, "year_ago", ("2024-02-01", "2024-02-29")),
    ({"start": "2024-02-29", "end": "2024-02-29", "comparison": "year_ago"}, "year_ago", ("2023-02-28", "2023-02-28")),
    ({**NOV, "comparison": "custom", "compare_start": "2025-06-01", "compare_end": "2025-06-10"}, "custom",
     ("2025-06-01", "2025-06-10")),
    ({**NOV, **OCT}, "custom", ("2025-10-01", "2025-10-31")),  # dates alone imply custom
])
def test_the_comparison_rule_is_stated_in_the_answer(client, project, params, rule, comparison):
    tree = client.get("/api/v1/tree", params={"root": "revenue", **params}).json(parse_float=decimal.Decimal)
    assert (tree["comparison_rule"], tree["comparison"]) == (rule, {"start": comparison[0], "end": comparison[1]})
    assert tree["period"] == {"start": params["start"], "end": params["end"]}
    check_values(project, tree)
    drill = client.get("/api/v1/drill", params={"metric": "revenue", "dimensions": "channel", **params}).json()
    assert (drill["comparison_rule"], drill["comparison"]) == (rule, tree["comparison"])
    assert drill["value0"] == pytest.approx(float(tree["nodes"][0]["comparison"]))
    periods = client.get("/api/v1/periods", params=params).json()
    assert (periods["comparison_rule"], periods["comparison"]) == (rule, tree["comparison"])


def test_comparison_mistakes_are_422_naming_the_parameter(client):
    for params, field in (({"comparison": "custom"}, "query.compare_start"),
                          ({"comparison": "previous", **OCT}, "query.compare_start"),
                          ({"comparison": "year_ago", **OCT}, "query.compare_start"),
                          ({"comparison": "yoy"}, "query.comparison"),
                          ({"comparison": "custom", "compare_start": "2025-10-01"}, "query.compare_end"),
                          ({"compare_start": "2025-10-31", "compare_end": "2025-10-01"}, "query.compare_end")):
        for path, extra in (("/api/v1/tree", {"root": "profit"}), ("/api/v1/drill", {"metric": "profit"}),
                            ("/api/v1/periods", {})):
            r = client.get(path, params={**extra, **NOV, **params})
            assert r.status_code == 422, (path, params)
            assert r.json()["error"]["fields"][0]["field"] == field, (path, params)
    body = {"root": "profit", **NOV, "changes": {"revenue": 1}, "comparison": "previous", **OCT}
    r = client.post("/api/v1/whatif", json=body)
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "compare_start"


UNKNOWN = [("GET", "/api/v1/tree", {"root": "profit", **NOV}), ("GET", "/api/v1/tree/series", {"root": "profit"}),
           ("GET", "/api/v1/drill", {"metric": "revenue", **NOV, "dimensions": "channel"}),
           ("GET", "/api/v1/periods", NOV), ("POST", "/api/v1/whatif", {})]


@pytest.mark.parametrize(("method", "path", "params"), UNKNOWN, ids=[u[1] for u in UNKNOWN])
def test_unknown_parameters_are_422_naming_them(client, method, path, params):
    body = {"root": "profit", **NOV, "changes": {"revenue": 1.0}} if method == "POST" else None
    ok = client.request(method, path, params=params, json=body)
    assert ok.status_code == 200, ok.text  # the same request without the stray parameter answers
    for stray in ({"compare": "previous"}, {"comparision": "year_ago"}, {"Start": "2025-11-01"}):
        r = client.request(method, path, params={**params, **stray}, json=body)
        assert r.status_code == 422, (path, stray)
        error = r.json()["error"]
        name = next(iter(stray))
        assert error["type"] == "validation" and error["fields"][0]["field"] == f"query.{name}"
        assert f"`query.{name}`" in error["message"] and "unknown parameter" in error["message"]
    if method == "POST":
        r = client.post(path, json={**body, "comparision": "previous"})
        assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "comparision"


def test_periods_give_the_explorer_its_dates(client):
    def get(**params):
        r = client.get("/api/v1/periods", params=params)
        assert r.status_code == 200, r.text
        return r.json()

    last_full = get(grain="month", day="2025-12-17", last_day="2025-12-17")
    assert last_full == {"period": {"start": "2025-11-01", "end": "2025-11-30"},
                         "comparison": {"start": "2025-10-01", "end": "2025-10-31"}, "comparison_rule": "previous",
                         "earlier": {"start": "2025-10-01", "end": "2025-10-31"},
                         "later": {"start": "2025-12-01", "end": "2025-12-31"}}
    assert get(grain="quarter", day="2025-11-30", last_day="2026-01-05")["period"] == {"start": "2025-10-01",
                                                                                      "end": "2025-12-31"}
    assert get(grain="quarter", day="2025-11-30", last_day="2025-11-30")["period"] == {"start": "2025-07-01",
                                                                                      "end": "2025-09-30"}
    feb = get(start="2024-03-01", end="2024-03-31", comparison="year_ago")
    assert feb["comparison"] == {"start": "2023-03-01", "end": "2023-03-31"}
    assert feb["earlier"] == {"start": "2024-02-01", "end": "2024-02-29"}
    for params in ({"grain": "month"}, {"start": "2025-11-01"}, {"start": "2025-11-01", "end": "2025-11-30",
                                                                 "grain": "month"}, {"day": "2025-11-01"}):
        assert client.get("/api/v1/periods", params=params).status_code == 422, params


# ------------------------------------------------------------------ /tree/series


def test_series_is_one_query_by_month(client, project):
    r = client.get("/api/v1/tree/series", params={"root": "profit", "grain": "month", "periods": 12,
                                                  "end": "2025-12-31"})
    assert r.status_code == 200, r.text
    body = r.json(parse_float=decimal.Decimal)
    assert body["grain"] == "month" and body["periods"] == [f"2025-{m:02d}-01" for m in range(1, 13)]
    assert set(body["series"]) == {"profit", "net_revenue", "costs", "revenue", "discounts", "refunds", "cogs",
                                   "shipping", "payment_fees"}
    want = project.query(metrics=["profit", "cogs"], dimensions=["metric_time__month"],
                         time_range={"start": "2025-01-01", "end": "2025-12-31"}).to_pylist()
    assert body["series"]["profit"] == [w["profit"] for w in want]
    assert body["series"]["cogs"] == [w["cogs"] for w in want]


def test_series_by_week_with_a_filter_fills_missing_buckets(client, project):
    params = [("root", "revenue_mom"), ("grain", "week"), ("periods", 3), ("end", "2025-12-31"),
              ("where", "channel = 'app'")]
    body = client.get("/api/v1/tree/series", params=params).json()
    assert body["periods"] == ["2025-12-15", "2025-12-22", "2025-12-29"]  # weeks start on Monday
    want = project.query(metrics=["revenue_mom"], dimensions=["metric_time__week"], filters=["channel = 'app'"],
                         time_range={"start": "2025-12-15", "end": "2025-12-31"}).to_pylist()
    assert body["series"]["revenue_mom"] == pytest.approx([float(w["revenue_mom"]) for w in want])
    old = client.get("/api/v1/tree/series", params={"root": "revenue", "grain": "year", "periods": 5,
                                                    "end": "2025-06-30"}).json()
    assert old["periods"][0] == "2021-01-01" and old["series"]["revenue"][:2] == [None, None]  # no data before 2023
    assert client.get("/api/v1/tree/series", params={"root": "profit", "grain": "fortnight"}).status_code == 422
    assert client.get("/api/v1/tree/series", params={"root": "profit", "periods": 0}).status_code == 422


# ------------------------------------------------------------------ /drill


def test_drill_values_sum_to_the_totals(client, project):
    params = {"metric": "revenue", **NOV, **OCT, "dimensions": "channel,country"}
    r = client.get("/api/v1/drill", params=params)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["metric"] == "revenue" and body["kind"] == "additive"
    total0 = float(direct(project, ["revenue"], "2025-10-01", "2025-10-31")["revenue"])
    total1 = float(direct(project, ["revenue"], "2025-11-01", "2025-11-30")["revenue"])
    assert {i["dimension"] for i in body["items"]} == {"channel", "country"}
    for dim in ("channel", "country"):
        items = [i for i in body["items"] if i["dimension"] == dim]
        assert set(items[0]) >= {"dimension", "value", "value0", "value1", "contribution", "explanatory_power",
                                 "surprise"}
        assert math.fsum(i["value0"] or 0 for i in items) == pytest.approx(total0)
        assert math.fsum(i["value1"] or 0 for i in items) == pytest.approx(total1)
        assert math.fsum(i["contribution"] for i in items) == pytest.approx(total1 - total0)
        assert math.fsum(i["explanatory_power"] for i in items) == pytest.approx(1.0)
        by_value = project.query(metrics=["revenue"], dimensions=[dim],
                                 time_range={"start": "2025-11-01", "end": "2025-11-30"}).to_pylist()
        assert {i["value"]: i["value1"] for i in items} == pytest.approx(
            {w[dim]: float(w["revenue"]) for w in by_value})
    causes = [i for i in body["items"] if i["root_cause"]]
    assert body["items"][:len(causes)] == causes  # root causes first
    for cause in body["root_causes"]:
        assert cause["explanatory_power"] > body["thresholds"]["t_ep"]


def test_drill_a_ratio_splits_into_rate_and_mix(client):
    body = client.get("/api/v1/drill", params={"metric": "aov", **NOV, "dimensions": "channel"}).json()
    assert body["kind"] == "ratio"
    assert math.fsum(i["contribution"] for i in body["items"]) == pytest.approx(body["change"])
    for i in body["items"]:
        if i["rate"] is not None:
            assert i["rate"] + i["mix"] == pytest.approx(i["contribution"])


def test_drill_default_dimensions_and_errors(client):
    body = client.get("/api/v1/drill", params={"metric": "profit", **NOV}).json()
    assert {"channel", "country", "is_first_order"} <= set(body["dimensions"]) and "category" not in body["dimensions"]
    bad = client.get("/api/v1/drill", params={"metric": "revenue", **NOV, "dimensions": "chanel"})
    assert bad.status_code == 400 and "did you mean `channel`" in bad.json()["error"]["suggestion"]
    assert client.get("/api/v1/drill", params={"metric": "revenue"}).status_code == 422


# ------------------------------------------------------------------ /whatif


def test_what_if_revenue_up_ten_percent_raises_profit_by_the_propagated_amount(client, project):
    body = {"root": "profit", **NOV, "where": ["country = 'US'"], "changes": {"revenue": 10.0}}
    r = client.post("/api/v1/whatif", json=body)
    assert r.status_code == 200, r.text
    nodes = {n["name"]: n for n in r.json()["nodes"]}
    now = direct(project, list(nodes), "2025-11-01", "2025-11-30", ["country = 'US'"])
    revenue = float(now["revenue"])
    assert nodes["revenue"]["new_value"] == pytest.approx(revenue * 1.1)
    assert nodes["profit"]["change"] == pytest.approx(0.1 * revenue, rel=1e-12)
    assert nodes["net_revenue"]["change"] == pytest.approx(0.1 * revenue, rel=1e-12)
    assert nodes["profit"]["new_value"] == pytest.approx(float(now["profit"]) + 0.1 * revenue, rel=1e-12)
    for name in ("costs", "cogs", "discounts"):
        assert nodes[name]["change"] == 0 and nodes[name]["value"] == pytest.approx(float(now[name]))


def test_what_if_with_a_comparison_values_both_periods(client, project):
    body = {"root": "profit", **NOV, "changes": {"revenue": 10.0}, "comparison": "year_ago"}
    answer = client.post("/api/v1/whatif", json=body).json(parse_float=decimal.Decimal)
    assert (answer["comparison_rule"], answer["comparison"]) == ("year_ago", {"start": "2024-11-01",
                                                                              "end": "2024-11-30"})
    then = direct(project, ["profit", "revenue"], "2024-11-01", "2024-11-30")
    nodes = {n["name"]: n for n in answer["nodes"]}
    assert (nodes["profit"]["comparison"], nodes["revenue"]["comparison"]) == (then["profit"], then["revenue"])
    plain = client.post("/api/v1/whatif", json={**body, "comparison": None}).json()
    assert "comparison" not in plain and "comparison" not in plain["nodes"][0]


def test_what_if_on_a_ratio_and_errors(client, project):
    r = client.post("/api/v1/whatif", json={"root": "margin", **NOV, "changes": {"cogs": -5, "orders": 3}})
    assert r.status_code == 400 and "not in the tree of `margin`" in r.json()["error"]["message"]
    nodes = {n["name"]: n for n in client.post("/api/v1/whatif", json={"root": "margin", **NOV,
                                                                        "changes": {"cogs": -5}}).json()["nodes"]}
    now = {k: float(v) for k, v in direct(project, ["profit", "net_revenue", "cogs"], **NOV).items()}
    assert nodes["margin"]["new_value"] == pytest.approx((now["profit"] + 0.05 * now["cogs"]) / now["net_revenue"])
    assert client.post("/api/v1/whatif", json={"root": "profit", **NOV}).status_code == 422
    assert client.post("/api/v1/whatif", json={"root": "profit", **NOV, "changes": {"revenue": "ten"}}).status_code == 422


# ------------------------------------------------------------------ GraphQL metricTree


TREE = """query ($method: String) { metricTree(root: "profit", period: {start: "2025-11-01", end: "2025-11-30"},
  method: $method) { method exact residual nodes { name change contribution share } edges { parent child } } }"""


def test_graphql_metric_tree_has_the_same_contributions(client):
    rest = client.get("/api/v1/tree", params={"root": "profit", **NOV, "method": "lmdi"}).json()
    out = client.post("/graphql", json={"query": TREE, "variables": {"method": "lmdi"}}).json()
    tree = out["data"]["metricTree"]
    assert (tree["method"], tree["exact"], tree["residual"]) == ("lmdi", True, 0)
    assert {n["name"]: n["contribution"] for n in tree["nodes"]} == pytest.approx(
        {n["name"]: n["contribution"] for n in rest["nodes"]})
    assert {n["name"]: n["share"] for n in tree["nodes"]} == pytest.approx({n["name"]: n["share"] for n in rest["nodes"]})
    default = client.post("/graphql", json={"query": TREE}).json()["data"]["metricTree"]
    assert default["method"] == "shapley"
    bad = client.post("/graphql", json={"query": TREE, "variables": {"method": "banzhaf"}}).json()
    assert bad["data"] is None and "unknown decomposition method" in bad["errors"][0]["message"]


RULED = """query ($rule: ComparisonRule, $c: PeriodInput) { metricTree(root: "profit",
  period: {start: "2024-03-01", end: "2024-03-31"}, comparisonRule: $rule, comparison: $c) {
  period { start end } comparison { start end } nodes { name value comparisonValue } } }"""


def test_graphql_metric_tree_takes_the_same_comparison_rule(client):
    for rule, dates, expected in ((None, None, ("2024-02-01", "2024-02-29")),
                                  ("YEAR_AGO", None, ("2023-03-01", "2023-03-31")),
                                  (None, {"start": "2024-01-05", "end": "2024-01-09"}, ("2024-01-05", "2024-01-09"))):
        out = client.post("/graphql", json={"query": RULED, "variables": {"rule": rule, "c": dates}}).json()
        tree = out["data"]["metricTree"]
        assert tree["comparison"] == {"start": expected[0], "end": expected[1]}, rule
        params = {"root": "profit", "start": "2024-03-01", "end": "2024-03-31", "comparison": "custom",
                  "compare_start": expected[0], "compare_end": expected[1]}
        rest = client.get("/api/v1/tree", params=params).json()
        assert {n["name"]: n["comparisonValue"] for n in tree["nodes"]} == pytest.approx(
            {n["name"]: float(n["comparison"]) for n in rest["nodes"]})
    bad = client.post("/graphql", json={"query": RULED, "variables": {"rule": "PREVIOUS", "c": {
        "start": "2024-01-05", "end": "2024-01-09"}}}).json()
    assert bad["data"] is None and "computes its own dates" in bad["errors"][0]["message"]


def test_today_is_the_default_end_of_a_series(client):
    body = client.get("/api/v1/tree/series", params={"root": "orders", "grain": "day", "periods": 2}).json()
    assert body["periods"][-1] == dt.date.today().isoformat()
