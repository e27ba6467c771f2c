"""The `phloem` command as a user runs it: a real subprocess, real files, real DuckDB."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

PHLOEM = [sys.executable, "-m", "server.cli"]
ROOT = Path(__file__).resolve().parents[2]


def run(*args: str, cwd: Path | None = None, check: int | None = 0) -> subprocess.CompletedProcess:
    proc = subprocess.run([*PHLOEM, *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    if check is not None:
        assert proc.returncode == check, proc.stdout + proc.stderr
    return proc


@pytest.fixture()
def starter(tmp_path) -> Path:
    run("init", str(tmp_path / "p"))
    return tmp_path / "p"


def test_init_validate_build_dataset(starter):
    assert "ok p: 1 streams, 1 datasets, 1 views, 3 metrics" in run("validate", cwd=starter).stdout  # named after its folder
    built = run("build", cwd=starter).stdout
    assert "3 built" in built
    assert "0 built, 3 already up to date" in run("build", cwd=starter).stdout
    rows = list(csv.DictReader(io.StringIO(run("dataset", "orders", "-f", "csv", cwd=starter).stdout)))
    by_id = {r["order_id"]: r for r in rows}
    assert len(rows) == 6
    # order 106 (customer 1, 2024-03-21): previous order 102 on 2024-02-14; signed up 2024-01-02 in the US
    assert by_id["106"]["previous_order_at"].startswith("2024-02-14 12:00:00")
    assert by_id["106"]["signed_up_at"].startswith("2024-01-02 09:00:00")
    assert by_id["101"]["previous_order_at"] == ""
    data = json.loads(run("dataset", "orders", "-f", "json", "-n", "2", "--project", str(starter)).stdout)
    assert len(data) == 2 and set(data[0]) == {"order_id", "customer", "channel", "total", "ordered_at", "country",
                                               "signed_up_at", "previous_order_at"}


def test_exit_codes_and_messages(starter, tmp_path):
    miss = run("dataset", "ordrs", cwd=starter, check=1)
    assert "unknown dataset `ordrs` — did you mean `orders`?" in miss.stderr
    assert "Traceback" not in miss.stderr
    assert run("dataset", cwd=starter, check=2).returncode == 2  # usage
    assert run("nonsense", check=2).returncode == 2
    models = starter / "models" / "datasets.yml"
    models.write_text(models.read_text().replace("activity: signed_up", "activity: signd_up"))
    bad = run("validate", cwd=starter, check=1)
    assert "models/datasets.yml:7 [orders.append.signd_up]: unknown activity `signd_up`" in bad.stderr
    assert "did you mean `signed_up`?" in bad.stderr
    nowhere = run("validate", cwd=tmp_path, check=1)
    assert "no phloem.yml" in nowhere.stderr and "phloem init" in nowhere.stderr
    assert run("init", str(starter), check=1).returncode == 1  # never overwrites a project


def test_query_and_tree(starter):
    out = run("query", "-m", "revenue,orders", "--by", "channel", "--order", "-revenue", "-f", "csv", cwd=starter)
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    # hand-summed from seeds/orders.csv: web 120+42+310.25+15, app 80.5+99.99
    assert [(r["channel"], float(r["revenue"]), int(r["orders"])) for r in rows] == [
        ("web", 487.25, 4), ("app", 180.49, 2)]
    explain = run("query", "-m", "aov", "--by", "metric_time__month", "--explain", cwd=starter).stdout
    assert "SELECT" in explain and "leaf_0" in explain and "aov" in explain
    bad = run("query", "-m", "revenu", cwd=starter, check=1)
    assert "did you mean `revenue`?" in bad.stderr
    tree = run("tree", cwd=starter).stdout
    assert "aov = revenue / orders" in tree and "revenue" in tree


def test_failed_build_keeps_previous_tables(starter):
    run("build", cwd=starter)
    db = starter / "data" / "warehouse.duckdb"
    before = duckdb.connect(str(db), read_only=True).execute("select count(*) from phloem.orders").fetchone()
    datasets = starter / "models" / "datasets.yml"
    # valid model, but the warehouse fails while building it
    datasets.write_text(datasets.read_text().replace("columns: [order_id,", "columns: [{name: boom, expr: \"cast('x' as integer)\"}, order_id,"))
    failed = run("build", cwd=starter, check=1)
    assert "failed" in failed.stderr and "Traceback" not in failed.stderr
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("select count(*) from phloem.orders").fetchone() == before
    assert "boom" not in [c[0] for c in con.execute("describe phloem.orders").fetchall()]
    assert con.execute("select count(*) from information_schema.tables where table_name like '__stage_%'").fetchone() == (0,)


def test_interrupted_build_keeps_previous_tables(starter):
    run("build", cwd=starter)
    db = starter / "data" / "warehouse.duckdb"
    streams = starter / "models" / "streams.yml"
    # a slow activity: the build is killed while staging it
    streams.write_text(streams.read_text().replace(
        "from read_csv('seeds/signups.csv')",
        "from read_csv('seeds/signups.csv') where (select count(*) from range(3000000000) t(i) where hash(i) % 7 = 0) > 0"))
    proc = subprocess.Popen([*PHLOEM, "build"], cwd=starter, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(2.5)
    assert proc.poll() is None, "the build should still be running"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("select count(*) from phloem.orders").fetchone() == (6,)
    assert con.execute("select count(*) from phloem.customer_stream__signed_up").fetchone() == (4,)


def test_demo_runs_end_to_end(tmp_path):
    out = run("demo", "--dir", str(tmp_path / "shop"), "--scale", "500")
    assert "orders (first 10 of 500)" in out.stdout
    con = duckdb.connect(str(tmp_path / "shop" / "data" / "shop.duckdb"), read_only=True)
    assert con.execute("select count(*) from phloem.orders").fetchone() == (500,)
    assert con.execute("select count(*) from raw.orders").fetchone() == (500,)


def test_rollups_suggest_write_build_and_use(starter):
    run("build", cwd=starter)
    for by in ("channel,metric_time__month", "channel,metric_time__week", "channel"):
        run("query", "-m", "revenue,orders", "--by", by, cwd=starter)
    log = (starter / ".phloem" / "query_log.jsonl").read_text().splitlines()
    assert len(log) == 3 and json.loads(log[0])["leaves"][0]["dims"] == ["orders.channel"]
    suggested = run("rollups", "suggest", cwd=starter).stdout
    assert "orders_day_by_channel" in suggested and "3" in suggested
    assert not (starter / "models" / "rollups.yml").exists()
    run("rollups", "suggest", "--write", cwd=starter)
    written = (starter / "models" / "rollups.yml").read_text()
    assert "name: orders_day_by_channel" in written and "measures: [orders, revenue]" in written
    assert "orders_day_by_channel" in run("build", cwd=starter).stdout
    listed = run("rollups", "list", cwd=starter).stdout
    assert "orders_day_by_channel" in listed and "current" in listed
    explain = run("query", "-m", "revenue", "--by", "metric_time__month", "--explain", cwd=starter).stdout
    assert "table: phloem.orders_day_by_channel (rollup orders_day_by_channel" in explain
    assert "every logged query is answered" in run("rollups", "suggest", cwd=starter).stdout
