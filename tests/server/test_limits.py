"""Bounded answers: every door refuses an answer past the row limit, large answers stream in batches with the
server's memory flat and /healthz answering, and a client that goes away stops its warehouse query."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import orjson
import psycopg
import pytest

from semantic.demo import create
from semantic.limits import BATCH_ROWS, Limits
from server import rest
from server.app import create_app
from server.pgwire import PgConfig, PgServer, ServerThread
from server.sql import outer
from tests.server.conftest import LiveServer, free_port
from tests.server.rawhttp import post, wait_for

ROOT = Path(__file__).resolve().parents[2]
HUGE = "SELECT * FROM generate_series(1, 100000000)"
# 1M rows of ~210 bytes: ~210 MB as Arrow, within the default limits, far more than the server may hold at once
WIDE = "SELECT g, repeat('x', 200) || g::varchar AS label FROM generate_series(1, 1000000) AS t(g)"
BY_DAY = {"metrics": ["revenue"], "dimensions": ["metric_time__day"]}  # hundreds of rows


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """`phloem serve` in its own process with the default limits, so its RSS is the server's alone."""
    root = tmp_path_factory.mktemp("limits") / "shop"
    create(root, scale=200)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHLOEM_MAX_")}
    process = subprocess.Popen([sys.executable, "-m", "server.cli", "serve", str(root), "--host", "127.0.0.1",
                                "--port", str(port), "--pg-port", "0"], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:
            assert process.poll() is None, process.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the server did not start"
            try:
                if httpx.get(url + "/readyz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        httpx.post(url + "/api/v1/sql", json={"sql": "SELECT * FROM generate_series(1, 10)"}).raise_for_status()
        yield url, process.pid
    finally:
        process.terminate()
        process.wait(10)


def watched(url: str, pid: int, request) -> tuple[float, list[float], object]:
    """Run `request()` while the server's VmRSS is sampled and /healthz polled: (RSS growth MB, latencies, result)."""
    before = rss_mb(pid)
    peak, latencies, done = [before], [], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss_mb(pid))
            time.sleep(0.01)

    def health():
        with httpx.Client(base_url=url, timeout=5) as client:
            while not done.is_set():
                started = time.perf_counter()
                assert client.get("/healthz").status_code == 200
                latencies.append(time.perf_counter() - started)
                time.sleep(0.02)

    threads = [threading.Thread(target=sample), threading.Thread(target=health)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.1)
        result = request()
        time.sleep(0.1)
    finally:
        done.set()
        for t in threads:
            t.join()
    return peak[0] - before, latencies, result


def test_a_hundred_million_rows_are_refused_naming_the_limit_with_memory_flat(served):
    url, pid = served

    growth, latencies, (status, _, _, body) = watched(url, pid, lambda: fetch(url, HUGE, "application/json"))
    assert status == 400
    error = orjson.loads(httpx.post(url + "/api/v1/sql", json={"sql": HUGE}, timeout=60).content)["error"]
    assert error["type"] == "limit" and error["limit"] == "PHLOEM_MAX_ROWS"
    assert "1,000,000 rows" in error["message"] and "LIMIT" in error["suggestion"]
    assert "PHLOEM_MAX_ROWS" in error["suggestion"] and "--max-rows" in error["suggestion"]
    assert growth < 500, f"the server grew by {growth:.0f} MB"
    assert latencies and max(latencies) < 0.1, f"/healthz took {max(latencies) * 1000:.0f} ms"


def fetch(url: str, sql: str, accept: str) -> tuple[int, dict, int, bytes]:
    """POST /api/v1/sql with curl in its own process (a client in this one would take the GIL from the /healthz
    poller): status, headers, bytes received and the body's last 64 bytes."""
    script = ('curl -s -D "$1" -H "content-type: application/json" -H "accept: $2" --data-binary "$3" "$4" '
              '| tee >(wc -c >"$5") | tail -c 64')
    with tempfile.TemporaryDirectory() as folder:
        head, count = Path(folder) / "head", Path(folder) / "count"
        tail = subprocess.run(["bash", "-c", script, "fetch", head, accept, orjson.dumps({"sql": sql}),
                               url + "/api/v1/sql", count], capture_output=True, check=True, timeout=60).stdout
        time.sleep(0.05)  # tee's wc finishes writing
        lines = head.read_bytes().decode().split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
        return int(lines[0].split()[1]), headers, int(count.read_text()), tail


@pytest.mark.parametrize("accept", ["text/csv", "application/json"])
def test_a_large_answer_streams_with_memory_flat_and_healthz_answering(served, accept):
    url, pid = served
    growth, latencies, (status, headers, size, tail) = watched(url, pid, lambda: fetch(url, WIDE, accept))
    assert status == 200
    assert headers.get("transfer-encoding") == "chunked" and "content-length" not in headers  # streamed
    if accept == "text/csv":
        assert tail.endswith(b'1000000"\n')
    else:
        assert tail.endswith(b'x1000000"]],"cached":false}')
    assert size > 200 * 2**20
    assert growth < 200, f"the server grew by {growth:.0f} MB while streaming {size / 2**20:.0f} MB"
    assert max(latencies) < 0.1, f"/healthz took {max(latencies) * 1000:.0f} ms"


# ------------------------------------------------------------------ a small limit, set once, at every door


@pytest.fixture(scope="module")
def limited(demo_dir, live):
    """A second server over the built demo with a 50-row limit: HTTP and the PostgreSQL wire."""
    app = create_app(demo_dir, timeout=5.0, limits=Limits.from_env({"PHLOEM_MAX_ROWS": "50"}))
    runtime = app.state.runtime
    with LiveServer(app) as http, ServerThread(PgServer(runtime, PgConfig(port=0, trust="loopback"))) as pg:
        yield http, pg, runtime
    runtime.close()


def test_a_small_limit_refuses_at_every_door(limited):
    http, pg, runtime = limited
    name = runtime.project.model.settings.name
    with httpx.Client(base_url=http.url, timeout=30) as client:
        under = client.post("/api/v1/query", json={**BY_DAY, "limit": 50})
        assert under.status_code == 200 and len(under.json()["rows"]) == 50
        for path, body in [("/api/v1/query", BY_DAY),
                           ("/api/v1/sql", {"sql": "SELECT metric_time, revenue FROM metrics GROUP BY 1"}),
                           ("/api/v1/sql", {"sql": "SELECT * FROM generate_series(1, 51)"})]:
            response = client.post(path, json=body)
            assert response.status_code == 400, (path, response.text)
            error = response.json()["error"]
            assert error["type"] == "limit" and "more than 50 rows" in error["message"], error
        graphql = client.post("/graphql", json={"query": "{ query { revenue metricTime { day } } }"}).json()
        assert graphql["errors"][0]["extensions"]["code"] == "RESULT_TOO_LARGE"
        assert "more than 50 rows" in graphql["errors"][0]["message"]
    dsn = f"host=127.0.0.1 port={pg.port} user=phloem dbname={name} connect_timeout=10"
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert len(conn.execute("SELECT * FROM generate_series(1, 50)").fetchall()) == 50
        for sql in ["SELECT metric_time, revenue FROM metrics GROUP BY 1", "SELECT * FROM generate_series(1, 51)"]:
            with pytest.raises(psycopg.Error) as refused:
                conn.execute(sql).fetchall()
            assert refused.value.sqlstate == "54000" and "more than 50 rows" in str(refused.value)
            assert "PHLOEM_MAX_ROWS" in (refused.value.diag.message_hint or "")
        assert conn.execute("SELECT 1").fetchone() == (1,)  # the session is still usable


def test_limits_from_the_environment():
    assert Limits.from_env({}) == Limits(1_000_000, 256 * 2**20)
    assert Limits.from_env({"PHLOEM_MAX_ROWS": "0", "PHLOEM_MAX_BYTES": "0"}) == Limits(None, None)
    assert Limits.from_env({"PHLOEM_MAX_BYTES": "1GB"}).bytes == 2**30
    assert Limits.from_env({"PHLOEM_MAX_ROWS": "7"}, rows=9).rows == 9  # `phloem serve --max-rows` wins
    with pytest.raises(ValueError, match="PHLOEM_MAX_ROWS"):
        Limits.from_env({"PHLOEM_MAX_ROWS": "lots"})


# ------------------------------------------------------------------ streams that end early, clients that leave


def test_past_the_limit_after_streaming_began_json_ends_with_the_error(live, monkeypatch):
    monkeypatch.setattr(rest, "HOLD", 1)  # start streaming after the first batch
    response = httpx.post(live.url + "/api/v1/sql", json={"sql": "SELECT * FROM generate_series(1, 3000000)"},
                          timeout=60)
    assert response.status_code == 200
    body = orjson.loads(response.content)
    assert body["truncated"] is True and body["error"]["type"] == "limit"
    assert BATCH_ROWS <= len(body["rows"]) <= 1_000_000


def test_a_client_that_disconnects_cancels_its_warehouse_query(live):
    """The slow view takes minutes and the time limit is 5 s: the query must stop when the client leaves."""
    engine = live.app.state.runtime.project.engine
    before = engine.cancelled
    sock = post(live.port, "/api/v1/query", {"metrics": ["slow_distinct_buckets"], "limit": 1})
    time.sleep(0.5)
    dropped = time.monotonic()
    sock.close()
    assert wait_for(lambda: engine.cancelled > before, 2.0), "the warehouse query was not interrupted"
    assert time.monotonic() - dropped < 2.0  # the disconnect stopped it, not the 5 s time limit
    assert httpx.get(live.url + "/healthz", timeout=1).status_code == 200


def test_a_client_that_disconnects_mid_stream_stops_its_query(live, monkeypatch):
    monkeypatch.setattr(rest, "HOLD", 1)
    before = outer.cancelled  # the SQL door's outer step runs generate_series
    sock = post(live.port, "/api/v1/sql", {"sql": WIDE})  # ~200 MB: more than the sockets buffer
    assert sock.recv(65536).startswith(b"HTTP/1.1 200")  # streaming began; the rest is not read
    time.sleep(0.3)
    sock.close()
    assert wait_for(lambda: outer.cancelled > before, 2.0), "the streaming query was not stopped"


def test_a_metric_answer_streams_as_it_is_read_with_the_same_rows(live, monkeypatch):
    sql = {"sql": "SELECT metric_time AS day, revenue FROM metrics WHERE channel <> 'none' GROUP BY 1"}
    monkeypatch.setattr(rest, "HOLD", 1)  # anything past the first batch streams
    streamed = httpx.post(live.url + "/api/v1/sql", json=sql, timeout=30)
    assert streamed.status_code == 200 and "content-length" not in streamed.headers
    monkeypatch.setattr(rest, "HOLD", 32 * 2**20)
    whole = httpx.post(live.url + "/api/v1/sql", json=sql, timeout=30)
    assert "content-length" in whole.headers
    assert orjson.loads(streamed.content) == orjson.loads(whole.content)
    assert orjson.loads(whole.content)["columns"][0]["name"] == "day" and len(orjson.loads(whole.content)["rows"]) > 50


def test_the_byte_limit_stops_reading_at_the_limit():
    from semantic.engines.duckdb import DuckDBEngine
    from semantic.limits import ResultTooLarge

    engine = DuckDBEngine()
    with pytest.raises(ResultTooLarge) as refused:
        engine.arrow("SELECT * FROM range(100000000)", limits=Limits(rows=None, bytes=2**20))
    assert refused.value.limit == "PHLOEM_MAX_BYTES" and "1 MB" in refused.value.message
    assert engine.arrow("SELECT * FROM range(1000)", limits=Limits(rows=None, bytes=2**20)).num_rows == 1000


def test_the_postgresql_warehouse_counts_rows_and_cancels_too(pg_dsn):
    from semantic.engines.postgres import PostgresEngine
    from semantic.limits import Cancel, QueryCancelled, ResultTooLarge

    engine = PostgresEngine(pg_dsn)
    try:
        with pytest.raises(ResultTooLarge, match="more than 10 rows"):
            engine.arrow("select * from generate_series(1, 1000)", limits=Limits(rows=10, bytes=None))
        assert engine.arrow("select * from generate_series(1, 10)", limits=Limits(rows=10, bytes=None)).num_rows == 10
        cancel = Cancel()
        threading.Timer(0.3, cancel).start()
        started = time.monotonic()
        with pytest.raises(QueryCancelled):
            engine.arrow("select pg_sleep(10)", cancel=cancel)
        assert time.monotonic() - started < 3
        assert engine.arrow("select 1 as one").num_rows == 1  # the pooled connection is still good
    finally:
        engine.close()
