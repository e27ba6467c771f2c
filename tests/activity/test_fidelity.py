"""Temporal-join fidelity (issue 11, item 8), on DuckDB and PostgreSQL alike.

- `first_value` / `last_value` take the first / last NON-NULL value in (ts, activity_id) order, as dbt-aql's
  min/max over `ts || value` does: NULLs at both ends of a window, in between, and windows of only NULLs.
- AQL written for dbt-aql, with its `{{dbt_aql.json_extract(...)}}` Jinja in filter and join clauses, builds
  the same rows as the neutral spelling (`feature_json.x`, `joined.x`, `primary.x`).
- `validate` compiles every activity, dataset and view against the warehouse and reports what the warehouse
  refuses, a text time column and non-unique keys as model errors with file and line; a build refuses the
  same data before publishing anything.

Expected values are worked out by hand from the inline rows next to them. `day(n)` = 2024-01-01 + n days.
"""

from __future__ import annotations

import pytest
import yaml

from semantic import Project
from semantic.errors import ModelError
from semantic.project.verify import validate_project
from tests.activity.test_edge_cases import BUY, VISIT, activity, agg, dataset, day

N = None

# c1 visits v1 (d2), v2 (d6). Buys in (ts, id) order, amount and sku:
#   n1 d0 NULL | n2 d1 10 'a' | n3 d3 NULL | n4 d4 20 'b' | n5 d5 NULL | n6 d7 30 'c' | n7 d8 NULL
#   (the first and the last events are NULL; NULLs sit between values and at both ends of v1's window)
# c2 visits w1 (d1); buys m1 (d2), m2 (d3), both NULL: every window holds only NULLs.
# c3 visits z1 (d1) and never buys.
# c4 visits t1 (d9); buys on d2: a NULL, b 9, c 1 and on d3: d 7, e 2, f NULL. Ties on ts go by
#   activity_id: first non-NULL is b (9), last non-NULL is e (2). (dbt-aql's min/max(ts || value) would
#   break the same ties by the value's text instead: 1 and 7.)
AMOUNT = {**BUY, "sku": "text"}
NULLS_STREAM = {"name": "nulls", "entity": "customer", "activities": [
    activity("visit", VISIT, [("c1", day(6), "v2"), ("c2", day(1), "w1"), ("c1", day(2), "v1"),
                              ("c3", day(1), "z1"), ("c4", day(9), "t1")], id="visit_id"),
    activity("buy", AMOUNT, [
        ("c1", day(5), "n5", N, N), ("c1", day(0), "n1", N, N), ("c1", day(8), "n7", N, N),
        ("c1", day(4), "n4", 20, "b"), ("c1", day(1), "n2", 10, "a"), ("c1", day(7), "n6", 30, "c"),
        ("c1", day(3), "n3", N, N),
        ("c2", day(3), "m2", N, N), ("c2", day(2), "m1", N, N),
        ("c4", day(3), "f", N, N), ("c4", day(2), "c", 1, "y"), ("c4", day(3), "d", 7, "x"),
        ("c4", day(2), "a", N, N), ("c4", day(3), "e", 2, "w"), ("c4", day(2), "b", 9, "z"),
    ], id="buy_id", features=("amount", "sku")),
]}
WINDOWS = ("all_ever", "before", "after", "in_between")


def ends(window: str) -> dict:
    return agg(f"aggregate_{window}",
               {"name": f"first_{window}", "agg": "first_value", "expr": "amount"},
               {"name": f"last_{window}", "agg": "last_value", "expr": "amount"},
               {"name": f"last_sku_{window}", "agg": "last_value", "expr": "sku"})


# visit -> {window: (first_value, last_value, last sku)}; windows are strict before/after, (p.ts, next] between
EXPECTED = {
    "v1": {"all_ever": (10, 30, "c"), "before": (10, 10, "a"), "after": (20, 30, "c"), "in_between": (20, 20, "b")},
    "v2": {"all_ever": (10, 30, "c"), "before": (10, 20, "b"), "after": (30, 30, "c"), "in_between": (30, 30, "c")},
    "w1": {w: (N, N, N) for w in WINDOWS},
    "z1": {w: (N, N, N) for w in WINDOWS},
    "t1": {"all_ever": (9, 2, "w"), "before": (9, 2, "w"), "after": (N, N, N), "in_between": (N, N, N)},
}
ID = {"name": "visit_id", "expr": "activity_id"}
DATASETS = [dataset("null_ends", "nulls", "visit", [ID], [ends(w) for w in WINDOWS])]

# dbt_aql compat (the AQL default): in between is (p.ts, next.ts), the same rows here
NULLS_AQL = """
using nulls
select all visit (activity_id as visit_id)
aggregate between buy (first_value(amount) as opening, last_value(amount) as closing, last_value(sku) as closing_sku)
aggregate all buy (first_value(amount) as first_ever, last_value(amount) as last_ever)
"""

# The same dataset twice: dbt-aql's Jinja and the neutral spelling, joining buys whose sku is the visit's source.
JINJA = {
    "neutral": """
using tagged
select all visit (activity_id as visit_id filter feature_json.source <> 'ads')
append first after buy (activity_id as first_match join joined.sku = primary.source)
aggregate all buy (count(activity_id) as matches join joined.sku = primary.source and joined.sku <> 'zz')
""",
    "jinja": """
using tagged
select all visit (activity_id as visit_id filter {{dbt_aql.json_extract('{feature_json}', 'source')}} <> 'ads')
append first after buy (activity_id as first_match
    join {{ dbt_aql.json_extract( "{joined}.{feature_json}" , "sku" ) }} = {{dbt_aql.json_extract('{primary}.{feature_json}','source')}})
aggregate all buy (count(activity_id) as matches
    join {{-dbt_aql.json_extract('{joined}.{feature_json}', 'sku')-}} = {{ dbt_aql.json_extract("{primary}.{feature_json}", 'source') }}
     and {{dbt_aql.json_extract('{joined}.{feature_json}', "sku")}} <> 'zz')
""",
}
# c1 visits p1 d1 source 'b', p2 d3 'ads' (filtered out), p3 d4 'a'; buys k1 d2 'a', k2 d3 'b', k3 d5 'a', k4 d6 'b'
TAGGED_STREAM = {"name": "tagged", "entity": "customer", "activities": [
    activity("visit", {**VISIT, "source": "text"}, [("c1", day(1), "p1", "b"), ("c1", day(3), "p2", "ads"),
                                                    ("c1", day(4), "p3", "a")], id="visit_id", features=("source",)),
    activity("buy", {**AMOUNT}, [("c1", day(2), "k1", 1, "a"), ("c1", day(3), "k2", 2, "b"),
                                 ("c1", day(5), "k3", 3, "a"), ("c1", day(6), "k4", 4, "b")],
             id="buy_id", features=("amount", "sku")),
]}
JINJA_EXPECTED = {"p1": ("k2", 2), "p3": ("k3", 2)}  # first buy after with sku = source; buys with that sku


def settings(request, label: str) -> dict:
    out = {"name": label}
    if request.param == "postgres":
        out["warehouse"] = {"engine": "postgres", "dsn": request.getfixturevalue("fresh_database")(label)}
    return out


@pytest.fixture(scope="module", params=["duckdb", "postgres"])
def project(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"fidelity_{request.param}")
    (root / "models").mkdir()
    (root / "phloem.yml").write_text(yaml.safe_dump(settings(request, "fidelity")))
    (root / "models" / "nulls.yml").write_text(yaml.safe_dump(
        {"streams": [NULLS_STREAM, TAGGED_STREAM], "datasets": DATASETS}, sort_keys=False))
    (root / "models" / "nulls_aql.aql").write_text(NULLS_AQL)
    for name, text in JINJA.items():
        (root / "models" / f"{name}.aql").write_text(text)
    p = Project.load(root)
    assert p.engine.dialect == request.param
    p.build()
    yield p
    p.close()


def rows_by_visit(project, name: str) -> dict[str, dict]:
    return {r["visit_id"]: r for r in project.dataset(name).to_pylist()}


@pytest.mark.parametrize("window", WINDOWS)
def test_first_and_last_value_skip_nulls(project, window):
    rows = rows_by_visit(project, "null_ends")
    got = {v: (r[f"first_{window}"], r[f"last_{window}"], r[f"last_sku_{window}"]) for v, r in rows.items()}
    assert got == {v: EXPECTED[v][window] for v in EXPECTED}


def test_first_and_last_value_skip_nulls_in_aql(project):
    rows = rows_by_visit(project, "nulls_aql")
    got = {v: (r["opening"], r["closing"], r["closing_sku"], r["first_ever"], r["last_ever"]) for v, r in rows.items()}
    assert got == {v: (*EXPECTED[v]["in_between"], *EXPECTED[v]["all_ever"][:2]) for v in EXPECTED}


def test_dbt_aql_jinja_means_the_neutral_spelling(project):
    def spelled(name: str) -> list:
        d = project.model.datasets[name]
        return [[" ".join(f.split()) for f in (*d.primary.filter, *(x for a in d.append for x in (*a.filter, *a.join)))]]

    assert spelled("jinja") == spelled("neutral")
    for name in JINJA:
        got = {v: (r["first_match"], r["matches"]) for v, r in rows_by_visit(project, name).items()}
        assert got == JINJA_EXPECTED, name


# ------------------------------------------------------------------ validate against the warehouse

ORDERS = {"customer": "text", "ts": "timestamp", "order_id": "text", "total": "integer", "placed_on": "text"}
SHOP_STREAM = {"name": "shop", "entity": "customer", "activities": [
    activity("order", ORDERS, [("c1", day(1), "o1", 10, "2024-01-02"), ("c1", day(2), "o2", 20, "2024-01-03"),
                               ("c2", day(2), "o3", 5, "2024-01-03")], id="order_id",
             features=("order_id", "total", "placed_on")),
]}
SHOP_DATASET = dataset("orders", "shop", "order", ["order_id", "customer", "total", "placed_on",
                                                   {"name": "ordered_at", "expr": "ts"}], [])
SHOP_VIEW = {"name": "orders", "dataset": "orders", "primary_key": "order_id", "time": "ordered_at",
             "dimensions": ["customer"], "measures": [{"name": "revenue", "agg": "sum", "expr": "total"}]}


def shop(request, tmp_path, view: dict, stream: dict = SHOP_STREAM, data: dict = SHOP_DATASET):
    (tmp_path / "models").mkdir()
    (tmp_path / "phloem.yml").write_text(yaml.safe_dump(settings(request, "shop")))
    text = yaml.safe_dump({"streams": [stream], "datasets": [data], "views": [view]}, sort_keys=False)
    (tmp_path / "models" / "shop.yml").write_text(text)
    return text.splitlines()


def line_of(rows: list[str], needle: str) -> int:
    [hit] = [i for i, r in enumerate(rows, 1) if needle in r]
    return hit


def problems(root) -> list:
    with pytest.raises(ModelError) as info:
        validate_project(root)
    return info.value.problems


def refused_by_build(root, problem, run) -> None:
    """`run(project)` builds, and the build refuses with `problem` before publishing anything."""
    project = Project.load(root)
    try:
        with pytest.raises(ModelError) as info:
            run(project)
        assert [str(x) for x in info.value.problems] == [str(problem)]
        assert not project.engine.table_exists("phloem", "orders")
    finally:
        project.close()


@pytest.fixture(params=["duckdb", "postgres"])
def engine(request):
    return request


def test_validate_passes_a_sound_project(engine, tmp_path):
    shop(engine, tmp_path, SHOP_VIEW)
    assert validate_project(tmp_path).model.views["orders"].time == "ordered_at"


def test_text_time_column(engine, tmp_path):
    rows = shop(engine, tmp_path, {**SHOP_VIEW, "time": "placed_on"})
    [p] = problems(tmp_path)
    assert (p.file, p.line, p.key) == ("models/shop.yml", line_of(rows, "time: placed_on"), "orders.time")
    assert p.message == "time column `placed_on` of view `orders` is text, not a timestamp or date"
    assert "cast(placed_on as timestamp)" in p.suggestion
    (tmp_path / "models" / "metrics.yml").write_text("metrics: [{name: revenue, measure: orders.revenue}]\n")
    # a query on the unbuilt project builds first, and gets the same model error
    refused_by_build(tmp_path, p, lambda project: project.query(metrics=["revenue"], dimensions=["metric_time__month"]))


def test_non_unique_primary_key_at_validate_and_build(engine, tmp_path):
    rows = shop(engine, tmp_path, {**SHOP_VIEW, "primary_key": "customer"})
    [p] = problems(tmp_path)
    assert (p.file, p.line, p.key) == ("models/shop.yml", line_of(rows, "primary_key: customer"), "orders.primary_key")
    assert p.message == "primary key `customer` of view `orders` is not unique: 1 value repeats (e.g. `c1` on 2 rows)"
    assert "unique per row" in p.suggestion
    refused_by_build(tmp_path, p, lambda project: project.build())


def test_non_unique_activity_id(engine, tmp_path):
    twice = {**SHOP_STREAM, "activities": [activity("order", ORDERS, [
        ("c1", day(1), "o1", 10, "x"), ("c1", day(2), "o1", 20, "x"), ("c2", day(2), "o3", 5, "x"),
        ("c2", day(3), "o3", 6, "x"), ("c2", day(4), "o3", 7, "x")], id="order_id",
        features=("order_id", "total", "placed_on"))]}
    rows = shop(engine, tmp_path, {**SHOP_VIEW, "primary_key": None}, stream=twice)
    [p] = problems(tmp_path)
    assert (p.file, p.line, p.key) == ("models/shop.yml", line_of(rows, "id: order_id"), "shop.activities.order.id")
    assert p.message == "activity `order`'s id `order_id` is not unique: 2 values repeat (e.g. `o3` on 3 rows)"


def test_warehouse_refusals_point_at_their_lines(engine, tmp_path):
    broken = {**SHOP_DATASET, "columns": [*SHOP_DATASET["columns"], {"name": "odd", "expr": "total + customer"}]}
    view = {**SHOP_VIEW, "measures": [{"name": "revenue", "agg": "sum", "expr": "customer"}]}
    rows = shop(engine, tmp_path, view, data=broken)
    found = problems(tmp_path)
    assert [(p.line, p.key) for p in found] == [(line_of(rows, "name: odd"), "orders.columns.odd")]
    message = found[0].message
    assert message.startswith("the warehouse refuses dataset `orders`: ")
    assert "select" not in message.lower() and "_phloem" not in message and "LINE" not in message
    # the view over the broken dataset is checked once the dataset is fixed
    shop_ok = yaml.safe_dump({"streams": [SHOP_STREAM], "datasets": [SHOP_DATASET], "views": [view]}, sort_keys=False)
    (tmp_path / "models" / "shop.yml").write_text(shop_ok)
    [p] = problems(tmp_path)
    rows = shop_ok.splitlines()
    assert (p.line, p.key) == (line_of(rows, "name: revenue"), "orders.measures.revenue")
    assert p.message.startswith("the warehouse refuses `measures.revenue` of view `orders`: ")


def test_activity_sql_the_warehouse_refuses(engine, tmp_path):
    missing = {**SHOP_STREAM, "activities": [{"name": "order", "sql": "select customer, ts from no_such_table",
                                              "features": []}]}
    rows = shop(engine, tmp_path, {"name": "raw", "sql": "select 1 as x"}, stream=missing,
                data=dataset("orders", "shop", "order", ["customer"], []))
    [p] = problems(tmp_path)
    assert (p.line, p.key) == (line_of(rows, "sql: select customer"), "shop.activities.order.sql")
    assert p.message.startswith("the warehouse refuses activity `order`: ") and "no_such_table" in p.message
