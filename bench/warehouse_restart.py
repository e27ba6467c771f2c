"""Phloem while its PostgreSQL warehouse goes away and comes back: clear refusals during the outage, no hang, no 500,
and the same server answering again afterwards without being restarted.

    python bench/warehouse_restart.py                 # pg_ctlcluster 15 main stop, 5 s down, start
    python bench/warehouse_restart.py --how restart   # pg_ctlcluster 15 main restart
    python bench/warehouse_restart.py --how block     # only this bench's database refuses connections (no restart)

1. generates the demo shop (`--scale` orders) with DuckDB and copies its raw tables into a new database on the
   local PostgreSQL (`--pg-dsn`, default $PHLOEM_PG_DSN), then switches the project's warehouse to it
   (`warehouse: {engine: postgres, dsn: …}`); the database is dropped at the end;
2. serves it (`phloem serve --timeout <s>` with REST, GraphQL, HTTP SQL and the wire protocol, via bench/pgwire.py's
   `Server`) and runs `--clients` clients, each sending uncached questions (bench/soak.py's random questions with a
   `limit` unique to the request, so every one reaches PostgreSQL) round the four doors, and a /readyz poller;
3. after `--before` s takes the warehouse away: `stop` (pg_ctlcluster stop -m fast, `--down` s, start), `restart`
   (pg_ctlcluster restart) or `block` (ALTER DATABASE … ALLOW_CONNECTIONS false and pg_terminate_backend of its
   sessions, `--down` s, then allowed again: the same for Phloem, and other users of the cluster see nothing);
4. keeps the load up for `--after` s more, then reports every outcome by phase and door (HTTP status, GraphQL
   code or SQLSTATE), the slowest answer during the outage, and for each door the time from the warehouse being
   back to its first answer, and any failure after that (stale connections);
5. writes bench/results/warehouse-restart-<how>.json.

Exit status 1 if any answer was a 500 (or XX000 / INTERNAL_SERVER_ERROR), took longer than the server's timeout
plus 5 s, failed before the outage, or failed at a door after that door had answered again.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import duckdb
import httpx
import psycopg
from psycopg import sql as pgsql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from rich.console import Console
from rich.table import Table
from ruamel.yaml import YAML

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:  # `python bench/warehouse_restart.py` from a checkout, installed or not
    sys.path.insert(0, str(ROOT))

from http_doors import CLIENT_KEEPALIVE_S, loadavg, server_log_problems  # noqa: E402
from pgwire import DEFAULT_DSN, Server  # noqa: E402
from soak import Doors, Question, Refused, column_values, random_question  # noqa: E402

from semantic.engines.copy import copy_tables  # noqa: E402
from semantic.engines.postgres import PostgresEngine  # noqa: E402

RESULTS = ROOT / "bench" / "results"
DOORS = ("rest", "sql", "graphql", "wire")
CLUSTER = ("15", "main")
SLACK = 5.0  # seconds past the server's timeout that count as a hang


def warehouse_project(folder: Path, admin_dsn: str, scale: int, seed: int, console: Console) -> tuple[Path, str, str]:
    """The demo at `folder`, its raw tables in a new PostgreSQL database; returns (project, dsn, database)."""
    from semantic.demo import create

    project = folder / "shop"
    create(project, scale=scale, seed=seed)
    database = f"phloem_bench_restart_{os.getpid()}"
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(pgsql.Identifier(database)))
        admin.execute(pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(database)))
    dsn = make_conninfo(admin_dsn, dbname=database)
    yaml = YAML(typ="safe")
    settings = yaml.load(project / "phloem.yml")
    con = duckdb.connect(str(project / settings["warehouse"]["database"]), read_only=True)
    engine = PostgresEngine(dsn)
    try:
        counts = copy_tables(con, engine, "raw")
    finally:
        engine.close()
        con.close()
    settings["warehouse"] = {"engine": "postgres", "dsn": dsn}
    yaml.dump(settings, project / "phloem.yml")
    console.print(f"copied {sum(counts.values()):,} raw rows into PostgreSQL database {database}")
    return project, dsn, database


def drop_database(admin_dsn: str, database: str) -> None:
    with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=10) as admin:
        admin.execute(pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(pgsql.Identifier(database)))


def cluster(action: str) -> float:
    """pg_ctlcluster 15 main <action>; returns the seconds it took."""
    started = time.perf_counter()
    extra = ["-m", "fast"] if action in ("stop", "restart") else []
    subprocess.run(["pg_ctlcluster", *CLUSTER, action, *extra], check=True, capture_output=True, timeout=120)
    return time.perf_counter() - started


def block(admin_dsn: str, database: str, allow: bool) -> float:
    """`database` refuses (or accepts again) every new connection; refusing also ends its sessions."""
    started = time.perf_counter()
    name = pgsql.Identifier(database)
    with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=10) as admin:
        admin.execute(pgsql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(name, pgsql.SQL(str(allow).lower())))
        if not allow:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                          "AND pid <> pg_backend_pid()", [database])
    return time.perf_counter() - started


def refuses(dsn: str) -> bool:
    try:
        psycopg.connect(dsn, connect_timeout=2).close()
        return False
    except psycopg.OperationalError:
        return True


@dataclass
class Outcome:
    started: float  # seconds since the start of the load
    door: str
    outcome: str  # "ok", "HTTP 503", "graphql WAREHOUSE_ERROR", "SQLSTATE 58000", "client timeout", …
    latency: float
    message: str = ""


class Restart:
    def __init__(self, server: Server, args: argparse.Namespace, values: dict[str, list[str]], dsn: str):
        self.server, self.args, self.values, self.dsn = server, args, values, dsn
        self.database = conninfo_to_dict(dsn)["dbname"]
        self.outcomes: list[Outcome] = []
        self.ready: list[tuple[float, int]] = []
        self.events: dict[str, float] = {}
        self.unique = itertools.count(1_000_000)  # limits larger than any answer, never repeated
        self.start = 0.0
        self.done = False
        self.client_timeout = args.server_timeout + SLACK

    def now(self) -> float:
        return time.perf_counter() - self.start

    async def run(self) -> None:
        limits = httpx.Limits(max_connections=self.args.clients + 1, keepalive_expiry=CLIENT_KEEPALIVE_S)
        async with httpx.AsyncClient(base_url=self.server.url, limits=limits, timeout=self.client_timeout,
                                     trust_env=False) as http:
            doors = Doors(self.server, http)
            self.start = time.perf_counter()
            tasks = [asyncio.create_task(self.client(i, doors)) for i in range(self.args.clients)]
            tasks.append(asyncio.create_task(self.poll_ready(http)))
            await self.outage()
            await asyncio.sleep(self.args.after)
            self.done = True
            await asyncio.gather(*tasks)

    async def outage(self) -> None:
        await asyncio.sleep(self.args.before)
        how, admin, loop = self.args.how, self.args.pg_dsn, asyncio.get_running_loop()
        watching = asyncio.create_task(self.watch())
        self.events["down"] = self.now()
        if how == "restart":
            self.events["restart_s"] = await loop.run_in_executor(None, cluster, "restart")
        else:
            away, back = ((cluster, "stop"), (cluster, "start")) if how == "stop" else \
                ((block, admin, self.database, False), (block, admin, self.database, True))
            self.events["stop_s"] = await loop.run_in_executor(None, *away)
            await asyncio.sleep(self.args.down)
            self.events["starting"] = self.now()
            self.events["start_s"] = await loop.run_in_executor(None, *back)
        await asyncio.wait_for(watching, 120)

    async def watch(self) -> None:
        """When this bench's database first refuses a connection, and when it first accepts one again."""
        loop = asyncio.get_running_loop()
        while not await loop.run_in_executor(None, refuses, self.dsn):
            await asyncio.sleep(0.02)
        self.events["refusing"] = self.now()
        while await loop.run_in_executor(None, refuses, self.dsn):
            await asyncio.sleep(0.02)
        self.events["back"] = self.now()

    async def client(self, i: int, doors: Doors) -> None:
        rng = random.Random(self.args.seed * 1000 + i)
        conn: psycopg.AsyncConnection | None = None
        door_cycle = itertools.cycle(DOORS[i % 4:] + DOORS[:i % 4])
        try:
            while not self.done:
                door = next(door_cycle)
                q = random_question(rng, self.values)
                q = Question(q.metrics, q.dimensions, q.where, limit=next(self.unique))
                started, outcome, message = self.now(), "ok", ""
                t0 = time.perf_counter()
                try:
                    if door == "wire":
                        if conn is None or conn.closed:
                            conn = await psycopg.AsyncConnection.connect(self.server.dsn, autocommit=True,
                                                                         connect_timeout=10)
                        await asyncio.wait_for(doors.wire(q, conn), self.client_timeout)
                    else:
                        await getattr(doors, door)(q)
                except Refused as e:
                    outcome, message = e.outcome, str(e)[:300]
                except psycopg.Error as e:
                    outcome, message = f"SQLSTATE {e.sqlstate or '(none: ' + type(e).__name__ + ')'}", str(e)[:300]
                    if conn is not None and (conn.closed or conn.broken):
                        conn = None
                except (TimeoutError, httpx.TimeoutException) as e:
                    outcome, message = "client timeout", repr(e)[:300]
                    if door == "wire" and conn is not None:
                        await conn.close()
                        conn = None
                except Exception as e:  # noqa: BLE001 - anything else is an outcome too
                    outcome, message = type(e).__name__, str(e)[:300]
                self.outcomes.append(Outcome(round(started, 3), door, outcome, time.perf_counter() - t0, message))
                await asyncio.sleep(rng.uniform(0, 2 * self.args.think))
        finally:
            if conn is not None:
                await conn.close()

    async def poll_ready(self, http: httpx.AsyncClient) -> None:
        while not self.done:
            try:
                status = (await http.get("/readyz")).status_code
            except httpx.HTTPError:
                status = 0
            self.ready.append((round(self.now(), 2), status))
            await asyncio.sleep(0.25)


def phase_of(r: Restart, t: float, latency: float = 0.0) -> str:
    """before (answered before the warehouse was told to go); stopping (sent while the command ran); outage (sent
    while it refused connections); after (sent once it accepted them again)."""
    if t + latency < r.events["down"]:
        return "before"
    if t < r.events["refusing"]:
        return "stopping"
    return "outage" if t < r.events["back"] else "after"


def analyse(r: Restart) -> dict:
    by_phase: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    slowest: dict[str, float] = defaultdict(float)
    samples: dict[str, str] = {}
    for o in r.outcomes:
        phase = phase_of(r, o.started, o.latency)
        by_phase[phase][o.door][o.outcome] += 1
        if phase in ("stopping", "outage"):
            slowest[o.door] = max(slowest[o.door], o.latency)
        if o.outcome != "ok":
            samples.setdefault(o.outcome, o.message)
    back = r.events["back"]
    recovery = {}
    for door in DOORS:
        mine = sorted((o for o in r.outcomes if o.door == door), key=lambda o: o.started)
        # the first request sent after the warehouse was back that succeeded, and any failure sent after it
        first = next((o for o in mine if o.started >= back and o.outcome == "ok"), None)
        later = [o for o in mine if first is not None and o.started > first.started and o.outcome != "ok"]
        recovery[door] = {
            "first_ok_after_back_s": None if first is None else round(first.started + first.latency - back, 3),
            "failures_after_first_ok": len(later), "failure_samples": [o.message for o in later[:3]]}
    ready_back = next((t for t, s in r.ready if t >= back and s == 200), None)
    bad = [o for o in r.outcomes if o.outcome in ("HTTP 500", "SQLSTATE XX000", "graphql INTERNAL_SERVER_ERROR")
           or o.latency > r.args.server_timeout + SLACK or o.outcome == "client timeout"
           or (phase_of(r, o.started, o.latency) == "before" and o.outcome != "ok")]
    return {
        "events_s": {k: round(v, 3) for k, v in r.events.items()},
        "outcomes": {p: {d: dict(c) for d, c in doors.items()} for p, doors in by_phase.items()},
        "slowest_during_outage_s": {d: round(v, 3) for d, v in slowest.items()},
        "recovery": recovery,
        "readyz": {"statuses_during_outage": dict(Counter(s for t, s in r.ready if r.events["refusing"] <= t < back)),
                   "first_200_after_back_s": None if ready_back is None else round(ready_back - back, 3)},
        "message_samples": samples,
        "bad": len(bad) + sum(v["failures_after_first_ok"] for v in recovery.values())
        + sum(1 for v in recovery.values() if v["first_ok_after_back_s"] is None),
        "bad_samples": [f"{o.door} at {o.started:.1f} s: {o.outcome} in {o.latency:.1f} s {o.message}" for o in bad[:5]],
    }


def print_report(result: dict, info: dict, console: Console) -> None:
    table = Table(title=f"Phloem while PostgreSQL goes away ({info['how']}, {info['clients']} clients)")
    for name in ("phase", "door", "answers", "slowest (stopping + outage)"):
        table.add_column(name)
    for phase in ("before", "stopping", "outage", "after"):
        for door in DOORS:
            counts = result["outcomes"].get(phase, {}).get(door, {})
            slow = result["slowest_during_outage_s"].get(door) if phase == "outage" else None  # stopping included
            table.add_row(phase, door, ", ".join(f"{k} × {v}" for k, v in sorted(counts.items())) or "–",
                          "" if slow is None else f"{slow:.2f} s")
    console.print(table)
    ev = result["events_s"]
    console.print(f"the warehouse was told to go at {ev['down']:.1f} s, refused connections from {ev['refusing']:.1f} s, "
                  f"accepted them again at {ev['back']:.1f} s ({ev['back'] - ev['refusing']:.1f} s of outage)")
    rec = Table(title="recovery (from the warehouse being back)")
    for name in ("door", "first answer after", "failures after it"):
        rec.add_column(name)
    for door, v in result["recovery"].items():
        first = v["first_ok_after_back_s"]
        rec.add_row(door, "never" if first is None else f"{first:.2f} s", str(v["failures_after_first_ok"]))
    console.print(rec)
    ready = result["readyz"]
    console.print(f"/readyz during the outage: {ready['statuses_during_outage']}; 200 again "
                  f"{ready['first_200_after_back_s']} s after")
    for outcome, message in result["message_samples"].items():
        console.print(f"  {message if message.startswith(outcome) else f'{outcome}: {message}'}", markup=False)
    for line in result["bad_samples"]:
        console.print(f"  [red]{line}[/]", markup=False)
    console.print(f"load average: start {info['machine']['loadavg_start']}, end {info['machine']['loadavg_end']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--how", choices=("stop", "restart", "block"), default="stop")
    parser.add_argument("--pg-dsn", default=os.environ.get("PHLOEM_PG_DSN", DEFAULT_DSN))
    parser.add_argument("--scale", type=int, default=5_000, help="orders in the generated shop")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--think", type=float, default=0.05, help="mean pause of a client between requests, s")
    parser.add_argument("--server-timeout", type=float, default=5.0, help="`serve --timeout`")
    parser.add_argument("--before", type=float, default=10.0, help="seconds of load before the outage")
    parser.add_argument("--down", type=float, default=5.0, help="seconds the warehouse stays away (stop, block)")
    parser.add_argument("--after", type=float, default=20.0, help="seconds of load after it is back")
    parser.add_argument("--out", help="JSON path (default bench/results/warehouse-restart-<how>.json)")
    args = parser.parse_args(argv)
    if args.how != "block" and not shutil.which("pg_ctlcluster"):
        parser.error("pg_ctlcluster is not installed; use --how block")

    console = Console(highlight=False, width=max(140, Console().width))
    info = {"how": args.how, "clients": args.clients, "scale": args.scale, "server_timeout_s": args.server_timeout,
            "before_s": args.before, "down_s": args.down, "after_s": args.after,
            "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
                        "loadavg_start": loadavg()}}
    with tempfile.TemporaryDirectory(prefix="phloem-restart-") as work:
        project, dsn, database = warehouse_project(Path(work), args.pg_dsn, args.scale, args.seed, console)
        try:
            server = Server(project, Path(work) / "server.log", timeout=args.server_timeout)
            try:
                values = asyncio.run(column_values(server, {}))
                restart = Restart(server, args, values, dsn)
                console.print(f"serving {server.url} (wire port {server.pg_port}); load for {args.before:g} s, then "
                              f"the warehouse goes away ({args.how}) …")
                asyncio.run(restart.run())
                info["server_exit"] = "running at the end" if server.process.poll() is None else server.process.returncode
            finally:
                server.stop()
            info["log_problems"] = server_log_problems(server.log_path.read_text(errors="replace"))[:30]
        finally:
            if args.how == "block":
                block(args.pg_dsn, database, True)
            drop_database(args.pg_dsn, database)
    info["machine"]["loadavg_end"] = loadavg()
    result = analyse(restart)
    print_report(result, info, console)
    path = Path(args.out) if args.out else RESULTS / f"warehouse-restart-{args.how}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**info, **result}, indent=1, default=str) + "\n")
    console.print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    if result["bad"]:
        console.print(f"[bold red]!!! {result['bad']} answers were a 500, a hang, a failure before the outage or "
                      "after recovery, or a door never answered again[/]")
    return 1 if result["bad"] else 0


if __name__ == "__main__":
    sys.exit(main())
