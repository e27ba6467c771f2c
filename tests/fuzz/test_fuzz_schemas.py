"""Schemathesis against the app in-process (ASGI): every REST operation from the OpenAPI document, and every
GraphQL root field from introspection. Never a 5xx, answers as documented, and each 4xx says what and how.

Each operation runs up to OPERATION_CASES generated cases (max_examples; tiny inputs such as /meta's run fewer).
"""

from __future__ import annotations

import pytest
import schemathesis
from hostile import check_graphql, check_rest, scaled
from hypothesis import HealthCheck, settings
from schemathesis.checks import positive_data_acceptance

OPERATION_CASES = scaled(250)
GRAPHQL_CASES = scaled(200)  # its generated operations are the costliest cases (~35 ms each)


@pytest.fixture(scope="module")
def openapi(app):
    return schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.fixture(scope="module")
def graphql(app):
    return schemathesis.graphql.from_asgi("/graphql", app)


rest = schemathesis.pytest.from_fixture("openapi")
gql = schemathesis.pytest.from_fixture("graphql")


class Answer:
    """A schemathesis response seen through the shape `check_rest` reads."""

    def __init__(self, response):
        self.status_code, self.content, self.text = response.status_code, response.content, response.text


# /reload re-reads model files (a server action, not a query); GraphQL has its own run below
@rest.include(path_regex="^/api/v1/").exclude(path_regex="^/api/v1/reload$").parametrize()
@settings(max_examples=OPERATION_CASES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_rest_operations(case):
    # schema-valid names the model does not know (`metrics: ["x"]`) are rightly a 400 with a suggestion
    response = case.call_and_validate(excluded_checks=[positive_data_acceptance])
    # a path parameter is sent too: a dataset named `AqlSyntaxError` is echoed as unknown, which leaks nothing
    check_rest(f"{case.operation.label} (schemathesis)", Answer(response),
               f"{case.body} {case.query} {case.path_parameters}")


@gql.parametrize()
@settings(max_examples=GRAPHQL_CASES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_graphql_fields(case):
    # our own check, not schemathesis': a client error here is code BAD_QUERY, which it does not know as one
    response = case.call()
    check_graphql(f"POST /graphql {case.operation.label} (schemathesis)", Answer(response), str(case.body))
