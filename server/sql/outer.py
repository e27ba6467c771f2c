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

from semantic.errors import QueryError
from semantic.limits import BATCH_ROWS, Cancel, Limits, Reading
from semantic.query.statements import engine_message

DIALECT = "duckdb"
_lock = threading.Lock()
_database: duckdb.DuckDBPyConnection | None = None
cancelled = 0  # outer statements interrupted because their client went away


def _cancelled() -> None:
    global cancelled
    cancelled += 1


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


def run(statement: exp.Expression, answers: dict[str, pa.Table], timeout: float | None = None,
        limits: Limits | None = None, cancel: Cancel | None = None) -> pa.Table:
    """Run the outer statement with each answer registered under its name, on a private connection."""
    return open_(statement, answers, timeout, limits, cancel).table()


def open_(statement: exp.Expression, answers: dict[str, pa.Table], timeout: float | None = None,
          limits: Limits | None = None, cancel: Cancel | None = None) -> Reading:
    """The outer statement's answer as it is read, batch by batch, within `limits` (see semantic/limits.py)."""
    con = _sandbox().cursor()
    try:
        for name, table in answers.items():
            con.register(name, table)
    except BaseException:
        con.close()
        raise
    text = to_sql(statement)

    def start():
        return _Explained(_explained(lambda: con.sql(text).to_arrow_reader(BATCH_ROWS), answers), answers)

    return Reading(start, con.interrupt, con.close, limits, timeout, cancel, (duckdb.InterruptException,), _cancelled)


class _Explained:
    """A reader whose warehouse errors are QueryErrors about the client's SQL (the answers' names hidden)."""

    def __init__(self, reader: pa.RecordBatchReader, answers: dict):
        self.reader, self.schema, self.answers = reader, reader.schema, answers

    def read_next_batch(self) -> pa.RecordBatch:
        return _explained(self.reader.read_next_batch, self.answers)


def _explained(step, answers: dict):
    try:
        return step()
    except duckdb.InterruptException:
        raise
    except duckdb.Error as e:
        message = engine_message(str(e))  # never DuckDB's class names
        for name in answers:
            message = message.replace(name, "(semantic subquery)")
        raise QueryError(f"the statement around the semantic query failed: {message}",
                         "check the SQL around the semantic SELECTs (functions, types, column names)") from None
