"""The CLI beside a running `phloem serve`: real subprocesses on one DuckDB project, the same answers as alone."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from tests.server.conftest import free_port

PHLOEM = [sys.executable, "-m", "server.cli"]
ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
TERMINAL = {**ENV, "FORCE_COLOR": "1", "TERM": "xterm", "COLUMNS": "120"}  # rich draws its bars as on a terminal
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

# the commands compared alone and beside the server: their whole stdout must be the same
SAME = [
    ("query", "-m", "revenue,margin,orders", "--by", "channel", "--order", "channel"),
    ("query", "-m", "revenue", "--by", "metric_time__quarter", "--explain"),
    ("tree",),
    ("tree", "profit", "--values", "--from", "2024-01-01", "--to", "2024-12-31"),  # values in their formats
    ("validate",),
    ("rollups", "list"),
    ("build",),
]


BROKEN = ("{name: median_order_value, agg: median, expr: gross_revenue}",
          "{name: median_order_value, agg: median, expr: no_such_fn(gross_revenue)}")  # only the warehouse knows


def broken_validate(shop: Path) -> str:
    """`phloem validate` over a view the warehouse refuses (the file is put back after)."""
    views = shop / "models" / "views.yml"
    good = views.read_text()
    views.write_text(good.replace(*BROKEN))
    try:
        return run("validate", cwd=shop, check=1).stderr
    finally:
        views.write_text(good)


def run(*args: str, cwd: Path, check: int | None = 0, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([*PHLOEM, *args], cwd=cwd, capture_output=True, text=True, timeout=120, env=env or ENV)
    if check is not None:
        assert proc.returncode == check, proc.stdout + proc.stderr
    return proc


def plain(text: str) -> str:
    return ANSI.sub("", text).replace("\r", "\n")


def dataset_rows(cwd: Path) -> list[dict]:
    out = run("dataset", "orders", "-n", "100000", "-f", "csv", cwd=cwd).stdout
    return sorted(csv.DictReader(io.StringIO(out)), key=lambda r: r["order_id"])


def built_count(stdout: str) -> int:
    return int(re.search(r"(\d+) built", plain(stdout))[1])


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("beside") / "shop"
    made = run("demo", "--dir", str(root), "--scale", "300", cwd=root.parent, env=TERMINAL)
    progress = plain(made.stderr)
    assert "generating 300 orders" in progress and "12/12" in progress and "eta" in progress  # counts and ETA
    return root


@pytest.fixture(scope="module")
def alone(shop) -> dict:
    """Every command's output with no server running."""
    outputs = {args: run(*args, cwd=shop).stdout for args in SAME}
    outputs["rows"] = dataset_rows(shop)
    outputs["forced"] = built_count(run("build", "--force", cwd=shop).stdout)
    outputs["suggested"] = _suggested(run("rollups", "suggest", cwd=shop).stdout)
    outputs["refused"] = broken_validate(shop)
    assert "models/views.yml:24 [orders.measures.median_order_value]" in outputs["refused"]
    return outputs


def _suggested(stdout: str) -> list[str]:
    return re.findall(r"│ (\w+) +│ \w+ +│", stdout)


def _get(url: str, **kw):
    return urllib.request.urlopen(urllib.request.Request(url, **kw), timeout=10)


@pytest.fixture(scope="module")
def server(shop, alone):
    port, pg_port = free_port(), free_port()
    proc = subprocess.Popen([*PHLOEM, "serve", str(shop), "--port", str(port), "--pg-port", str(pg_port)],
                            cwd=shop, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, proc.communicate()
        try:
            if _get(url + "/readyz").status == 200:
                break
        except (urllib.error.URLError, ConnectionError):
            pass
        assert time.monotonic() < deadline, "the server did not become ready"
        time.sleep(0.2)
    yield proc, url, pg_port
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)


def test_serve_records_where_it_is(shop, server):
    proc, url, pg_port = server
    record_path = shop / ".phloem" / "server.json"
    record = json.loads(record_path.read_text())
    assert record["pid"] == proc.pid and record["url"] == url and record["pg_port"] == pg_port
    assert len(record["token"]) >= 32
    assert stat.S_IMODE(record_path.stat().st_mode) == 0o600  # only the project's owner can drive the server
    # the admin endpoints want that token
    for token in (None, "wrong"):
        headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
        with pytest.raises(urllib.error.HTTPError) as refused:
            _get(url + "/api/v1/admin/build", data=b"{}", headers=headers, method="POST")
        assert refused.value.code == 403


def test_commands_beside_the_server_print_what_they_print_alone(shop, alone, server):
    for args in SAME:
        assert run(*args, cwd=shop).stdout == alone[args], args
    assert dataset_rows(shop) == alone["rows"]
    assert "$" in alone[SAME[0]] and " %" in alone[SAME[0]]  # revenue as currency, margin as percent
    assert re.search(r"profit  \$[\d,]+\.\d\d = net_revenue - costs", alone[SAME[3]])
    # the build runs in the server (its own warehouse connection), progress lines stream back to the bar
    forced = run("build", "--force", cwd=shop, env=TERMINAL)
    assert built_count(forced.stdout) == alone["forced"]
    n = alone["forced"]
    assert f"{n}/{n}" in plain(forced.stderr) and "eta" in plain(forced.stderr)
    assert _suggested(run("rollups", "suggest", cwd=shop).stdout) == alone["suggested"]
    # validate: the files here, the warehouse checks by the server, the same problem at the same line
    assert broken_validate(shop) == alone["refused"]
    assert "note:" not in run("validate", cwd=shop).stderr  # nothing skipped: the server ran the checks


def test_what_cannot_run_beside_says_who_holds_it(shop, server):
    proc, url, _ = server
    second = run("serve", str(shop), "--port", str(free_port()), "--pg-port", "0", cwd=shop, check=1)
    assert f"PID {proc.pid} already serves this project at {url}" in second.stderr
    assert "Traceback" not in second.stderr
    many = run("dataset", "orders", "-n", "200000", cwd=shop, check=1)
    assert f"PID {proc.pid} serves this project at {url}" in many.stderr and "100,000" in many.stderr
    regenerate = run("demo", "--dir", str(shop), "--scale", "100", cwd=shop, check=1)
    assert f"PID {proc.pid} serves this project at {url}" in regenerate.stderr
    assert f"kill {proc.pid}" in regenerate.stderr and "phloem query" in regenerate.stderr
    rows = json.loads(_get(url + "/api/v1/datasets/orders?limit=3").read())  # the REST door the CLI uses
    assert len(rows["rows"]) == 3 and "order_id" in [c["name"] for c in rows["columns"]]
    for path, code in (("orders?limit=100001", 422), ("ordrs", 400)):
        with pytest.raises(urllib.error.HTTPError) as refused:
            _get(f"{url}/api/v1/datasets/{path}")
        assert refused.value.code == code
    bad = run("query", "-m", "revenu", cwd=shop, check=1)  # the server's error, printed as the CLI prints it
    assert "unknown metric" in bad.stderr and "did you mean `revenue`?" in bad.stderr


def test_a_clean_exit_removes_the_record_and_a_stale_one_is_ignored(shop, server, alone):
    proc, _, _ = server
    proc.send_signal(signal.SIGTERM)  # as a process manager stops it
    assert proc.wait(30) in (0, 128 + signal.SIGTERM)
    record = shop / ".phloem" / "server.json"
    assert not record.exists()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    record.write_text(json.dumps({"pid": dead.pid, "url": "http://127.0.0.1:9", "pg_port": 0, "token": "x"}))
    assert run(*SAME[0], cwd=shop).stdout == alone[SAME[0]]  # answered here, from the file


def test_a_lock_held_by_another_program_names_the_file_and_pid(shop, server):
    proc, _, _ = server
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    con = duckdb.connect(str(shop / "data" / "shop.duckdb"))
    try:
        held = run("query", "-m", "revenue", cwd=shop, check=1)
    finally:
        con.close()
    assert "shop.duckdb is locked by PID " + str(os.getpid()) in held.stderr
    assert "not a Phloem server" in held.stderr and "Traceback" not in held.stderr


# ------------------------------------------------------------------ papercuts


def test_init_names_the_project_after_its_folder(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from server.cli import app

    for folder, name in (("shop", "shop"), ("My Shop-2", "my_shop_2"), ("2024", "project_2024")):
        assert CliRunner().invoke(app, ["init", str(tmp_path / folder)]).exit_code == 0
        monkeypatch.chdir(tmp_path / folder)  # as the tutorial says: cd DIR && phloem validate
        validated = CliRunner().invoke(app, ["validate"])
        assert f"ok {name}: 1 streams" in validated.output, validated.output


def test_metric_formats_in_cli_tables():
    from server.cli import formatted

    assert formatted(0.1234, "percent") == "12.34 %"
    assert formatted(Decimal("1234.5"), "currency") == "$1,234.50"
    assert formatted(-3, "currency") == "-$3.00"
    assert formatted(1234.6, "integer") == "1,235"
    assert formatted(None, "percent") == "" and formatted("web", "currency") == "web"
    assert formatted(Decimal("1234.50"), None) == "1234.50"


def test_build_progress_shows_counts_and_eta(tmp_path):
    run("init", str(tmp_path / "p"), cwd=tmp_path)
    built = run("build", cwd=tmp_path / "p", env=TERMINAL)
    assert "3/3" in plain(built.stderr) and "eta" in plain(built.stderr)
    assert "$487.25" in run("query", "-m", "revenue", "--by", "channel", cwd=tmp_path / "p").stdout
