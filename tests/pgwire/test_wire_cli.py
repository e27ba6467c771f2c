"""`phloem serve --pg-port`: REST and the PostgreSQL wire protocol in one process, over one Runtime."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import httpx
import psycopg
import pytest

from semantic import Project
from semantic.demo.generate import generate

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "semantic" / "demo" / "project"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def project_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli") / "shop"
    shutil.copytree(DEMO, root)
    (root / "data").mkdir()
    con = duckdb.connect(str(root / "data" / "shop.duckdb"))
    generate(con, scale=500, seed=7)
    con.close()
    return root


def serve(project_dir: Path, http_port: int, pg_port: int, **env) -> subprocess.Popen:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PHLOEM_PG_")}
    environ.update(PYTHONPATH=str(ROOT), **env)
    return subprocess.Popen([sys.executable, "-m", "server.cli", "serve", str(project_dir), "--port", str(http_port),
                             "--pg-port", str(pg_port)], cwd=ROOT, env=environ, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def wait_for_pg(process: subprocess.Popen, pg_port: int, **params) -> psycopg.Connection:
    """Connect once the door is open; a refused login (any answer from the server) is raised at once."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read()
        try:
            return psycopg.connect(host="127.0.0.1", port=pg_port, dbname="shop", autocommit=True,
                                   connect_timeout=2, **params)
        except psycopg.OperationalError as e:
            if "Connection refused" not in str(e) and "timeout" not in str(e):
                raise
            time.sleep(0.2)
    raise AssertionError("the wire protocol door did not open")


def stop(process: subprocess.Popen) -> str:
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=30)
    assert process.returncode in (0, 130), output  # uvicorn re-raises the SIGINT once it has shut down
    assert "Traceback" not in output, output
    return output


def test_serve_opens_both_doors_over_one_project(project_dir):
    http_port, pg_port = free_port(), free_port()
    process = serve(project_dir, http_port, pg_port, PHLOEM_PG_USERS="me:a-secret")
    try:
        conn = wait_for_pg(process, pg_port, user="me", password="a-secret")
        with conn:
            wire = conn.execute("SELECT channel, MEASURE(orders) FROM metrics GROUP BY 1 ORDER BY 1").fetchall()
        http = httpx.post(f"http://127.0.0.1:{http_port}/api/v1/query", timeout=30,
                          json={"metrics": ["orders"], "dimensions": ["channel"], "order_by": ["channel"]}).json()
        assert [list(r) for r in wire] == http["rows"]
        with pytest.raises(psycopg.OperationalError, match="password"):  # users set: no password, no entry
            psycopg.connect(host="127.0.0.1", port=pg_port, user="me", dbname="shop", connect_timeout=2)
    finally:
        output = stop(process)
    assert f"Postgres postgresql://127.0.0.1:{pg_port}/shop" in output
    with pytest.raises(psycopg.OperationalError):  # the wire door closed with the process
        psycopg.connect(host="127.0.0.1", port=pg_port, user="me", dbname="shop", connect_timeout=2)


def test_a_project_without_users_refuses_every_login(project_dir):
    """Only the built-in demo trusts loopback by default; a real project needs PHLOEM_PG_USERS or
    PHLOEM_PG_TRUST."""
    pg_port = free_port()
    process = serve(project_dir, free_port(), pg_port)
    try:
        with pytest.raises(psycopg.OperationalError) as refused:
            wait_for_pg(process, pg_port, user="me")
        assert "PHLOEM_PG_USERS=user:password" in str(refused.value)
        assert "PHLOEM_PG_TRUST=loopback" in str(refused.value)
    finally:
        stop(process)
    process = serve(project_dir, free_port(), pg_port, PHLOEM_PG_TRUST="loopback")  # the override still works
    try:
        with wait_for_pg(process, pg_port, user="me") as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        stop(process)


def test_a_busy_pg_port_is_a_clear_error(project_dir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        process = serve(project_dir, free_port(), taken.getsockname()[1])
        output, _ = process.communicate(timeout=120)
    assert process.returncode == 1
    assert "cannot listen on" in output and "--pg-port" in output


def test_the_project_reads_the_same_after_serving(project_dir):
    project = Project.load(project_dir)
    try:
        assert project.query(metrics=["orders"]).num_rows == 1
    finally:
        project.close()
