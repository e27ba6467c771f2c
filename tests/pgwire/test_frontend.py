"""The Frontend as the protocol layer calls it: semantic answers, describe without running, parameters, session
settings, transaction status, cursors, errors with their SQLSTATE, cancel and timeout."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from semantic.errors import PhloemError, QueryError, QueryTimeout
from server.pgwire import pgtypes as T
from server.pgwire.frontend import Frontend


def table(frontend, session, sql, params=None) -> pa.Table:
    return frontend.execute(session, sql, params)[-1].table


def fails(frontend, session, sql, params=None) -> PhloemError:
    with pytest.raises(PhloemError) as e:
        frontend.execute(session, sql, params)
    return e.value


# ------------------------------------------------------------------ semantic queries


def test_a_semantic_query_answers_as_the_library_does(frontend, session, runtime):
    result = frontend.execute(session, "SELECT channel, MEASURE(revenue), MEASURE(orders) FROM metrics "
                                       "GROUP BY 1 ORDER BY 1")[0]
    expected = runtime.project.query(metrics=["revenue", "orders"], dimensions=["channel"], order_by=["channel"])
    assert result.table.to_pylist() == expected.rename_columns(["channel", "revenue", "orders"]).to_pylist()
    assert result.tag == f"SELECT {expected.num_rows}"
    assert [(c.name, c.type_oid) for c in result.columns] == [("channel", T.TEXT), ("revenue", T.NUMERIC),
                                                              ("orders", T.INT8)]
    assert result.columns[1].type_modifier == T.numeric_typmod(38, 2)


def test_star_over_a_view_is_its_catalog_columns(frontend, session):
    result = frontend.execute(session, "SELECT * FROM public.orders LIMIT 5")[0]
    assert [c.name for c in result.columns] == [c.name for c in frontend.catalog.semantic["orders"].columns]
    counted = table(frontend, session, "WITH root AS (SELECT * FROM orders) SELECT COUNT(*) AS rows FROM root")
    grouped = table(frontend, session, "SELECT COUNT(*) AS rows FROM (SELECT channel, country, acquisition_channel, "
                                       "ordered_at, is_first_order FROM orders) t")
    assert counted.to_pylist() == grouped.to_pylist()


def test_parameters_take_the_type_their_column_gives_them(frontend, session, runtime):
    sql = "SELECT count(*) FROM orders WHERE ordered_at = $1"
    params, columns = frontend.describe(session, sql, [0])
    assert params == [T.DATE] and [(c.name, c.type_oid) for c in columns] == [("count", T.INT8)]
    by_date = table(frontend, session, sql, [dt.date(2024, 1, 5)]).to_pylist()
    assert table(frontend, session, sql, ["2024-01-05 +00"]).to_pylist() == by_date  # pgjdbc's setDate text
    assert by_date[0]["count"] > 0
    assert frontend.describe(session, "SELECT channel FROM orders WHERE channel = $1 LIMIT $2", [0, 0])[0] == [
        T.TEXT, T.INT8]
    assert frontend.describe(session, "SELECT channel FROM orders WHERE channel = $1", [T.VARCHAR])[0] == [
        T.VARCHAR]  # a type the client sent stays
    assert table(frontend, session, "SELECT channel FROM orders WHERE channel = $1", ["web"]).to_pylist() == [
        {"channel": "web"}]
    # catalog queries: '16386'-style OIDs, typed casts, booleans
    oid = frontend.catalog.semantic["orders"].oid
    sql = "SELECT relname FROM pg_class WHERE oid = $1 AND relkind = ANY (ARRAY[$2::VARCHAR]) AND $3"
    assert frontend.describe(session, sql, [0, 0, 0])[0] == [T.OID, T.VARCHAR, T.BOOL]
    assert table(frontend, session, sql, [str(oid), "r", "t"]).to_pylist() == [{"relname": "orders"}]
    assert fails(frontend, session, sql, ["x", "r", "t"]).sqlstate == "22P02"


def test_describe_compiles_but_does_not_run(frontend, session, runtime, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("describe ran the query")

    monkeypatch.setattr(runtime.project, "run", refuse)
    params, columns = frontend.describe(session, "SELECT country, SUM(gross_revenue) AS total FROM orders "
                                                 "WHERE channel = $1 GROUP BY 1 HAVING SUM(gross_revenue) > $2", [0, 0])
    assert params == [T.TEXT, T.NUMERIC]
    assert [(c.name, c.type_oid) for c in columns] == [("country", T.TEXT), ("total", T.NUMERIC)]
    assert frontend.describe(session, "BEGIN", []) == ([], None)
    assert frontend.describe(session, "SHOW search_path", [])[1][0].name == "search_path"
    assert frontend.describe(session, "", []) == ([], None)


def test_semantic_errors_carry_a_sqlstate(frontend, session):
    assert fails(frontend, session, "SELECT * FROM nowhere").sqlstate == "42P01"
    assert fails(frontend, session, "SELECT nope FROM orders").sqlstate == "42703"
    assert fails(frontend, session, "SELECT channel FROM orders WHERE").sqlstate == "42601"
    assert fails(frontend, session, "SELECT SUM(gross_revenue) FILTER (WHERE channel = 'web') FROM orders"
                 ).sqlstate == "0A000"
    assert fails(frontend, session, "SELECT * FROM other.orders").sqlstate == "3F000"


def test_catalog_errors_carry_a_sqlstate(frontend, session):
    assert fails(frontend, session, "SELECT * FROM pg_catalog.pg_nothing").sqlstate == "42P01"
    assert fails(frontend, session, "SELECT relnope FROM pg_class").sqlstate == "42703"
    assert fails(frontend, session, "SELECT c.relname FROM pg_class c JOIN orders o ON true").sqlstate == "0A000"
    e = fails(frontend, session, "SELECT no_such_function(1)")
    assert e.sqlstate == "42883"


def test_the_door_is_read_only(frontend, session):
    for sql in ("INSERT INTO orders VALUES (1)", "CREATE TEMP TABLE t (x int)", "DROP TABLE orders",
                "UPDATE orders SET channel = 'x'"):
        e = fails(frontend, session, sql)
        assert e.sqlstate == "25006", sql
    for sql in ("COPY orders TO STDOUT", "PREPARE p AS SELECT 1"):
        assert fails(frontend, session, sql).sqlstate == "0A000", sql


def test_constant_selects_answer_without_duckdb(frontend, session, monkeypatch):
    """SELECT 1, SELECT $1::int, SELECT version() … are answered from the statement itself; anything a
    constant's PostgreSQL type could change (1.5, 'x'::varchar(1), out of range) still runs on DuckDB."""
    ran = []
    original = Frontend._run_catalog
    monkeypatch.setattr(Frontend, "_run_catalog", lambda self, *a: ran.append(a[-1]) or original(self, *a))
    cases = [("SELECT 1", [], [("?column?", T.INT4, 1)]),
             ("SELECT -5 AS x, 'it''s', true, NULL::int8", [],
              [("x", T.INT4, -5), ("?column?", T.TEXT, "it's"), ("?column?", T.BOOL, True), ("int8", T.INT8, None)]),
             ("SELECT $1::int", ["7"], [("int4", T.INT4, 7)]),
             ("SELECT 99999999999", [], [("?column?", T.INT8, 99999999999)])]
    for sql, params, expected in cases:
        result = frontend.execute(session, sql, params)[0]
        assert [(c.name, c.type_oid) for c in result.columns] == [(n, t) for n, t, _ in expected], sql
        assert [result.table.column(i)[0].as_py() for i in range(len(expected))] == [v for _, _, v in expected]
    version = frontend.execute(session, "SELECT version()")[0]
    assert [(c.name, c.type_oid) for c in version.columns] == [("version", T.TEXT)]
    assert version.table.column(0)[0].as_py().startswith("PostgreSQL 15")
    assert ran == []
    for sql in ("SELECT 1.5", "SELECT 'abc'::varchar(2)", "SELECT 1 FROM pg_class LIMIT 1", "SELECT 1 WHERE false"):
        frontend.execute(session, sql)
    assert len(ran) == 4
    e = fails(frontend, session, "SELECT 2147483648::int")  # an error, as before, not a wrong int4
    assert e.sqlstate.startswith("22")


def test_a_misspelt_statement_is_a_syntax_error(frontend, session):
    for sql in ("SELEC 1", "SLECT * FROM orders", "FOO"):
        e = fails(frontend, session, sql)
        assert e.sqlstate == "42601" and "syntax error" in str(e), sql


# ------------------------------------------------------------------ settings


def test_set_and_show(frontend):
    session = frontend.session("postgres", "shop", {"application_name": "psql", "options": "-c search_path=x,public"})
    assert table(frontend, session, "SHOW search_path").to_pylist() == [{"search_path": "x,public"}]
    assert session.parameter_status()["application_name"] == "psql"
    for sql, name, value in [("SET extra_float_digits = 3", "extra_float_digits", "3"),
                             ("SET application_name = 'JdbcProbe'", "application_name", "JdbcProbe"),
                             ("set search_path = \"public\"", "search_path", "public"),
                             ("SET search_path TO public, \"$user\"", "search_path", 'public, "$user"'),
                             ("SET TIME ZONE 'Europe/Paris'", "TimeZone", "Europe/Paris"),
                             ("SET SESSION datestyle TO 'ISO, DMY'", "DateStyle", "ISO, DMY")]:
        [result] = frontend.execute(session, sql)
        assert (result.tag, result.columns) == ("SET", None)
        [shown] = frontend.execute(session, f"SHOW {name}")
        assert shown.tag == "SHOW" and shown.table.to_pylist() == [{name: value}]
    assert session.parameter_status()["application_name"] == "JdbcProbe"
    assert session.parameter_status()["TimeZone"] == "Europe/Paris"
    assert table(frontend, session, "SHOW transaction isolation level").to_pylist() == [
        {"transaction_isolation": "read committed"}]
    assert table(frontend, session, "show standard_conforming_strings").to_pylist() == [
        {"standard_conforming_strings": "on"}]
    assert table(frontend, session, "SELECT setting FROM pg_settings WHERE name = 'application_name'"
                 ).to_pylist() == [{"setting": "JdbcProbe"}]
    assert frontend.execute(session, "RESET application_name")[0].tag == "RESET"
    assert table(frontend, session, "SHOW application_name").to_pylist() == [{"application_name": ""}]
    assert frontend.execute(session, "RESET ALL")[0].tag == "RESET"
    assert table(frontend, session, "SHOW TimeZone").to_pylist() == [{"TimeZone": "UTC"}]
    all_settings = table(frontend, session, "SHOW ALL")
    assert all_settings.column_names == ["name", "setting", "description"] and all_settings.num_rows > 20
    assert fails(frontend, session, "SHOW no_such_setting").sqlstate == "42704"
    assert fails(frontend, session, "SET server_version = '9'").sqlstate == "55P02"
    assert frontend.execute(session, "DISCARD ALL")[0].tag == "DISCARD ALL"
    assert frontend.execute(session, "DEALLOCATE ALL")[0].tag == "DEALLOCATE ALL"


# ------------------------------------------------------------------ transactions


def test_transaction_status(frontend):
    session = frontend.session("postgres", "shop", {})
    assert session.status == "I"
    assert [r.tag for r in frontend.execute(session, "BEGIN; SELECT 1; SAVEPOINT \"_pg3_1\"")] == [
        "BEGIN", "SELECT 1", "SAVEPOINT"]
    assert session.status == "T"
    assert frontend.execute(session, 'RELEASE "_pg3_1"')[0].tag == "RELEASE"
    assert frontend.execute(session, "COMMIT")[0].tag == "COMMIT"
    assert session.status == "I"
    assert frontend.execute(session, "COMMIT")[0].notices == ["there is no transaction in progress"]
    # an error inside a block fails it until ROLLBACK (or ROLLBACK TO a savepoint)
    frontend.execute(session, "START TRANSACTION")
    frontend.execute(session, "SAVEPOINT a")
    fails(frontend, session, "SELECT * FROM nowhere")
    assert session.status == "E"
    assert fails(frontend, session, "SELECT 1").sqlstate == "25P02"
    assert frontend.execute(session, "ROLLBACK TO SAVEPOINT a")[0].tag == "ROLLBACK"
    assert session.status == "T"
    fails(frontend, session, "SELECT * FROM nowhere")
    assert frontend.execute(session, "COMMIT")[0].tag == "ROLLBACK"  # a failed block only rolls back
    assert session.status == "I"
    fails(frontend, session, "SELECT * FROM nowhere")
    assert session.status == "I"  # outside a block an error leaves nothing behind
    assert fails(frontend, session, "SAVEPOINT b").sqlstate == "25P01"


def test_several_statements_in_one_query_string(frontend):
    session = frontend.session("postgres", "shop", {})
    results = frontend.execute(session, "SET search_path TO public; SELECT 1 AS one; -- a comment\nSELECT 'a;b' AS x;")
    assert [r.tag for r in results] == ["SET", "SELECT 1", "SELECT 1"]
    assert results[2].table.to_pylist() == [{"x": "a;b"}]
    e = fails(frontend, session, "SELECT 1; SELECT * FROM nowhere; SELECT 2")
    assert [r.tag for r in e.results] == ["SELECT 1"]
    assert frontend.execute(session, " ; -- nothing\n") == []


# ------------------------------------------------------------------ cursors, EXPLAIN


def test_cursors(frontend):
    session = frontend.session("postgres", "shop", {})
    assert fails(frontend, session, "DECLARE c CURSOR FOR SELECT 1").sqlstate == "25P01"
    frontend.execute(session, "BEGIN")
    assert frontend.execute(session, "DECLARE c CURSOR FOR SELECT channel FROM orders ORDER BY 1")[0].tag == \
        "DECLARE CURSOR"
    first = frontend.execute(session, "FETCH 2 FROM c")[0]
    assert first.tag == "FETCH 2" and [c.name for c in first.columns] == ["channel"]
    rest = frontend.execute(session, "FETCH ALL IN c")[0]
    assert first.table.to_pylist() + rest.table.to_pylist() == table(
        frontend, session, "SELECT channel FROM orders ORDER BY 1").to_pylist()
    assert frontend.execute(session, "FETCH NEXT FROM c")[0].tag == "FETCH 0"
    assert frontend.execute(session, "CLOSE c")[0].tag == "CLOSE CURSOR"
    frontend.execute(session, "DECLARE held CURSOR WITH HOLD FOR SELECT 1 AS one")
    frontend.execute(session, "COMMIT")
    assert frontend.execute(session, "FETCH held")[0].table.to_pylist() == [{"one": 1}]
    assert frontend.execute(session, "CLOSE ALL")[0].tag == "CLOSE CURSOR ALL"
    assert fails(frontend, session, "FETCH held").sqlstate == "34000"


def test_explain_shows_the_plan(frontend, session):
    result = frontend.execute(session, "EXPLAIN SELECT channel, SUM(gross_revenue) FROM orders GROUP BY 1")[0]
    assert result.tag == "EXPLAIN" and result.columns[0].name == "QUERY PLAN"
    text = "\n".join(result.table.column(0).to_pylist())
    assert "metric query" in text and "SQL" in text


# ------------------------------------------------------------------ time limits


def test_catalog_queries_stop_at_the_time_limit(runtime):
    slow = Frontend(runtime)
    timeout = runtime.timeout
    runtime.timeout = 0.3
    try:
        session = slow.session("postgres", "shop", {})
        with pytest.raises(QueryTimeout) as e:
            slow.execute(session, "SELECT count(*) FROM generate_series(1, 3000000000000) i WHERE i % 7 = 3")
        assert e.value.sqlstate == "57014"
        assert not isinstance(e.value, QueryError)
        assert slow.execute(session, "SELECT 1")[0].tag == "SELECT 1"
    finally:
        runtime.timeout = timeout


def test_one_watchdog_thread_keeps_every_time_limit():
    import threading
    import time

    from semantic.limits import Watchdog

    dog, fired = Watchdog(), []
    late = dog.schedule(0.4, lambda: fired.append("late"))
    early = dog.schedule(0.05, lambda: fired.append("early"))  # an earlier deadline wakes the thread
    dropped = [dog.schedule(0.1, lambda: fired.append("cancelled")) for _ in range(500)]
    for key in dropped:
        dog.cancel(key)
    dog.cancel(dog.schedule(0.1, lambda: fired.append("cancelled")))
    assert len(dog._heap) < 100  # cancelled entries do not pile up (a statement schedules, then cancels)
    time.sleep(0.2)
    assert fired == ["early"]
    dog.cancel(early)  # after it fired: nothing happens
    time.sleep(0.35)
    assert fired == ["early", "late"] and late not in dog._live
    assert sum(t.name == "phloem-watchdog" for t in threading.enumerate() if t is dog._thread) == 1


SLOW = """
views:
  - name: slow_numbers
    sql: "select hash(i) % 1000003 as bucket from range(20000000000) t(i)"
    dimensions: [bucket]
    measures: [{name: distinct_buckets, agg: count_distinct, expr: bucket}]
"""


def test_a_slow_view_is_described_at_once_and_cancelled_at_once(tmp_path, make_demo, cancel_after):
    """Twenty billion rows: the catalog and Describe only bind the SQL; a CancelRequest stops the query."""
    import time

    from server.runtime import Runtime

    root = make_demo(tmp_path / "shop")
    (root / "models" / "slow.yml").write_text(SLOW)
    runtime = Runtime(root, timeout=60)
    try:
        runtime.project.build()
        frontend = Frontend(runtime)
        session = frontend.session("postgres", "shop", {})
        started = time.monotonic()
        table = frontend.catalog.semantic["slow_numbers"]
        assert [(c.name, c.type) for c in table.columns] == [("bucket", T.NUMERIC), ("distinct_buckets", T.INT8)]
        sql = "SELECT bucket, MEASURE(distinct_buckets) FROM slow_numbers GROUP BY 1"
        assert [c.name for c in frontend.describe(session, sql, [])[1]] == ["bucket", "distinct_buckets"]
        assert time.monotonic() - started < 10
        error, took = cancel_after(frontend, session, sql, 1.0)
        assert isinstance(error, QueryTimeout) and error.sqlstate == "57014" and took < 5
        assert frontend.execute(session, "SELECT MEASURE(orders) FROM orders")[0].table.num_rows == 1
    finally:
        runtime.close()
