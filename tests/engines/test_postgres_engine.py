"""PostgresEngine on a real PostgreSQL server: Arrow types, `?` parameters, threads, atomicity, errors."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pyarrow as pa
import pytest
import sqlglot
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from sqlglot import exp

from semantic.activity.stream import ident
from semantic.engines.postgres import PostgresEngine, paramstyle
from semantic.errors import BuildError, WarehouseError


@pytest.fixture(scope="module")
def engine(pg_dsn):
    e = PostgresEngine(pg_dsn)
    e.execute("create schema s")
    yield e
    e.close()


# ------------------------------------------------------------------ results as Arrow


def test_types_come_from_the_column_description(engine):
    table = engine.arrow("""
        select 1::int2 as i2, 2::int4 as i4, 3::int8 as i8, 1.25::numeric(12, 2) as price, 1.5::real as f4,
               2.5::float8 as f8, true as b, 'x'::text as t, 'y'::varchar(3) as v, date '2024-02-29' as d,
               timestamp '2024-01-02 03:04:05.123456' as ts, timestamptz '2024-01-02 03:04:05+02' as tz,
               '{"a": 1}'::jsonb as j, interval '2 days 3 hours' as iv, null::numeric(10, 3) as no_price,
               null::text as no_text""")
    assert table.schema == pa.schema([
        ("i2", pa.int16()), ("i4", pa.int32()), ("i8", pa.int64()), ("price", pa.decimal128(12, 2)),
        ("f4", pa.float32()), ("f8", pa.float64()), ("b", pa.bool_()), ("t", pa.string()), ("v", pa.string()),
        ("d", pa.date32()), ("ts", pa.timestamp("us")), ("tz", pa.timestamp("us", tz="UTC")), ("j", pa.string()),
        ("iv", pa.duration("us")), ("no_price", pa.decimal128(10, 3)), ("no_text", pa.string())])
    assert table.to_pylist() == [{
        "i2": 1, "i4": 2, "i8": 3, "price": Decimal("1.25"), "f4": 1.5, "f8": 2.5, "b": True, "t": "x", "v": "y",
        "d": date(2024, 2, 29), "ts": datetime(2024, 1, 2, 3, 4, 5, 123456),
        "tz": datetime(2024, 1, 2, 1, 4, 5, tzinfo=UTC), "j": '{"a": 1}', "iv": timedelta(days=2, hours=3),
        "no_price": None, "no_text": None}]


def test_numeric_without_a_scale_takes_the_largest_scale_present(engine):
    table = engine.arrow("select x, x * 2 as y from (values (1.5::numeric), (10.125), (null)) v(x)")
    assert table.schema.field("x").type == pa.decimal128(38, 3)
    assert table.column("x").to_pylist() == [Decimal("1.5"), Decimal("10.125"), None]
    # sum() over numeric(12, 2) has no declared scale; its values keep scale 2, as DuckDB's decimal(38, 2) does
    total = engine.arrow("select sum(x) as total from (values (1.10::numeric(12, 2)), (2.25)) v(x)")
    assert total.schema.field("total").type == pa.decimal128(38, 2)
    assert total.column("total").to_pylist() == [Decimal("3.35")]


def test_numeric_that_has_no_decimal_form_is_float(engine):
    table = engine.arrow("select x from (values ('NaN'::numeric), (1.5)) v(x)")
    assert table.schema.field("x").type == pa.float64()
    values = table.column("x").to_pylist()
    assert values[0] != values[0] and values[1] == 1.5  # NaN


def test_empty_result_keeps_its_types(engine):
    table = engine.arrow("select 1::int8 as a, 'x'::text as b, 1.5::numeric(5, 1) as c, now() as d where false")
    assert table.num_rows == 0
    assert table.schema.types == [pa.int64(), pa.string(), pa.decimal128(5, 1), pa.timestamp("us", tz="UTC")]


def test_columns_describes_without_running(engine):
    assert engine.columns("select 1::int8 as a, 1.5::numeric(4, 1) as b, now() as c") == [
        ("a", "int8"), ("b", "numeric(4,1)"), ("c", "timestamptz")]


def test_session_time_zone_is_utc(engine):
    assert engine.rows("show time zone") == [("UTC",)]


# ------------------------------------------------------------------ parameters


def test_question_mark_placeholders(engine):
    assert engine.rows("select ?::int + ?::int, '?', 'a%b', ?", [1, 2, "50%"]) == [(3, "?", "a%b", "50%")]
    assert engine.rows("select 'it''s ?', \"n?\" from (select 1 as \"n?\") t where 1 = ?", [1]) == [("it's ?", 1)]


def test_without_parameters_the_text_is_untouched(engine):
    assert engine.rows("select 'a%b', '?'") == [("a%b", "?")]


def test_paramstyle():
    assert paramstyle("a = ? and b like '%?%' and c = ?") == "a = %s and b like '%%?%%' and c = %s"
    assert paramstyle('select "x%" from t where y = ?') == 'select "x%%" from t where y = %s'


# ------------------------------------------------------------------ catalog


def test_tables_by_prefix_take_underscores_literally(engine):
    for name in ("__stage_a", "x_stage_b", "__stagexc"):
        engine.execute(f'create table s."{name}" (x int)')
    assert engine.tables("s", "__stage_") == ["__stage_a"]
    assert engine.tables("s") == ["__stage_a", "__stagexc", "x_stage_b"]
    assert engine.table_exists("s", "x_stage_b") and not engine.table_exists("s", "nope")


# ------------------------------------------------------------------ threads and transactions


def test_reads_from_several_threads_run_in_parallel(engine):
    start = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda i: engine.arrow("select ?::int as i, pg_sleep(0.4)::text as z", [i])
                            .column("i")[0].as_py(), range(8)))
    elapsed = time.perf_counter() - start
    assert got == list(range(8))
    assert elapsed < 8 * 0.4 * 0.75, f"8 sleeps of 0.4 s took {elapsed:.2f} s: readers are serialized"


def test_readers_see_a_transaction_whole_or_not_at_all(engine):
    engine.execute("create table s.t (x int)")
    with engine.transaction() as tx:
        tx.execute("insert into s.t values (?)", [1])
        assert engine.rows("select count(*) from s.t") == [(0,)]
        with ThreadPoolExecutor(1) as pool:  # another thread does not wait for, or join, the transaction
            assert pool.submit(engine.rows, "select count(*) from s.t").result(timeout=5) == [(0,)]
    assert engine.rows("select count(*) from s.t") == [(1,)]


def test_a_failed_transaction_changes_nothing(engine):
    engine.execute("create table s.u (x int)")
    with pytest.raises(WarehouseError, match="invalid input syntax for type integer"):
        with engine.transaction() as tx:
            tx.execute("insert into s.u values (1)")
            tx.execute("insert into s.u values ('not a number')")
    assert engine.rows("select count(*) from s.u") == [(0,)]
    engine.execute("insert into s.u values (2)")  # the writer is usable again
    assert engine.rows("select x from s.u") == [(2,)]


def test_a_reader_error_leaves_the_pool_usable(engine):
    for _ in range(6):
        with pytest.raises(WarehouseError, match="division by zero"):
            engine.arrow("select 1 / 0")
    assert engine.rows("select 1") == [(1,)]


# ------------------------------------------------------------------ builds


def test_create_table_as_replaces_and_keeps_the_old_table_on_error(engine):
    table = exp.Table(this=ident("ctas"), db=ident("s"))
    engine.create_table_as(table, sqlglot.parse_one("select 1 as a"))
    engine.create_table_as(table, sqlglot.parse_one("select 2 as a, 'x' as b"))  # a new shape replaces it
    assert engine.rows("select * from s.ctas") == [(2, "x")]
    with pytest.raises(BuildError, match=r'building "s"\."ctas" failed: relation "no_such_table" does not exist'):
        engine.create_table_as(table, sqlglot.parse_one("select * from no_such_table"))
    assert engine.rows("select * from s.ctas") == [(2, "x")]


def test_a_name_postgres_would_truncate_is_a_build_error(engine):
    table = exp.Table(this=ident("x" * 64), db=ident("s"))
    with pytest.raises(BuildError, match="longer than PostgreSQL's 63-byte limit"):
        engine.create_table_as(table, sqlglot.parse_one("select 1 as a"))


# ------------------------------------------------------------------ connecting


def test_an_unreachable_server_is_a_clear_error():
    engine = PostgresEngine("postgresql://someone:secret@127.0.0.1:1/shop", connect_timeout=2)
    with pytest.raises(WarehouseError, match=r"cannot connect to PostgreSQL at someone@127\.0\.0\.1:1/shop: .*"
                                             r"is the server running") as caught:
        engine.rows("select 1")
    assert "secret" not in str(caught.value)


def test_a_wrong_password_is_a_clear_error_without_the_password(pg_dsn):
    dsn = make_conninfo(pg_dsn, password="not-the-password")
    with pytest.raises(WarehouseError, match="password authentication failed") as caught:
        PostgresEngine(dsn).arrow("select 1")
    assert "not-the-password" not in str(caught.value)
    assert conninfo_to_dict(dsn)["dbname"] in str(caught.value)
