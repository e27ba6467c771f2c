"""Fixtures every test folder may use: a real PostgreSQL 15 server, and a fresh database per test module.

The server's address comes from PHLOEM_PG_DSN (default: the one .ci/run sets up). An unreachable server
fails the tests that need it, with the commands that start it; they are never skipped.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb
import psycopg
import pytest
import yaml
from psycopg import sql
from psycopg.conninfo import make_conninfo

from semantic.engines.copy import copy_tables
from semantic.engines.postgres import PostgresEngine, describe_dsn

DEFAULT_DSN = "postgresql://postgres:phloem@127.0.0.1:5432/postgres"
HOW_TO_START = """\
Start it the way .ci/run does (as root):
    command -v pg_ctlcluster || apt-get install -y postgresql-15
    pg_ctlcluster 15 main start
    su postgres -c "psql -c \\"ALTER USER postgres PASSWORD 'phloem'\\""
    export PHLOEM_PG_DSN=postgresql://postgres:phloem@127.0.0.1:5432/postgres"""


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    """The DSN of the PostgreSQL server the tests use (PHLOEM_PG_DSN), checked once per run."""
    dsn = os.environ.get("PHLOEM_PG_DSN", DEFAULT_DSN)
    problem = None
    try:
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            version = conn.info.server_version
    except psycopg.Error as e:
        problem = str(e).strip()
    if problem is not None:  # failed outside the `except`, so the report is the message, not a chained traceback
        pytest.fail(f"PostgreSQL is not reachable at {describe_dsn(dsn)} (PHLOEM_PG_DSN): {problem}\n{HOW_TO_START}",
                    pytrace=False)
    if version < 150000:
        pytest.fail(f"PostgreSQL 15 or newer is needed, the server at PHLOEM_PG_DSN is {version}", pytrace=False)
    return dsn


@pytest.fixture(scope="session")
def fresh_database(postgres_dsn: str) -> Iterator[Callable[[str], str]]:
    """`fresh_database(label)` creates an empty database for this run only and returns its DSN.

    Names carry the process id and a random token, so concurrent runs never meet; all are dropped at the end.
    """
    run = f"phloem_test_{os.getpid()}_{secrets.token_hex(3)}"
    created: list[str] = []
    with psycopg.connect(postgres_dsn, autocommit=True) as admin:
        def create(label: str) -> str:
            name = f"{run}_{len(created)}_{label}"[:63]
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            created.append(name)
            return make_conninfo(postgres_dsn, dbname=name)

        yield create
        for name in created:  # FORCE: an engine a test forgot to close must not keep the database alive
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="module")
def pg_dsn(fresh_database: Callable[[str], str], request: pytest.FixtureRequest) -> str:
    """A fresh, empty database for the calling test module."""
    return fresh_database(request.module.__name__.rpartition(".")[2].removeprefix("test_"))


@pytest.fixture(scope="session")
def postgres_project(fresh_database: Callable[[str], str]) -> Callable[..., Path]:
    """`postgres_project(root)` moves the DuckDB project at `root` to a fresh PostgreSQL database.

    Its DuckDB `raw` schema (or `schemas`) is copied over and phloem.yml's warehouse switched to that
    database; copy the folder first to keep a DuckDB twin. Returns `root`, ready for `Project.load`.
    """
    def move(root: Path, schemas: tuple[str, ...] = ("raw",)) -> Path:
        settings = yaml.safe_load((root / "phloem.yml").read_text())
        dsn = fresh_database(settings["name"])
        con = duckdb.connect(str(root / settings["warehouse"]["database"]), read_only=True)
        engine = PostgresEngine(dsn)
        try:
            for schema in schemas:
                copy_tables(con, engine, schema)
        finally:
            engine.close()
            con.close()
        settings["warehouse"] = {"engine": "postgres", "dsn": dsn}
        (root / "phloem.yml").write_text(yaml.safe_dump(settings, sort_keys=False))
        return root

    return move
