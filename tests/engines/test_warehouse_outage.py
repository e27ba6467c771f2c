"""PostgreSQL going away and coming back under a running server: the doors refuse clearly meanwhile (503, GraphQL
WAREHOUSE_ERROR, SQLSTATE 58000) and answer right again afterwards, without a restart and without failing on
connections the warehouse closed.

Other test runs share the PostgreSQL cluster, so nothing here restarts it: its sessions are ended with
pg_terminate_backend (what a restart does to them) and the outage is this test's own database refusing connections
(ALTER DATABASE … ALLOW_CONNECTIONS false). bench/warehouse_restart.py does it with a real restart.
"""

from __future__ import annotations

import threading
import time

import httpx
import psycopg
import pytest
from psycopg import sql as pgsql
from psycopg.conninfo import conninfo_to_dict

from semantic.demo import create
from semantic.engines.postgres import ClientReads, PostgresEngine
from tests.engines.test_serve_on_postgres import (
    REVENUE_BY_CHANNEL,
    TIMEOUT,
    US_CA_REVENUE,
    Served,
    assert_same,
    by_channel,
    four_doors,
)


def end_sessions(admin: psycopg.Connection, database: str) -> int:
    """What a PostgreSQL restart does to a database's sessions: ends every one (but the caller's)."""
    return admin.execute("select count(pg_terminate_backend(pid)) from pg_stat_activity where datname = %s "
                         "and pid <> pg_backend_pid()", [database]).fetchone()[0]


def allow_connections(admin: psycopg.Connection, database: str, allow: bool) -> None:
    admin.execute(pgsql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(
        pgsql.Identifier(database), pgsql.SQL("true" if allow else "false")))


@pytest.fixture
def admin(postgres_dsn):
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        yield conn


# ------------------------------------------------------------------ the engine's connections


def test_connections_the_warehouse_ended_are_not_reused(pg_dsn, admin):
    engine = PostgresEngine(pg_dsn, client_reads=ClientReads(("public",)))
    try:
        engine.execute("create table public.numbers as select generate_series(1, 10) as n")
        # every pool filled: 4 client connections at once, Phloem's own reads, the writer
        threads = [threading.Thread(target=engine.arrow, args=("select pg_sleep(0.2)",)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert engine.rows("select 1") == [(1,)]
        assert end_sessions(admin, conninfo_to_dict(pg_dsn)["dbname"]) >= 6
        time.sleep(0.2)  # the ended sessions' last words reach our sockets
        for _ in range(6):  # more than the pool held: no call meets a dead connection
            assert engine.arrow("select sum(n) as s from public.numbers").column("s").to_pylist() == [55]
            assert engine.rows("select count(*) from public.numbers") == [(10,)]
        engine.execute("create table public.more as select 1 as n")  # the writer too
        assert engine.rows("select count(*) from public.more") == [(1,)]
    finally:
        engine.close()


# ------------------------------------------------------------------ a running server


@pytest.fixture(scope="module")
def served(tmp_path_factory, postgres_project):
    root = tmp_path_factory.mktemp("outage") / "shop"
    create(root, scale=500)
    postgres_project(root)
    with Served(root, tmp_path_factory.mktemp("serve_outage")) as server:
        yield server


@pytest.fixture(scope="module")
def database(served) -> str:
    return conninfo_to_dict(served.dsn)["dbname"]


def warm(served) -> None:
    """A question at every door, so the server holds pooled warehouse connections."""
    four_doors(served, ["profit"], "profit")


def test_after_the_warehouse_ended_its_sessions_every_door_answers_at_once(served, database, admin):
    warm(served)
    assert end_sessions(admin, database) >= 2
    time.sleep(0.2)
    _, doors = four_doors(served, ["revenue", "orders"], "revenue orders")  # not cached: PostgreSQL answers
    with psycopg.connect(served.dsn, autocommit=True) as warehouse:
        hand = by_channel(warehouse.execute(REVENUE_BY_CHANNEL).fetchall())
    for door, answer in doors.items():
        assert_same(answer, hand), door
    assert "unexpected error" not in served.log.read_text()


def test_while_the_warehouse_is_away_the_doors_refuse_clearly_then_answer_again(served, database, admin):
    warm(served)
    wire = served.wire()  # a client connected before the outage keeps its session with Phloem
    allow_connections(admin, database, False)
    try:
        end_sessions(admin, database)
        time.sleep(0.2)
        question = {"metrics": ["revenue"], "dimensions": ["channel"], "filters": ["country in ('US', 'CA')"]}
        for path, body in (("/api/v1/query", question),
                           ("/api/v1/sql", {"sql": "SELECT channel, MEASURE(revenue) FROM metrics "
                                                   "WHERE country IN ('US', 'CA') GROUP BY 1"})):
            started = time.monotonic()
            r = served.post(path, body)
            assert r.status_code == 503 and r.json()["error"]["type"] == "warehouse", r.text
            assert time.monotonic() - started < TIMEOUT + 5
            assert "psycopg" not in r.text and "ALLOW_CONNECTIONS" not in r.text and "accepting" not in r.text
        r = served.post("/graphql", {"query": '{ query(where: {country: {in: ["US", "CA"]}}) { channel revenue } }'})
        assert r.status_code == 200 and r.json()["errors"][0]["extensions"]["code"] == "WAREHOUSE_ERROR", r.text
        with pytest.raises(psycopg.Error) as refused:
            wire.execute("SELECT channel, MEASURE(revenue) FROM metrics WHERE country IN ('US', 'CA') GROUP BY 1")
        assert refused.value.sqlstate == "58000", refused.value  # system_error: not XX000, Phloem's own failure
        assert "accepting" not in str(refused.value)
        assert httpx.get(served.url + "/readyz", timeout=30).status_code == 503
    finally:
        allow_connections(admin, database, True)
    # back: the same server process answers every door right, the first time
    assert served.proc.poll() is None
    _, doors = four_doors(served, ["revenue"], "revenue", filters=("country in ('US', 'CA')",))
    with psycopg.connect(served.dsn, autocommit=True) as warehouse:
        hand = by_channel(warehouse.execute(US_CA_REVENUE).fetchall())
    for door, answer in doors.items():
        assert_same(answer, hand), door
    assert wire.execute("SELECT MEASURE(orders) FROM metrics").fetchone()[0] > 0  # the old wire session too
    wire.close()
