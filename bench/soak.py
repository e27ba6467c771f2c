"""Phloem under a long mixed load: every door at once, errors, latency per door, and the server's memory over time.

    python bench/soak.py                 # 600 s, 50 clients, the demo at 20,000 orders
    python bench/soak.py --seconds 120

1. generates the demo shop into a temporary folder (`semantic.demo.create`);
2. starts the real server as a subprocess (`python -m server.cli serve <dir> --port <free> --pg-port <free>`, via
   bench/pgwire.py's `Server`: REST, GraphQL, HTTP SQL and the wire protocol in one process);
3. runs `--clients` concurrent clients for `--seconds`. Each request picks a door (REST `POST /api/v1/query`,
   GraphQL `POST /graphql`, `POST /api/v1/sql`, the PostgreSQL wire with psycopg on the client's own connection,
   or an explorer call: `/api/v1/tree`, `/api/v1/tree/series`, `/api/v1/meta`) and a question: one of a few fixed
   ones (`--repeat` of the time: result-cache hits) or a random one (1-3 metrics, 0-2 dimensions, maybe a filter,
   from the demo model). Every request's door, kind, latency and outcome is recorded;
4. meanwhile samples the server's VmRSS (/proc/PID/status) and the load average every `--sample` seconds, and
   every `--check-every` seconds asks one random question at the four doors and compares the numbers;
5. prints the tables and writes bench/results/soak-<seconds>.json.

Only loopback addresses are used. The exit status is 1 if any request failed or any door disagreed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:  # `python bench/soak.py` from a checkout, installed or not
    sys.path.insert(0, str(ROOT))

from http_doors import CLIENT_KEEPALIVE_S, loadavg, percentile, server_log_problems  # noqa: E402
from memory import rss_mb  # noqa: E402
from pgwire import Server  # noqa: E402

RESULTS = ROOT / "bench" / "results"
CLIENT_TIMEOUT = 60.0

# every metric here is answered by views that have both `channel` and `country` (orders, order_lines)
METRICS = ["revenue", "discounts", "refunds", "net_revenue", "cogs", "shipping", "payment_fees", "costs", "profit",
           "margin", "orders", "buyers", "aov"]
DIMENSIONS = ["channel", "country", "metric_time__month", "metric_time__week"]
GRAPHQL_DIMENSION = {"channel": "channel", "country": "country", "metric_time__month": "metricTime { month }",
                     "metric_time__week": "metricTime { week }"}
DOORS = {"rest": 30, "graphql": 20, "sql": 20, "wire": 25, "explorer": 5}  # share of the requests
MONTHS = [f"2025-{m:02d}" for m in range(2, 13)]


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


@dataclass(frozen=True)
class Question:
    metrics: tuple[str, ...]
    dimensions: tuple[str, ...] = ()
    where: tuple[str, tuple[str, ...]] | None = None  # (dimension, values it is in)
    limit: int | None = None  # a number unique to the request makes it a cache miss at every door

    def rest(self) -> dict:
        body = {"metrics": list(self.metrics), "dimensions": list(self.dimensions)}
        if self.where:
            body["filters"] = [f"{self.where[0]} in ({', '.join(quoted(v) for v in self.where[1])})"]
        if self.limit is not None:
            body["limit"] = self.limit
        return body

    def sql(self) -> str:
        columns = [*self.dimensions, *(f"MEASURE({m}) AS {m}" for m in self.metrics)]
        where = f" WHERE {self.where[0]} IN ({', '.join(quoted(v) for v in self.where[1])})" if self.where else ""
        group = f" GROUP BY {', '.join(str(i + 1) for i in range(len(self.dimensions)))}" if self.dimensions else ""
        limit = f" LIMIT {self.limit}" if self.limit is not None else ""
        return f"SELECT {', '.join(columns)} FROM metrics{where}{group}{limit}"

    def graphql(self) -> dict:
        arguments = []
        if self.where:
            arguments.append(f"where: {{{self.where[0]}: {{in: {json.dumps(list(self.where[1]))}}}}}")
        if self.limit is not None:
            arguments.append(f"limit: {self.limit}")
        where = f"({', '.join(arguments)})" if arguments else ""
        fields = [GRAPHQL_DIMENSION[d] for d in self.dimensions] + [camel(m) for m in self.metrics]
        return {"query": f"{{ query{where} {{ {' '.join(fields)} }} }}"}

    # ---- answers, as {dimension values: metric values}
    def numbers(self, rows: list[dict]) -> dict[tuple, tuple]:
        out = {}
        for row in rows:
            key = tuple(str(row[d])[:10] if row[d] is not None else None for d in self.dimensions)
            out[key] = tuple(None if row[m] is None else float(row[m]) for m in self.metrics)
        return out

    def from_graphql(self, rows: list[dict]) -> dict[tuple, tuple]:
        flat = []
        for row in rows:
            flat.append({**{d: (row["metricTime"][d.rsplit("__", 1)[1]] if d.startswith("metric_time__") else row[d])
                            for d in self.dimensions}, **{m: row[camel(m)] for m in self.metrics}})
        return self.numbers(flat)


def quoted(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def same(a: dict[tuple, tuple], b: dict[tuple, tuple]) -> bool:
    if a.keys() != b.keys():
        return False
    for key, values in a.items():
        for x, y in zip(values, b[key], strict=True):
            if (x is None) != (y is None) or (x is not None and not math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-6)):
                return False
    return True


def random_question(rng: random.Random, values: dict[str, list[str]]) -> Question:
    metrics = tuple(rng.sample(METRICS, rng.randint(1, 3)))
    dimensions = tuple(rng.sample(DIMENSIONS, rng.choice((0, 1, 1, 2))))
    where = None
    if rng.random() < 0.4:
        dim = rng.choice(("channel", "country"))
        where = (dim, tuple(sorted(rng.sample(values[dim], rng.randint(1, min(3, len(values[dim])))))))
    return Question(metrics, dimensions, where)


REPEATED = [
    Question(("revenue",), ("metric_time__month",)),
    Question(("profit", "margin"), ("channel", "metric_time__month")),
    Question(("revenue", "orders"), ("channel",)),
    Question(("buyers",), ("metric_time__week",)),
    Question(("aov",), ("country",)),
    Question(("profit",)),
]


# ------------------------------------------------------------------------------------------ the doors

class Doors:
    """One question at any door, as a client sends it; raises on any failure (status, GraphQL errors, SQLSTATE)."""

    def __init__(self, server: Server, http: httpx.AsyncClient):
        self.server, self.http = server, http

    async def rest(self, q: Question) -> tuple[dict, str]:
        r = await self.http.post("/api/v1/query", json=q.rest())
        doc = checked(r)
        names = [c["name"] for c in doc["columns"]]
        return q.numbers([dict(zip(names, row, strict=True)) for row in doc["rows"]]), r.headers.get("x-phloem-cache", "")

    async def sql(self, q: Question) -> tuple[dict, str]:
        r = await self.http.post("/api/v1/sql", json={"sql": q.sql()})
        doc = checked(r)
        names = [c["name"] for c in doc["columns"]]
        return q.numbers([dict(zip(names, row, strict=True)) for row in doc["rows"]]), r.headers.get("x-phloem-cache", "")

    async def graphql(self, q: Question) -> tuple[dict, str]:
        r = await self.http.post("/graphql", json=q.graphql())
        doc = checked(r)
        if doc.get("errors"):
            code = ((doc["errors"][0].get("extensions") or {}).get("code")) or "?"
            raise Refused(f"graphql {code}", f"GraphQL errors: {str(doc['errors'])[:300]}")
        cached = ((doc.get("extensions") or {}).get("phloem") or {}).get("cached")
        return q.from_graphql(doc["data"]["query"]), "hit" if cached else "miss"

    async def wire(self, q: Question, conn: psycopg.AsyncConnection) -> tuple[dict, str]:
        cur = await conn.execute(q.sql())
        names = [c.name for c in cur.description]
        return q.numbers([dict(zip(names, row, strict=True)) for row in await cur.fetchall()]), ""

    async def explorer(self, rng: random.Random) -> tuple[dict, str]:
        month = rng.choice(MONTHS)
        kind = rng.choice(("tree", "series", "meta"))
        if kind == "tree":
            r = await self.http.get("/api/v1/tree", params={"root": "profit", "start": f"{month}-01",
                                                            "end": f"{month}-28"})
        elif kind == "series":
            r = await self.http.get("/api/v1/tree/series", params={"root": "profit", "grain": "month"})
        else:
            r = await self.http.get("/api/v1/meta")
        checked(r)
        return {}, kind


class Refused(Exception):
    """A door's answer that is not a success: `outcome` is `HTTP <status>` or `graphql <code>`."""

    def __init__(self, outcome: str, text: str):
        super().__init__(f"{outcome}: {text}" if not text.startswith("GraphQL") else text)
        self.outcome = outcome


def checked(r: httpx.Response) -> dict:
    if r.status_code != 200:
        raise Refused(f"HTTP {r.status_code}", r.text[:300])
    return r.json()


# ------------------------------------------------------------------------------------------ the load

@dataclass
class Outcome:
    t: float  # seconds since the start
    door: str
    kind: str  # repeated | varied | tree | series | meta
    latency: float
    error: str | None
    cache: str = ""


class Soak:
    def __init__(self, server: Server, args: argparse.Namespace, values: dict[str, list[str]]):
        self.server, self.args, self.values = server, args, values
        self.outcomes: list[Outcome] = []
        self.samples: list[dict] = []
        self.checks: list[dict] = []
        self.start = 0.0
        self.headers = soak_headers(args)

    async def run(self) -> None:
        limits = httpx.Limits(max_connections=self.args.clients, max_keepalive_connections=self.args.clients,
                              keepalive_expiry=CLIENT_KEEPALIVE_S)
        async with httpx.AsyncClient(base_url=self.server.url, limits=limits, timeout=CLIENT_TIMEOUT,
                                     headers=self.headers, trust_env=False) as http:
            doors = Doors(self.server, http)
            self.start = time.perf_counter()
            deadline = self.start + self.args.seconds
            await asyncio.gather(self.sampler(deadline), self.checker(doors, deadline),
                                 *(self.client(i, doors, deadline) for i in range(self.args.clients)))

    def now(self) -> float:
        return time.perf_counter() - self.start

    async def client(self, i: int, doors: Doors, deadline: float) -> None:
        rng = random.Random(self.args.seed * 1000 + i)
        conn: psycopg.AsyncConnection | None = None
        names, weights = list(DOORS), list(DOORS.values())
        try:
            while time.perf_counter() < deadline:
                door = rng.choices(names, weights)[0]
                repeated = rng.random() < self.args.repeat
                q = rng.choice(REPEATED) if repeated else random_question(rng, self.values)
                kind, cache, error = "repeated" if repeated else "varied", "", None
                started = time.perf_counter()
                try:
                    if door == "wire":
                        if conn is None or conn.closed:
                            conn = await psycopg.AsyncConnection.connect(self.server.dsn, autocommit=True,
                                                                         connect_timeout=10)
                        _, cache = await asyncio.wait_for(doors.wire(q, conn), CLIENT_TIMEOUT)
                    elif door == "explorer":
                        _, kind = await doors.explorer(rng)
                    else:
                        _, cache = await getattr(doors, door)(q)
                except Exception as e:  # noqa: BLE001 - every failure is an outcome, counted and reported
                    error = f"{type(e).__name__}: {str(e)[:300]}"
                    if door == "wire" and conn is not None:
                        await conn.close()
                        conn = None
                self.outcomes.append(Outcome(round(self.now(), 3), door, kind, time.perf_counter() - started,
                                             error, cache))
                if self.args.think:
                    await asyncio.sleep(rng.uniform(0, 2 * self.args.think))
        finally:
            if conn is not None:
                await conn.close()

    async def sampler(self, deadline: float) -> None:
        pid = self.server.process.pid
        while True:
            self.samples.append({"t": round(self.now(), 1), "rss_mb": round(rss_mb(pid), 1),
                                 "load1": round(os.getloadavg()[0], 2), "requests": len(self.outcomes)})
            if time.perf_counter() >= deadline:
                return
            await asyncio.sleep(min(self.args.sample, max(0.0, deadline - time.perf_counter())))

    async def checker(self, doors: Doors, deadline: float) -> None:
        """One random question at the four doors every few seconds: the numbers must be the same."""
        rng = random.Random(self.args.seed)
        async with await psycopg.AsyncConnection.connect(self.server.dsn, autocommit=True) as conn:
            while time.perf_counter() + self.args.check_every < deadline:
                await asyncio.sleep(self.args.check_every)
                q = random_question(rng, self.values) if self.checks else REPEATED[1]
                check = {"t": round(self.now(), 1), "sql": q.sql()}
                try:
                    answers = {"rest": (await doors.rest(q))[0], "sql": (await doors.sql(q))[0],
                               "graphql": (await doors.graphql(q))[0], "wire": (await doors.wire(q, conn))[0]}
                    check["rows"] = len(answers["rest"])
                    check["same"] = all(same(answers["rest"], a) for a in answers.values())
                    if not check["same"]:
                        check["answers"] = {d: {str(k): v for k, v in a.items()} for d, a in answers.items()}
                except Exception as e:  # noqa: BLE001
                    check["same"], check["error"] = False, f"{type(e).__name__}: {str(e)[:300]}"
                self.checks.append(check)


# ------------------------------------------------------------------------------------------ the report

def slope_mb_per_min(samples: list[dict]) -> float | None:
    """Least-squares slope of RSS over the samples given, in MB per minute."""
    if len(samples) < 3:
        return None
    ts, ys = [s["t"] for s in samples], [s["rss_mb"] for s in samples]
    mt, my = statistics.fmean(ts), statistics.fmean(ys)
    var = sum((t - mt) ** 2 for t in ts)
    return None if var == 0 else sum((t - mt) * (y - my) for t, y in zip(ts, ys, strict=True)) / var * 60


def door_summary(outcomes: list[Outcome]) -> dict:
    lat = [o.latency for o in outcomes]
    errors = [o.error for o in outcomes if o.error]
    return {"requests": len(outcomes), "errors": len(errors), "error_samples": list(dict.fromkeys(errors))[:5],
            "kinds": dict(Counter(o.kind for o in outcomes)), "cache": dict(Counter(o.cache for o in outcomes if o.cache)),
            "p50_ms": round(statistics.median(lat) * 1000, 2) if lat else None,
            "p95_ms": round(percentile(lat, 95) * 1000, 2) if lat else None,
            "p99_ms": round(percentile(lat, 99) * 1000, 2) if lat else None,
            "max_ms": round(max(lat) * 1000, 1) if lat else None}


def report(soak: Soak, info: dict, console: Console) -> dict:
    by_door: dict[str, list[Outcome]] = defaultdict(list)
    for o in soak.outcomes:
        by_door[o.door].append(o)
    doors = {d: door_summary(by_door[d]) for d in DOORS}
    doors["all"] = door_summary(soak.outcomes)
    seconds = soak.args.seconds
    table = Table(title=f"Phloem soak — {soak.args.clients} clients, {seconds:g} s, {info['scale']:,} orders")
    for name in ("door", "requests", "req/s", "errors", "repeated / varied", "cache hits", "p50 ms", "p95 ms",
                 "p99 ms", "max ms"):
        table.add_column(name, justify="left" if name == "door" else "right")
    for door, s in doors.items():
        kinds = s["kinds"]
        mix = f"{kinds.get('repeated', 0)} / {kinds.get('varied', 0)}" if door not in ("explorer",) else \
            " ".join(f"{k} {v}" for k, v in sorted(kinds.items()))
        hits = s["cache"].get("hit", 0)
        misses = s["cache"].get("miss", 0)
        table.add_row(door, f"{s['requests']:,}", f"{s['requests'] / seconds:,.1f}",
                      f"[bold red]{s['errors']}[/]" if s["errors"] else "0", mix,
                      f"{hits / (hits + misses):.0%}" if hits + misses else "–",
                      *(f"{s[k]:.1f}" if s[k] is not None else "–" for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms")))
    console.print(table)

    samples = soak.samples
    second_half = [s for s in samples if s["t"] >= seconds / 2]
    rss = [s["rss_mb"] for s in samples]
    memory = {"first_mb": rss[0], "last_mb": rss[-1], "max_mb": max(rss),
              "slope_mb_per_min_second_half": None if (sl := slope_mb_per_min(second_half)) is None else round(sl, 2),
              "slope_mb_per_min_whole": None if (sw := slope_mb_per_min(samples)) is None else round(sw, 2)}
    rss_table = Table(title="server RSS over time")
    for name in ("t s", "RSS MB", "load 1 min", "requests so far"):
        rss_table.add_column(name, justify="right")
    step = max(1, len(samples) // 20)
    for s in samples[::step] + ([samples[-1]] if (len(samples) - 1) % step else []):
        rss_table.add_row(f"{s['t']:.0f}", f"{s['rss_mb']:.1f}", f"{s['load1']:.2f}", f"{s['requests']:,}")
    console.print(rss_table)
    console.print(f"RSS first {memory['first_mb']:.1f} MB, last {memory['last_mb']:.1f} MB, max {memory['max_mb']:.1f} MB; "
                  f"slope over the second half {memory['slope_mb_per_min_second_half']} MB/min "
                  f"(whole run {memory['slope_mb_per_min_whole']} MB/min)")
    bad_checks = [c for c in soak.checks if not c["same"]]
    console.print(f"same number at every door: {len(soak.checks) - len(bad_checks)} of {len(soak.checks)} checks")
    for c in bad_checks[:3]:
        console.print(f"  [red]differs at t={c['t']}: {c['sql']} {c.get('error', '')}[/]", markup=True)
    for door, s in doors.items():
        for e in s["error_samples"][:3] if door != "all" else []:
            console.print(f"  [red]{door}: {e}[/]", markup=False)
    console.print(f"load average (1, 5, 15 min): start {info['machine']['loadavg_start']}, "
                  f"end {info['machine']['loadavg_end']}")
    return {"doors": doors, "memory": memory, "rss_samples": samples, "checks": soak.checks,
            "checks_failed": len(bad_checks)}


async def column_values(server: Server, headers: dict) -> dict[str, list[str]]:
    """The demo's channels and countries, asked of the server (the random filters pick among them)."""
    async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=CLIENT_TIMEOUT, trust_env=False) as c:
        out = {}
        for dim in ("channel", "country"):
            doc = checked(await c.post("/api/v1/query", json={"metrics": ["orders"], "dimensions": [dim]}))
            out[dim] = sorted(str(row[0]) for row in doc["rows"] if row[0] is not None)
        return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="how long the load runs")
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients")
    parser.add_argument("--scale", type=int, default=20_000, help="orders in the generated shop")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=float, default=0.5, help="share of requests that repeat a fixed question")
    parser.add_argument("--think", type=float, default=0.01,
                        help="mean pause of a client between requests, s (uniform from 0 to twice this)")
    parser.add_argument("--sample", type=float, default=5.0, help="seconds between RSS samples")
    parser.add_argument("--check-every", type=float, default=5.0, help="seconds between cross-door checks")
    parser.add_argument("--token", help="send `Authorization: Bearer <token>` on every HTTP request")
    parser.add_argument("--pg-user", default="bench", help="wire protocol user")
    parser.add_argument("--pg-password", help="wire protocol password")
    parser.add_argument("--out", help="JSON path (default bench/results/soak-<seconds>.json)")
    parser.add_argument("--trace", help="run the server under bench/serve_traced.py, its samples to this JSONL file")
    parser.add_argument("--trace-every", type=float, default=30.0, help="seconds between --trace samples")
    parser.add_argument("--trace-frames", type=int, default=6, help="tracemalloc frames (0: caches and counts only)")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or not 1 <= args.clients <= 500 or not 0 <= args.repeat <= 1:
        parser.error("--seconds must be positive, --clients from 1 to 500, --repeat from 0 to 1")

    console = Console(highlight=False, width=max(140, Console().width))
    info = {"seconds": args.seconds, "clients": args.clients, "scale": args.scale, "seed": args.seed,
            "repeat_share": args.repeat, "think_s": args.think, "door_weights": DOORS, "auth": bool(args.token),
            "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
                        "psycopg": psycopg.__version__, "httpx": httpx.__version__, "loadavg_start": loadavg()}}
    from semantic.demo import create

    with tempfile.TemporaryDirectory(prefix="phloem-soak-") as work:
        project = Path(work) / "shop"
        console.print(f"generating {args.scale:,} orders …")
        create(project, scale=args.scale, seed=args.seed)
        console.print("starting the server …")
        traced = {}
        if args.trace:
            Path(args.trace).unlink(missing_ok=True)
            traced = {"launcher": [sys.executable, str(HERE / "serve_traced.py")],
                      "env": {"PHLOEM_TRACE_OUT": str(Path(args.trace).resolve()),
                              "PHLOEM_TRACE_EVERY": f"{args.trace_every:g}",
                              "PHLOEM_TRACE_FRAMES": str(args.trace_frames)}}
        server = Server(project, Path(work) / "server.log", timeout=30, user=args.pg_user, password=args.pg_password,
                        **traced)
        try:
            info["server"] = {"rss_mb_start": round(rss_mb(server.process.pid), 1)}
            soak = Soak(server, args, asyncio.run(column_values(server, soak_headers(args))))
            console.print(f"  {server.url} (wire port {server.pg_port}); {args.clients} clients for {args.seconds:g} s …")
            asyncio.run(soak.run())
            info["server"]["rss_mb_end"] = round(rss_mb(server.process.pid), 1)
        finally:
            server.stop()
        log = server.log_path.read_text(errors="replace")
        info["server"]["log_problems"] = server_log_problems(log)[:50]
    info["machine"]["loadavg_end"] = loadavg()

    out = {**info, **report(soak, info, console)}
    path = Path(args.out) if args.out else RESULTS / f"soak-{args.seconds:g}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1, default=str) + "\n")
    console.print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    if info["server"]["log_problems"]:
        console.print(f"[bold red]the server log has {len(info['server']['log_problems'])} problem lines[/], e.g.:")
        for line in info["server"]["log_problems"][:5]:
            console.print(f"  {line}", markup=False)
    failed = out["doors"]["all"]["errors"] or out["checks_failed"]
    if failed:
        console.print("[bold red]!!! some requests failed or the doors disagreed (see above)[/]")
    return 1 if failed else 0


def soak_headers(args: argparse.Namespace) -> dict:
    return {"Authorization": f"Bearer {args.token}"} if args.token else {}


if __name__ == "__main__":
    sys.exit(main())
