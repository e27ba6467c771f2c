"""Phloem's PostgreSQL wire protocol door against a real PostgreSQL 15, same client, same rows, same run.

    python bench/pgwire.py                      # 1,000,000 rows, the demo at 100,000 orders
    python bench/pgwire.py --rows 200000 --runs 3

1. copies `semantic/demo/project` to a work folder, generates the shop (`--scale` orders), adds a table of
   `--rows` rows (`raw.wide`: id bigint, customer text, amount double, created_at timestamp, day date, is_even
   boolean, the reference table of shared/reference/bi-clients) and a view `wide` over it whose dimensions are
   those columns, and builds the project;
2. loads the same rows into PostgreSQL (`--pg-dsn`, default $PHLOEM_PG_DSN or the local test server) as
   `phloem_bench.wide`, and the answer of the metric question as `phloem_bench.answer`;
3. starts the real server as a subprocess (`python -m server.cli serve <dir> --port <free> --pg-port <free>`:
   REST and the wire protocol in one process, over one Runtime);
4. times, with psycopg 3 (one connection, as an application would), each side `--runs` times (sides take turns
   going first; the median is reported):
   - 1000 × `SELECT 1` and 1000 × `SELECT %s::int` as psycopg sends them by default (prepared from the 5th
     call: Bind/Describe/Execute/Sync), and never prepared (`prepare=False`: `SELECT 1` as a simple-protocol
     Query, `SELECT %s::int` as unnamed Parse/Bind/Describe/Execute/Sync);
   - fetching every row of `wide` (Phloem: `SELECT id, customer, amount, created_at, day, is_even FROM wide`, a
     semantic query; PostgreSQL: the same columns of `phloem_bench.wide`) in text and in binary;
   - fetching the same shape computed from `generate_series` (the same SQL on both sides);
   - 100 × a metric question (profit and margin by channel and month): over the wire, over REST
     (`POST /api/v1/query`, httpx keep-alive, JSON), and PostgreSQL serving its answer table (`--runs` times
     each, taking turns);
   and checks that each side returned the same rows;
5. prints the table and writes bench/results/pgwire-<rows>.json.

Only loopback addresses are used. Exit status 1 if any answer differed.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import httpx
import psycopg
from psycopg.conninfo import make_conninfo
from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:  # `python bench/pgwire.py` from a checkout, installed or not
    sys.path.insert(0, str(ROOT))

from semantic import Project  # noqa: E402
from semantic.demo.generate import generate  # noqa: E402

DEMO = ROOT / "semantic" / "demo" / "project"
RESULTS = ROOT / "bench" / "results"
HOST = "127.0.0.1"
DEFAULT_DSN = "postgresql://postgres:phloem@127.0.0.1:5432/postgres"

WIDE_VIEW = """
views:
  - name: wide
    sql: select * from raw.wide
    dimensions: [id, customer, amount, created_at, day, is_even]
    measures: [{name: rows, agg: count}]
"""
COLUMNS = "id, customer, amount, created_at, day, is_even"
WIDE_DUCKDB = """
CREATE OR REPLACE TABLE raw.wide AS
SELECT i::BIGINT AS id, 'customer ' || (i % 1000) AS customer, ((i % 10000) / 100.0)::DOUBLE AS amount,
       TIMESTAMP '2024-01-01' + i * INTERVAL 1 SECOND AS created_at, (DATE '2024-01-01' + (i % 365)::INT) AS day,
       i % 2 = 0 AS is_even
FROM range(1, {rows} + 1) t(i)
"""
WIDE_POSTGRES = """
CREATE TABLE phloem_bench.wide AS
SELECT i::bigint AS id, 'customer ' || (i % 1000) AS customer, ((i % 10000) / 100.0)::float8 AS amount,
       timestamp '2024-01-01' + i * interval '1 second' AS created_at, date '2024-01-01' + (i % 365)::int AS day,
       i % 2 = 0 AS is_even
FROM generate_series(1, {rows}) AS i
"""
GENERATED = ("SELECT g AS id, 'customer ' || (g % 1000) AS customer, (g % 10000) / 100.0::float8 AS amount, "
             "g % 2 = 0 AS is_even FROM generate_series(1, {rows}) AS g")
QUESTION = {"metrics": ["profit", "margin"], "dimensions": ["channel", "metric_time__month"],
            "order_by": ["channel", "metric_time__month"]}
METRIC_SQL = ("SELECT channel, metric_time__month, MEASURE(profit) AS profit, MEASURE(margin) AS margin "
              "FROM metrics GROUP BY 1, 2 ORDER BY 1, 2")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def prepare(folder: Path, scale: int, rows: int, console: Console) -> Project:
    project_dir = folder / "shop"
    shutil.copytree(DEMO, project_dir)
    (project_dir / "data").mkdir()
    (project_dir / "models" / "wide.yml").write_text(WIDE_VIEW)
    started = time.perf_counter()
    con = duckdb.connect(str(project_dir / "data" / "shop.duckdb"))
    generate(con, scale=scale, seed=7)
    con.execute(WIDE_DUCKDB.format(rows=rows))
    con.close()
    project = Project.load(project_dir)
    project.build()
    console.print(f"generated {scale:,} orders and {rows:,} wide rows, built in {time.perf_counter() - started:.1f} s")
    return project


def load_postgres(dsn: str, rows: int, answer) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS phloem_bench CASCADE")
        conn.execute("CREATE SCHEMA phloem_bench")
        conn.execute(WIDE_POSTGRES.format(rows=rows))
        conn.execute("CREATE TABLE phloem_bench.answer (channel text, metric_time__month date, profit numeric, "
                     "margin float8)")
        with conn.cursor().copy("COPY phloem_bench.answer FROM STDIN") as copy:
            for row in answer.to_pylist():
                copy.write_row(list(row.values()))
        conn.execute("VACUUM ANALYZE phloem_bench.wide")
        conn.execute("VACUUM ANALYZE phloem_bench.answer")


class Server:
    """`phloem serve` as a subprocess: REST on one port, the wire protocol on another."""

    def __init__(self, project_dir: Path, log: Path, timeout: float = 300, env: dict[str, str] | None = None,
                 user: str = "bench", password: str | None = None, launcher: list[str] | None = None):
        """`env`: extra environment for the server (PHLOEM_PG_USERS, keys …); loopback clients need no password
        unless it sets PHLOEM_PG_TRUST. `user`/`password`: how the wire clients log in. `launcher`: what runs the CLI
        (default `python -m server.cli`; bench/soak.py --trace: bench/serve_traced.py)."""
        self.http_port, self.pg_port = free_port(), free_port()
        self.user, self.password = user, password
        self.log_path = log
        cmd = [*(launcher or [sys.executable, "-m", "server.cli"]), "serve", str(project_dir), "--host", HOST, "--port",
               str(self.http_port), "--pg-port", str(self.pg_port), "--timeout", f"{timeout:g}"]
        base = {k: v for k, v in os.environ.items() if k != "PHLOEM_PG_USERS" and not k.startswith("PHLOEM_MAX_")}
        env = {**base, "PHLOEM_PG_TRUST": "loopback", "PYTHONPATH": str(ROOT), **(env or {})}
        self.process = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited:\n{log.read_text()}")
            try:
                with psycopg.connect(self.dsn, connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except (psycopg.Error, httpx.HTTPError):
                time.sleep(0.2)
        raise RuntimeError(f"the server did not start:\n{log.read_text()}")

    @property
    def dsn(self) -> str:
        return make_conninfo(host=HOST, port=self.pg_port, user=self.user, dbname="shop",
                             **({"password": self.password} if self.password else {}))

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.http_port}"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()


# ------------------------------------------------------------------------------------------------ measuring

def round_trips(dsn: str, n: int, extended: bool, prepare: bool | None = None) -> float:
    """`prepare=None`: psycopg's default (prepared from the 5th run); False: never (a parameterless statement
    then goes as a simple-protocol Query message, a parameterized one as unnamed Parse/Bind/Execute)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.cursor()
        cur.execute("SELECT 1").fetchone()  # connection warm
        started = time.perf_counter()
        if extended:
            for i in range(n):
                cur.execute("SELECT %s::int", (i,), prepare=prepare)
                cur.fetchone()
        else:
            for _ in range(n):
                cur.execute("SELECT 1", prepare=prepare)
                cur.fetchone()
        return time.perf_counter() - started


def fetch_all(dsn: str, sql: str, binary: bool, expect: int) -> float:
    with psycopg.connect(dsn, autocommit=True) as conn:
        started = time.perf_counter()
        rows = conn.cursor(binary=binary).execute(sql).fetchall()
        elapsed = time.perf_counter() - started
    if len(rows) != expect:
        raise AssertionError(f"{len(rows)} rows instead of {expect}")
    return elapsed


def metric_wire(dsn: str, n: int, sql: str) -> tuple[float, list]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(sql).fetchall()
        started = time.perf_counter()
        for _ in range(n):
            conn.execute(sql).fetchall()
        return time.perf_counter() - started, rows


def metric_http(url: str, n: int) -> tuple[float, list]:
    with httpx.Client(base_url=url, timeout=60) as client:
        first = client.post("/api/v1/query", json=QUESTION)
        first.raise_for_status()
        started = time.perf_counter()
        for _ in range(n):
            client.post("/api/v1/query", json=QUESTION).raise_for_status()
        return time.perf_counter() - started, first.json()["rows"]


def metric_curl(url: str, n: int) -> tuple[float, list] | None:
    """The same REST requests from libcurl (pycurl, when installed): a C client, as psycopg's libpq is, so the
    figure is mostly the server's; httpx spends about as long again in Python per request."""
    try:
        import pycurl
    except ImportError:
        return None
    curl = pycurl.Curl()
    curl.setopt(pycurl.URL, f"{url}/api/v1/query")
    curl.setopt(pycurl.HTTPHEADER, ["Content-Type: application/json"])
    curl.setopt(pycurl.POSTFIELDS, json.dumps(QUESTION))

    def post() -> bytes:
        sink = io.BytesIO()
        curl.setopt(pycurl.WRITEDATA, sink)
        curl.perform()
        if curl.getinfo(pycurl.RESPONSE_CODE) != 200:
            raise RuntimeError(sink.getvalue().decode())
        return sink.getvalue()

    try:
        rows = json.loads(post())["rows"]
        started = time.perf_counter()
        for _ in range(n):
            json.loads(post())
        return time.perf_counter() - started, rows
    finally:
        curl.close()


def median_of(runs: int, measure: Callable[[], float]) -> tuple[float, list[float]]:
    times = [measure() for _ in range(runs)]
    return statistics.median(times), times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--scale", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--roundtrips", type=int, default=1000)
    parser.add_argument("--metric-queries", type=int, default=100)
    parser.add_argument("--pg-dsn", default=os.environ.get("PHLOEM_PG_DSN", DEFAULT_DSN))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    console = Console()
    out = args.out or RESULTS / f"pgwire-{args.rows}.json"
    folder = Path(tempfile.mkdtemp(prefix="phloem-pgwire-"))
    server = None
    mismatches: list[str] = []
    try:
        project = prepare(folder, args.scale, args.rows, console)
        answer = project.query(**QUESTION)
        project.close()
        load_postgres(args.pg_dsn, args.rows, answer)
        console.print("loaded the same rows into PostgreSQL")
        server = Server(folder / "shop", folder / "server.log")
        phloem, postgres = server.dsn, args.pg_dsn
        n, rows = args.roundtrips, args.rows
        cases = {
            f"{n} × SELECT 1": (lambda d: round_trips(d, n, False), lambda d: round_trips(d, n, False)),
            f"{n} × SELECT %s::int": (lambda d: round_trips(d, n, True), lambda d: round_trips(d, n, True)),
            f"{n} × SELECT 1, simple protocol": (lambda d: round_trips(d, n, False, False),
                                                 lambda d: round_trips(d, n, False, False)),
            f"{n} × SELECT %s::int, unprepared": (lambda d: round_trips(d, n, True, False),
                                                   lambda d: round_trips(d, n, True, False)),
            f"{rows:,} rows of a table, text": (
                lambda d: fetch_all(d, f"SELECT {COLUMNS} FROM wide", False, rows),
                lambda d: fetch_all(d, f"SELECT {COLUMNS} FROM phloem_bench.wide", False, rows)),
            f"{rows:,} rows of a table, binary": (
                lambda d: fetch_all(d, f"SELECT {COLUMNS} FROM wide", True, rows),
                lambda d: fetch_all(d, f"SELECT {COLUMNS} FROM phloem_bench.wide", True, rows)),
            f"{rows:,} rows of generate_series, text": (
                lambda d: fetch_all(d, GENERATED.format(rows=rows), False, rows),
                lambda d: fetch_all(d, GENERATED.format(rows=rows), False, rows)),
            f"{rows:,} rows of generate_series, binary": (
                lambda d: fetch_all(d, GENERATED.format(rows=rows), True, rows),
                lambda d: fetch_all(d, GENERATED.format(rows=rows), True, rows)),
        }
        results = []
        for i, (name, (ours, theirs)) in enumerate(cases.items()):
            order = [("phloem", ours, phloem), ("postgres", theirs, postgres)]
            if i % 2:
                order.reverse()
            timings = {}
            for side, fn, dsn in order:
                fn(dsn)  # warm (and the result cache for Phloem, as in steady use)
                timings[side] = median_of(args.runs, lambda fn=fn, dsn=dsn: fn(dsn))
            results.append({"case": name, "phloem_s": timings["phloem"][0], "postgres_s": timings["postgres"][0],
                            "phloem_runs": timings["phloem"][1], "postgres_runs": timings["postgres"][1]})
            console.print(f"{name}: phloem {timings['phloem'][0]:.3f} s, postgres {timings['postgres'][0]:.3f} s")

        q = args.metric_queries
        wire, pg, http, curl = [], [], [], []
        for i in range(args.runs):  # sides take turns going first; medians
            sides = [(wire, lambda: metric_wire(phloem, q, METRIC_SQL)),
                     (pg, lambda: metric_wire(postgres, q, "SELECT * FROM phloem_bench.answer ORDER BY 1, 2")),
                     (http, lambda: metric_http(server.url, q)), (curl, lambda: metric_curl(server.url, q))]
            for times, measure in sides[i % 4:] + sides[:i % 4]:
                times.append(measure())
        curl = [c for c in curl if c is not None]
        wire_s, wire_rows = statistics.median(t for t, _ in wire), wire[0][1]
        pg_s, pg_rows = statistics.median(t for t, _ in pg), pg[0][1]
        http_s = statistics.median(t for t, _ in http)
        curl_s = statistics.median(t for t, _ in curl) if curl else None
        if any(rows != http[0][1] for _, rows in curl):
            mismatches.append("REST over libcurl differs from REST over httpx")
        expected = [tuple(r.values()) for r in answer.to_pylist()]
        if wire_rows != expected:
            mismatches.append("metric query over the wire differs from project.query")
        if [tuple(r) for r in pg_rows] != [(c, m, p, float(g) if g is not None else None)
                                           for c, m, p, g in expected]:
            mismatches.append("PostgreSQL's answer table differs from project.query")
        results.append({"case": f"{q} × metric query (wire vs PostgreSQL table)", "phloem_s": wire_s,
                        "postgres_s": pg_s, "http_s": http_s, "curl_s": curl_s, "rows": len(expected),
                        "phloem_runs": [t for t, _ in wire], "postgres_runs": [t for t, _ in pg],
                        "http_runs": [t for t, _ in http], "curl_runs": [t for t, _ in curl]})
        console.print(f"metric query: wire {wire_s:.3f} s, http {http_s:.3f} s (libcurl: "
                      f"{'-' if curl_s is None else f'{curl_s:.3f}'} s), postgres {pg_s:.3f} s")
    finally:
        if server is not None:
            server.stop()
        with psycopg.connect(args.pg_dsn, autocommit=True) as conn:
            conn.execute("DROP SCHEMA IF EXISTS phloem_bench CASCADE")
        shutil.rmtree(folder, ignore_errors=True)

    table = Table(title=f"Phloem's wire protocol vs PostgreSQL 15 (psycopg {psycopg.__version__}, same machine)")
    for col in ("measurement", "Phloem s", "PostgreSQL s", "Phloem / PostgreSQL", "REST s (httpx / libcurl)"):
        table.add_column(col, justify="left" if col == "measurement" else "right")
    for r in results:
        ratio = r["phloem_s"] / r["postgres_s"]
        style = "green" if ratio <= 1.5 else "red"
        table.add_row(r["case"], f"{r['phloem_s']:.3f}", f"{r['postgres_s']:.3f}", f"[{style}]{ratio:.2f}×[/{style}]",
                      f"{r['http_s']:.3f} / {'-' if r.get('curl_s') is None else format(r['curl_s'], '.3f')}"
                      if "http_s" in r else "")
    console.print(table)
    for problem in mismatches:
        console.print(f"[red]!!! {problem}[/red]")
    info = {"rows": args.rows, "scale": args.scale, "runs": args.runs, "python": platform.python_version(),
            "psycopg": psycopg.__version__, "cpus": os.cpu_count(), "machine": platform.machine(),
            "results": results, "mismatches": mismatches}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(info, indent=2, default=str))
    console.print(f"wrote {out}")
    return 1 if mismatches else 0


if __name__ == "__main__":
    raise SystemExit(main())
