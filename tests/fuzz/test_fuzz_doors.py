"""Hypothesis against every door, in-process: hostile filters over the model's real names, semantic SQL and
GraphQL `where`s. Never a 5xx; every 4xx has a message and a suggestion and leaks nothing internal.

Each test runs exactly BUDGET[name] cases (max_examples) and checks it did; the run prints the tally per endpoint.
"""

from __future__ import annotations

import json

import pytest
from hostile import (
    CASES,
    WhereFields,
    filters,
    graphql_operations,
    graphql_variables,
    metric_queries,
    names_of,
    scaled,
    semantic_sql,
    structured_filters,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from semantic.meta import describe

BUDGET = {  # cases per test; with the schemathesis runs in test_fuzz_schemas.py at least 20,000 in all
    "query": 3000, "query_structured": 1500, "explain": 3500, "sql": 3500, "sql_params": 500,
    "tree": 700, "series": 500, "drill": 500, "whatif": 500, "graphql": 2500, "graphql_variables": 1000,
}
BUDGET = {name: scaled(n) for name, n in BUDGET.items()}


def fuzz(name: str):
    """Hypothesis settings of one fuzz test: its budget, no deadline (the warehouse answers some cases)."""
    return settings(max_examples=BUDGET[name], deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


@pytest.fixture(scope="module")
def names(app):
    return names_of(describe(app.state.runtime.project.compiler), ())


@pytest.fixture(scope="module")
def where_fields(client) -> WhereFields:
    out = client.post("/graphql", json={"query": "{ meta { fields { field kind type } } }"}).json()
    fields = out["data"]["meta"]["fields"]
    kinds = {"String": "text", "Float": "number", "Boolean": "boolean"}
    return WhereFields({f["field"]: kinds.get(f["type"], "time") for f in fields if f["kind"] == "dimension"},
                       tuple(f["field"] for f in fields if f["kind"] == "metric"),
                       tuple(f["field"] for f in fields if f["kind"] == "dimension" and f["type"] != "TimeBuckets"))


@pytest.fixture(scope="module")
def ran():
    """Counts the cases a test ran, and checks at its end that the whole budget ran."""
    def start(name: str):
        before = CASES[name]
        return lambda: CASES[name] - before
    return start


def post_checked(client, endpoint: str, path: str, body: dict, sent: str) -> None:
    from hostile import check_rest
    check_rest(endpoint, client.post(path, content=json.dumps(body).encode(), headers={"content-type": "application/json"}),
               sent)


# ------------------------------------------------------------------ REST: /api/v1/query and /explain


def test_query_filters(client, names, ran):
    count = ran("POST /api/v1/query")

    @fuzz("query")
    @given(body=metric_queries(names))
    def case(body):
        post_checked(client, "POST /api/v1/query", "/api/v1/query", body, json.dumps(body))

    case()
    assert count() == BUDGET["query"]


def test_query_structured_filters(client, names, ran):
    count = ran("POST /api/v1/query (structured filters)")

    @fuzz("query_structured")
    @given(metric=st.sampled_from(names.metrics), f=structured_filters(names))
    def case(metric, f):
        body = {"metrics": [metric], "filters": [f]}
        post_checked(client, "POST /api/v1/query (structured filters)", "/api/v1/query", body,
                     json.dumps(body))

    case()
    assert count() == BUDGET["query_structured"]


def test_explain_filters(client, names, ran):
    count = ran("POST /api/v1/explain")

    @fuzz("explain")
    @given(metric=st.sampled_from(names.metrics), where=st.lists(filters(names), min_size=1,
                                                                 max_size=2))
    def case(metric, where):
        post_checked(client, "POST /api/v1/explain", "/api/v1/explain", {"metrics": [metric], "filters": where},
                     " ".join(where))

    case()
    assert count() == BUDGET["explain"]


# ------------------------------------------------------------------ REST: /api/v1/sql


def test_semantic_sql(client, names, ran):
    count = ran("POST /api/v1/sql")

    @fuzz("sql")
    @given(sql=semantic_sql(names))
    def case(sql):
        post_checked(client, "POST /api/v1/sql", "/api/v1/sql", {"sql": sql}, sql)

    case()
    assert count() == BUDGET["sql"]


def test_semantic_sql_parameters(client, names, ran):
    count = ran("POST /api/v1/sql (parameters)")
    value = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8),
                      st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=2), st.integers(),
                                                                           max_size=1))

    @fuzz("sql_params")
    @given(dim=st.sampled_from(names.dimensions), n=st.integers(1, 3), params=st.lists(value, max_size=3))
    def case(dim, n, params):
        sql = f"select measure(order_value) from order_totals where {dim} = ${n}"
        post_checked(client, "POST /api/v1/sql (parameters)", "/api/v1/sql", {"sql": sql, "params": params},
                     sql + json.dumps(params))

    case()
    assert count() == BUDGET["sql_params"]


# ------------------------------------------------------------------ the explorer: tree, series, drill, what-if


def where_params(where: list[str]) -> list[tuple[str, str]]:
    return [("where", w.replace("\x00", "")) for w in where]  # a URL cannot carry NUL; the body doors get it


def test_tree_where(client, names, ran):
    count = ran("GET /api/v1/tree")
    period = st.sampled_from([("2024-01-01", "2024-01-31"), ("2024-02-01", "2024-01-01"), ("0001-01-01", "9999-12-31")])

    @fuzz("tree")
    @given(root=st.sampled_from([*names.metrics, "nosuch"]), p=period, method=st.sampled_from(
        ["shapley", "lmdi", "leave_one_out", "nosuch"]), where=st.lists(filters(names), max_size=2))
    def case(root, p, method, where):
        params = [("root", root), ("start", p[0]), ("end", p[1]), ("method", method), *where_params(where)]
        from hostile import check_rest
        check_rest("GET /api/v1/tree", client.get("/api/v1/tree", params=params), " ".join(where) + root)

    case()
    assert count() == BUDGET["tree"]


def test_series_where(client, names, ran):
    count = ran("GET /api/v1/tree/series")

    @fuzz("series")
    @given(root=st.sampled_from([*names.metrics, "nosuch"]), grain=st.sampled_from(["day", "week", "month", "decade"]),
           periods=st.integers(-1, 1001), where=st.lists(filters(names), max_size=2))
    def case(root, grain, periods, where):
        params = [("root", root), ("grain", grain), ("periods", str(periods)), ("end", "2024-06-30"),
                  *where_params(where)]
        from hostile import check_rest
        check_rest("GET /api/v1/tree/series", client.get("/api/v1/tree/series", params=params), " ".join(where) + root)

    case()
    assert count() == BUDGET["series"]


def test_drill_where(client, names, ran):
    count = ran("GET /api/v1/drill")

    @fuzz("drill")
    @given(metric=st.sampled_from([*names.metrics, "nosuch"]),
           dims=st.lists(st.sampled_from([*names.dimensions, "nosuch", ""]), max_size=3).map(",".join),
           where=st.lists(filters(names), max_size=2))
    def case(metric, dims, where):
        params = [("metric", metric), ("start", "2024-02-01"), ("end", "2024-02-29"), ("dimensions", dims),
                  *where_params(where)]
        from hostile import check_rest
        check_rest("GET /api/v1/drill", client.get("/api/v1/drill", params=params), " ".join(where) + metric + dims)

    case()
    assert count() == BUDGET["drill"]


def test_whatif_where(client, names, ran):
    count = ran("POST /api/v1/whatif")

    @fuzz("whatif")
    @given(root=st.sampled_from([*names.metrics, "nosuch"]),
           changes=st.dictionaries(st.sampled_from([*names.metrics, "nosuch"]),
                                   st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=2),
           where=st.lists(filters(names), max_size=2))
    def case(root, changes, where):
        body = {"root": root, "start": "2024-01-01", "end": "2024-01-31", "where": where, "changes": changes}
        post_checked(client, "POST /api/v1/whatif", "/api/v1/whatif", body, json.dumps(body))

    case()
    assert count() == BUDGET["whatif"]


# ------------------------------------------------------------------ GraphQL


def test_graphql_where(client, where_fields, ran):
    from hostile import check_graphql
    count = ran("POST /graphql")

    @fuzz("graphql")
    @given(operation=graphql_operations(where_fields))
    def case(operation):
        check_graphql("POST /graphql", client.post("/graphql", json={"query": operation}), operation)

    case()
    assert count() == BUDGET["graphql"]


def test_graphql_where_variables(client, where_fields, ran):
    from hostile import check_graphql
    count = ran("POST /graphql (variables)")
    metric = where_fields.metrics[0]

    @fuzz("graphql_variables")
    @given(where=graphql_variables(where_fields))
    def case(where):
        body = {"query": f"query ($w: Where) {{ query(where: $w) {{ {metric} }} }}", "variables": {"w": where}}
        check_graphql("POST /graphql (variables)", client.post("/graphql", content=json.dumps(body).encode(),
                                                               headers={"content-type": "application/json"}),
                      json.dumps(where))

    case()
    assert count() == BUDGET["graphql_variables"]
