"""Text → one read-only sqlglot statement (PostgreSQL dialect), with `$n` parameters bound as typed literals."""

from __future__ import annotations

import datetime as dt
import decimal
import logging
import math
from collections.abc import Sequence

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from semantic.errors import QueryError
from semantic.query.filters import parse_error_position
from semantic.query.statements import check_statement

READ = "postgres"
logging.getLogger("sqlglot").setLevel(logging.ERROR)  # "falling back to Command" warnings: we refuse those anyway


def parse(sql: str, params: Sequence | None = None) -> exp.Query:
    try:
        statements = [s for s in sqlglot.parse(sql, read=READ) if s is not None]
    except (ParseError, TokenError) as e:  # where it stopped, never sqlglot's wording (it names its classes)
        raise QueryError(f"the SQL does not parse{parse_error_position(e)}",
                         "semantic SQL is PostgreSQL syntax: SELECT … FROM <view or metrics> …") from None
    except RecursionError:
        raise QueryError("the SQL is nested too deeply", "write it with fewer nested parentheses") from None
    except Exception:  # noqa: BLE001 - sqlglot itself trips on some malformed text (`a ->`): still the text's fault
        raise QueryError("the SQL does not parse", "semantic SQL is PostgreSQL syntax: SELECT … FROM <view or "
                         "metrics> …") from None
    if not statements:
        raise QueryError("no SQL statement given", "send one SELECT")
    if len(statements) > 1:
        raise QueryError(f"{len(statements)} statements given; semantic SQL runs one at a time",
                         "send each SELECT on its own")
    statement = statements[0]
    kind = _writes(statement)
    if kind:
        raise QueryError(f"semantic SQL is read-only: {kind} is not accepted", "send a SELECT")
    check_statement(statement)  # before any of it reaches the outer step's DuckDB
    return bind(statement, list(params or []))


def _writes(statement: exp.Expression) -> str | None:
    """What makes a statement more than a read: not a query, SELECT … INTO, a data-modifying CTE."""
    if isinstance(statement, exp.Command):
        return str(statement.this).upper()
    if not isinstance(statement, exp.Query):
        return statement.key.upper()
    if any(s.args.get("into") for s in statement.find_all(exp.Select)):
        return "SELECT … INTO"
    writing = next((cte.this for cte in statement.find_all(exp.CTE) if not isinstance(cte.this, exp.Query)), None)
    return f"{writing.key.upper()} in WITH" if writing is not None else None


def literal(value) -> exp.Expression:
    """A Python value as a typed SQL literal (never through text formatting of the statement)."""
    if value is None:
        return exp.null()
    if isinstance(value, bool):
        return exp.Boolean(this=value)
    if isinstance(value, int | decimal.Decimal | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise QueryError(f"parameter value {value} is not a finite number", "pass a finite number or NULL")
        number = exp.Literal.number(str(abs(value)) if value < 0 else str(value))
        return exp.Neg(this=number) if value < 0 else number
    if isinstance(value, str):
        return exp.Literal.string(value)
    if isinstance(value, dt.datetime):
        return exp.cast(exp.Literal.string(value.isoformat(sep=" ")), "timestamp")
    if isinstance(value, dt.date):
        return exp.cast(exp.Literal.string(value.isoformat()), "date")
    if isinstance(value, dt.time):
        return exp.cast(exp.Literal.string(value.isoformat()), "time")
    raise QueryError(f"parameter of type {type(value).__name__} is not supported",
                     "pass text, numbers, booleans, dates, timestamps or NULL")


def bind(statement: exp.Query, params: list) -> exp.Query:
    used: set[int] = set()

    def replace(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Parameter) and isinstance(node.this, exp.Literal) and not node.this.is_string:
            if not node.this.this.isdigit():  # `@.0` parses as a parameter too
                raise QueryError(f"`{node.sql('postgres')}` is not a parameter", "number parameters $1, $2, …")
            n = int(node.this.this)
            if not 1 <= n <= len(params):
                raise QueryError(f"the statement uses ${n} but {len(params)} parameter(s) were given",
                                 "pass one value per $n, in order")
            used.add(n)
            return literal(params[n - 1])
        return node

    statement = statement.transform(replace, copy=False)
    if params and len(used) != len(params):
        raise QueryError(f"{len(params)} parameter(s) given but the statement uses {len(used)}",
                         "pass exactly one value per $n")
    return statement


# ------------------------------------------------------------------ output column names

_FUNCTION_NAMES = {
    exp.TimestampTrunc: "date_trunc", exp.DateTrunc: "date_trunc", exp.Count: "count", exp.Sum: "sum",
    exp.Avg: "avg", exp.Min: "min", exp.Max: "max", exp.ApproxDistinct: "approx_count_distinct",
    exp.Extract: "extract", exp.Coalesce: "coalesce", exp.CurrentTimestamp: "now", exp.CurrentDate: "current_date",
    exp.AnyValue: "any_value", exp.Median: "median", exp.PercentileCont: "percentile_cont",
    exp.PercentileDisc: "percentile_disc", exp.Greatest: "greatest", exp.Least: "least", exp.Round: "round",
}
_TYPE_NAMES = {"INT": "int4", "BIGINT": "int8", "SMALLINT": "int2", "DOUBLE": "float8", "FLOAT": "float4",
               "VARCHAR": "varchar", "TEXT": "text", "DECIMAL": "numeric", "BOOLEAN": "bool", "DATE": "date",
               "TIMESTAMP": "timestamp", "TIMESTAMPTZ": "timestamptz"}
UNNAMED = "?column?"


def output_name(e: exp.Expression) -> str:
    """The column name PostgreSQL gives a select item (its FigureColname rules, closely enough)."""
    if isinstance(e, exp.Alias):
        return e.alias
    if isinstance(e, exp.Column):
        return e.name
    if isinstance(e, exp.Paren | exp.Window | exp.WithinGroup):
        return output_name(e.this)
    if isinstance(e, exp.Cast):
        inner = output_name(e.this)
        if inner != UNNAMED:
            return inner
        return _TYPE_NAMES.get(e.to.this.name, e.to.this.name.lower())
    if isinstance(e, exp.Case):
        return "case"
    if isinstance(e, exp.Anonymous):
        name = str(e.this).lower()
        if name == "measure" and e.expressions and isinstance(e.expressions[0], exp.Column):
            return e.expressions[0].name  # MEASURE(profit) is named after what it measures
        return name
    for cls, name in _FUNCTION_NAMES.items():
        if type(e) is cls:
            return name
    if isinstance(e, exp.Func):
        return e.sql_name().lower()
    return UNNAMED


def name_outputs(statement: exp.Expression) -> None:
    """Alias every unnamed select item the way PostgreSQL names it (`count`, `sum`, `?column?`)."""
    for select in statement.find_all(exp.Select):
        items = []
        for item in select.expressions:
            if isinstance(item, exp.Alias | exp.Column | exp.Star):  # a Column is named after itself, `t.*` too
                items.append(item)
            else:
                items.append(exp.alias_(item, output_name(item), quoted=True))
        select.set("expressions", items)
