"""Client queries on a PostgreSQL warehouse: the same engine interface as DuckDB, a time limit the server
enforces, and a reader role that cannot read files, run programs, read `raw` or write (defence in depth)."""

from __future__ import annotations

import inspect
import logging
import re
import secrets
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from semantic import Project
from semantic.engines import Engine
from semantic.engines.duckdb import DuckDBEngine
from semantic.engines.postgres import READER_ROLE, ClientReads, PostgresEngine
from semantic.errors import QueryTimeout, WarehouseError

HEAVY = "select count(distinct (i * 7919) % 1000003) from generate_series(1, 300000000) as t(i)"


# ------------------------------------------------------------------ one interface


@pytest.mark.parametrize("engine_class", [DuckDBEngine, PostgresEngine])
def test_both_engines_implement_the_engine_interface(engine_class):
    members = [n for n in vars(Engine) if not n.startswith("_") and callable(getattr(Engine, n))]
    assert {"arrow", "rows", "columns", "execute", "create_table_as", "transaction"} <= set(members)
    for name in members:
        want = inspect.signature(getattr(Engine, name)).parameters
        got = inspect.signature(getattr(engine_class, name)).parameters
        assert [(p.name, p.kind, p.default) for p in got.values()] == \
               [(p.name, p.kind, p.default) for p in want.values()], f"{engine_class.__name__}.{name}"
    assert engine_class.dialect in ("duckdb", "postgres")


def test_an_engine_instance_is_an_engine(pg_dsn, tmp_path):
    pg, duck = PostgresEngine(pg_dsn), DuckDBEngine(str(tmp_path / "x.duckdb"))
    assert isinstance(pg, Engine) and isinstance(duck, Engine)
    pg.close()
    duck.close()


# ------------------------------------------------------------------ the time limit


def test_a_query_past_its_timeout_is_cancelled_by_the_server(pg_dsn):
    engine = PostgresEngine(pg_dsn, readers=1)  # one connection: the same one runs every query below
    try:
        start = time.monotonic()
        with pytest.raises(QueryTimeout, match=r"ran longer than 0\.2 s and was cancelled"):
            engine.arrow(HEAVY, timeout=0.2)
        assert time.monotonic() - start < 3
        assert engine.arrow("select 1 as one", timeout=5).to_pylist() == [{"one": 1}]  # the connection goes on
        # the limit belongs to the call: no timeout means none, on the same pooled connection
        assert engine.rows("show statement_timeout") == [("0",)]
        assert engine.arrow("select pg_sleep(0.3)::text as z", timeout=None).num_rows == 1
        assert engine.arrow("select current_setting('statement_timeout') as t", timeout=1.5).to_pylist() == \
               [{"t": "1500ms"}]
    finally:
        engine.close()


def test_the_time_limit_holds_on_client_connections_too(twin_shops):
    p = Project.load(twin_shops[1])
    try:
        p.build()
        with pytest.raises(QueryTimeout):
            p.engine.arrow(HEAVY, timeout=0.2)
        assert p.engine.arrow("select current_user as u", timeout=2).to_pylist() == [{"u": READER_ROLE}]
    finally:
        p.close()


# ------------------------------------------------------------------ the reader role


@pytest.fixture(scope="module")
def served(twin_shops):
    """The PostgreSQL demo project, built, as the server opens it (connect(model))."""
    p = Project.load(twin_shops[1])
    p.build()
    yield p
    p.close()


def test_client_queries_run_as_the_reader_role_read_only(served):
    engine = served.engine
    assert engine.reader_problem is None
    assert engine.arrow("select current_user as u, current_setting('transaction_read_only') as ro").to_pylist() == \
           [{"u": READER_ROLE, "ro": "on"}]
    # Phloem's own reads and builds stay with the configured user
    user = conninfo_to_dict(engine.dsn)["user"]
    assert engine.rows("select current_user") == [(user,)]
    role = engine.rows("select rolsuper, rolcanlogin, rolcreaterole, rolcreatedb from pg_roles where rolname = ?",
                       [READER_ROLE])
    assert role == [(False, True, False, False)]  # it logs in, and may do nothing else


@pytest.mark.parametrize("attack, refusal", [
    ("select pg_read_file('/etc/passwd')", "permission denied for function pg_read_file"),
    ("select pg_read_binary_file('/proc/self/environ')", "permission denied for function pg_read_binary_file"),
    ("select pg_ls_dir('/')", "permission denied for function pg_ls_dir"),
    ("select lo_import('/etc/passwd')", "permission denied for function lo_import|read-only transaction"),
    ("select * from raw.orders", "permission denied for schema raw"),
    ("create table phloem.stolen (x int)", "read-only transaction"),
    ("create temporary table stolen (x int)", "read-only transaction"),
    ("insert into phloem.orders (order_id) values (-1)", "read-only transaction"),
    ("select set_config('default_transaction_read_only', 'off', false); create table phloem.x (a int)",
     "read-only transaction|multiple commands"),  # answers are streamed: one statement per query
    ("select pg_terminate_backend(pid) from pg_stat_activity where usename = '{user}'",
     "must be a superuser to terminate|permission denied"),
])
def test_a_client_query_cannot_read_files_run_programs_or_write(served, attack, refusal):
    engine = served.engine
    attack = attack.replace("{user}", conninfo_to_dict(engine.dsn)["user"])
    assert engine.rows("select 1") == [(1,)]  # a session of the configured user is open
    with pytest.raises(WarehouseError, match=refusal):
        engine.arrow(attack)
    assert engine.rows("select count(*) from pg_tables where tablename in ('stolen', 'x')") == [(0,)]


def test_copy_to_a_program_runs_nothing(served, tmp_path):
    marker = Path("/tmp") / f"phloem-copy-{uuid.uuid4().hex}"
    for attack in (f"copy (select 1) to program 'touch {marker}'", f"copy (select 1) to '{marker}'",
                   "copy phloem.orders from '/etc/passwd'"):
        with pytest.raises(WarehouseError, match="permission denied|must be superuser|read-only transaction"):
            served.engine.arrow(attack)
    assert not marker.exists()


def test_metric_queries_read_the_materialization_schema(served):
    got = served.query(metrics=["revenue", "orders"], dimensions=["channel"])
    want = dict(served.engine.rows("select channel, sum(total) from raw.orders group by 1"))  # as the configured user
    assert {r["channel"]: r["revenue"] for r in got.to_pylist()} == want
    assert served.dataset("orders", limit=3).num_rows == 3
    assert served.engine.reader_problem is None


def test_a_view_over_a_raw_table_is_readable_and_nothing_else_in_raw(served, twin_shops, tmp_path):
    import shutil

    root = shutil.copytree(twin_shops[1], tmp_path / "shop")
    (root / "models" / "raw_view.yml").write_text("""
views:
  - name: raw_customers
    table: raw.customers
    dimensions: [country]
    measures: [{name: people, agg: count}]
metrics:
  - {name: people, measure: raw_customers.people}
""")
    p = Project.load(root)
    try:
        assert p.engine.client_reads.tables == (("raw", "customers"),)
        got = p.query(metrics=["people"])
        assert got.column("people").to_pylist() == [r[0] for r in p.engine.rows("select count(*) from raw.customers")]
        with pytest.raises(WarehouseError, match="permission denied for table orders"):
            p.engine.arrow("select * from raw.orders")
    finally:
        p.close()


# ------------------------------------------------------------------ when the role cannot be set up


@pytest.fixture
def plain_user(pg_dsn):
    """A login with no right to create roles, and its DSN to the module's database."""
    name, password = f"phloem_plain_{secrets.token_hex(4)}", secrets.token_hex(12)
    with psycopg.connect(pg_dsn, autocommit=True) as admin:  # as the superuser, in the module's database
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(name), sql.Literal(password)))
        try:
            yield make_conninfo(pg_dsn, user=name, password=password)
        finally:
            admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))  # its tables in this database
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def test_without_the_role_it_says_so_and_still_reads_only(plain_user, caplog):
    engine = PostgresEngine(plain_user, client_reads=ClientReads(("phloem",)))
    try:
        with caplog.at_level(logging.WARNING, logger="phloem.warehouse"):
            assert engine.arrow("select current_user as u").column("u").to_pylist() == [
                conninfo_to_dict(plain_user)["user"]]
        assert engine.reader_problem is not None
        # "permission denied to create role", or "must have admin option" when another user created it
        assert re.search(f"`{READER_ROLE}` cannot be set up: (permission denied|must have admin option)",
                         engine.reader_problem)
        assert "docs/postgres.md" in engine.reader_problem
        assert [r.getMessage() for r in caplog.records] == [engine.reader_problem]  # said once
        with pytest.raises(WarehouseError, match="read-only transaction"):
            engine.arrow("create temporary table t (x int)")
        assert conninfo_to_dict(plain_user)["password"] not in engine.reader_problem
    finally:
        engine.close()


def test_the_reader_logs_in_itself_so_a_query_cannot_step_back(served):
    engine = served.engine
    user = conninfo_to_dict(engine.dsn)["user"]
    assert engine.arrow("select session_user as s").to_pylist() == [{"s": READER_ROLE}]
    for attack in (f"select set_config('role', '{user}', false)",
                   f"select set_config('session_authorization', '{user}', false)",
                   f"select set_config('role', '{user}', false), "
                   "query_to_xml('select pg_read_file(''/etc/hostname'')::int', true, false, '')"):
        with pytest.raises(WarehouseError, match="permission denied to set (role|session authorization)"):
            engine.arrow(attack)
    assert engine.arrow("select current_user as u").to_pylist() == [{"u": READER_ROLE}]


def test_a_query_that_turns_read_only_off_gets_no_answer_and_its_connection_is_dropped(served):
    engine = served.engine
    with pytest.raises(WarehouseError, match="changed its connection's role or read-only setting"):
        engine.arrow("select set_config('default_transaction_read_only', 'off', false)")
    for _ in range(6):  # every pooled connection is still read-only
        with pytest.raises(WarehouseError, match="read-only transaction"):
            engine.arrow("create table phloem.stolen (x int)")
    with pytest.raises(QueryTimeout):  # and a time limit a query turned off is set again
        engine.arrow("select set_config('statement_timeout', '0', false)", timeout=0.2)
        engine.arrow(HEAVY, timeout=0.2)


def test_the_cli_says_when_the_role_cannot_be_set_up(plain_user, postgres_dsn, twin_shops, tmp_path):
    import shutil
    import subprocess
    import sys

    import duckdb
    import yaml

    from semantic.engines.copy import copy_tables

    database = conninfo_to_dict(plain_user)["dbname"]
    user = conninfo_to_dict(plain_user)["user"]
    with psycopg.connect(postgres_dsn, autocommit=True) as admin:  # the plain user owns this database
        admin.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(database), sql.Identifier(user)))
    try:
        root = shutil.copytree(twin_shops[0], tmp_path / "shop")
        con = duckdb.connect(str(root / "data" / "shop.duckdb"), read_only=True)
        engine = PostgresEngine(plain_user)
        try:
            copy_tables(con, engine, "raw")
        finally:
            engine.close()
            con.close()
        settings = yaml.safe_load((root / "phloem.yml").read_text())
        settings["warehouse"] = {"engine": "postgres", "dsn": plain_user}
        (root / "phloem.yml").write_text(yaml.safe_dump(settings, sort_keys=False))
        done = subprocess.run([sys.executable, "-m", "server.cli", "query", "-m", "orders", "-f", "csv", "-p",
                               str(root)], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert f"client queries on PostgreSQL run as `{user}`, read-only, because the role `{READER_ROLE}` " \
               "cannot be set up" in done.stderr
        assert done.stderr.count("cannot be set up") == 1
        assert conninfo_to_dict(plain_user)["password"] not in done.stderr
        assert done.stdout.splitlines()[1] == "2000"
    finally:
        with psycopg.connect(postgres_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("ALTER DATABASE {} OWNER TO CURRENT_USER").format(sql.Identifier(database)))


def test_a_role_an_administrator_made_is_used_with_set_role(plain_user, pg_dsn, caplog):
    user = conninfo_to_dict(plain_user)["user"]
    with psycopg.connect(pg_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE SCHEMA plain_mat AUTHORIZATION {}").format(sql.Identifier(user)))
        if not admin.execute("select 1 from pg_roles where rolname = %s", [READER_ROLE]).fetchone():
            admin.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(READER_ROLE)))
        admin.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(READER_ROLE), sql.Identifier(user)))
    engine = PostgresEngine(plain_user, client_reads=ClientReads(("plain_mat",)))
    try:
        engine.execute("create table plain_mat.t as select 42 as answer")
        with caplog.at_level(logging.WARNING, logger="phloem.warehouse"):
            assert engine.arrow("select session_user as s, current_user as u, answer from plain_mat.t").to_pylist() \
                   == [{"s": user, "u": READER_ROLE, "answer": 42}]
        assert f"switched to the role `{READER_ROLE}` (SET ROLE), read-only" in engine.reader_problem
        with pytest.raises(WarehouseError, match="read-only transaction"):
            engine.arrow("create table plain_mat.u (x int)")
    finally:
        engine.close()


def test_a_reset_reader_password_is_set_again(twin_shops, postgres_dsn):
    from concurrent.futures import ThreadPoolExecutor

    def reset() -> None:  # as another Phloem with another configured password would
        with psycopg.connect(postgres_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(READER_ROLE),
                                                                      sql.Literal(secrets.token_hex(8))))

    reset()
    p = Project.load(twin_shops[1])  # at its first connection
    try:
        p.build()
        ask = "select session_user as s, pg_sleep(0.3)::text as z"
        assert p.engine.arrow(ask).column("s").to_pylist() == [READER_ROLE]
        reset()  # while it runs: the next new connection logs in again
        with ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(lambda _: p.engine.arrow(ask).column("s")[0].as_py(), range(2)))
        assert answers == [READER_ROLE, READER_ROLE]
        assert p.engine.reader_problem is None
    finally:
        p.close()
