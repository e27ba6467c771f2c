"""pgjdbc (Debian's libpostgresql-jdbc-java) through Java 17 against the live door.

tests/clients/java/PgjdbcProbe.java is compiled once per session with javac into a temporary folder; each run
prints JSON lines (DatabaseMetaData, PreparedStatement results) that are compared with `project.query(...)`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest

JAR = Path("/usr/share/java/postgresql.jar")
SOURCE = Path(__file__).resolve().parent / "java" / "PgjdbcProbe.java"
VIEWS = ["orders", "order_lines", "customers", "visits"]  # the demo's (checked against its model below)
INSTALL = "apt-get install -y libpostgresql-jdbc-java openjdk-17-jdk-headless (as .ci/run does)"

# java.sql.Types
VARCHAR, DATE, BIT, NUMERIC, BIGINT, DOUBLE = 12, 91, -7, 2, -5, 8


@pytest.fixture(scope="session")
def probe(tmp_path_factory):
    """`probe(live, *steps, **properties)`: run PgjdbcProbe; returns (exit code, JSON objects, stderr)."""
    missing = [what for what, ok in [("java", shutil.which("java")), ("javac", shutil.which("javac")),
                                     (str(JAR), JAR.exists())] if not ok]
    if missing:
        pytest.fail(f"pgjdbc tests need {', '.join(missing)}: {INSTALL}", pytrace=False)
    classes = tmp_path_factory.mktemp("pgjdbc_classes")
    subprocess.run(["javac", "-d", str(classes), "-cp", str(JAR), str(SOURCE)], check=True, timeout=120)

    def run(live, *steps: str, password: str | None = None, url: str | None = None, **properties: str):
        command = ["java", "-XX:TieredStopAtLevel=1",
                   *(f"-Dprobe.{k}={v}" for k, v in properties.items()),
                   "-cp", f"{JAR}:{classes}", "PgjdbcProbe", url or live.jdbc_url(), live.user,
                   live.password if password is None else password, *steps]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        return done.returncode, lines, done.stderr

    return run


def _only(lines: list[dict], kind: str) -> list[dict]:
    return [line for line in lines if line["kind"] == kind]


def _no_error(lines: list[dict], step: str) -> None:
    errors = [line for line in lines if line["kind"] == "error" and line["step"] == step]
    assert not errors, f"pgjdbc step {step!r} failed: {errors[0]['sqlstate']} {errors[0]['message']}"


QUESTION = {"metrics": ["revenue", "orders"], "dimensions": ["channel"], "order_by": ["channel"],
            "time_range": {"start": "2024-01-01", "end": "2024-06-30"}, "filters": ["channel <> 'marketplace'"]}


@pytest.fixture(scope="module")
def answer(server):
    """The library's answer to the probe's prepared query, and its HAVING threshold: the smallest revenue
    exactly, so `HAVING MEASURE(revenue) > ?` drops that one row if the BigDecimal arrives exact."""
    reference = server.project.query(**QUESTION).to_pylist()
    above = min(r["revenue"] for r in reference)
    return reference, above


@pytest.fixture(scope="module")
def main_run(probe, server, answer):
    """Metadata, the prepared metric query and the month fetch: one JVM for all."""
    _, above = answer
    code, lines, stderr = probe(server, "meta", "query", "months", above=str(above))
    assert code == 0, stderr
    return lines


def test_pgjdbc_connects_with_scram_and_sees_postgresql_15(main_run):
    (server,) = _only(main_run, "server")
    assert server["product"] == "PostgreSQL" and server["major"] == 15
    assert server["driver"].startswith("42.")


def test_pgjdbc_get_tables_lists_every_view_and_metrics(main_run, server):
    _no_error(main_run, "meta")
    tables = _only(main_run, "table")
    assert list(server.project.model.views) == VIEWS
    assert sorted(t["name"] for t in tables) == sorted([*VIEWS, "metrics"])
    assert {t["type"] for t in tables} == {"TABLE"} and {t["schema"] for t in tables} == {"public"}
    remarks = {t["name"]: t["remarks"] for t in tables}
    assert remarks["metrics"] == "every metric, by every dimension its views share"


def test_pgjdbc_get_columns_types_and_remarks(main_run, server):
    _no_error(main_run, "meta")
    orders = {c["name"]: c for c in _only(main_run, "column") if c["table"] == "orders"}
    assert {name: (c["data_type"], c["type_name"]) for name, c in orders.items()} == {
        "channel": (VARCHAR, "text"), "country": (VARCHAR, "text"), "acquisition_channel": (VARCHAR, "text"),
        "ordered_at": (DATE, "date"), "is_first_order": (BIT, "bool"), "gross_revenue": (NUMERIC, "numeric"),
        "discounts": (NUMERIC, "numeric"), "refunded": (NUMERIC, "numeric"), "shipping_cost": (NUMERIC, "numeric"),
        "payment_fees": (NUMERIC, "numeric"), "orders": (BIGINT, "int8"), "buyers": (BIGINT, "int8"),
        "new_buyers": (BIGINT, "int8"), "median_order_value": (DOUBLE, "float8")}
    assert [c["position"] for c in orders.values()] == list(range(1, len(orders) + 1))
    assert orders["gross_revenue"]["remarks"] == "sum(gross_revenue)"
    metrics = {c["name"]: c for c in _only(main_run, "column") if c["table"] == "metrics"}
    model = server.project.model
    for metric in model.metrics.values():
        assert metric.name in metrics
        if metric.description:
            assert metrics[metric.name]["remarks"] == metric.description
    assert metrics["metric_time"]["data_type"] == DATE and metrics["revenue"]["data_type"] == NUMERIC


def test_pgjdbc_prepared_statement_with_date_string_and_bigdecimal_parameters(main_run, answer):
    _no_error(main_run, "query")
    reference, above = answer
    want = [(r["channel"], r["revenue"], r["orders"]) for r in reference if r["revenue"] > above]
    assert len(want) == len(reference) - 1 >= 1  # the HAVING drops exactly the row at the threshold
    (columns,) = _only(main_run, "query_columns")
    assert columns == {"kind": "query_columns", "names": ["channel", "revenue", "orders"],
                       "types": ["text", "numeric", "int8"]}
    rows = _only(main_run, "query_row")
    for run in range(1, 7):  # runs 5 and 6 go through a named server-side statement
        got = [(r["channel"], Decimal(r["revenue"]), r["orders"]) for r in rows if r["run"] == run]
        assert got == want, f"execution {run}"


def test_pgjdbc_fetch_size_reads_months_in_portions(main_run, server):
    _no_error(main_run, "months")
    want = server.project.query(metrics=["orders"], dimensions=["metric_time__month"],
                                time_range={"start": "2023-01-01", "end": "2023-12-31"},
                                order_by=["metric_time__month"]).to_pylist()
    got = [(r["month"], r["orders"]) for r in _only(main_run, "month_row")]
    assert got == [(w["metric_time__month"].isoformat(), w["orders"]) for w in want]
    assert len(got) == 12


def test_pgjdbc_primary_and_imported_keys_of_the_keys_variant(probe, keys_server):
    code, lines, stderr = probe(keys_server, "keys")
    assert code == 0, stderr
    _no_error(lines, "keys")
    assert [(k["table"], k["column"]) for k in _only(lines, "primary_key")] == [("orders", "order_id")]
    assert [(k["table"], k["column"], k["references_table"], k["references_column"])
            for k in _only(lines, "foreign_key")] == [("orders", "customer", "customers", "customer")]


def test_pgjdbc_over_tls_with_sslmode_require(probe, tls_server, answer):
    reference, above = answer
    code, lines, stderr = probe(tls_server, "query", above=str(above))
    assert code == 0, stderr
    _no_error(lines, "query")
    want = [(r["channel"], r["revenue"], r["orders"]) for r in reference if r["revenue"] > above]
    got = [(r["channel"], Decimal(r["revenue"]), r["orders"]) for r in _only(lines, "query_row") if r["run"] == 1]
    assert got == want
    # the server requires TLS: a connection without it is refused
    plain = tls_server.jdbc_url().replace("sslmode=require", "sslmode=disable")
    code, lines, stderr = probe(tls_server, "query", url=plain)
    assert code != 0 and not _only(lines, "server")
    assert "PSQLException" in stderr


def test_pgjdbc_wrong_password_is_refused(probe, server):
    code, lines, stderr = probe(server, "meta", password="not the password")
    assert code != 0 and not lines
    assert 'password authentication failed for user "analyst"' in stderr
