"""Warehouses: `connect(model)` opens the one the project's `warehouse:` setting names."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Protocol, runtime_checkable

import pyarrow as pa
import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from semantic.engines.duckdb import DuckDBEngine
from semantic.errors import ModelError, Problem, WarehouseError
from semantic.limits import Cancel, Limits
from semantic.project.yamlpos import load_yaml

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")
PROJECT_FILE = "phloem.yml"


@runtime_checkable
class Engine(Protocol):
    """What the library and the server call on a warehouse; DuckDBEngine and PostgresEngine both implement it."""

    dialect: str

    def sql(self, query: str | exp.Expression) -> str: ...

    def execute(self, query: str | exp.Expression, params: list | None = None) -> None: ...

    def arrow(self, query: str | exp.Expression, params: list | None = None, timeout: float | None = None,
              limits: Limits | None = None, cancel: Cancel | None = None) -> pa.Table: ...

    def rows(self, query: str | exp.Expression, params: list | None = None) -> list[tuple]: ...

    def columns(self, query: str | exp.Expression) -> list[tuple[str, str]]: ...

    def table_exists(self, schema: str, name: str) -> bool: ...

    def tables(self, schema: str, prefix: str = "") -> list[str]: ...

    def transaction(self) -> AbstractContextManager: ...

    def create_table_as(self, table: exp.Table, query: exp.Expression) -> None: ...

    def build_lock(self, key: str, wait: bool = True) -> AbstractContextManager[bool]: ...

    def close(self) -> None: ...


def expand_env(text: str, key: str = "warehouse.dsn", line: int | None = None) -> str:
    """`${VAR}` / `$VAR` from the environment (DSNs hold passwords, so they stay out of model files)."""
    missing = [a or b for a, b in _VARIABLE.findall(text) if (a or b) not in os.environ]
    if missing:
        raise ModelError([Problem(
            f"environment variable `{name}` is not set", PROJECT_FILE, line, key,
            f"export {name}=postgresql://user:password@host:5432/dbname before running phloem")
            for name in dict.fromkeys(missing)])
    return _VARIABLE.sub(lambda m: os.environ[m.group(1) or m.group(2)], text)


def _line(model, *path: str) -> int | None:
    """The line of a key of phloem.yml, for messages that point at it."""
    try:
        _, positions, _ = load_yaml((model.root / PROJECT_FILE).read_text(), PROJECT_FILE)
    except OSError:
        return None
    return positions.get(path) or positions.get(path[:1])


def _view_tables(model) -> Iterator[tuple[str, str]]:
    """(schema, table) of every table a view names with `table:` or reads in its `sql:` (clients may read them)."""
    for view in model.views.values():
        try:
            if view.table:
                found = [exp.to_table(view.table, dialect="postgres")]
            elif view.sql:
                tree = sqlglot.parse_one(view.sql, read="duckdb")
                ctes = {c.alias_or_name for c in tree.find_all(exp.CTE)}
                found = [t for t in tree.find_all(exp.Table) if t.db or t.name not in ctes]
            else:
                continue
        except SqlglotError:  # the model loader reports SQL that does not parse
            continue
        for t in found:  # unquoted names mean lower case on PostgreSQL
            if not isinstance(t.this, exp.Identifier):  # generate_series(…) and other table functions
                continue
            parts = [p.name if p.quoted else p.name.lower() for p in (t.args.get("db"), t.this) if p is not None]
            if parts and parts[-1]:
                yield (parts[0] if len(parts) == 2 else "public", parts[-1])


def connect(model) -> Engine:
    """The engine of `model.settings.warehouse`: embedded DuckDB (default) or a PostgreSQL server."""
    warehouse = model.settings.warehouse
    if warehouse.engine == "postgres":
        # imported here: DuckDB users never load psycopg
        from semantic.engines.postgres import PostgresEngine

        if not warehouse.dsn:
            raise ModelError([Problem(
                "`warehouse: {engine: postgres}` needs a `dsn`", PROJECT_FILE, _line(model, "warehouse"),
                "warehouse", "add `dsn: ${PHLOEM_PG_DSN}` and export PHLOEM_PG_DSN=postgresql://user:password@host/db")])
        line = _line(model, "warehouse", "dsn")
        try:
            return PostgresEngine(expand_env(warehouse.dsn, line=line), client_reads=client_reads(model))
        except WarehouseError as e:  # a DSN that does not parse is a mistake in phloem.yml
            raise ModelError([Problem(str(e), PROJECT_FILE, line, "warehouse.dsn",
                                      "write it as postgresql://user:password@host:5432/dbname")]) from None
    return DuckDBEngine(model.database_path, files=model.root, reads=model_sql(model))


def client_reads(model):
    """What client queries of `model` may read on PostgreSQL: its materialization schema and the tables views name."""
    from semantic.engines.postgres import ClientReads

    return ClientReads((model.settings.materialization.schema_,), tuple(sorted(set(_view_tables(model)))))


def model_sql(model) -> list[str]:
    """The SQL that names the model's sources (activities, views): the only files the warehouse may read."""
    sql = [a.sql for s in model.streams.values() for a in s.activities]
    return sql + [text for v in model.views.values() for text in (v.sql, v.table) if text]
