"""The outer step: what surrounds the semantic SELECTs runs in DuckDB over their Arrow answers.

Each request gets its own DuckDB connection (a cursor) on one process-wide in-memory database that holds
nothing: answers are registered as the connection's own temporary views, which no other connection sees,
and the statement is a checked SELECT. The database cannot read or write files (`enable_external_access`
off, configuration locked), so SQL from a client reaches only the answers it was given.
"""

from __future__ import annotations

import threading

import duckdb
import pyarrow as pa
from sqlglot import exp

from semantic.errors import QueryError, QueryTimeout
from semantic.query.statements import engine_message

DIALECT = "duckdb"
_lock = threading.Lock()
_database: duckdb.DuckDBPyConnection | None = None


def _sandbox() -> duckdb.DuckDBPyConnection:
    global _database
    with _lock:
        if _database is None:
            _database = duckdb.connect(":memory:", config={
                "enable_external_access": False, "autoinstall_known_extensions": False,
                "autoload_known_extensions": False, "lock_configuration": True})
        return _database


def to_sql(statement: exp.Expression) -> str:
    return statement.transform(_bounded_strings, copy=True).sql(dialect=DIALECT)


_BOUNDED = {exp.DataType.Type.VARCHAR, exp.DataType.Type.CHAR, exp.DataType.Type.NCHAR, exp.DataType.Type.NVARCHAR}


def _bounded_strings(node: exp.Expression) -> exp.Expression:
    """`x::varchar(2)` cuts x to 2 characters, as PostgreSQL does (DuckDB ignores the length)."""
    if isinstance(node, exp.Cast) and node.to.this in _BOUNDED and node.to.expressions:
        size = node.to.expressions[0]
        value = size.this if isinstance(size, exp.DataTypeParam) else size
        if isinstance(value, exp.Literal) and not value.is_string:
            return exp.func("left", exp.cast(node.this, "VARCHAR"), exp.Literal.number(int(value.this)))
    return node


def run(statement: exp.Expression, answers: dict[str, pa.Table], timeout: float | None = None) -> pa.Table:
    """Run the outer statement with each answer registered under its name, on a private connection."""
    con = _sandbox().cursor()
    timer = threading.Timer(timeout, con.interrupt) if timeout else None
    try:
        for name, table in answers.items():
            con.register(name, table)
        if timer:
            timer.start()
        return con.sql(to_sql(statement)).to_arrow_table()
    except duckdb.InterruptException:
        raise QueryTimeout(f"the statement ran longer than {timeout:g} s and was cancelled") from None
    except duckdb.Error as e:
        message = engine_message(str(e))  # never DuckDB's class names
        for name in answers:
            message = message.replace(name, "(semantic subquery)")
        raise QueryError(f"the statement around the semantic query failed: {message}",
                         "check the SQL around the semantic SELECTs (functions, types, column names)") from None
    finally:
        if timer:
            timer.cancel()
        con.close()
