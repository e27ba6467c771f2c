"""Real clients against a live server over the demo shop: psycopg 3, psql and asyncpg.

Every metric answer that crosses the wire is compared with `project.query(...)` on the same project.
"""

# ruff: noqa: F811  (fixtures are imported from wire_server and named as arguments)

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import os
import subprocess
import threading
import time
import uuid

import asyncpg
import psycopg
import pytest
from psycopg import pq
from wire_server import PASSWORD, pg, pg_secure, tls_files, wire_runtime  # noqa: F401  (fixtures)

QUESTION = {"metrics": ["revenue", "orders"], "dimensions": ["channel"], "order_by": ["channel"]}
SQL = "SELECT channel, MEASURE(revenue) AS revenue, MEASURE(orders) AS orders FROM metrics GROUP BY channel ORDER BY channel"
MONTHS = "SELECT metric_time__month AS month, MEASURE(orders) AS orders FROM metrics GROUP BY 1 ORDER BY 1"
SLOW = "SELECT MEASURE(slow_distinct_buckets) FROM metrics"


def expected(runtime, **question) -> list[tuple]:
    table = runtime.project.query(**(question or QUESTION))
    return [tuple(row.values()) for row in table.to_pylist()]


# ------------------------------------------------------------------------------------------------ psycopg

def test_psycopg_simple_protocol_matches_the_library(pg, wire_runtime):
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        cur = conn.execute(SQL)  # no parameters, text: the simple protocol
        assert [d.name for d in cur.description] == ["channel", "revenue", "orders"]
        assert cur.fetchall() == expected(wire_runtime)
        assert cur.statusmessage == "SELECT 3"


@pytest.mark.parametrize("binary", [False, True])
def test_psycopg_extended_prepared_statements_match_the_library(pg, wire_runtime, binary):
    query = ("SELECT channel, MEASURE(revenue) AS revenue, MEASURE(orders) AS orders FROM metrics "
             "WHERE channel = %s GROUP BY channel")
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        for _ in range(3):
            for channel in ("app", "web"):
                rows = conn.execute(query, (channel,), prepare=True, binary=binary).fetchall()
                want = expected(wire_runtime, metrics=["revenue", "orders"], dimensions=["channel"],
                                filters=[f"channel = '{channel}'"])
                assert rows == want
        prepared = conn.execute("SELECT 1", prepare=False).fetchone()
        assert prepared == (1,)


def test_psycopg_metric_query_with_a_date_parameter(pg, wire_runtime):
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        rows = conn.execute("SELECT metric_time__month AS month, MEASURE(revenue) AS revenue FROM metrics "
                            "WHERE metric_time >= %s AND metric_time < %s GROUP BY 1 ORDER BY 1",
                            (dt.date(2024, 1, 1), dt.date(2024, 7, 1))).fetchall()
    want = expected(wire_runtime, metrics=["revenue"], dimensions=["metric_time__month"],
                    time_range={"start": "2024-01-01", "end": "2024-06-30"}, order_by=["metric_time__month"])
    assert rows == want and len(rows) == 6


@pytest.mark.parametrize("binary", [False, True])
def test_psycopg_server_side_cursor_fetches_in_portions(pg, binary):
    with psycopg.connect(pg.dsn()) as conn:
        everything = conn.execute(MONTHS).fetchall()
        assert len(everything) == 36
        with conn.cursor(name="months", binary=binary) as cur:
            cur.itersize = 7
            cur.execute(MONTHS)
            assert [d.name for d in cur.description] == ["month", "orders"]
            assert cur.fetchone() == everything[0]
            assert cur.fetchmany(5) == everything[1:6]
            assert list(cur) == everything[6:]
        with conn.cursor(name="scroll", scrollable=True) as cur:
            cur.execute(MONTHS)
            cur.scroll(10, mode="absolute")
            assert cur.fetchone() == everything[10]
            cur.scroll(-3)
            assert cur.fetchone() == everything[8]
        conn.commit()


def test_a_cursor_with_hold_outlives_its_transaction(pg):
    with psycopg.connect(pg.dsn()) as conn:
        with conn.cursor(name="held", withhold=True) as cur:
            cur.execute("SELECT * FROM generate_series(1, 100) AS g")
            conn.commit()
            assert cur.fetchmany(3) == [(1,), (2,), (3,)]
            assert len(cur.fetchall()) == 97


VALUES = [  # (value, PostgreSQL type) for every common parameter type
    (32000, "int2"), (-2_000_000_000, "int4"), (2**62, "int8"), (1.5, "float4"), (-1e300, "float8"),
    (decimal.Decimal("-12345678.000901"), "numeric"), (True, "bool"), (False, "bool"), ("héllo 'quoted'", "text"),
    ("varchar", "varchar"), (dt.date(2024, 2, 29), "date"), (dt.datetime(2024, 1, 5, 10, 0, 1, 250), "timestamp"),
    (dt.datetime(2024, 1, 5, 10, 0, tzinfo=dt.UTC), "timestamptz"),
    (uuid.UUID("12345678-1234-5678-1234-567812345678"), "uuid"), (b"plain bytes", "bytea"), (None, "int4"),
]


@pytest.mark.parametrize("placeholder", ["%t", "%b"])
@pytest.mark.parametrize("binary", [False, True])
def test_psycopg_parameters_of_every_type_round_trip(pg, placeholder, binary):
    query = "SELECT " + ", ".join(f"{placeholder}::{t} AS c{i}" for i, (_, t) in enumerate(VALUES))
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        row = conn.execute(query, [v for v, _ in VALUES], binary=binary).fetchone()
    assert list(row) == [v for v, _ in VALUES]


@pytest.mark.parametrize("placeholder", ["%t", "%b"])
def test_psycopg_binary_safe_bytea_parameter(pg, placeholder):
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        for _ in range(3):  # the first run binds a literal, repeats pass the value through
            assert conn.execute(f"SELECT {placeholder}::bytea", (b"\x00\xff\x80",), prepare=True).fetchone() \
                == (b"\x00\xff\x80",)


@pytest.mark.parametrize("placeholder", ["%t", "%b"])
def test_psycopg_a_bare_parameter_comes_back_typed_as_sent(pg, placeholder):
    """`SELECT $1` takes the type the client declared for $1 (psycopg: int2, int4 or int8 by value), as
    PostgreSQL does."""
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        for value, oid in ((1, 21), (2**20, 23), (2**40, 20)):
            cur = conn.execute(f"SELECT {placeholder}", (value,))
            assert [d.type_code for d in cur.description] == [oid] and cur.fetchone() == (value,)


def test_a_misspelt_statement_is_a_syntax_error(pg):
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        for sql, params in (("SELEC 1", None), ("SELEC %s", (1,))):
            with pytest.raises(psycopg.errors.SyntaxError):
                conn.execute(sql, params)
        assert conn.execute("SELECT 1").fetchone() == (1,)  # the connection goes on


def test_asyncpg_typed_parameters_type_the_result(pg):
    async def go():
        conn = await asyncpg.connect(host="127.0.0.1", port=pg.port, user="phloem", database="shop")
        try:
            int4 = await conn.prepare("SELECT $1::int")
            int8 = await conn.prepare("SELECT $1::int8")
            assert [a.type.oid for a in int4.get_attributes()] == [23]
            assert [a.type.oid for a in int8.get_attributes()] == [20]
            assert await int4.fetchval(5) == 5 and await int8.fetchval(2**40) == 2**40
        finally:
            await conn.close()

    run(go())


def test_psycopg_untyped_string_parameters_filter_semantic_queries(pg, wire_runtime):
    """A Python str goes out with type OID 0: it must still match (not become NULL, not a date)."""
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        rows = conn.execute("SELECT channel, MEASURE(orders) AS orders FROM metrics WHERE channel IN (%s, %s) "
                            "GROUP BY 1 ORDER BY 1", ("app", "web")).fetchall()
    assert rows == expected(wire_runtime, metrics=["orders"], dimensions=["channel"],
                            filters=["channel in ('app', 'web')"], order_by=["channel"])


@pytest.mark.parametrize("binary", [False, True])
def test_psycopg_large_results_stream_in_batches(pg, binary):
    n = 200_000
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        cur = conn.cursor(binary=binary)
        rows = cur.execute("SELECT g, g * 0.5 AS half, 'row ' || g AS label FROM generate_series(1, %s) AS t(g)",
                           (n,)).fetchall()
    assert len(rows) == n
    assert rows[0][0] == 1 and rows[-1][0] == n
    assert rows[-1][2] == f"row {n}"
    assert sum(r[0] for r in rows) == n * (n + 1) // 2


def test_psycopg_cancel_during_a_long_query(pg):
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        timer = threading.Timer(1.0, conn.cancel_safe)
        started = time.monotonic()
        timer.start()
        with pytest.raises(psycopg.errors.QueryCanceled) as caught:
            conn.execute(SLOW).fetchall()
        elapsed = time.monotonic() - started
        assert 0.9 < elapsed < 6, elapsed
        assert caught.value.sqlstate == "57014"
        assert "user request" in str(caught.value)
        assert conn.execute("SELECT 'still here'").fetchone() == ("still here",)


def test_the_event_loop_answers_while_a_long_query_runs(pg):
    """Queries run in worker threads: other connections, and CancelRequest, are served meanwhile."""
    with psycopg.connect(pg.dsn(), autocommit=True) as slow, psycopg.connect(pg.dsn(), autocommit=True) as fast:
        failure: list[BaseException] = []

        def run_slow():
            try:
                slow.execute(SLOW)
            except psycopg.errors.QueryCanceled as e:
                failure.append(e)

        thread = threading.Thread(target=run_slow)
        thread.start()
        time.sleep(0.3)
        started = time.monotonic()
        for i in range(50):
            assert fast.execute("SELECT %s::int", (i,)).fetchone() == (i,)
        assert time.monotonic() - started < 5
        slow.cancel_safe()
        thread.join(10)
        assert failure and failure[0].sqlstate == "57014"


def test_transaction_status_notices_and_parameter_status(pg):
    notices = []
    with psycopg.connect(pg.dsn(application_name="first")) as conn:
        conn.add_notice_handler(lambda d: notices.append((d.severity, d.sqlstate, d.message_primary)))
        assert conn.info.parameter_status("application_name") == "first"
        conn.execute("SELECT 1")
        assert conn.info.transaction_status == pq.TransactionStatus.INTRANS
        conn.execute("BEGIN")
        assert ("WARNING", "25001", "there is already a transaction in progress") in notices
        with pytest.raises(psycopg.errors.UndefinedTable):
            conn.execute("SELECT * FROM no_such_table")
        assert conn.info.transaction_status == pq.TransactionStatus.INERROR
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute("SELECT 1")
        conn.rollback()
        assert conn.info.transaction_status == pq.TransactionStatus.IDLE
        conn.execute("SET application_name = 'renamed'")
        assert conn.info.parameter_status("application_name") == "renamed"
        conn.commit()


def test_errors_map_to_sqlstates(pg):
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        for sql, error in [("SELECT MEASURE(nope) FROM metrics", psycopg.errors.UndefinedColumn),
                           ("SELECT * FROM nope", psycopg.errors.UndefinedTable),
                           ("SELECT (1", psycopg.errors.SyntaxError),
                           ("DELETE FROM orders", psycopg.errors.ReadOnlySqlTransaction)]:
            with pytest.raises(error):
                conn.execute(sql)
        assert conn.execute("SELECT 1").fetchone() == (1,)


# ------------------------------------------------------------------------------------- SCRAM and TLS

def test_scram_with_the_right_password(pg_secure, wire_runtime):
    with psycopg.connect(pg_secure.dsn(password=PASSWORD, sslmode="disable"), autocommit=True) as conn:
        assert conn.execute(SQL).fetchall() == expected(wire_runtime)
        assert not conn.pgconn.ssl_in_use
    with psycopg.connect(pg_secure.dsn(user="bob", password="hunter2", sslmode="disable")) as conn:  # stored verifier
        assert conn.execute("SELECT current_user").fetchone() == ("bob",)


@pytest.mark.parametrize("user, password", [("alice", "wrong"), ("alice", ""), ("mallory", PASSWORD)])
def test_scram_with_a_wrong_password_or_user(pg_secure, user, password):
    with pytest.raises(psycopg.OperationalError, match=f'password authentication failed for user "{user}"'):
        psycopg.connect(pg_secure.dsn(user=user, password=password or "x", sslmode="disable"))


def test_tls_sslmode_require_and_verify_ca(pg_secure, tls_files, wire_runtime):
    with psycopg.connect(pg_secure.dsn(password=PASSWORD, sslmode="require"), autocommit=True) as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute(SQL).fetchall() == expected(wire_runtime)
    with psycopg.connect(pg_secure.dsn(password=PASSWORD, sslmode="verify-ca", sslrootcert=str(tls_files[0]))) as conn:
        assert conn.pgconn.ssl_in_use


def test_tls_required_against_a_server_without_it(pg):
    with pytest.raises(psycopg.OperationalError, match="SSL"):
        psycopg.connect(pg.dsn(sslmode="require"))


# ----------------------------------------------------------------------------------------------- psql

def psql(live, *args: str, password: str = PASSWORD, sslmode: str = "prefer") -> subprocess.CompletedProcess:
    env = {**os.environ, "PGPASSWORD": password, "PGSSLMODE": sslmode, "PGCONNECT_TIMEOUT": "10"}
    return subprocess.run(["psql", "-X", "-h", "127.0.0.1", "-p", str(live.port), "-U", live.user, "-d", "shop",
                           *args], capture_output=True, text=True, env=env, timeout=60)


def test_psql_runs_a_metric_query(pg_secure, wire_runtime):
    done = psql(pg_secure, "-A", "-t", "-F", "|", "-c", SQL)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines == [f"{c}|{r}|{o}" for c, r, o in expected(wire_runtime)]


def test_psql_over_tls_several_commands_and_errors(pg_secure):
    done = psql(pg_secure, "-A", "-t", "-c", "SELECT 1", "-c", "SELECT MEASURE(nope) FROM metrics", "-c", "SELECT 2",
                sslmode="require")
    assert done.stdout.split() == ["1", "2"]  # the failing command in between is reported and skipped
    assert "ERROR:" in done.stderr and "nope" in done.stderr
    done = psql(pg_secure, "-A", "-t", "-c", "SELECT 1; SELECT 2", sslmode="require")
    assert done.returncode == 0 and done.stdout.split() == ["1", "2"]  # psql 15 prints every result


def test_psql_with_a_wrong_password(pg_secure):
    done = psql(pg_secure, "-c", "SELECT 1", password="wrong")
    assert done.returncode == 2
    assert 'password authentication failed for user "alice"' in done.stderr


# ----------------------------------------------------------------------------------------------- asyncpg

def run(coro):
    return asyncio.run(coro)


async def _asyncpg(live, **kw) -> asyncpg.Connection:
    return await asyncpg.connect(host="127.0.0.1", port=live.port, user=live.user, database="shop",
                                 password=kw.pop("password", PASSWORD), timeout=10, **kw)


def test_asyncpg_metric_query_binary_results(pg_secure, wire_runtime):
    async def go():
        conn = await _asyncpg(pg_secure, ssl=False)
        try:
            rows = await conn.fetch(SQL)
            typed = await conn.fetch("SELECT channel, MEASURE(revenue) AS revenue FROM metrics WHERE channel = $1 "
                                     "GROUP BY 1", "web")
            return [tuple(r.values()) for r in rows], [tuple(r.values()) for r in typed]
        finally:
            await conn.close()

    rows, typed = run(go())
    assert rows == expected(wire_runtime)
    assert typed == expected(wire_runtime, metrics=["revenue"], dimensions=["channel"], filters=["channel = 'web'"])


def test_asyncpg_over_tls_every_type_both_ways(pg_secure):
    values = [v for v, t in VALUES if v is not None] + [None]
    types = [t for v, t in VALUES if v is not None] + ["int4"]

    async def go():
        ctx = __import__("ssl").create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, __import__("ssl").CERT_NONE
        conn = await _asyncpg(pg_secure, ssl=ctx)
        try:
            statement = await conn.prepare("SELECT " + ", ".join(f"$%d::{t}" % (i + 1) for i, t in enumerate(types)))
            row = await statement.fetchrow(*values)
            return list(row.values())
        finally:
            await conn.close()

    got = run(go())
    float4 = values.index(1.5)
    assert got == values[:float4] + [1.5] + values[float4 + 1:]


def test_asyncpg_prepared_statement_and_cursor(pg_secure):
    async def go():
        conn = await _asyncpg(pg_secure, ssl=False)
        try:
            statement = await conn.prepare("SELECT g FROM generate_series(1, $1::int) AS t(g)")
            assert [p.name for p in statement.get_parameters()] == ["int4"]
            sizes = [len(await statement.fetch(n)) for n in (1, 10, 1000)]
            async with conn.transaction():
                seen = [r["g"] async for r in conn.cursor("SELECT g FROM generate_series(1, 250) AS t(g)",
                                                          prefetch=40)]
                cursor = await conn.cursor("SELECT g FROM generate_series(1, 10) AS t(g)")
                first = await cursor.fetch(3)
                await cursor.forward(2)
                after = await cursor.fetchrow()
            return sizes, seen, [r["g"] for r in first], after["g"]
        finally:
            await conn.close()

    sizes, seen, first, after = run(go())
    assert sizes == [1, 10, 1000]
    assert seen == list(range(1, 251))
    assert first == [1, 2, 3] and after == 6


def test_asyncpg_timeout_cancels_and_the_connection_lives_on(pg_secure):
    async def go():
        conn = await _asyncpg(pg_secure, ssl=False)
        try:
            started = time.monotonic()
            with pytest.raises(asyncio.TimeoutError):
                await conn.fetch(SLOW, timeout=1.0)  # asyncpg sends a CancelRequest
            elapsed = time.monotonic() - started
            return elapsed, await conn.fetchval("SELECT 41 + 1")
        finally:
            await conn.close()

    elapsed, value = run(go())
    assert elapsed < 5 and value == 42


def test_many_clients_at_once(pg, wire_runtime):
    want = expected(wire_runtime)
    failures: list[BaseException] = []

    def client(i: int) -> None:
        try:
            with psycopg.connect(pg.dsn(application_name=f"client-{i}"), autocommit=True) as conn:
                for j in range(15):
                    binary = (i + j) % 2 == 0
                    assert conn.execute(SQL, binary=binary).fetchall() == want
                    assert conn.execute("SELECT %s::int * 2", (j,), binary=binary).fetchone() == (2 * j,)
        except BaseException as e:  # noqa: BLE001 (reported below)
            failures.append(e)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert failures == []


def test_asyncpg_pool_release_resets_the_connection(pg):
    """Releasing a pooled connection sends asyncpg's reset query (pg_advisory_unlock_all(), CLOSE ALL,
    UNLISTEN *, RESET ALL), as one simple-protocol Query."""

    async def go():
        pool = await asyncpg.create_pool(host="127.0.0.1", port=pg.port, user="phloem", database="shop",
                                         min_size=1, max_size=1)
        try:
            for _ in range(2):
                async with pool.acquire() as conn:
                    assert await conn.fetchval("SELECT 1") == 1
                    await conn.execute("SET application_name = 'pooled'")
            async with pool.acquire() as conn:  # the reset ran: RESET ALL put the setting back
                assert await conn.fetchval("SHOW application_name") == ""
                record = await conn.fetchrow("SELECT pg_advisory_unlock_all()")
                assert list(record.keys()) == ["pg_advisory_unlock_all"] and record[0] is None  # void
                assert await conn.execute("SELECT pg_advisory_unlock_all();\nCLOSE ALL;\nUNLISTEN *;\nRESET ALL;") \
                    == "RESET"
        finally:
            await pool.close()

    run(go())
