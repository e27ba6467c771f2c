"""A PostgreSQL warehouse (15 or newer): the one place that knows the psycopg driver.

Connections: one writer (DDL, builds, the atomic publish; serialized by a lock) and a small pool of
readers for `arrow()` / `rows()`. Readers never share the writer's connection, so a query from another
thread neither sees a half-done publish nor aborts it with its own error, and PostgreSQL runs them in
parallel (one locked connection would queue every dashboard query behind a long build statement).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import psycopg
import pyarrow as pa
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.string import TextLoader
from sqlglot import exp

from semantic.engines.pgarrow import TEXT_LOADED, to_arrow
from semantic.errors import BuildError, WarehouseError

MAX_NAME = 63  # PostgreSQL silently truncates longer identifiers (NAMEDATALEN - 1)
_PARAMS = re.compile(r"""('(?:[^']|'')*'|"(?:[^"]|"")*")|\?|%""")


def paramstyle(sql: str) -> str:
    """Our statements use `?` (DuckDB's style); psycopg wants `%s`, and a literal `%` doubled."""
    def swap(m: re.Match) -> str:
        if m.group(1):
            return m.group(1).replace("%", "%%")
        return "%s" if m.group(0) == "?" else "%%"

    return _PARAMS.sub(swap, sql)


def describe_dsn(dsn: str) -> str:
    """user@host:port/dbname of a DSN, for messages (never the password)."""
    try:
        parts = conninfo_to_dict(dsn)
    except psycopg.Error as e:
        raise WarehouseError(f"invalid PostgreSQL dsn: {_first_line(e)}") from None
    user = f"{parts['user']}@" if parts.get("user") else ""
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"{user}{parts.get('host') or 'localhost'}{port}/{parts.get('dbname') or parts.get('user') or ''}"


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _message(e: psycopg.Error) -> str:
    hint = getattr(getattr(e, "diag", None), "message_hint", None)
    return _first_line(e) + (f" (hint: {hint})" if hint else "")


@contextmanager
def _server_errors() -> Iterator[None]:
    """The server's refusal as a WarehouseError with its first line (and hint), never a driver traceback."""
    try:
        yield
    except psycopg.Error as e:
        raise WarehouseError(f"PostgreSQL: {_message(e)}") from None


class PostgresEngine:
    dialect = "postgres"

    def __init__(self, dsn: str, readers: int = 4, connect_timeout: int = 10):
        self.dsn, self.connect_timeout = dsn, connect_timeout
        self.where = describe_dsn(dsn)
        self._lock = threading.RLock()  # the writer: one statement or transaction at a time
        self._writer: psycopg.Connection | None = None
        self._idle: list[psycopg.Connection] = []
        self._idle_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(readers)
        self._closed = False

    # ------------------------------------------------------------ connections

    def _open(self) -> psycopg.Connection:
        try:
            conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=self.connect_timeout)
        except psycopg.Error as e:
            raise WarehouseError(f"cannot connect to PostgreSQL at {self.where}: {_first_line(e)} — is the server "
                                 "running and warehouse.dsn in phloem.yml right?") from None
        conn.execute("SET TIME ZONE 'UTC'")  # timestamps are naive and mean UTC (MODEL.md §8)
        for name in TEXT_LOADED:
            conn.adapters.register_loader(name, TextLoader)
        return conn

    def _writer_conn(self) -> psycopg.Connection:
        if self._writer is None or self._writer.closed:
            self._writer = self._open()
        return self._writer

    @contextmanager
    def _reader(self) -> Iterator[psycopg.Connection]:
        with self._slots:
            with self._idle_lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None or conn.closed:
                conn = self._open()
            try:
                yield conn
            finally:
                idle = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
                if idle and not self._closed:
                    with self._idle_lock:
                        self._idle.append(conn)
                else:
                    conn.close()

    def _run(self, cur: psycopg.Cursor, query: str | exp.Expression, params: list | None) -> None:
        text = self.sql(query)
        cur.execute(paramstyle(text) if params is not None else text, params)

    # ------------------------------------------------------------ the engine interface

    def sql(self, query: str | exp.Expression) -> str:
        return query if isinstance(query, str) else query.sql(dialect=self.dialect, identify=True)

    def execute(self, query: str | exp.Expression, params: list | None = None) -> None:
        with self._lock, self._writer_conn().cursor() as cur, _server_errors():
            self._run(cur, query, params)

    def arrow(self, query: str | exp.Expression, params: list | None = None) -> pa.Table:
        """Run a query on a pooled reader connection (safe across threads) and return Arrow."""
        with self._reader() as conn, conn.cursor() as cur, _server_errors():
            self._run(cur, query, params)
            if cur.description is None:
                return pa.table({})
            return to_arrow(cur.description, cur.fetchall())

    def rows(self, query: str | exp.Expression, params: list | None = None) -> list[tuple]:
        with self._reader() as conn, conn.cursor() as cur, _server_errors():
            self._run(cur, query, params)
            return cur.fetchall() if cur.description is not None else []

    def columns(self, query: str | exp.Expression) -> list[tuple[str, str]]:
        """Names and types a query returns, without running it over the data."""
        with self._reader() as conn, conn.cursor() as cur, _server_errors():
            self._run(cur, f"select * from ({self.sql(query)}) as _q limit 0", None)
            return [(c.name, c.type_display) for c in cur.description]

    def table_exists(self, schema: str, name: str) -> bool:
        return bool(self.rows("select 1 from information_schema.tables where table_schema = ? and table_name = ?",
                              [schema, name]))

    def tables(self, schema: str, prefix: str = "") -> list[str]:
        # left() rather than LIKE: the `_` of our prefixes would be wildcards
        return [r[0] for r in self.rows(
            "select table_name from information_schema.tables where table_schema = ?"
            " and left(table_name, length(?)) = ? order by 1", [schema, prefix, prefix])]

    @contextmanager
    def transaction(self):
        """All-or-nothing: readers see every change of the block or none of it."""
        with self._lock, _server_errors(), self._writer_conn().transaction():
            yield self

    def create_table_as(self, table: exp.Table, query: exp.Expression) -> None:
        name = table.sql(dialect=self.dialect)
        too_long = [p.name for p in table.parts if len(p.name.encode()) > MAX_NAME]
        if too_long:
            raise BuildError(f"building {name} failed: `{too_long[0]}` is longer than PostgreSQL's {MAX_NAME}-byte "
                             "limit for names — shorten the dataset or activity name")
        try:
            with self.transaction():  # no CREATE OR REPLACE TABLE in PostgreSQL
                self.execute(f"drop table if exists {self.sql(table)}")
                self.execute(exp.Create(this=table, kind="TABLE", expression=query))
        except WarehouseError as e:
            raise BuildError(f"building {name} failed: {str(e).removeprefix('PostgreSQL: ')}") from None

    def copy(self, statement: str, chunks: Iterable[bytes | memoryview]) -> int:
        """COPY … FROM STDIN on the writer, fed with `chunks`; returns the rows copied. Atomic inside transaction()."""
        with self._lock, self._writer_conn().cursor() as cur, _server_errors():
            with cur.copy(statement) as copy:
                for chunk in chunks:
                    copy.write(chunk)
            return cur.rowcount

    def close(self) -> None:
        self._closed = True
        with self._lock, self._idle_lock:
            for conn in [*self._idle, *([self._writer] if self._writer else [])]:
                conn.close()
            self._idle, self._writer = [], None
