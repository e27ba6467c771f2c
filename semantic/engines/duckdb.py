"""The embedded default warehouse: the one place that knows the DuckDB driver."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pyarrow as pa
from sqlglot import exp

from semantic.errors import BuildError, QueryTimeout


class DuckDBEngine:
    dialect = "duckdb"

    def __init__(self, database: str = ":memory:", read_only: bool = False, files: Path | None = None):
        if database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        self.database = database
        self.con = duckdb.connect(database, read_only=read_only)
        if files is not None:  # relative paths in activity SQL (read_csv('seeds/x.csv')) mean the project folder
            self.con.execute("SET file_search_path = ?", [str(files)])
        self._lock = threading.RLock()

    def sql(self, query: str | exp.Expression) -> str:
        return query if isinstance(query, str) else query.sql(dialect=self.dialect, identify=True)

    def execute(self, query: str | exp.Expression, params: list | None = None) -> None:
        with self._lock:
            self.con.execute(self.sql(query), params)

    def arrow(self, query: str | exp.Expression, params: list | None = None, timeout: float | None = None) -> pa.Table:
        """Run a query on a private cursor (safe across threads) and return Arrow; cancel it after `timeout` s."""
        cursor = self.con.cursor()
        timer = threading.Timer(timeout, cursor.interrupt) if timeout else None
        try:
            if timer:
                timer.start()
            return cursor.sql(self.sql(query), params=params).to_arrow_table()
        except duckdb.InterruptException:
            raise QueryTimeout(f"the query ran longer than {timeout:g} s and was cancelled") from None
        finally:
            if timer:
                timer.cancel()
            cursor.close()

    def rows(self, query: str | exp.Expression, params: list | None = None) -> list[tuple]:
        cursor = self.con.cursor()
        try:
            return cursor.execute(self.sql(query), params).fetchall()
        finally:
            cursor.close()

    def columns(self, query: str | exp.Expression) -> list[tuple[str, str]]:
        """Names and types a query returns, without running it over the data."""
        cursor = self.con.cursor()
        try:
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
        except duckdb.Error as e:
            raise BuildError(f"building {table.sql(dialect='duckdb')} failed: {str(e).splitlines()[0]}") from e

    def close(self) -> None:
        self.con.close()
