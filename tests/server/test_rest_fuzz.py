"""The real-HTTP share of the fuzzing (the bulk runs in-process in tests/fuzz): schemathesis over every REST
operation and GraphQL through uvicorn on a loopback port. No 5xx, answers as documented, typed 4xx errors."""

from __future__ import annotations

import re

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import positive_data_acceptance

CASES = 30  # per operation (max_examples); schemathesis adds its coverage cases
LEAKS = re.compile(r"Traceback|File \"|site-packages|sqlglot|duckdb\.|[A-Z][a-z]+(?:Error|Exception)\b")
RAN = {"rest": 0, "graphql": 0}


@pytest.fixture(scope="module")
def api_schema(live):
    return schemathesis.openapi.from_url(live.url + "/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.include(path_regex="^/api/v1/").exclude(path_regex="^/api/v1/reload$").parametrize()
@settings(max_examples=CASES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_api_conforms(case):
    # schema-valid names the model does not know (`metrics: ["x"]`) are rightly a 400 with a suggestion
    response = case.call_and_validate(excluded_checks=[positive_data_acceptance])
    RAN["rest"] += 1
    if response.status_code >= 400:
        error = response.json()["error"]
        assert error["message"] and error["suggestion"] and not LEAKS.search(response.text), response.text


def test_graphql_over_http(live):
    """Hostile `where`s through the real socket: a client error each time, never an internal one."""
    field = st.sampled_from(["channel", "country", "orderedAt", "isFirstOrder", "nosuch"])
    value = st.one_of(st.text(max_size=8).map(lambda s: '"' + s.replace("\\", "").replace('"', "") + '"'),
                      st.integers(-(2**40), 2**40).map(str), st.sampled_from(["true", "null", "[]", '"\'"']))
    op = st.sampled_from(["equals", "in", "gt", "between", "contains", "isNull", "nosuch"])

    with httpx.Client(base_url=live.url, timeout=30) as http:
        @settings(max_examples=CASES * 4, deadline=None, database=None)
        @given(f=field, o=op, v=value, depth=st.integers(0, 50))
        def case(f, o, v, depth):
            where = "{not: " * depth + f"{{{f}: {{{o}: {v}}}}}" + "}" * depth
            r = http.post("/graphql", json={"query": f"{{ query(where: {where}) {{ revenue }} }}"})
            RAN["graphql"] += 1
            assert r.status_code < 500, r.text
            for error in r.json().get("errors") or ():
                assert error["extensions"]["code"] != "INTERNAL_SERVER_ERROR" and not LEAKS.search(error["message"])

        case()
    assert RAN["graphql"] == CASES * 4


def test_cases_ran():
    """The counts the closing note quotes: every REST operation ran its cases over the socket."""
    print(f"real HTTP fuzz cases: REST {RAN['rest']}, GraphQL {RAN['graphql']}")
    assert RAN["rest"] >= CASES * 8 or RAN["rest"] == 0  # 0: the REST run was deselected (-k)
