"""Where a client's whole SQL statement stops: what runs around semantic SELECTs and in the pg door's catalog.

HTTP SQL (`/api/v1/sql`) and the PostgreSQL door hand parts of a client's statement to in-memory DuckDB databases
(the outer step over the answers; the door's emulated pg_catalog). `check_statement` walks the parsed statement
before either sees it and refuses what would reach past them: table functions outside a short allowlist, file,
network, environment and DuckDB-internal functions, DuckDB's own catalog tables, the internal `_phloem_*` and
`pgw_*` tables, the `raw` and DuckDB schemas, files or URLs used as tables, and anything but a query. A refusal is
a `StatementError` (a `QueryError`: a 400 over HTTP; over the wire its `sqlstate`, 42501 or 42883) naming the
construct — never DuckDB's text. WHERE clauses over semantic tables are checked again, as filters (filters.py).
"""

from __future__ import annotations

import re
from collections.abc import Collection

from sqlglot import exp

from semantic.query.filters import STATEMENTS, FilterError, _function_name, _short

SUGGESTION = ("select from the views and `metrics` (see /api/v1/meta); the PostgreSQL door also serves pg_catalog "
              "and information_schema")

# table functions (FROM f(…)): generated rows and the pg catalog's own set-returning functions clients call
TABLE_FUNCTIONS = frozenset({
    "generate_series", "range", "unnest", "generate_subscripts", "pg_get_keywords", "_pg_expandarray",
    "pg_get_indexdef", "pg_get_constraintdef", "pg_get_expr", "pg_get_userbyid", "format_type"})

# functions that read files, the network, the environment or DuckDB's internals (as DuckDB spells them)
REACHING = re.compile(
    r"^(read_|glob$|getenv$|duckdb_|pragma_|sqlite_|parquet_|sniff_csv$|query$|query_table$|.*_scan$|iceberg_|"
    r"delta_|postgres_|mysql_|http|s3_|gcs_|azure_|which_secret$|load_|install_|checkpoint$|force_checkpoint$|"
    r"enable_|disable_|set_config$|pg_read_|pg_ls_|pg_stat_file$|pg_file|lo_import$|lo_export$|dblink|"
    r"json_execute_serialized_sql$|sql_auto_complete$|dbgen$|dsdgen$|tpch|tpcds|test_all_types$|"
    r"test_vector_types$|summary$|repeat_row$|getvariable$|current_setting$)", re.IGNORECASE)
READING = tuple(c for c in (getattr(exp, n, None) for n in ("ReadCSV", "ReadParquet", "ToFile", "Secret")) if isinstance(c, type))

# schemas and table-name prefixes a client never reaches (DuckDB's own, the sources', Phloem's internals)
SCHEMAS = frozenset({"raw", "system", "temp", "main", "pgcat", "infoschema", "memory"})
PREFIXES = ("duckdb_", "pragma_", "sqlite_", "_phloem", "__phloem", "pgw_", "__stage")


class StatementError(FilterError):
    """A statement reaching past the semantic tables and the catalog; `sqlstate` is what the pg door reports."""

    def __init__(self, message: str, suggestion: str = SUGGESTION, sqlstate: str = "42501"):
        super().__init__(message, suggestion, sqlstate)


def check_statement(statement: exp.Expression, settings: Collection[str] = ()) -> exp.Expression:
    """Accept `statement` only as a query over tables and functions a client may reach; returns it.

    `settings`: the (lower-case) names `current_setting` may read — the pg door's emulated PostgreSQL settings;
    empty (HTTP SQL, whose outer step would answer DuckDB's own settings): current_setting is refused.
    """
    if not isinstance(statement, exp.Query | exp.Values):
        raise StatementError(f"{_short(statement.key.upper(), 30)} is not allowed: only queries run", "send a SELECT")
    for node in statement.walk():  # breadth-first, iterative: deep statements do not exhaust the stack
        if isinstance(node, exp.Table):
            _check_table(node)
        elif isinstance(node, exp.Func):
            _check_function(node, settings)
        elif isinstance(node, STATEMENTS):
            raise StatementError(f"{_short(node.key.upper(), 30)} is not allowed inside a query", "send a SELECT")
    return statement


def _check_table(table: exp.Table) -> None:
    source = table.this
    if isinstance(source, exp.Func):  # FROM f(…)
        name = _name(source)
        if name in TABLE_FUNCTIONS:
            return
        if REACHING.match(name) or isinstance(source, READING):
            raise _reaching(name, "table function")
        raise StatementError(f"table function `{name}` is not available", "the table functions are "
                             f"{', '.join(sorted(TABLE_FUNCTIONS - {'_pg_expandarray'}))}", "42883")
    parts = [p.name for p in table.parts]
    for i, part in reversed(list(enumerate(parts))):  # the table's own name first: `temp.pgw_settings` → pgw_…
        low = part.lower()
        if (low in SCHEMAS and i < len(parts) - 1) or low.startswith(PREFIXES):
            what = "an internal table" if low.startswith(("_phloem", "__", "pgw_")) else (
                "the raw source schema" if low == "raw" else "part of DuckDB's catalog")
            raise StatementError(f"`{_short(part)}` is {what}; a client reaches the semantic tables and the catalog")
        if re.search(r"[/\\:]|\.[a-z0-9]{1,8}$", part, re.IGNORECASE):  # DuckDB would read it as a file or URL
            raise StatementError(f"a file or URL as a table (`{_short(part)}`) is not allowed")


def _check_function(node: exp.Func, settings: Collection[str]) -> None:
    name = _name(node)
    if name == "current_setting" and isinstance(node, exp.Anonymous) and settings:
        argument = node.expressions[0] if node.expressions else None
        if isinstance(argument, exp.Literal) and argument.is_string:
            if argument.this.lower() not in settings:
                raise StatementError(f'unrecognized configuration parameter "{_short(argument.this, 40)}"',
                                     "SHOW ALL lists the settings", "42704")
        return  # the door looks any name up in its own table of PostgreSQL settings
    if REACHING.match(name) or isinstance(node, READING):
        if name == "current_setting":
            raise StatementError("function `current_setting` is not allowed around semantic SELECTs: it would "
                                 "read the server's settings", "ask the PostgreSQL door on its own: SELECT "
                                 "current_setting('server_version')")
        raise _reaching(name, "function")


def engine_message(text: str) -> str:
    """A DuckDB error's first line without its class (`Catalog Error: `): what went wrong, in DuckDB's words."""
    first = (text.splitlines() or [""])[0]
    return re.sub(r"^[A-Z][A-Za-z ]{0,40}? Error: ", "", first)


def _name(node: exp.Func) -> str:
    """The function's name as DuckDB resolves it: case-insensitive, `"GETENV"` is getenv."""
    return _function_name(node).strip('"').lower()


def _reaching(name: str, what: str) -> StatementError:
    return StatementError(f"{what} `{name}` is not allowed: it reads files, the network, the environment or "
                          "the database's internals")


__all__ = ["TABLE_FUNCTIONS", "StatementError", "check_statement", "engine_message"]
