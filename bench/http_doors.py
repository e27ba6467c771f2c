"""Phloem over HTTP: throughput and latency of the REST and GraphQL doors, and what HTTP adds to the Python API.

    python bench/http_doors.py --scale 100000

1. copies `semantic/demo/project` to a work folder, generates the raw tables (`semantic.demo.generate`) into its
   `data/shop.duckdb`, builds the project (`Project.load(dir).build()`) and closes it;
2. times the Python API on those files in this process, with a fresh Project, before the server holds the
   file: `project.run(make_query(**QUESTION))` as a result-cache hit, and with a distinct `limit` per call (a
   miss in the plan cache and the result cache, so every call compiles and runs its SQL), the latter also with
   the server's `timeout=30` (which arms a cancel timer per query);
3. starts the real server as a subprocess (`python -m server.cli serve <dir> --host 127.0.0.1 --port <free>`)
   and waits for GET /healthz;
4. for each door (REST `POST /api/v1/query`, GraphQL `POST /graphql`), cached and uncached, and each number of
   concurrent clients (httpx.AsyncClient, HTTP/1.1 keep-alive, one connection per client), sends a fixed
   number of requests (stopping early after `--seconds`) and records every request's latency. Every answer is
   checked: status 200, the expected number of rows, and the cache status the server reports (`X-Phloem-Cache`
   for REST, `extensions.phloem.cached` for GraphQL) must be `hit` for cached and `miss` for uncached;
5. prints a table and writes bench/results/http-<scale>.json.

Cached: the same question every time (the result cache answers it). Uncached: the same question with
`limit` = a number unique to the request, larger than the answer, so the rows are the same but the
compiled SQL differs and neither the plan cache nor the result cache can answer it; DuckDB does the same work
as for the first cached request.

Only loopback addresses are used. The exit status is 1 if any request failed or was answered from the wrong
cache.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import httpx
import orjson
from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:  # `python bench/http_doors.py` from a checkout, installed or not
    sys.path.insert(0, str(ROOT))

from workdir import generated_demo  # noqa: E402

from semantic import Project  # noqa: E402
from semantic.query.query import make_query  # noqa: E402

DEMO = ROOT / "semantic" / "demo" / "project"
RESULTS = ROOT / "bench" / "results"
HOST = "127.0.0.1"  # loopback only

QUESTION = {"metrics": ["profit", "margin"], "dimensions": ["channel", "metric_time__month"]}
GQL_CACHED = "{ query { channel metricTime { month } profit margin } }"
GQL_UNCACHED = "query Uncached($limit: Int) { query(limit: $limit) { channel metricTime { month } profit margin } }"
SERVER_TIMEOUT = 30.0  # `serve --timeout`: the server's query time limit, as in production
CLIENT_TIMEOUT = 60.0  # per request, client side
# The client drops a connection idle for this long. uvicorn closes one idle for 5 s (its default
# `timeout_keep_alive`, which `phloem serve` keeps), and so does httpx by default: with both at 5 s, a POST sent
# on a connection the server is closing fails with ReadError. Staying under the server's timeout avoids that race.
CLIENT_KEEPALIVE_S = 3.0
STARTUP_SECONDS = 120.0


# ---------------------------------------------------------------------------------------------------------
# Setup
# ---------------------------------------------------------------------------------------------------------

def prepare(scale: int, seed: int, folder: Path, console: Console) -> dict:
    """The demo project in `folder`, `scale` orders generated and built; the Project is closed on return. A folder
    left by an earlier run with the same scale and seed (--workdir) is reused (the generator is deterministic)."""
    reuse, info = generated_demo(folder, scale, seed, console, ".bench-http.json")
    start = time.perf_counter()
    project = Project.load(folder)
    try:
        report = project.build()
    finally:
        project.close()
    info["build_s"] = round(time.perf_counter() - start, 3)
    info["built"] = list(report.built)
    console.print(f"  Project.load(dir).build(): {info['build_s']:.1f} s ({len(report.built)} tables built)")
    return info


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@dataclass
class Server:
    folder: Path
    port: int = 0
    process: subprocess.Popen | None = None
    log_path: Path | None = None
    startup_s: float = 0.0

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> None:
        self.port = free_port()
        self.log_path = self.folder / "server.log"
        log = self.log_path.open("wb")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        cmd = [sys.executable, "-m", "server.cli", "serve", str(self.folder), "--host", HOST,
               "--port", str(self.port), "--timeout", f"{SERVER_TIMEOUT:g}"]
        start = time.perf_counter()
        self.process = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL)
        log.close()
        deadline = start + STARTUP_SECONDS
        with httpx.Client(timeout=2.0, trust_env=False) as client:  # no proxy from the environment: loopback only
            while time.perf_counter() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.log()}")
                try:
                    if client.get(f"{self.base}/healthz").status_code == 200:
                        self.startup_s = time.perf_counter() - start
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the server did not answer /healthz within {STARTUP_SECONDS:g} s:\n{self.log()}")

    def cpu_s(self) -> float | None:
        """User + system CPU seconds of the server process (all its threads), from /proc; None elsewhere."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, AttributeError):
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mb(self) -> float | None:
        try:
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
        except (OSError, AttributeError):
            return None
        return None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def stop(self) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.terminate()  # our own child, by its pid
        try:
            return self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout=15)


# ---------------------------------------------------------------------------------------------------------
# The Python API, in-process (no HTTP)
# ---------------------------------------------------------------------------------------------------------

def time_calls(call: Callable[[int], object], n: int, seconds: float) -> list[float]:
    """Seconds per call for up to `n` calls, stopping after `seconds`."""
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    for i in range(n):
        start = time.perf_counter()
        call(i)
        times.append(time.perf_counter() - start)
        if time.perf_counter() > deadline:
            break
    return times


def measure_api(folder: Path, cached_n: int, uncached_n: int, seconds: float, unique: itertools.count) -> dict:
    """`project.run(make_query(...))` on a fresh Project over the built files (before the server opens them)."""
    project = Project.load(folder)
    try:
        rows = project.run(make_query(**QUESTION)).table.num_rows  # warm-up: freshness check, compile, result cache
        for _ in range(20):
            project.run(make_query(**QUESTION))

        def cached(_: int) -> None:
            assert project.run(make_query(**QUESTION)).cached

        def uncached(timeout: float | None) -> float:
            limit = next(unique)
            start = time.perf_counter()
            answer = project.run(make_query(**QUESTION, limit=limit), timeout=timeout)
            elapsed = time.perf_counter() - start
            assert not answer.cached and answer.table.num_rows == rows
            return elapsed

        out = {"rows": rows, "cached": time_calls(cached, cached_n, seconds), "uncached": [],
               "uncached_with_timeout": []}
        # Uncached: as a Python caller runs it (no timeout), and as the REST door runs it, project.run(q, None,
        # True, timeout), which arms a threading.Timer per executed query. The two take turns going first. (A cache
        # hit returns before the timer, so the cached figure is the same either way.)
        deadline = time.perf_counter() + 2 * seconds
        for i in range(uncached_n):
            for timeout in ((None, SERVER_TIMEOUT) if i % 2 == 0 else (SERVER_TIMEOUT, None)):
                key = "uncached" if timeout is None else "uncached_with_timeout"
                out[key].append(uncached(timeout))
            if time.perf_counter() > deadline:
                break
        return out
    finally:
        project.close()


# ---------------------------------------------------------------------------------------------------------
# The doors, over HTTP
# ---------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Door:
    name: str
    path: str

    def body(self, cached: bool, limit: int | None) -> dict:
        if self.name == "REST":
            return QUESTION if cached else {**QUESTION, "limit": limit}
        return {"query": GQL_CACHED} if cached else {"query": GQL_UNCACHED, "variables": {"limit": limit}}

    def check(self, response: httpx.Response, rows: int) -> tuple[str | None, str | None]:
        """(cache status `hit`/`miss`, error) of an answer."""
        if response.status_code != 200:
            return None, f"HTTP {response.status_code}: {response.text[:300]}"
        try:
            doc = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            return None, f"not JSON: {response.text[:300]}"
        if self.name == "REST":
            got = len(doc.get("rows", []))
            cache = response.headers.get("x-phloem-cache")
        else:
            if doc.get("errors"):
                return None, f"GraphQL errors: {str(doc['errors'])[:300]}"
            got = len((doc.get("data") or {}).get("query") or [])
            cached = ((doc.get("extensions") or {}).get("phloem") or {}).get("cached")
            cache = None if cached is None else ("hit" if cached else "miss")
        if got != rows:
            return cache, f"{got} rows instead of {rows}"
        return cache, None


REST = Door("REST", "/api/v1/query")
GRAPHQL = Door("GraphQL", "/graphql")


@dataclass
class Run:
    door: str
    cached: bool
    clients: int
    latencies: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    cache: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    wrong_cache: int = 0
    seconds: float = 0.0
    stopped_by_time: bool = False
    client_cpu_s: float = 0.0
    server_cpu_s: float | None = None
    other_cpu_s: float | None = None

    @property
    def ok(self) -> int:
        return len(self.latencies) - len(self.errors)

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0


def machine_busy_s() -> float | None:
    """CPU seconds the whole machine has spent busy (all cores, all processes), from /proc/stat; None elsewhere."""
    try:
        ticks = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    busy = sum(ticks[:8]) - idle  # user nice system idle iowait irq softirq steal (guest is counted in user)
    return busy / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


async def load(client: httpx.AsyncClient, url: str, bodies: Callable[[], dict], clients: int, total: int,
               seconds: float, on_answer: Callable[[httpx.Response | None, float, str | None], None]) -> tuple[float, bool]:
    """`clients` workers share `total` requests (no new request after `seconds`); returns (elapsed s, cut short)."""
    issued = 0
    start = time.perf_counter()
    deadline = start + seconds

    async def worker() -> None:
        nonlocal issued
        while issued < total and time.perf_counter() < deadline:
            issued += 1
            body = bodies()
            t0 = time.perf_counter()
            try:
                response = await client.post(url, json=body)
            except httpx.HTTPError as e:
                on_answer(None, time.perf_counter() - t0, f"{type(e).__name__}: {e!r}")
                continue
            on_answer(response, time.perf_counter() - t0, None)

    await asyncio.gather(*(worker() for _ in range(clients)))
    return time.perf_counter() - start, issued < total


async def measure_door(server: Server, door: Door, cached: bool, clients: int, total: int, seconds: float,
                       rows: int, unique: itertools.count) -> Run:
    run = Run(door.name, cached, clients)
    url = server.base + door.path
    expected = "hit" if cached else "miss"
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients,
                          keepalive_expiry=CLIENT_KEEPALIVE_S)

    def bodies() -> dict:
        return door.body(cached, None if cached else next(unique))

    def record(response: httpx.Response | None, elapsed: float, error: str | None) -> None:
        run.latencies.append(elapsed)
        if response is None:
            run.statuses["exception"] += 1
            run.errors.append(error)
            return
        run.statuses[response.status_code] += 1
        cache, error = door.check(response, rows)
        run.cache[cache or "none"] += 1
        if error:
            run.errors.append(error)
        elif cache != expected:
            run.wrong_cache += 1

    warm: list[str] = []

    def warmed(response: httpx.Response | None, _: float, error: str | None) -> None:
        error = error or door.check(response, rows)[1]
        if error:
            warm.append(error)

    async with httpx.AsyncClient(http1=True, http2=False, limits=limits, timeout=CLIENT_TIMEOUT,
                                 trust_env=False) as client:  # no proxy from the environment: loopback only
        # warm-up, untimed: fill the result cache (cached), then open one keep-alive connection per client
        await load(client, url, bodies, 1, 1, seconds, warmed)
        await load(client, url, bodies, clients, clients, seconds, warmed)
        cpu0, server0, machine0 = time.process_time(), server.cpu_s(), machine_busy_s()
        run.seconds, run.stopped_by_time = await load(client, url, bodies, clients, total, seconds, record)
        run.client_cpu_s = time.process_time() - cpu0
        server1, machine1 = server.cpu_s(), machine_busy_s()
        if server0 is not None and server1 is not None:
            run.server_cpu_s = server1 - server0
            if machine0 is not None and machine1 is not None:  # everything else the machine ran meanwhile
                run.other_cpu_s = max(0.0, machine1 - machine0 - run.server_cpu_s - run.client_cpu_s)
    run.errors = [f"warm-up: {e}" for e in warm] + run.errors
    return run


# ---------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------

def ms(seconds: float) -> float:
    return seconds * 1000


def summary(values_s: list[float], unit: float = 1000) -> dict:
    if not values_s:
        return {}
    return {"n": len(values_s), "median": round(statistics.median(values_s) * unit, 4),
            "p90": round(percentile(values_s, 90) * unit, 4), "p99": round(percentile(values_s, 99) * unit, 4),
            "min": round(min(values_s) * unit, 4), "max": round(max(values_s) * unit, 4),
            "mean": round(statistics.fmean(values_s) * unit, 4)}


def run_json(r: Run) -> dict:
    return {
        "door": r.door, "cached": r.cached, "clients": r.clients, "requests": len(r.latencies), "ok": r.ok,
        "errors": len(r.errors), "error_samples": r.errors[:5], "wrong_cache": r.wrong_cache,
        "statuses": {str(k): v for k, v in r.statuses.items()}, "cache_status": dict(r.cache),
        "seconds": round(r.seconds, 4), "stopped_by_time": r.stopped_by_time, "rps": round(r.rps, 2),
        "latency_ms": summary(r.latencies),
        "client_cpu_s": round(r.client_cpu_s, 3),
        "server_cpu_s": None if r.server_cpu_s is None else round(r.server_cpu_s, 3),
        "other_processes_cpu_s": None if r.other_cpu_s is None else round(r.other_cpu_s, 3),
        "server_cpu_ms_per_request": None if r.server_cpu_s is None or not r.latencies
        else round(ms(r.server_cpu_s) / len(r.latencies), 4),
    }


def print_tables(runs: list[Run], api: dict, info: dict, console: Console) -> None:
    table = Table(title=f"Phloem over HTTP — {info['scale']:,} orders, keep-alive, one connection per client")
    for name in ("door", "cache", "clients", "requests", "errors", "req/s", "p50 ms", "p99 ms", "max ms",
                 "client CPU", "server CPU", "server CPU ms/req", "other CPU"):
        table.add_column(name, justify="left" if name in ("door", "cache") else "right")
    for r in runs:
        bad = len(r.errors) + r.wrong_cache
        server_cpu = r.server_cpu_s
        table.add_row(
            r.door, "cached" if r.cached else "uncached", str(r.clients),
            f"{len(r.latencies)}{'*' if r.stopped_by_time else ''}",
            f"[bold red]{bad}[/]" if bad else "0",
            f"{r.rps:,.0f}",
            f"{ms(statistics.median(r.latencies)):.2f}",
            f"{ms(percentile(r.latencies, 99)):.2f}",
            f"{ms(max(r.latencies)):.1f}",
            f"{r.client_cpu_s / r.seconds:.0%}" if r.seconds else "–",
            "–" if server_cpu is None else f"{server_cpu / r.seconds:.0%}",
            "–" if server_cpu is None else f"{ms(server_cpu) / len(r.latencies):.2f}",
            "–" if r.other_cpu_s is None else f"{r.other_cpu_s / r.seconds:.0%}",
        )
    console.print(table)
    if any(r.stopped_by_time for r in runs):
        console.print(f"* stopped by the {info['seconds']:g} s limit before the requested count")
    console.print("CPU columns: share of one core over the run (client = this process, server = its subprocess, "
                  "all threads; other = every other process on the machine); errors = failed requests + answers "
                  "from the wrong cache.")

    def c1(door: str, cached: bool) -> float | None:
        for r in runs:
            if r.door == door and r.cached == cached and r.clients == 1:
                return statistics.median(r.latencies)
        return None

    overhead = Table(title="What HTTP adds: Python API in-process vs one client over HTTP (medians, µs)")
    for name in ("question", "project.run(make_query(…))", "REST p50 (1 client)", "REST − API",
                 "GraphQL p50 (1 client)", "GraphQL − API"):
        overhead.add_column(name, justify="left" if name == "question" else "right")
    for label, key, cached in (("cached", "cached", True), ("uncached", "uncached", False)):
        api_s = statistics.median(api[key])
        rest, gql = c1("REST", cached), c1("GraphQL", cached)
        overhead.add_row(
            label, f"{api_s * 1e6:,.0f}",
            "–" if rest is None else f"{rest * 1e6:,.0f}", "–" if rest is None else f"{(rest - api_s) * 1e6:+,.0f}",
            "–" if gql is None else f"{gql * 1e6:,.0f}", "–" if gql is None else f"{(gql - api_s) * 1e6:+,.0f}")
    console.print(overhead)
    console.print(f"uncached with timeout={SERVER_TIMEOUT:g} (as the server calls project.run): median "
                  f"{statistics.median(api['uncached_with_timeout']) * 1e6:,.0f} µs")
    m = info["machine"]
    console.print(f"server up in {info['server']['startup_s']:.2f} s, RSS {info['server']['rss_mb_end']} MB at the end; "
                  f"DuckDB {m['duckdb']}, httpx {m['httpx']}, {m['cpus']} CPUs; load average "
                  f"{m['loadavg_start']} → {m['loadavg_end']}")


def loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def server_log_problems(text: str) -> list[str]:
    return [line for line in text.splitlines()
            if any(word in line for word in ("Traceback", "ERROR", "Error", "Exception", "WARNING"))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=100_000, help="orders in the generated shop")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--clients", default="1,10,50", help="concurrent clients, comma-separated")
    parser.add_argument("--cached-requests", type=int, default=2000, help="timed requests per cached run")
    parser.add_argument("--uncached-requests", type=int, default=300, help="timed requests per uncached run")
    parser.add_argument("--seconds", type=float, default=20.0, help="no new request after this long in one run")
    parser.add_argument("--workdir", help="keep the project here (reused by a later run with the same scale/seed)")
    parser.add_argument("--out", help="JSON path (default bench/results/http-<scale>.json)")
    args = parser.parse_args(argv)
    clients = [int(c) for c in args.clients.split(",") if c.strip()]
    if not clients or min(clients) < 1 or max(clients) > 500:
        parser.error("--clients takes numbers from 1 to 500")
    if min(args.cached_requests, args.uncached_requests) < 1 or args.seconds <= 0:
        parser.error("request counts and --seconds must be positive")

    console = Console(highlight=False, width=max(160, Console().width))
    info: dict = {"scale": args.scale, "seed": args.seed, "seconds": args.seconds, "clients": clients,
                  "cached_requests": args.cached_requests, "uncached_requests": args.uncached_requests,
                  "question": QUESTION, "graphql_cached": GQL_CACHED, "graphql_uncached": GQL_UNCACHED,
                  "server_timeout_s": SERVER_TIMEOUT, "client_keepalive_s": CLIENT_KEEPALIVE_S,
                  "machine": {"python": platform.python_version(), "duckdb": duckdb.__version__,
                              "httpx": httpx.__version__, "platform": platform.platform(), "cpus": os.cpu_count(),
                              "loadavg_start": loadavg()}}
    unique = itertools.count(1_000_000)  # limits: larger than any answer, never repeated within the run

    temp = None if args.workdir else tempfile.mkdtemp(prefix="phloem-http-")
    folder = Path(args.workdir) / f"http-{args.scale}" if args.workdir else Path(temp) / "project"
    server = Server(folder)
    runs: list[Run] = []
    try:
        info.update(prepare(args.scale, args.seed, folder, console))

        console.print("Python API, in-process …")
        api = measure_api(folder, args.cached_requests, args.uncached_requests, args.seconds, unique)
        rows = api["rows"]
        info["answer_rows"] = rows

        console.print("starting the server …")
        server.start()
        info["server"] = {"startup_s": round(server.startup_s, 3), "port": server.port, "rss_mb_start": server.rss_mb()}
        console.print(f"  {server.base} up in {server.startup_s:.2f} s")

        plan = [(door, cached, n) for door in (REST, GRAPHQL) for cached in (True, False) for n in clients]
        for door, cached, n in plan:
            total = args.cached_requests if cached else args.uncached_requests
            r = asyncio.run(measure_door(server, door, cached, n, total, args.seconds, rows, unique))
            runs.append(r)
            flag = f"  [bold red]{len(r.errors)} errors, {r.wrong_cache} wrong cache[/]" if r.errors or r.wrong_cache else ""
            console.print(f"  {door.name:8} {'cached' if cached else 'uncached':8} {n:3} clients: "
                          f"{len(r.latencies):5} requests in {r.seconds:5.1f} s, {r.rps:8,.0f} req/s, "
                          f"p50 {ms(statistics.median(r.latencies)):7.2f} ms, "
                          f"p99 {ms(percentile(r.latencies, 99)):7.2f} ms{flag}")
            for e in r.errors[:3]:
                console.print(f"    [red]{e}[/]")
        info["server"]["rss_mb_end"] = server.rss_mb()
        info["server"]["exit_code"] = server.stop()
        log = server.log()
        info["server"]["log_problems"] = server_log_problems(log)[:50]
        info["server"]["log_tail"] = log.splitlines()[-20:]
    finally:
        server.stop()
        if temp:
            shutil.rmtree(temp, ignore_errors=True)
    info["machine"]["loadavg_end"] = loadavg()

    print_tables(runs, api, info, console)
    if info["server"]["log_problems"]:
        console.print(f"[bold red]the server log has {len(info['server']['log_problems'])} problem lines[/], e.g.:")
        for line in info["server"]["log_problems"][:5]:
            console.print(f"  {line}", markup=False)

    overhead = {}
    for key, cached in (("cached", True), ("uncached", False)):
        api_us = statistics.median(api[key]) * 1e6
        overhead[key] = {"api_median_us": round(api_us, 1)}
        for r in runs:
            if r.cached == cached and r.clients == 1:
                p50 = statistics.median(r.latencies) * 1e6
                overhead[key][f"{r.door.lower()}_p50_us"] = round(p50, 1)
                overhead[key][f"{r.door.lower()}_minus_api_us"] = round(p50 - api_us, 1)
    out = {**info,
           "python_api_us": {k: summary(api[k], 1e6) for k in ("cached", "uncached", "uncached_with_timeout")},
           "http_overhead": overhead, "runs": [run_json(r) for r in runs]}
    path = Path(args.out) if args.out else RESULTS / f"http-{args.scale}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1, default=str) + "\n")
    console.print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    failed = any(r.errors or r.wrong_cache for r in runs)
    if failed:
        console.print("[bold red]!!! some requests failed or were answered from the wrong cache (see above)[/]")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
