"""Whole SQL statements a client sends — over HTTP SQL (/api/v1/sql) and the PostgreSQL door (psycopg, psql) —
reach only the semantic tables and the door's catalog: table functions outside the allowlist, file, network,
environment and DuckDB-internal functions, DuckDB's catalog, internal tables and schemas are refused before any
DuckDB sees them (a 400 / an ErrorResponse with 42501, 42883 or 42704) naming the construct, with no file
contents, environment values, DuckDB error classes or server paths. What BI clients send still answers."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict
from secret import SECRET, SECRET_NAME

ROOT = Path(__file__).resolve().parents[2]
DENIED = ("42501",)

# (statement, what the refusal names, SQLSTATEs the pg door may answer with)
HOSTILE = [
    ("SELECT * FROM duckdb_settings()", "duckdb_settings", DENIED),
    ("SELECT name, value FROM duckdb_settings() WHERE name = 'enable_external_access'", "duckdb_settings", DENIED),
    ("SELECT * FROM duckdb_databases()", "duckdb_databases", DENIED),
    ("SELECT * FROM duckdb_extensions()", "duckdb_extensions", DENIED),
    ("SELECT * FROM duckdb_functions()", "duckdb_functions", DENIED),
    ("SELECT * FROM duckdb_settings", "duckdb_settings", DENIED),
    ("SELECT * FROM main.duckdb_tables", "duckdb_tables", DENIED),
    ("SELECT * FROM main.orders", "main", DENIED),
    ("SELECT * FROM sqlite_master", "sqlite_master", DENIED),
    ("SELECT * FROM pragma_database_list", "pragma_database_list", DENIED),
    ("SELECT * FROM read_csv('/etc/passwd')", "read_csv", DENIED),
    ("SELECT * FROM read_text('/proc/self/environ')", "read_text", DENIED),
    ("SELECT read_text('/etc/passwd')", "read_text", DENIED),
    ("SELECT * FROM read_blob('/etc/passwd')", "read_blob", DENIED),
    ("SELECT * FROM glob('/etc/*')", ("glob", "does not parse", "syntax error"), ("42501", "42601")),  # GLOB: a keyword
    ("SELECT * FROM \"/etc/passwd\"", "file or URL", DENIED),
    ("SELECT * FROM \"data.csv\"", "file or URL", DENIED),
    ("SELECT * FROM read_parquet('https://example.com/x.parquet')", "read_parquet", DENIED),
    ("SELECT * FROM parquet_metadata('x.parquet')", "parquet_metadata", DENIED),
    ("SELECT * FROM query('SELECT 1')", "query", DENIED),
    (f"SELECT getenv('{SECRET_NAME}')", "getenv", DENIED),
    (f"SELECT \"GETENV\"('{SECRET_NAME}')", "getenv", DENIED),
    ("SELECT getenv('HOME') AS h", "getenv", DENIED),
    ("SELECT * FROM test_all_types()", "test_all_types", DENIED),
    ("SELECT * FROM no_such_table_function(1)", "no_such_table_function", ("42883",)),
    ("SELECT * FROM temp.pgw_settings", "pgw_settings", DENIED),
    ("SELECT * FROM pgcat.pg_class", "pgcat", DENIED),
    ("SELECT * FROM phloem._phloem_builds", "_phloem_builds", DENIED),
    ("SELECT * FROM raw.orders", "raw", DENIED),
    ("WITH x AS (SELECT * FROM read_csv('/etc/passwd')) SELECT * FROM x", "read_csv", DENIED),
    ("SELECT g FROM generate_series(1, 2) AS t(g), LATERAL (SELECT * FROM read_text('/etc/passwd')) AS x",
     "read_text", DENIED),
    ("SELECT (SELECT count(*) FROM duckdb_settings()) AS n", "duckdb_settings", DENIED),
    ("SELECT g FROM generate_series(1, 2) AS t(g) UNION ALL SELECT length(getenv('HOME'))", "getenv", DENIED),
    # comment tricks and spellings DuckDB would still resolve
    ("SELECT * FROM read_csv/**/('/etc/passwd')", "read_csv", DENIED),
    ("SELECT * FROM \"read_csv\"('/etc/passwd') -- the rest is a comment", "read_csv", DENIED),
    ("SELECT * FROM system.main.duckdb_settings()", "duckdb_settings", DENIED),
    ("SELECT main.getenv('HOME')", "getenv", DENIED),
    ("SELECT * FROM read_json_auto('/etc/passwd')", "read_json_auto", DENIED),
    # semantic SELECTs with a hostile outer step
    ("SELECT MEASURE(orders) AS n, getenv('HOME') AS h FROM metrics", "getenv", DENIED),
    ("SELECT q.n FROM (SELECT MEASURE(orders) AS n FROM metrics) AS q CROSS JOIN read_csv('/etc/passwd') AS f",
     "read_csv", DENIED),
]
LEAKS = ("root:", ":/bin/", SECRET, "PATH=", "HOME=", "Binder Error", "Catalog Error", "Permission Error",
         "Parser Error", "Invalid Input Error", "Error:", "Traceback", "sqlglot", "_duckdb", "site-packages",
         "not implemented", str(ROOT))
IDS = [s[:60] for s, _, _ in HOSTILE]


def _names(name: str | tuple[str, ...]) -> tuple[str, ...]:
    return (name,) if isinstance(name, str) else name


def clean(text: str, shop: Path) -> None:
    for leak in (*LEAKS, str(shop), os.environ.get("HOME", "/nonexistent-home")):
        assert leak not in text, f"the answer carries {leak!r}: {text[:300]}"


@pytest.mark.parametrize(("sql", "name", "states"), HOSTILE, ids=IDS)
def test_http_sql_refuses_naming_the_construct(http, shop, sql, name, states):
    response = http.post("/api/v1/sql", json={"sql": sql})
    assert response.status_code == 400, f"{sql}: {response.status_code} {response.text[:300]}"
    error = response.json()["error"]
    assert any(n in error["message"] for n in _names(name)), error
    assert error.get("suggestion"), error
    clean(response.text, shop)


@pytest.mark.parametrize(("sql", "name", "states"), HOSTILE, ids=IDS)
def test_pg_door_refuses_with_its_sqlstate(wire_dsn, shop, sql, name, states):
    with psycopg.connect(wire_dsn, autocommit=True) as conn:
        with pytest.raises(psycopg.Error) as caught:
            conn.execute(sql).fetchall()
        e = caught.value
        assert e.sqlstate in states, f"{sql}: {e.sqlstate} {e}"
        assert any(n in e.diag.message_primary for n in _names(name)), e.diag.message_primary
        assert e.diag.message_hint or e.sqlstate == "42601", f"{sql}: no hint"
        clean(f"{e.diag.message_primary} {e.diag.message_hint} {e.diag.message_detail or ''}", shop)
        assert conn.execute("SELECT 1").fetchone() == (1,)  # the session goes on


def test_settings_pg_knows_answer_and_duckdb_ones_do_not(http, wire_dsn, shop):
    with psycopg.connect(wire_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT current_setting('server_version')").fetchone()[0].startswith("15")
        assert conn.execute("SELECT current_setting('DateStyle')").fetchone()[0] == "ISO, MDY"
        conn.execute("SET application_name = 'sqlguard'")
        assert conn.execute("SELECT current_setting('application_name')").fetchone()[0] == "sqlguard"
        for name in ("enable_external_access", "allowed_directories", "lock_configuration", "temp_directory"):
            with pytest.raises(psycopg.Error) as caught:
                conn.execute(f"SELECT current_setting('{name}')").fetchall()
            assert caught.value.sqlstate == "42704" and name in caught.value.diag.message_primary
            clean(str(caught.value), shop)
    # HTTP SQL's outer step is DuckDB, whose current_setting would answer DuckDB's settings
    response = http.post("/api/v1/sql", json={"sql": "SELECT current_setting('enable_external_access')"})
    assert response.status_code == 400 and "current_setting" in response.json()["error"]["message"]
    clean(response.text, shop)


def test_what_clients_send_still_answers(http, wire_dsn):
    with psycopg.connect(wire_dsn, autocommit=True) as conn:
        assert [r[0] for r in conn.execute("SELECT * FROM generate_series(1, 3)").fetchall()] == [1, 2, 3]
        assert "PostgreSQL" in conn.execute("SELECT version()").fetchone()[0]
        assert [r[0] for r in conn.execute("SELECT * FROM unnest(ARRAY[1, 2])").fetchall()] == [1, 2]
        assert [int(r[0]) for r in conn.execute("SELECT x FROM range(2) AS t(x)").fetchall()] == [0, 1]
        words = conn.execute("SELECT word FROM pg_catalog.pg_get_keywords() WHERE word = 'select'").fetchall()
        assert words == [("select",)]
        tables = conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
        assert "orders" in {r[0] for r in tables.fetchall()}
        assert conn.execute("SELECT MEASURE(orders) FROM metrics").fetchone()[0] > 0
        assert conn.execute("VALUES (1), (2)").fetchall() == [(1,), (2,)]
    response = http.post("/api/v1/sql", json={"sql": "SELECT * FROM generate_series(1, 3) AS t(g)"})
    assert response.status_code == 200, response.text
    assert [r[0] for r in response.json()["rows"]] == [1, 2, 3]


def test_psql_describes_tables(wire_dsn):
    """psql's own catalog queries (`\\dt`, `\\d orders`) run through the check unharmed."""
    info = conninfo_to_dict(wire_dsn)
    env = {**os.environ, "PGHOST": info["host"], "PGPORT": str(info["port"]), "PGUSER": info["user"],
           "PGDATABASE": info["dbname"], "PGCONNECT_TIMEOUT": "10"}
    listed = subprocess.run(["psql", "-X", "-c", r"\dt"], env=env, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert "orders" in listed.stdout
    described = subprocess.run(["psql", "-X", "-c", r"\d orders"], env=env, capture_output=True, text=True,
                               timeout=60)
    assert described.returncode == 0, described.stderr
    assert 'Table "public.orders"' in described.stdout and "channel" in described.stdout


def test_psql_stacked_statements_stop_at_the_refused_one(wire_dsn, shop):
    """psql's simple protocol sends both statements at once: the first answers, the second is refused."""
    info = conninfo_to_dict(wire_dsn)
    env = {**os.environ, "PGHOST": info["host"], "PGPORT": str(info["port"]), "PGUSER": info["user"],
           "PGDATABASE": info["dbname"], "PGCONNECT_TIMEOUT": "10"}
    sql = f"SELECT 41 + 1 AS answer; SELECT * FROM read_text('/proc/self/environ'); SELECT getenv('{SECRET_NAME}')"
    run = subprocess.run(["psql", "-X", "-v", "ON_ERROR_STOP=1", "-c", sql], env=env, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode != 0 and "42" in run.stdout
    assert "read_text" in run.stderr and "not allowed" in run.stderr
    clean(run.stdout + run.stderr, shop)


def test_the_catalog_databases_are_locked(runtime):
    """Defence in depth: were a statement to slip past the check, the catalog's DuckDB could not be reconfigured
    to read files or load extensions."""
    import duckdb

    from server.pgwire.catalog import Catalog

    con = Catalog([]).connect()
    for setting in ("SET enable_external_access = true", "SET autoload_known_extensions = true",
                    "SET lock_configuration = false"):
        with pytest.raises(duckdb.Error, match="locked"):
            con.execute(setting)
    with pytest.raises(duckdb.Error):
        con.execute("SELECT * FROM read_text('/etc/passwd')")
    # PostgreSQL's NULL order holds on every session's connection
    assert con.sql("SELECT x FROM (VALUES (1), (NULL)) t(x) ORDER BY x DESC").fetchall()[0] == (None,)


def test_engine_errors_reach_a_client_without_duckdb_class_names(http, wire_dsn, shop):
    """A statement the check lets through but DuckDB cannot run (an unknown function, a bad cast) says what went
    wrong without DuckDB's `Catalog Error:` / `Conversion Error:` labels."""
    for sql in ("SELECT no_such_function(1) AS x", "SELECT CAST('x' AS INTEGER) + g FROM generate_series(1, 2) t(g)"):
        response = http.post("/api/v1/sql", json={"sql": sql})
        assert response.status_code == 400, response.text
        clean(response.text, shop)
        with psycopg.connect(wire_dsn, autocommit=True) as conn:
            with pytest.raises(psycopg.Error) as caught:
                conn.execute(sql).fetchall()
            assert caught.value.sqlstate in ("42883", "22P02"), caught.value
            text = f"{caught.value.diag.message_primary} {caught.value.diag.message_hint or ''}"
            assert not re.search(r"\b[A-Z][A-Za-z ]* Error:", text), text
            clean(text.replace("not implemented", ""), shop)  # for what the door lacks, that hint is true
