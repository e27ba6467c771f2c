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
    assert tree["comparison"] == {"start": "2025-10-02", "end": "2025-10-31"}  # 30 days just before
    assert [(n["name"], n["level"]) for n in tree["nodes"]] == [("aov", 0), ("revenue", 1), ("orders", 1)]
    filters = ["country in ('US', 'DE')", "channel != 'marketplace'"]
    now = direct(project, ["aov", "revenue", "orders"], "2025-11-01", "2025-11-30", filters)
    before = direct(project, ["aov", "revenue", "orders"], "2025-10-02", "2025-10-31", filters)
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


def test_today_is_the_default_end_of_a_series(client):
    body = client.get("/api/v1/tree/series", params={"root": "orders", "grain": "day", "periods": 2}).json()
    assert body["periods"][-1] == dt.date.today().isoformat()
