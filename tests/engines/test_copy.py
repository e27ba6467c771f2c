"""copy_tables: DuckDB tables arrive in PostgreSQL with equivalent types and every value intact."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

import duckdb
import pyarrow as pa
import pytest

from semantic.engines.copy import copy_tables
from semantic.engines.postgres import PostgresEngine

AWKWARD = ['plain', '', 'a "quoted", comma', 'two\nlines', 'tab\tand \\backslash', "it's", 'ünïcödé ✓', None]


@pytest.fixture(scope="module")
def engine(pg_dsn):
    e = PostgresEngine(pg_dsn)
    yield e
    e.close()


@pytest.fixture()
def duck():
    con = duckdb.connect()
    con.execute("create schema raw")
    yield con
    con.close()


def test_every_common_type_round_trips(duck, engine):
    duck.execute("""
        create table raw.zoo as select * from (values
          (1, 2::smallint, 3::bigint, 4::tinyint, 12.34::decimal(12, 2), 0.1::double, 1.5::float, true, date '2024-02-29',
           timestamp '2024-01-02 03:04:05.123456', timestamptz '2024-01-02 03:04:05+00', time '12:30:00',
           interval 3 day, 170141183460469231731687303715884105727::hugeint, 18446744073709551615::ubigint,
           '\\x00\\xFF'::blob, '6f1c0c39-1b1d-4ab8-b8c5-5a8f2d5f7f1e'::uuid, [1, 2]),
          (2, null, null, null, null, 'inf'::double, null, null, null, null, null, null, null, null, null, null, null,
           null)
        ) t(id, small, big, tiny, price, dbl, flt, flag, day, moment, moment_tz, clock, span, huge, ubig, bytes, uid, list)""")
    assert copy_tables(duck, engine, "raw", ["zoo"]) == {"zoo": 2}
    assert dict(engine.rows("select column_name, data_type from information_schema.columns "
                            "where table_schema = 'raw' and table_name = 'zoo'")) == {
        "id": "integer", "small": "smallint", "big": "bigint", "tiny": "smallint", "price": "numeric",
        "dbl": "double precision", "flt": "real", "flag": "boolean", "day": "date",
        "moment": "timestamp without time zone", "moment_tz": "timestamp with time zone", "clock": "time without time zone",
        "span": "interval", "huge": "numeric", "ubig": "numeric", "bytes": "bytea", "uid": "uuid", "list": "text"}
    rows = engine.arrow("select * from raw.zoo order by id").to_pylist()
    assert rows[0] == {
        "id": 1, "small": 2, "big": 3, "tiny": 4, "price": Decimal("12.34"), "dbl": 0.1, "flt": 1.5, "flag": True,
        "day": date(2024, 2, 29), "moment": datetime(2024, 1, 2, 3, 4, 5, 123456),
        "moment_tz": datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC), "clock": time(12, 30),
        "span": timedelta(days=3), "huge": Decimal("170141183460469231731687303715884105727"),
        "ubig": Decimal("18446744073709551615"), "bytes": b"\x00\xff", "uid": "6f1c0c39-1b1d-4ab8-b8c5-5a8f2d5f7f1e",
        "list": "[1, 2]"}
    assert rows[1]["dbl"] == float("inf")
    assert all(v is None for k, v in rows[1].items() if k not in ("id", "dbl"))


def test_awkward_text_and_null_versus_empty(duck, engine):
    duck.execute("create table raw.texts (i integer, s varchar)")
    duck.executemany("insert into raw.texts values (?, ?)", list(enumerate(AWKWARD)))
    copy_tables(duck, engine, "raw", ["texts"])
    assert [r[0] for r in engine.rows("select s from raw.texts order by i")] == AWKWARD


def test_many_batches_and_the_same_arrow_as_duckdb(duck, engine):
    duck.execute("""create table raw.big as select i as id, ((i % 97) / 4)::decimal(10, 2) as amount,
                    timestamp '2024-01-01' + to_seconds(i * 37) as moment, 'row ' || i as label
                    from range(250000) r(i)""")
    assert copy_tables(duck, engine, "raw", ["big"], batch_rows=60_000) == {"big": 250_000}
    query = "select * from raw.big order by id"
    got, want = engine.arrow(query), duck.sql(query).to_arrow_table()
    assert got.schema == pa.schema([("id", pa.int64()), ("amount", pa.decimal128(10, 2)),
                                    ("moment", pa.timestamp("us")), ("label", pa.string())])
    assert got.equals(want)


def test_all_tables_of_a_schema_and_replacing(duck, engine):
    duck.execute("create schema other; create table other.a (x int); create table other.b (y varchar);"
                 "create view other.v as select 1; insert into other.a values (1), (2)")
    assert copy_tables(duck, engine, "other") == {"a": 2, "b": 0}
    duck.execute("delete from other.a where x = 1")
    assert copy_tables(duck, engine, "other", ["a"]) == {"a": 1}
    assert engine.rows("select x from other.a") == [(2,)]
    assert engine.tables("other") == ["a", "b"]
