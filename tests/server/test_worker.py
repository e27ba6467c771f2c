"""`phloem worker` on a PostgreSQL warehouse: schedules, one builder at a time across processes (an advisory lock in
the warehouse), and a worker killed mid-refresh that loses nothing.

The project is small; a view whose SQL sleeps for `ctl.slow.secs` seconds (pg_sleep) makes the last rollup's build
as slow as a test needs, without slowing the others."""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
import yaml

from semantic import Project
from semantic.engines.postgres import PostgresEngine
from semantic.materialize.schedule import due
from semantic.project.project import FRESH_SECONDS
from semantic.query.query import make_query

MODELS = """
streams:
  - name: customer_stream
    entity: customer
    activities:
      - name: placed_order
        sql: select order_id, customer_id as customer, ordered_at as ts, channel, total from raw.orders
        id: order_id
        revenue_impact: total
        features: [order_id, channel, total]
datasets:
  - name: orders
    stream: customer_stream
    primary: {activity: placed_order, select: all}
    columns: [order_id, customer, channel, total, {name: ordered_at, expr: ts}]
views:
  - name: orders
    dataset: orders
    primary_key: order_id
    time: ordered_at
    dimensions: [channel, {name: ordered_at, type: time}]
    measures:
      - {name: revenue, agg: sum, expr: total}
      - {name: orders, agg: count}
  - name: slow_orders
    sql: >-
      select o.* from raw.orders o
      cross join (select pg_sleep(coalesce((select max(secs) from ctl.slow), 0))) as s
    primary_key: order_id
    time: ordered_at
    dimensions: [channel, {name: ordered_at, type: time}]
    measures: [{name: slow_revenue, agg: sum, expr: total}]
metrics:
  - {name: revenue, measure: orders.revenue}
  - {name: orders, measure: orders.orders}
  - {name: slow_revenue, measure: slow_orders.slow_revenue}
rollups:
  - {name: orders_daily, view: orders, measures: [revenue, orders], dimensions: [channel], grain: day,
     refresh: 1 second}
  - {name: orders_monthly, view: orders, measures: [revenue], grain: month, refresh: 1 day}
  - {name: slow_daily, view: slow_orders, measures: [slow_revenue], dimensions: [channel], grain: day,
     refresh: 1 second}
"""
BY_CHANNEL = dict(metrics=["revenue", "orders"], dimensions=["channel"])
HAND_SQL = "select channel, sum(total), count(*) from raw.orders group by 1 order by 1"


@pytest.fixture
def shop(tmp_path: Path, fresh_database) -> Path:
    """A built project on a fresh PostgreSQL database: 300 orders over two channels in January 2025."""
    dsn = fresh_database("worker")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("create schema raw; create schema ctl; create table ctl.slow (secs float)")
        conn.execute("create table raw.orders as select i as order_id, i % 17 as customer_id, "
                     "timestamp '2025-01-01' + i * interval '2 hours' as ordered_at, "
                     "case when i % 3 = 0 then 'app' else 'web' end as channel, (i % 50 + 0.25)::numeric(10,2) as total "
                     "from generate_series(1, 300) as t(i)")
    (tmp_path / "phloem.yml").write_text(yaml.safe_dump(
        {"name": "shop", "warehouse": {"engine": "postgres", "dsn": dsn}, "materialization": {"schema": "phloem"}}))
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "shop.yml").write_text(MODELS)
    p = Project.load(tmp_path)
    p.build()
    p.close()
    return tmp_path


def dsn_of(root: Path) -> str:
    return yaml.safe_load((root / "phloem.yml").read_text())["warehouse"]["dsn"]


def sql(root: Path, statement: str, params=None) -> list[tuple]:
    with psycopg.connect(dsn_of(root), autocommit=True) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


def add_orders(root: Path, first: int, n: int) -> None:
    sql(root, "insert into raw.orders select i, mod(i, 17), timestamp '2025-01-01' + i * interval '2 hours', "
              "case when mod(i, 3) = 0 then 'app' else 'web' end, (mod(i, 50) + 0.25)::numeric(10,2) "
              "from generate_series(%s::int, %s::int) as t(i)", [first, first + n - 1])


def refreshed(root: Path) -> dict[str, dt.datetime]:
    return dict(sql(root, "select rollup, refreshed_at from phloem._phloem_rollups"))


def answer(root: Path) -> tuple[list[tuple], list[str | None]]:
    """Revenue and orders by channel from a fresh server process's view of the warehouse, and the rollups read."""
    p = Project.load(root)
    try:
        table = p.query(**BY_CHANNEL)
        rows = sorted(zip(*(table.column(c).to_pylist() for c in ("channel", "revenue", "orders")), strict=True))
        return rows, [leaf.rollup.spec.name if leaf.rollup else None for leaf in p.compile(**BY_CHANNEL).plan.leaves]
    finally:
        p.close()


def worker(root: Path, log: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "server.cli", "worker", str(root), *args],
                            stdout=subprocess.DEVNULL, stderr=log.open("w"), cwd=root)


def lock_holders(root: Path) -> list[int]:
    """Backends holding the build lock of the `phloem` schema (classid/objid: the high and low halves of the key)."""
    key = PostgresEngine.lock_key("phloem") & 0xFFFFFFFFFFFFFFFF
    return [r[0] for r in sql(root, "select pid from pg_locks where locktype = 'advisory' and granted "
                                    "and classid::bigint = %s and objid::bigint = %s and objsubid = 1",
                              [key >> 32, key & 0xFFFFFFFF])]


def sleeping_builds(root: Path) -> list[int]:
    return [r[0] for r in sql(root, "select pid from pg_stat_activity where state = 'active' and query ilike "
                                    "'%%pg_sleep%%' and query ilike '%%__stage_%%' and pid <> pg_backend_pid()")]


def test_a_due_rollup_is_rebuilt_and_one_not_due_is_not(shop, tmp_path):
    before = refreshed(shop)
    p = Project.load(shop)
    try:
        assert due(p.builder).names == frozenset()  # just built: nothing is due for a second
        time.sleep(1.1)
        now_due = due(p.builder)
    finally:
        p.close()
    # the 1-second rollups are due, and with them the dataset they read (it has no schedule of its own)
    assert (now_due.rollups, now_due.datasets) == ({"orders_daily", "slow_daily"}, {"orders"})
    add_orders(shop, 301, 30)
    server = Project.load(shop)  # a server's view: it has answered (and cached) the question before the refresh
    try:
        first = server.run(make_query(**BY_CHANNEL))
        assert server.run(make_query(**BY_CHANNEL)).cached
        log = tmp_path / "once.log"
        proc = worker(shop, log, "--once")
        assert proc.wait(60) == 0, log.read_text()
        time.sleep(FRESH_SECONDS + 0.1)  # then it looks for other processes' builds again, and drops its answers
        fresh = server.run(make_query(**BY_CHANNEL))
        assert not fresh.cached and sum(fresh.table.column("orders").to_pylist()) == 330
        assert sum(first.table.column("orders").to_pylist()) == 300
    finally:
        server.close()
    after = refreshed(shop)
    assert after["orders_daily"] > before["orders_daily"] and after["slow_daily"] > before["slow_daily"]
    assert after["orders_monthly"] == before["orders_monthly"]  # `refresh: 1 day`: not due
    text = log.read_text()
    assert re.search(r"built rollup orders_daily in \d+\.\d\ds ok", text)
    assert re.search(r"built dataset orders in \d+\.\d\ds ok", text)
    assert "orders_monthly" not in text
    rows, read = answer(shop)
    assert read == ["orders_daily"]
    assert rows == [(c, r, n) for c, r, n in sql(shop, HAND_SQL)]  # the 30 new orders are in the answer


def test_two_workers_build_one_at_a_time(shop, tmp_path):
    sql(shop, "insert into ctl.slow values (0.7)")  # each pass refreshes slow_daily: at least 0.7 s under the lock
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    time.sleep(1.1)
    procs = [worker(shop, log, "--interval", "0.1") for log in logs]
    holders, sleepers, deadline = set(), 0, time.monotonic() + 60
    published = lambda: sum(log.read_text().count(" published ") for log in logs)  # noqa: E731
    try:
        while published() < 4:  # builds one after the other: each refresh is due a second after the last
            assert time.monotonic() < deadline, [log.read_text() for log in logs]
            held = lock_holders(shop)
            assert len(held) <= 1
            holders.update(held)
            sleepers = max(sleepers, len(sleeping_builds(shop)))
            assert sleepers <= 1, "two builds ran at once"
            time.sleep(0.05)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            assert proc.wait(30) == 0
    intervals, skipped = [], 0
    for log in logs:
        text = log.read_text()
        assert "Traceback" not in text and "ERROR" not in text, text
        skipped += text.count("another process holds the build lock")
        start = None
        for stamp, what in re.findall(r"^(\S+ \S+) INFO phloem\.worker\[\d+\]: (building|published) \d+ tables$",
                                      text, re.M):
            at = dt.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f")
            if what == "building":
                start = at
            else:
                intervals.append((start, at, log.name))
    intervals.sort()
    assert len(intervals) >= 3, intervals
    for (_, end, _), (start, _, _) in zip(intervals, intervals[1:], strict=False):
        assert end <= start, f"builds overlap: {intervals}"
    assert skipped > 0  # the other worker found the lock taken and kept its hands off
    print(f"{len(intervals)} builds by {sorted({n for *_, n in intervals})}, none overlapping; {skipped} ticks "
          f"skipped on a held lock; lock holders seen: {len(holders)} sessions")
    assert len(holders) >= 1 and sleepers == 1
    rows, _ = answer(shop)
    assert rows == [(c, r, n) for c, r, n in sql(shop, HAND_SQL)]


def test_a_worker_killed_mid_refresh_loses_nothing(shop, tmp_path):
    before, read = answer(shop)
    assert read == ["orders_daily"]
    table_before = sql(shop, "select * from phloem.orders_daily order by 1, 2, 3")
    add_orders(shop, 301, 60)
    sql(shop, "insert into ctl.slow values (60)")  # slow_daily's staging sleeps for a minute
    time.sleep(1.1)
    log = tmp_path / "killed.log"
    proc = worker(shop, log, "--interval", "30")
    deadline = time.monotonic() + 30
    while not sleeping_builds(shop):
        assert time.monotonic() < deadline and proc.poll() is None, log.read_text()
        time.sleep(0.05)
    # mid-refresh: the dataset and orders_daily are staged with the new orders, slow_daily is being staged
    staged = {r[0] for r in sql(shop, "select table_name from information_schema.tables "
                                      "where table_schema = 'phloem' and table_name like '\\_\\_stage\\_%%'")}
    assert {"__stage_orders", "__stage_orders_daily"} <= staged
    assert lock_holders(shop)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    killed = time.monotonic()
    while lock_holders(shop) or sleeping_builds(shop):  # the session dies with the process: the lock goes with it
        assert time.monotonic() - killed < 10, "the killed worker's session kept the lock"
        time.sleep(0.05)
    released = time.monotonic() - killed
    print(f"lock released {released:.2f}s after kill -9")
    # the previous tables are all there, and whole: the same rows, the same answer from the rollup
    assert sql(shop, "select * from phloem.orders_daily order by 1, 2, 3") == table_before
    assert answer(shop) == (before, ["orders_daily"])
    # the next worker takes the lock and publishes the refresh
    sql(shop, "delete from ctl.slow")
    log = tmp_path / "next.log"
    assert worker(shop, log, "--once").wait(60) == 0, log.read_text()
    after, read = answer(shop)
    assert read == ["orders_daily"] and after != before
    assert after == [(c, r, n) for c, r, n in sql(shop, HAND_SQL)]
    assert sum(n for _, _, n in after) == 360 and isinstance(after[0][1], Decimal)
    assert not sql(shop, "select 1 from information_schema.tables where table_name like '\\_\\_stage\\_%%'")


def test_on_duckdb_the_lock_is_a_file_beside_the_database(tmp_path):
    """One process owns a DuckDB file; builds of every project opened on it still go one at a time."""
    root = tmp_path / "starter"
    assert subprocess.run([sys.executable, "-m", "server.cli", "init", str(root)], capture_output=True).returncode == 0
    first, second = Project.load(root), Project.load(root)
    try:
        with first.engine.build_lock("phloem") as held:
            assert held and Path(f"{first.model.database_path}.phloem.lock").exists()
            assert second.build(wait=False) is None  # held: nothing built, nothing waited for
        report = second.build(wait=False)
        assert report is not None and "orders" in report.built
    finally:
        first.close()
        second.close()
    log = tmp_path / "duck.log"
    proc = worker(root, log, "--once")
    assert proc.wait(60) == 0, log.read_text()
