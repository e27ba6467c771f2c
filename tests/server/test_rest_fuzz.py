"""Fuzz the JSON endpoints against the OpenAPI schema: no 5xx, and every answer matches the documented ones."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import positive_data_acceptance


@pytest.fixture(scope="module")
def api_schema(live):
    return schemathesis.openapi.from_url(live.url + "/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.include(path_regex="^/api/v1/(query|explain|meta)$").parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms(case):
    # schema-valid names the model does not know (`metrics: ["x"]`) are rightly a 400 with a suggestion
    case.call_and_validate(excluded_checks=[positive_data_acceptance])
