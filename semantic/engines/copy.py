"""Copy DuckDB tables into PostgreSQL (the demo's raw data, test seeds): same names, equivalent types.

DuckDB streams Arrow record batches, pyarrow writes each as CSV and psycopg pipes it to
`COPY … FROM STDIN (FORMAT csv)`: no Python code runs per row on either side.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

import duckdb
import pyarrow as pa
import pyarrow.csv as pacsv
from sqlglot import exp

from semantic.activity.stream import ident

# DuckDB type -> PostgreSQL type, for types whose values pyarrow writes in a form PostgreSQL reads
DIRECT = {
    "BOOLEAN": "boolean", "TINYINT": "smallint", "SMALLINT": "smallint", "INTEGER": "integer", "BIGINT": "bigint",
    "HUGEINT": "numeric(39, 0)", "UTINYINT": "smallint", "USMALLINT": "integer", "UINTEGER": "bigint",
    "UBIGINT": "numeric(20, 0)", "FLOAT": "real", "DOUBLE": "double precision", "VARCHAR": "text", "DATE": "date",
    "TIME": "time", "TIMESTAMP": "timestamp", "TIMESTAMP_S": "timestamp", "TIMESTAMP_MS": "timestamp",
    "TIMESTAMP_NS": "timestamp", "TIMESTAMP WITH TIME ZONE": "timestamptz",
}
# DuckDB type -> PostgreSQL type, for types sent as DuckDB's text of the value (PostgreSQL parses it back)
AS_TEXT = {"INTERVAL": "interval", "UUID": "uuid", "JSON": "json", "TIME WITH TIME ZONE": "timetz",
           "UHUGEINT": "numeric(39, 0)"}
_DECIMAL = re.compile(r"DECIMAL\((\d+),\s*(\d+)\)")


def column_plan(name: str, duck_type: str) -> tuple[str, exp.Expression]:
    """The PostgreSQL type of a DuckDB column and what to SELECT from DuckDB to send its values."""
    column = exp.column(ident(name))
    decimal = _DECIMAL.fullmatch(duck_type)
    if decimal:
        return f"numeric({decimal.group(1)}, {decimal.group(2)})", column
    if duck_type in DIRECT:
        return DIRECT[duck_type], column
    if duck_type == "BLOB":  # bytea's hex input form
        return "bytea", exp.Concat(expressions=[exp.Literal.string("\\x"), exp.Hex(this=column)])
    return AS_TEXT.get(duck_type, "text"), exp.cast(column, "varchar")  # lists, structs, maps, enums: their text


def _csv_chunks(reader: pa.RecordBatchReader) -> Iterator[memoryview]:
    options = pacsv.WriteOptions(include_header=False)  # strings always quoted: "" is '', unquoted empty is NULL
    for batch in reader:
        sink = pa.BufferOutputStream()
        pacsv.write_csv(batch, sink, options)
        yield memoryview(sink.getvalue())


def copy_tables(duck_con: duckdb.DuckDBPyConnection, pg_engine, schema: str, tables: Iterable[str] | None = None,
                batch_rows: int = 100_000) -> dict[str, int]:
    """(Re)create `schema.<table>` in PostgreSQL for each DuckDB table of `schema` (default: all of them),
    fill it, and return row counts. Each table is replaced atomically."""
    names = list(tables) if tables is not None else [r[0] for r in duck_con.execute(
        "select table_name from information_schema.tables where table_schema = ? and table_type = 'BASE TABLE'"
        " order by 1", [schema]).fetchall()]
    counts: dict[str, int] = {}
    pg_engine.execute(exp.Create(this=exp.Table(this=ident(schema)), kind="SCHEMA", exists=True))
    for name in names:
        described = duck_con.execute(
            "select column_name, data_type from information_schema.columns where table_schema = ? and table_name = ?"
            " order by ordinal_position", [schema, name]).fetchall()
        if not described:
            raise ValueError(f"no DuckDB table {schema}.{name}")
        plans = [(c, *column_plan(c, t)) for c, t in described]
        target = exp.Table(this=ident(name), db=ident(schema))
        columns = [exp.ColumnDef(this=ident(c), kind=exp.DataType.build(t, dialect="postgres")) for c, t, _ in plans]
        source = exp.select(*(e for _, _, e in plans)).from_(exp.Table(this=ident(name), db=ident(schema)))
        reader = duck_con.sql(source.sql(dialect="duckdb")).to_arrow_reader(batch_rows)
        names_sql = ", ".join(ident(c).sql(dialect="postgres") for c, _, _ in plans)
        with pg_engine.transaction():
            pg_engine.execute(f"drop table if exists {pg_engine.sql(target)}")
            pg_engine.execute(exp.Create(this=exp.Schema(this=target.copy(), expressions=columns), kind="TABLE"))
            counts[name] = pg_engine.copy(f"COPY {pg_engine.sql(target)} ({names_sql}) FROM STDIN (FORMAT csv)",
                                          _csv_chunks(reader))
        pg_engine.execute(f"ANALYZE {pg_engine.sql(target)}")  # fresh statistics: the planner sees the real sizes
    return counts
