"""The embedded default warehouse: the one place that knows the DuckDB driver.

The connection is locked down when it opens (defence in depth behind the filter check, semantic/query/filters.py):
no file system or network access (`enable_external_access = false`), no extension installed or loaded on demand,
and the configuration locked, so no statement can loosen it. The only files it reads are the database itself
(with its WAL and spill folder) and the files the model's own SQL names (`read_csv('seeds/orders.csv')`):
DuckDB's `allowed_paths` / `allowed_directories` still admit those with external access off. Builds and client
queries share this one connection: DuckDB refuses a second instance of one file with another configuration
in the same process, and a separate build process would fight the server for the file's lock.
"""

from __future__ import annotations

import fcntl
import os
import re
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pyarrow as pa
import sqlglot
from sqlglot import exp

from semantic.errors import BuildError, QueryError
from semantic.limits import BATCH_ROWS, Cancel, Limits, Reading

# settings fixed at open; `threads` may still change (benchmarks tune it; it reaches nothing outside)
OPEN_CONFIG = {"autoinstall_known_extensions": False, "autoload_known_extensions": False,
               "allowed_configs": ["threads"]}
_LITERAL = re.compile(r"'((?:[^']|'')*)'")
_FILE = re.compile(r"\.(csv|tsv|txt|parquet|json|jsonl|ndjson|xlsx|arrow|feather|avro|gz|zst)$", re.IGNORECASE)
_GLOB = re.compile(r"[*?\[{]")
_MEMORY_BUILDS: dict[str, threading.Lock] = {}  # in-memory databases: the process is the only one that sees them


def file_sources(sql: Iterable[str], root: Path | None = None) -> tuple[list[str], list[str]]:
    """(files, folders) the model's SQL reads: what its FROM clauses name (`read_csv('seeds/x.csv')`,
    `FROM 'x.parquet'`), as written and under `root`.

    A plain path is allowed as that one file; a glob (`seeds/*.csv`) or a folder (`lake/`) as the folder before
    its first wildcard. URLs are left out: the warehouse has no network. A relative path is kept as written too:
    DuckDB checks it as if under the working directory, then opens it under `file_search_path` (the project).
    """
    files: dict[str, None] = {}
    folders: dict[str, None] = {}
    for text in sql:
        for value in _named_paths(text or ""):
            if not value or "://" in value or "\n" in value:
                continue
            glob = _GLOB.search(value)
            if glob or value.endswith("/"):
                head = value[:glob.start()] if glob else value
                folder = head[:head.rfind("/") + 1]
                forms = [folder] if folder.startswith("/") else [folder, str((root or Path.cwd()) / folder)]
                folders.update(dict.fromkeys(f if f.endswith("/") else f + "/" for f in forms if f))
            else:
                forms = [value] if value.startswith("/") else [value, str((root or Path.cwd()) / value)]
                files.update(dict.fromkeys(forms))
    return list(files), [f for f in folders if f != "/"]


def _named_paths(text: str) -> list[str]:
    """The paths a statement's FROM clauses read: a table function's first argument, or a quoted name."""
    try:
        tree = sqlglot.parse_one(text, read="duckdb")
    except (sqlglot.errors.ParseError, sqlglot.errors.TokenError):  # SQL sqlglot cannot read: every path-like string
        return [m.group(1).replace("''", "'") for m in _LITERAL.finditer(text)
                if "/" in m.group(1) or _FILE.search(m.group(1))]
    paths = []
    for table in tree.find_all(exp.Table):
        source = table.this
        if isinstance(source, exp.Identifier):
            if source.quoted and ("/" in source.name or _FILE.search(source.name)):
                paths.append(source.name)
            continue
        if not isinstance(source, exp.Func):
            continue
        first = source.this if isinstance(source.this, exp.Expression) else (
            source.expressions[0] if source.expressions else None)
        values = first.expressions if isinstance(first, exp.Array) else [first]
        paths += [v.this for v in values if isinstance(v, exp.Literal) and v.is_string]
    return paths


def _sql_list(values: list[str]) -> str:
    return "[" + ", ".join("'" + v.replace("'", "''") + "'" for v in values) + "]"


@contextmanager
def _refusals():
    """The lockdown refusing a file, URL or extension: a client's 4xx that names no path."""
    try:
        yield
    except duckdb.PermissionException:
        error = QueryError("the warehouse refused to read a file, reach the network or load an extension: client "
                           "queries reach only the model's tables",
                           "filter on dimensions and values; a model whose SQL reads a new file needs a restart")
        error.sqlstate = "42501"
        raise error from None


class _Refusing:
    """A reader whose lockdown refusals (a file read as the query runs) are the client's 4xx, as at its start."""

    def __init__(self, reader: pa.RecordBatchReader):
        self.reader, self.schema = reader, reader.schema

    def read_next_batch(self) -> pa.RecordBatch:
        with _refusals():
            return self.reader.read_next_batch()


class DuckDBEngine:
    dialect = "duckdb"

    def __init__(self, database: str = ":memory:", read_only: bool = False, files: Path | None = None,
                 reads: Iterable[str] = (), settings: dict | None = None):
        """`files`: the folder relative paths in the model's SQL start from; `reads`: the model's SQL, whose
        file paths stay readable; `settings`: more DuckDB settings fixed at open (e.g. memory_limit)."""
        if database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        self.database = database
        self._lock = threading.RLock()
        self.cancelled = 0  # queries interrupted because their client went away
        self.con = duckdb.connect(database, read_only=read_only, config={**OPEN_CONFIG, **(settings or {})})
        try:
            if self.con.execute("SELECT current_setting('lock_configuration')").fetchone()[0]:
                return  # this process has the file open already (one instance per file): locked as it was opened
            paths, folders = file_sources(reads, files)
            if paths:
                self.con.execute(f"SET allowed_paths = {_sql_list(paths)}")
            if folders:
                self.con.execute(f"SET allowed_directories = {_sql_list(folders)}")
            if files is not None:  # relative paths in the model's SQL mean the project folder, on every cursor
                self.con.execute("SET GLOBAL file_search_path = ?", [str(files)])
            self.con.execute("SET enable_external_access = false")
            self.con.execute("SET lock_configuration = true")
        except BaseException:
            self.con.close()
            raise

    def sql(self, query: str | exp.Expression) -> str:
        return query if isinstance(query, str) else query.sql(dialect=self.dialect, identify=True)

    def execute(self, query: str | exp.Expression, params: list | None = None) -> None:
        with self._lock:
            self.con.execute(self.sql(query), params)

    def arrow(self, query: str | exp.Expression, params: list | None = None, timeout: float | None = None,
              limits: Limits | None = None, cancel: Cancel | None = None) -> pa.Table:
        """Run a query on a private cursor (safe across threads) and return Arrow; cancel it after `timeout` s or
        by `cancel`, refuse it (ResultTooLarge) once it passes `limits`."""
        return self.open(query, params, timeout, limits, cancel).table()

    def open(self, query: str | exp.Expression, params: list | None = None, timeout: float | None = None,
             limits: Limits | None = None, cancel: Cancel | None = None) -> Reading:
        """The query's answer as it is read, batch by batch (see semantic/limits.py), on its own cursor."""
        cursor, text = self.con.cursor(), self.sql(query)

        def start():
            with _refusals():
                return _Refusing(cursor.sql(text, params=params).to_arrow_reader(BATCH_ROWS))

        return Reading(start, cursor.interrupt, cursor.close, limits, timeout, cancel, (duckdb.InterruptException,),
                       self._cancelled)

    def _cancelled(self) -> None:
        self.cancelled += 1

    def rows(self, query: str | exp.Expression, params: list | None = None) -> list[tuple]:
        cursor = self.con.cursor()
        try:
            with _refusals():
                return cursor.execute(self.sql(query), params).fetchall()
        finally:
            cursor.close()

    def columns(self, query: str | exp.Expression) -> list[tuple[str, str]]:
        """Names and types a query returns, without running it over the data."""
        cursor = self.con.cursor()
        try:
            with _refusals():
                rel = cursor.sql(self.sql(query))
            return list(zip(rel.columns, [str(t) for t in rel.types], strict=True))
        finally:
            cursor.close()

    def table_exists(self, schema: str, name: str) -> bool:
        return bool(self.rows("select 1 from information_schema.tables where table_schema = ? and table_name = ?",
                              [schema, name]))

    def tables(self, schema: str, prefix: str = "") -> list[str]:
        return [r[0] for r in self.rows(
            "select table_name from information_schema.tables where table_schema = ? and starts_with(table_name, ?)"
            " order by 1", [schema, prefix])]

    @contextmanager
    def transaction(self):
        """All-or-nothing: readers see every change of the block or none of it."""
        with self._lock:
            self.con.execute("BEGIN TRANSACTION")
            try:
                yield self
            except BaseException:
                self.con.execute("ROLLBACK")
                raise
            self.con.execute("COMMIT")

    def create_table_as(self, table: exp.Table, query: exp.Expression) -> None:
        stmt = exp.Create(this=table, kind="TABLE", expression=query, replace=True)
        try:
            self.execute(stmt)
        except duckdb.PermissionException as e:
            raise BuildError(f"building {table.sql(dialect='duckdb')} failed: {str(e).splitlines()[0]}; the "
                             "warehouse reads only the files the model named when it was opened (restart to "
                             "read new ones)") from e
        except duckdb.Error as e:
            raise BuildError(f"building {table.sql(dialect='duckdb')} failed: {str(e).splitlines()[0]}") from e

    @contextmanager
    def build_lock(self, key: str, wait: bool = True) -> Iterator[bool]:
        """Hold the right to build `key` (a schema): True when held, False when another build holds it and not `wait`.

        DuckDB lets one process write a file, so the lock is a file beside the database (`<database>.<key>.lock`,
        flock: the kernel releases it when the holder dies); it orders the builds of every project opened on the
        file, in this process or the next one to open it. An in-memory database is seen by this process alone."""
        if self.database == ":memory:":
            lock = _MEMORY_BUILDS.setdefault(f"{id(self.con)}:{key}", threading.Lock())
            if not lock.acquire(blocking=wait):
                yield False
                return
            try:
                yield True
            finally:
                lock.release()
            return
        fd = os.open(f"{self.database}.{key}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def close(self) -> None:
        self.con.close()
