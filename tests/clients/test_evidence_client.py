"""Evidence's PostgreSQL connector (`@evidence-dev/postgres`, Node) against the live door.

tests/clients/evidence/run_query.mjs calls the connector as Evidence does (`getRunner(options)` then
`runner(sql, path, batchSize)`: a row count through `WITH root AS (…) SELECT COUNT(*)`, then the rows through a
pg-cursor read `batchSize` rows at a time; `testConnection(options)`); its JSON is compared with
`project.query(...)`. The package is installed by .ci/run (`npm ci --prefix tests/clients/evidence`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest

FOLDER = Path(__file__).resolve().parent / "evidence"
SCRIPT = FOLDER / "run_query.mjs"

DAILY = """
-- daily revenue by channel, as an Evidence source query (comment and trailing semicolon included)
SELECT metric_time AS day, channel, MEASURE(revenue) AS revenue, MEASURE(orders) AS orders
FROM metrics
WHERE metric_time >= '2024-01-01' AND metric_time < '2025-01-01'
GROUP BY 1, 2
ORDER BY 1, 2;
"""
FIRST_ORDERS = ("SELECT is_first_order, MEASURE(orders) AS orders, SUM(gross_revenue) AS gross_revenue "
                "FROM orders GROUP BY is_first_order ORDER BY is_first_order")


@pytest.fixture(scope="session")
def evidence():
    """`evidence(live, sql=None, batch_size=100, test=False, **option_overrides)` -> (exit code, JSON answer)."""
    node = shutil.which("node")
    if node is None or not (FOLDER / "node_modules" / "@evidence-dev" / "postgres").is_dir():
        pytest.fail("Evidence's connector is not installed: npm ci --prefix tests/clients/evidence "
                    "(Node 18+; .ci/run does it)", pytrace=False)

    def run(live, sql: str | None = None, batch_size: int = 100, test: bool = False, **overrides):
        payload = {"options": {**live.credentials(), **overrides}, "sql": sql, "batchSize": batch_size,
                   "test": test}
        done = subprocess.run([node, str(SCRIPT), json.dumps(payload)], capture_output=True, text=True,
                              timeout=60, cwd=FOLDER, env={**os.environ, "TZ": "UTC"})
        assert done.stdout.strip(), done.stderr
        return done.returncode, json.loads(done.stdout.splitlines()[-1])

    return run


def _daily_reference(project) -> list[tuple]:
    table = project.query(metrics=["revenue", "orders"], dimensions=["metric_time__day", "channel"],
                          time_range={"start": "2024-01-01", "end": "2024-12-31"},
                          order_by=["metric_time__day", "channel"])
    return [(r["metric_time__day"].isoformat(), r["channel"], float(r["revenue"]), r["orders"])
            for r in table.to_pylist()]


def _daily_rows(answer: dict) -> list[tuple]:
    # node-postgres reads a DATE as local midnight (TZ=UTC here); Evidence's number parser is parseFloat
    return [(r["day"][:10], r["channel"], r["revenue"], r["orders"]) for r in answer["rows"]]


def test_evidence_runner_reads_a_metric_query_in_batches(evidence, server):
    code, answer = evidence(server, DAILY, batch_size=100)
    assert code == 0, answer
    want = _daily_reference(server.project)
    assert len(want) > 300  # several batches
    assert _daily_rows(answer) == want
    assert answer["expectedRowCount"] == len(want)  # Evidence's WITH root AS (…) SELECT COUNT(*) query
    full, rest = divmod(len(want), 100)
    assert answer["batches"] == [100] * full + ([rest] if rest else [])
    assert answer["columnTypes"] == [
        {"name": "day", "evidenceType": "date", "typeFidelity": "precise"},
        {"name": "channel", "evidenceType": "string", "typeFidelity": "precise"},
        {"name": "revenue", "evidenceType": "number", "typeFidelity": "precise"},
        {"name": "orders", "evidenceType": "number", "typeFidelity": "precise"}]


def test_evidence_view_query_with_a_boolean_dimension(evidence, server):
    code, answer = evidence(server, FIRST_ORDERS, batch_size=1)
    assert code == 0, answer
    want = server.project.query(metrics=["orders.orders", "orders.gross_revenue"],
                                dimensions=["is_first_order"]).to_pylist()
    want.sort(key=lambda r: r["is_first_order"])
    assert answer["rows"] == [{"is_first_order": r["is_first_order"], "orders": r["orders.orders"],
                               "gross_revenue": float(r["orders.gross_revenue"])} for r in want]
    assert answer["batches"] == [1, 1] and answer["expectedRowCount"] == 2
    assert [c["evidenceType"] for c in answer["columnTypes"]] == ["boolean", "number", "number"]
    assert Decimal(str(answer["rows"][0]["gross_revenue"])) == want[0]["orders.gross_revenue"]


def test_evidence_connection_test_and_query_over_tls(evidence, tls_server):
    code, answer = evidence(tls_server, test=True)
    assert code == 0 and answer == {"connection": True}, answer
    code, answer = evidence(tls_server, DAILY, batch_size=250)
    assert code == 0, answer
    want = _daily_reference(tls_server.project)
    assert _daily_rows(answer) == want and answer["batches"][0] == 250
    # TLS is required: Evidence without its SSL setting is refused
    code, answer = evidence(tls_server, test=True, ssl=False)
    assert code == 0 and answer["connection"] is not True and answer["connection"]["reason"], answer


def test_evidence_connection_test_reports_a_wrong_password(evidence, server):
    code, answer = evidence(server, test=True, password="not the password")
    assert code == 0, answer
    assert 'password authentication failed for user "analyst"' in answer["connection"]["reason"]
