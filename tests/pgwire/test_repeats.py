"""Repeated statements: answered from what the first run left (plans, rewrites, the result cache, sent bytes),
never stale, and the same as the first answer whichever path served them."""

# ruff: noqa: F811  (fixtures are imported from wire_server and named as arguments)

from __future__ import annotations

import psycopg
import pytest
from wire_server import pg, wire_runtime  # noqa: F401  (fixtures)

from semantic.errors import PhloemError
from server.pgwire import PgConfig, PgServer, ServerThread
from server.pgwire import pgtypes as T
from server.runtime import Runtime

METRIC = "SELECT channel, MEASURE(orders) AS orders FROM metrics GROUP BY 1 ORDER BY 1"
HAND = "SELECT channel, count(*) FROM raw.orders GROUP BY 1 ORDER BY 1"  # the demo's orders, by hand


def rows_of(result) -> list[tuple]:
    table = result.table
    return [tuple(r.values()) for r in table.to_pylist()]


def shape(result) -> list[tuple]:
    return [(c.name, c.type_oid, c.type_modifier) for c in result.columns]


# ------------------------------------------------------------------------------------------ the frontend

@pytest.mark.parametrize("sql, params, oids", [
    ("SELECT 1", None, ()),
    ("SELECT 1 AS one, 'x' AS letter, NULL::int AS nothing", None, ()),
    ("SELECT $1::int", ["41"], ()),
    ("SELECT $1::int", [7], (T.INT2,)),
    ("SELECT $1::bigint AS big", ["9000000000"], ()),
    ("SELECT $1", ["text as sent"], ()),
    ("SELECT $1::bool", ["yes"], ()),
    (METRIC, None, ()),
    ("SELECT * FROM orders ORDER BY 1", None, ()),
])
def test_a_repeat_is_answered_now_and_the_same(frontend, session, sql, params, oids):
    assert frontend.answer_now(session, sql, params, oids) is None  # never run in this session: no answer
    first = frontend.execute(session, sql, params, oids)[0]
    again = frontend.answer_now(session, sql, params, oids)
    assert again is not None, "a repeat must not need a worker thread"
    assert (again[0].tag, shape(again[0]), rows_of(again[0])) == (first.tag, shape(first), rows_of(first))
    assert rows_of(frontend.execute(session, sql, params, oids)[0]) == rows_of(first)


def test_a_repeat_with_other_parameters_gets_their_answer(frontend, session):
    frontend.execute(session, "SELECT $1::int AS n, $2 AS s", ["1", "a"])
    for n in (0, -5, 2**31 - 1, -(2**31)):
        [result] = frontend.answer_now(session, "SELECT $1::int AS n, $2 AS s", [str(n), f"v{n}"], ())
        assert rows_of(result) == [(n, f"v{n}")]
        assert shape(result) == [("n", T.INT4, -1), ("s", T.TEXT, -1)]


def test_out_of_range_parameters_fail_as_postgresql_says(frontend, session, postgres_dsn):
    frontend.execute(session, "SELECT $1::int", ["1"])
    with psycopg.connect(postgres_dsn) as conn, pytest.raises(psycopg.Error) as theirs:
        conn.execute("SELECT %s::int", ("99999999999",))
    with pytest.raises(PhloemError) as ours:
        frontend.answer_now(session, "SELECT $1::int", ["99999999999"], ())
    assert ours.value.sqlstate == theirs.value.sqlstate == "22003"


def test_a_setting_change_forgets_plans(frontend, session):
    assert rows_of(frontend.execute(session, "SELECT current_schema()")[0]) == [("public",)]
    assert frontend.answer_now(session, "SELECT current_schema()", None, ()) is not None
    frontend.execute(session, "SET search_path = pg_catalog")
    assert frontend.answer_now(session, "SELECT current_schema()", None, ()) is None
    assert rows_of(frontend.execute(session, "SELECT current_schema()")[0]) == [("pg_catalog",)]


def test_a_failed_transaction_is_not_answered_from_plans(frontend, session):
    frontend.execute(session, "SELECT 1")
    frontend.execute(session, "BEGIN")
    with pytest.raises(PhloemError):
        frontend.execute(session, "SELECT no_such_column FROM orders")
    assert frontend.answer_now(session, "SELECT 1", None, ()) is None  # 25P02 is execute's to say
    with pytest.raises(PhloemError) as aborted:
        frontend.execute(session, "SELECT 1")
    assert aborted.value.sqlstate == "25P02"
    frontend.execute(session, "ROLLBACK")


# -------------------------------------------------------------------------------------------- the wire

def test_prepared_repeats_over_the_wire_give_each_value(pg):
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        for i in range(-20, 40):
            assert conn.execute("SELECT %s::int, %s::text", (i, f"n{i}"), prepare=True).fetchone() == (i, f"n{i}")
        for _ in range(5):
            assert conn.execute("SELECT 1", prepare=True).fetchone() == (1,)


def test_a_pipeline_of_slow_and_fast_statements_keeps_its_order(pg, wire_runtime):
    """A statement that waits for a worker thread holds back the ones behind it, answered at once otherwise."""
    expected = hand_counts(wire_runtime)
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute("SELECT %s::int", (0,)).fetchone()  # the fast one has a plan; the metric query varies
        with conn.pipeline():
            cursors = []
            for i in range(30):
                sql = METRIC.replace("ORDER BY 1", f"ORDER BY 1 LIMIT {i + 10}") if i % 7 == 0 else "SELECT %s::int"
                cursors.append((i, conn.execute(sql, None if i % 7 == 0 else (i,))))
        for i, cur in cursors:
            assert cur.fetchall() == (expected if i % 7 == 0 else [(i,)])


def test_a_message_larger_than_any_read_arrives_whole(pg):
    text = "ab" * 600_000  # 1.2 MB: many socket reads
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        assert conn.execute("SELECT length(%s::text)", (text,)).fetchone() == (len(text),)
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_repeated_metric_query_follows_a_rebuild(make_demo, tmp_path):
    """The repeat is served from the result cache and the bytes last sent; a build with new data empties the
    cache, and the next repeat has the new numbers (checked against SQL over the raw table)."""
    root = make_demo(tmp_path / "shop")
    runtime = Runtime(root)
    runtime.project.build()
    try:
        with ServerThread(PgServer(runtime, PgConfig(port=0, trust="loopback"))) as server:
            dsn = f"host=127.0.0.1 port={server.port} user=phloem dbname=shop"
            with psycopg.connect(dsn, autocommit=True) as conn:
                before = [conn.execute(METRIC, prepare=True).fetchall() for _ in range(4)]
                assert before[0] == before[-1] == hand_counts(runtime)
                runtime.project.engine.execute("DELETE FROM raw.orders WHERE channel = 'web' AND order_id % 2 = 0")
                runtime.project.build(force=True)
                after = conn.execute(METRIC, prepare=True).fetchall()
                assert after == hand_counts(runtime) != before[0]
                assert conn.execute(METRIC, prepare=True).fetchall() == after
    finally:
        runtime.close()


def hand_counts(runtime) -> list[tuple]:
    table = runtime.project.engine.arrow(HAND)
    return [tuple(r.values()) for r in table.to_pylist()]


def test_a_client_that_stops_reading_holds_back_only_its_own_rows(pg):
    """A large answer to a client that does not read: the server sends while the socket takes it, then waits
    (its write buffer stays bounded), other connections are answered meanwhile, and nothing is lost."""
    import time

    from wire_server import Raw, data_rows, kinds

    rows = 1_000_000  # ~17 MB of DataRows: far more than the socket buffers hold (and the default row limit)
    with Raw(pg.port, timeout=60) as c:
        c.startup()
        c.send(b"Q", f"SELECT g, 'row ' || g AS label FROM generate_series(1, {rows}) AS g\0".encode())
        time.sleep(1.5)  # not reading
        conn = next(x for x in pg.server.connections.values() if x.streaming)
        assert conn.writer.transport.get_write_buffer_size() < 8 * 2**20
        with psycopg.connect(pg.dsn(), autocommit=True) as other:
            started = time.perf_counter()
            assert other.execute("SELECT 1").fetchone() == (1,)
            assert time.perf_counter() - started < 1.0
        messages = c.until_ready()
        assert kinds(messages[:1]) == b"T" and kinds(messages[-2:]) == b"CZ"
        received = data_rows(messages)
        assert len(received) == rows
        assert received[0] == [b"1", b"row 1"] and received[-1] == [str(rows).encode(), f"row {rows}".encode()]
