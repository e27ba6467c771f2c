"""Known fidelity gaps, closed: each statement runs on this server and on a real PostgreSQL 15, and both answer
the same (names, type OIDs, the bytes of every value in text and binary, or the SQLSTATE and message).

Bounded strings (an explicit cast to varchar(n) / char(n) cuts, char(n) pads), integer overflow (22003, not
22P02), pg_sleep (sleeps, then one void value), and the special floats Infinity, -Infinity and NaN as parameters.
"""

# ruff: noqa: F811  (fixtures are imported from wire_server and named as arguments)

from __future__ import annotations

import struct
import threading
import time

import psycopg
import pytest
import sqlglot
from psycopg.pq import DiagnosticField, ExecStatus
from wire_server import Raw, pg  # noqa: F401  (fixture)

from server.pgwire.binder import Binder

FLOAT8, FLOAT4, VOID = 701, 700, 2278


@pytest.fixture(scope="module")
def ours(pg):
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="module")
def theirs(postgres_dsn):
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        yield conn


def answer(conn: psycopg.Connection, sql: str, params=(), types=None, formats=None, result_format: int = 0):
    """What a server says to one extended-protocol statement: ("rows", [(name, type OID)], rows of raw values) or
    ("error", SQLSTATE, message)."""
    res = conn.pgconn.exec_params(sql.encode(), list(params), types, formats, result_format=result_format)
    if res.status != ExecStatus.TUPLES_OK:
        return ("error", res.error_field(DiagnosticField.SQLSTATE).decode(),
                res.error_field(DiagnosticField.MESSAGE_PRIMARY).decode())
    columns = [(res.fname(i).decode(), res.ftype(i)) for i in range(res.nfields)]
    rows = [[res.get_value(r, c) for c in range(res.nfields)] for r in range(res.ntuples)]
    return "rows", columns, rows


def type_modifiers(conn: psycopg.Connection, sql: str) -> list[int]:
    res = conn.pgconn.exec_params(sql.encode(), [])
    assert res.status == ExecStatus.TUPLES_OK, res.error_message
    return [res.fmod(i) for i in range(res.nfields)]


def same_answer(ours, theirs, sql: str, params=(), types=None, formats=None) -> None:
    for result_format in (0, 1):
        want = answer(theirs, sql, params, types, formats, result_format)
        assert answer(ours, sql, params, types, formats, result_format) == want, (sql, params, result_format)


# ------------------------------------------------------------------------------------------ bounded strings

BOUNDED = [
    "SELECT 'abc'::varchar(2)",
    "SELECT CAST('abc' AS character varying(2)) AS v, 'ab  '::varchar(2) AS trailing, 'abc'::varchar AS unbounded",
    "SELECT 'abc'::char(2), 'a'::char(3), 'abc'::char, 'abc'::bpchar, 'ab  '::bpchar, 'a'::bpchar(3)",
    "SELECT 'é日本'::varchar(2), 'é'::char(3)",  # characters, not bytes
    "SELECT true::varchar(3), 12345::char(2), NULL::varchar(1)",
    "SELECT 'a'::char(3) = 'a' AS eq, length('a'::char(3)) AS len, 'a'::char(3) || 'b' AS cat",  # blanks ignored
    "SELECT x, x || ']' FROM (SELECT 'a'::char(3) x) s",
    "WITH t AS (SELECT 'abc'::char(2) AS c) SELECT c, t.c AS again FROM t",
    "SELECT 'abc'::varchar(2) UNION ALL SELECT 'xyz'::varchar(2)",
    "SELECT relname::varchar(3) FROM pg_class WHERE relname = 'pg_class'",
]


@pytest.mark.parametrize("sql", BOUNDED)
def test_explicit_casts_to_bounded_strings_cut_and_pad(ours, theirs, sql):
    same_answer(ours, theirs, sql)


def test_a_varchar_parameter_cast_to_varchar_n_is_cut(ours, theirs):
    same_answer(ours, theirs, "SELECT $1::varchar(2)", [b"abc"])
    same_answer(ours, theirs, "SELECT $1::char(4)", [b"abc"], [1043])


MODIFIED = BOUNDED[:4] + [
    "SELECT 1.5::numeric(10,2) AS n, (('x'::varchar(4))) AS p, 'x'::text AS t, upper('x'::varchar(4)) AS u",
    "SELECT 'a'::varchar(2) UNION SELECT 'b'::varchar(3)",  # branches disagree: no modifier
    "SELECT v, * FROM (SELECT 'abc'::varchar(2) AS v, 'a'::char(3) AS c) s",  # a column keeps its modifier
    "WITH t AS (SELECT 1.5::numeric(10,2) AS n) SELECT n, t.n AS again, n + 1 AS more FROM t",
    "SELECT relname, relnatts FROM pg_class LIMIT 1",
    "SELECT table_name, ordinal_position, data_type FROM information_schema.columns LIMIT 1",
]


@pytest.mark.parametrize("sql", MODIFIED)
def test_the_binder_gives_the_type_modifiers_postgres_reports(pg, theirs, sql):
    """RowDescription's atttypmod: varchar(n) and char(n) are n + 4, numeric(p,s) ((p << 16) | s) + 4."""
    binder = Binder(pg.server.frontend.catalog, ["public"])
    binder.bind(sqlglot.parse_one(sql, read="postgres"))
    assert binder.typmods == type_modifiers(theirs, sql)


@pytest.mark.parametrize("sql", MODIFIED[:3] + MODIFIED[6:7])
def test_row_descriptions_carry_the_type_modifiers(ours, theirs, sql):
    assert type_modifiers(ours, sql) == type_modifiers(theirs, sql)


# ------------------------------------------------------------------------------------------ integer overflow

OVERFLOWS = [  # (statement, parameter) — all fail in PostgreSQL
    ("SELECT 2147483648::int4", None), ("SELECT 32768::int2", None), ("SELECT -32769::int2", None),
    ("SELECT 9223372036854775808::int8", None), ("SELECT 2147483647.5::int4", None), ("SELECT 1e10::int4", None),
    ("SELECT -2147483648::int4", None),  # `-` applies after the cast, as in PostgreSQL
    ("SELECT '2147483648'::int4", None), ("SELECT ' -32769 '::int2", None),
    ("SELECT 'abc'::int4", None), ("SELECT '1_000'::int4", None), ("SELECT '1.5'::int8", None),  # 22P02
    ("SELECT 2147483648::int4 FROM pg_class WHERE false", None),  # constants fold before any row is read
    ("SELECT $1::int4", "99999999999"), ("SELECT $1::int2", "40000"), ("SELECT $1::int4", "-2147483649"),
    ("SELECT $1::int8", "9223372036854775808"), ("SELECT $1 + 1 FROM pg_class WHERE oid = $1", "99999999999"),
]


@pytest.mark.parametrize("sql, param", OVERFLOWS)
def test_integers_out_of_range_fail_with_22003_as_in_postgres(ours, theirs, sql, param):
    params = [] if param is None else [param.encode()]
    want = answer(theirs, sql, params)
    assert want[0] == "error"
    assert answer(ours, sql, params) == want


@pytest.mark.parametrize("oid", [0, 23])
def test_an_int4_parameter_out_of_range_or_not_an_integer(ours, theirs, oid):
    for text, state in (("99999999999", "22003"), ("abc", "22P02"), (" 12 ", None)):
        got, want = (answer(conn, "SELECT $1::int4", [text.encode()], [oid]) for conn in (ours, theirs))
        if state is None:
            assert got == want
        else:
            assert got[:2] == want[:2] == ("error", state)


def test_a_repeated_statement_still_checks_the_range(ours, theirs):
    """A repeat is answered from what the first run left (no parsing): the range is checked all the same."""
    sql = "SELECT $1::int4 AS again, $2::int2 AS small"
    for conn in (ours, theirs):
        for values in ([b"5", b"6"], [b"7", b"8"]):
            assert answer(conn, sql, values)[2] == [values]
    for params in ([b"99999999999", b"1"], [b"1", b"40000"], [b"x", b"1"]):
        assert answer(ours, sql, params)[:2] == answer(theirs, sql, params)[:2], params


def test_integers_in_range_are_unchanged(ours, theirs):
    same_answer(ours, theirs, "SELECT 2147483647::int4, (-2147483648)::int4, 32767::int2, ' -12 '::int2, "
                              "'+7'::int8, 2.5::int4, (-2.5)::int4")
    same_answer(ours, theirs, "SELECT $1::int4, $2::int2", [b"-2147483648", b"32767"])


def test_psycopg_sees_numeric_value_out_of_range(ours):
    with pytest.raises(psycopg.errors.NumericValueOutOfRange):
        ours.execute("SELECT %s::int4", ("99999999999",))
    with pytest.raises(psycopg.errors.InvalidTextRepresentation):
        ours.execute("SELECT %s::int4", ("twelve",))
    assert ours.execute("SELECT 1").fetchone() == (1,)


# ------------------------------------------------------------------------------------------ pg_sleep

def test_pg_sleep_sleeps_then_answers_one_void_value(ours, theirs):
    want = answer(theirs, "SELECT pg_sleep(0.1)")
    assert want == ("rows", [("pg_sleep", VOID)], [[b""]])
    started = time.monotonic()
    assert answer(ours, "SELECT pg_sleep(0.1)") == want
    assert time.monotonic() - started >= 0.1
    same_answer(ours, theirs, "SELECT pg_sleep(0.05) AS slept, pg_sleep(NULL) IS NULL AS strict")
    same_answer(ours, theirs, "SELECT pg_sleep($1)", [b"0.05"])
    assert ours.execute("SELECT pg_sleep(0.01)").fetchone() == theirs.execute("SELECT pg_sleep(0.01)").fetchone()


def test_pg_sleep_is_described_as_postgres_does(pg, theirs):
    """Parse and Describe: $1 is float8, the column void (typlen 4)."""
    theirs.pgconn.prepare(b"sleepy", b"SELECT pg_sleep($1)")
    want = theirs.pgconn.describe_prepared(b"sleepy")
    theirs.execute("DEALLOCATE sleepy")
    with Raw(pg.port) as raw:  # by hand: libpq 18's PQdescribePrepared never returns here (psql 15's \gdesc does)
        raw.startup()
        raw.parse("SELECT pg_sleep($1)", "sleepy")
        raw.describe(b"S", "sleepy")
        described = dict(raw.sync())
    (count, param), name = struct.unpack("!hI", described[b"t"]), described[b"T"][2:].split(b"\0")[0]
    column = struct.unpack("!IhIhih", described[b"T"][2 + len(name) + 1:])
    assert (count, param) == (want.nparams, want.param_type(0)) == (1, FLOAT8)
    assert (name.decode(), column[2:5]) == (want.fname(0).decode(), (want.ftype(0), want.fsize(0), want.fmod(0)))
    assert column[2:5] == (VOID, 4, -1)


def test_a_cancel_interrupts_pg_sleep(pg):
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        threading.Timer(0.3, conn.cancel_safe).start()
        started = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(30)")
        assert time.monotonic() - started < 10
        assert conn.execute("SELECT 1").fetchone() == (1,)


# ------------------------------------------------------------------------------------------ special floats

SPECIAL = ["Infinity", "-Infinity", "NaN"]


@pytest.mark.parametrize("typ, oid, pack", [("float8", FLOAT8, "!d"), ("float4", FLOAT4, "!f")])
@pytest.mark.parametrize("word", SPECIAL)
def test_special_float_parameters_round_trip(ours, theirs, typ, oid, pack, word):
    sql = f"SELECT $1::{typ} AS cast, $1 AS bare"
    for spelling in (word, word.lower(), f" {word.upper()} "):
        same_answer(ours, theirs, sql, [spelling.encode()], [oid])
        same_answer(ours, theirs, f"SELECT $1::{typ}", [spelling.encode()])  # type inferred from the cast
    same_answer(ours, theirs, sql, [struct.pack(pack, float(word))], [oid], [1])


def test_special_float_literals(ours, theirs):
    same_answer(ours, theirs, "SELECT 'Infinity'::float8, '-Infinity'::float4, 'NaN'::float8, '-inf'::float8, "
                              "'nan'::real")


@pytest.mark.parametrize("binary", [False, True])
def test_psycopg_float_parameters_round_trip(ours, binary):
    for value in (float("inf"), float("-inf")):
        row = ours.execute("SELECT %s::float8, %s::float4", (value, value), binary=binary).fetchone()
        assert row == (value, value)
    nan8, nan4 = ours.execute("SELECT %s::float8, %s::float4", (float("nan"),) * 2, binary=binary).fetchone()
    assert nan8 != nan8 and nan4 != nan4
    assert ours.execute("SELECT %s::float8", ("Infinity",), binary=binary).fetchone() == (float("inf"),)


# ------------------------------------------------------------------------------------- in semantic statements

def test_semantic_statements_cut_bounded_strings_and_say_22003(ours, theirs):
    """The same rules around a metric query (the outer step runs in DuckDB)."""
    row = ours.execute("SELECT 'abc'::varchar(2) AS x, channel::varchar(1) AS c, MEASURE(orders) AS n "
                       "FROM orders GROUP BY channel ORDER BY channel LIMIT 1").fetchone()
    assert row[:2] == ("ab", theirs.execute("SELECT 'app'::varchar(1)").fetchone()[0])
    with pytest.raises(psycopg.errors.NumericValueOutOfRange):
        ours.execute("SELECT channel, MEASURE(orders) FROM orders GROUP BY 1 HAVING MEASURE(orders) > %s::int",
                     ("99999999999",))
