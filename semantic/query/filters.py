"""Where client text stops: a filter is a boolean over the model's dimensions, literals and harmless functions.

Every door's filter (REST `filters`, GraphQL `where`, tree/drill/what-if `where`, CLI `--where`, semantic SQL's
WHERE) passes `parse_filter` (text) or `check_filter` (a sqlglot tree) before any SQL is made from it. The check
is an allowlist over the parsed tree: anything it does not name — subqueries, table functions, file, network,
environment and catalog functions, aggregates, windows, statements, parameters — is a `FilterError` (a
`QueryError`, so a 4xx at every door) naming the construct and carrying a PostgreSQL SQLSTATE for the pg door.
Messages name the construct only: never the filter's arguments, sqlglot's messages or class names.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import ParseError, TokenError
from sqlglot.tokens import TokenType

from semantic.errors import QueryError

DIALECT = "duckdb"
MAX_LENGTH = 10_000  # characters of one filter; long IN lists fit, a pasted file does not
MAX_DEPTH = 64  # nesting of the parsed tree (parentheses, NOTs, chained operators)
MAX_NODES = 20_000  # parts of one filter (an IN list of a few thousand values)
EXAMPLE = "e.g. country in ('US', 'CA') and ordered_at >= '2024-01-01'"
SUGGESTION = f"a filter is a condition on dimension values, {EXAMPLE}"


class FilterError(QueryError):
    """A filter that is not a plain condition over dimensions; `sqlstate` is what the PostgreSQL door reports."""

    def __init__(self, message: str, suggestion: str = SUGGESTION, sqlstate: str = "42601"):
        super().__init__(message, suggestion)
        self.sqlstate = sqlstate


# ------------------------------------------------------------ what a filter may hold

def _classes(*names: str) -> tuple[type, ...]:
    """The sqlglot node classes of these names that this sqlglot version has."""
    return tuple(c for c in (getattr(exp, n, None) for n in names) if isinstance(c, type))


STRUCTURE = _classes(
    "Column", "Identifier", "Literal", "Boolean", "Null", "Paren", "Tuple", "Neg", "Not", "And", "Or", "Xor",
    "EQ", "NEQ", "GT", "GTE", "LT", "LTE", "NullSafeEQ", "NullSafeNEQ", "Is", "In", "Between", "Like", "ILike",
    "Escape", "Add", "Sub", "Mul", "Div", "IntDiv", "Mod", "Pow", "DPipe", "BitwiseAnd", "BitwiseOr", "BitwiseXor",
    "BitwiseNot", "Case", "If", "Cast", "TryCast", "DataType", "DataTypeParam", "Interval")

# scalar functions with no access to anything but their arguments (sqlglot's typed nodes)
FUNCTIONS = _classes(
    # text
    "Upper", "Lower", "Length", "Substring", "Trim", "Concat", "ConcatWs", "StrPosition", "Left", "Right",
    "Replace", "Reverse", "Pad", "StartsWith", "EndsWith", "Contains", "RegexpLike", "RegexpILike",
    "RegexpExtract", "RegexpReplace", "SplitPart", "Initcap", "Ascii", "Chr", "Repeat", "Levenshtein",
    # dates and times
    "DateTrunc", "TimestampTrunc", "TimeTrunc", "Extract", "Year", "Month", "Day", "Quarter", "Week", "WeekOfYear",
    "DayOfWeek", "DayOfWeekIso", "DayOfMonth", "DayOfYear", "Dayname", "Monthname", "CurrentDate",
    "CurrentTimestamp", "CurrentTime", "Localtimestamp", "DateAdd", "DateSub", "DateDiff", "TimestampAdd",
    "TimestampSub", "TimestampDiff", "TsOrDsAdd", "TsOrDsDiff", "LastDay", "DateFromParts", "TimestampFromParts",
    "TimeToStr", "StrToTime", "StrToDate", "TimeToUnix", "UnixToTime", "TsOrDsToDate", "TimeStrToTime",
    "DateStrToDate", "Date",
    # numbers
    "Abs", "Round", "Floor", "Ceil", "Trunc", "Sqrt", "Ln", "Log", "Exp", "Sign", "Greatest", "Least",
    # nulls
    "Coalesce", "Nullif")

ALLOWED = STRUCTURE + FUNCTIONS  # once, not per node checked

# DuckDB scalar functions sqlglot has no node for (they parse as plain calls)
NAMED_FUNCTIONS = frozenset({
    "now", "today", "date_part", "datepart", "date_trunc", "date_add", "date_sub", "strip_accents", "lcase", "ucase", "prefix", "suffix",
    "isodow", "isoyear", "yearweek", "weekday", "weekofyear", "dayofmonth", "dayofyear", "epoch_ms", "age",
    "make_timestamp", "time_bucket", "ltrim", "rtrim", "instr", "regexp_full_match", "jaro_winkler_similarity",
    "trunc", "ceiling", "power", "ifnull", "nvl", "to_timestamp", "strptime", "strftime", "millisecond",
    "microsecond", "second", "minute", "hour", "century", "decade", "millennium", "era", "epoch"})

# DuckDB / PostgreSQL types a value may be cast to: plain scalars
CAST_TYPES = frozenset({*exp.DataType.TEXT_TYPES, *exp.DataType.NUMERIC_TYPES, *exp.DataType.TEMPORAL_TYPES,
                        exp.DataType.Type.BOOLEAN, exp.DataType.Type.INTERVAL})

STATEMENTS = _classes("DDL", "DML", "Command", "Pragma", "Set", "Use", "Transaction", "Commit", "Rollback",
                      "Install", "Attach", "Detach", "Copy", "Drop", "Create", "Insert", "Update", "Delete", "Merge",
                      "Describe", "Show", "Export", "Load", "Analyze", "Grant", "Revoke", "Summarize")

# the words that stand for themselves in date functions (`EXTRACT(year FROM d)`, `INTERVAL 1 day`)
TIME_UNITS = frozenset(
    u + s for u in ("year", "quarter", "month", "week", "day", "hour", "minute", "second", "millisecond",
                    "microsecond", "nanosecond", "decade", "century", "millennium", "dow", "doy", "isodow",
                    "isoyear", "epoch", "yearweek", "dayofweek", "dayofyear", "weekday", "weekofyear", "era",
                    "timezone", "timezone_hour", "timezone_minute", "julian", "y", "yr", "mon", "d", "h", "m",
                    "s", "ms", "us")
    for s in ("", "s"))

# names of functions that read files, the network, the environment or the server's state (for the message)
REACHING = re.compile(
    r"^(read_|glob$|getenv|current_setting|set_config|pragma|duckdb_|pg_|sqlite_|parquet_|sniff_csv|query$|"
    r"query_table|load|install|.*_scan$|iceberg|delta_|postgres_|mysql_|http|s3|gcs|azure|which_secret|secret|"
    r"list_files|file|checkpoint|force_checkpoint|enable_|disable_|sleep|setseed|nextval|currval|version$|"
    r"current_(user|role|schema|schemas|database|catalog|query|setting)|session_user|user$|system|txid|"
    r"import_|export_|attach|detach|copy|lo_|inet_|shell|exec|json_execute|error$)", re.IGNORECASE)

# schemas and tables a client never reaches through a filter
SYSTEM_SCHEMAS = frozenset({"information_schema", "pg_catalog", "system", "temp", "main", "raw"})
SYSTEM_PREFIXES = ("_phloem", "duckdb_", "pg_", "sqlite_", "__stage", "__phloem")

READING = _classes("ReadCSV", "ReadParquet", "CurrentUser", "CurrentVersion", "CurrentSchema",
                   "CurrentDatabase", "CurrentCatalog", "CurrentRole", "SessionUser")

AGGREGATE_HINT = "filters apply to rows before aggregation: filter on dimension values (HAVING in semantic SQL " \
                 "filters on aggregates)"


# ------------------------------------------------------------ the two ways in

def parse_filter(text: Any, resolve: Callable[[str], Any] | None = None) -> exp.Expression:
    """Client text → a checked sqlglot boolean tree (see `check_filter`); raises `FilterError`."""
    if not isinstance(text, str):
        raise FilterError("a filter is text (a SQL condition) or {dimension, op, values}")
    if not text.strip():
        raise FilterError("the filter is empty")
    if len(text) > MAX_LENGTH:
        raise FilterError(f"the filter is {len(text):,} characters long; the limit is {MAX_LENGTH:,}",
                          "split it into several filters (all must hold), or filter on fewer values", "54000")
    if "\x00" in text:
        raise FilterError("the filter holds a NUL character")
    dialect = Dialect.get_or_raise(DIALECT)
    try:
        tokens = dialect.tokenize(text)
    except TokenError as e:
        raise FilterError(f"the filter does not parse{parse_error_position(e)}",
                          f"close every string, doubling a quote inside it ('it''s'); {EXAMPLE}") from None
    _check_tokens(tokens)
    try:
        trees = dialect.parser().parse(tokens, text)
    except ParseError as e:
        raise FilterError(f"the filter does not parse{parse_error_position(e)}",
                          f"write a SQL condition, {EXAMPLE}") from None
    except RecursionError:
        raise FilterError(f"the filter nests too deeply (more than {MAX_DEPTH} levels)",
                          "write it with fewer parentheses", "54001") from None
    trees = [t for t in trees if t is not None]
    if len(trees) != 1:
        raise FilterError("the filter is empty" if not trees else "a filter is one condition, not several statements")
    return check_filter(trees[0], resolve)


def check_filter(tree: exp.Expression, resolve: Callable[[str], Any] | None = None) -> exp.Expression:
    """Accept `tree` only as a condition over dimensions, literals and allowed functions; returns it.

    `resolve(text)` is called with each column as the model names dimensions (`country`, `orders.country`,
    `metric_time__month`) and raises a QueryError for what is not one; None: the caller has resolved them.
    """
    _check_root(tree)
    stack: list[tuple[exp.Expression, int]] = [(tree, 1)]
    count = 0
    while stack:  # iterative: a deep tree must not exhaust Python's stack
        node, depth = stack.pop()
        count += 1
        if depth > MAX_DEPTH:
            raise FilterError(f"the filter nests too deeply (more than {MAX_DEPTH} levels)",
                              "write it with fewer parentheses or an IN list", "54001")
        if count > MAX_NODES:
            raise FilterError(f"the filter has more than {MAX_NODES:,} parts", "filter on fewer values", "54000")
        _check_node(node, resolve)
        if isinstance(node, exp.Column):
            continue  # its identifiers were checked with it
        # a chain of ANDs (or ORs) is one level: sqlglot reads and writes those without recursing
        stack.extend((child, depth if type(child) is type(node) and isinstance(node, exp.Connector) else depth + 1)
                     for child in node.iter_expressions())
    return tree


def column_text(column: exp.Column) -> str:
    """A filter column as the model names dimensions: `country` or `orders.country`."""
    return f"{column.table}.{column.name}" if column.table else column.name


# ------------------------------------------------------------ checks

def _check_tokens(tokens) -> None:
    depth = deepest = 0
    for token in tokens:
        if token.comments:
            raise FilterError("comments (-- or /* */) are not allowed in a filter", SUGGESTION)
        kind = token.token_type
        if kind == TokenType.SEMICOLON:
            raise FilterError("`;` is not allowed in a filter: a filter is one condition, not several statements")
        if kind in (TokenType.PLACEHOLDER, TokenType.PARAMETER):
            raise FilterError("a parameter ($1, ?, :name) is not allowed in a filter",
                              "write the value itself, e.g. country = 'US'")
        if kind in (TokenType.L_PAREN, TokenType.L_BRACKET, TokenType.L_BRACE):
            depth += 1
            deepest = max(deepest, depth)
        elif kind in (TokenType.R_PAREN, TokenType.R_BRACKET, TokenType.R_BRACE):
            depth -= 1
    if deepest > MAX_DEPTH:
        raise FilterError(f"the filter nests too deeply ({deepest} parentheses; the limit is {MAX_DEPTH})",
                          "write it with fewer parentheses", "54001")


def parse_error_position(e: ParseError | TokenError) -> str:
    """` near `x` (column 7)`, from the parser's first error: its position and token, not its wording (which
    can name sqlglot's classes); for text that does not tokenize, the unclosed quote it almost always is."""
    if not isinstance(e, ParseError):
        return ": a quote (' or \") is not closed"
    first = e.errors[0] if e.errors else {}
    token = str(first.get("highlight") or "").strip()
    token = token if len(token) <= 40 else token[:40] + "…"
    col = first.get("col")
    expecting = str(first.get("description") or "")
    want = f", expecting `{expecting.removeprefix('Expecting ').strip()}`" if re.fullmatch(
        r"Expecting [^\s<>]{1,3}", expecting) else ""
    near = f" near `{token}`" if token else " at its end"
    return f"{near}{f' (column {col})' if col else ''}{want}"


PREDICATES = (exp.Predicate, exp.Connector, exp.Escape, exp.Not, exp.Boolean, exp.Null, exp.Column, exp.Func, exp.Case, exp.Cast,
              exp.Paren, exp.Xor)


def _check_root(tree: exp.Expression) -> None:
    inner = tree.unnest() if isinstance(tree, exp.Paren) else tree
    if isinstance(inner, (exp.Query, *STATEMENTS)):
        _refuse(inner)
    if isinstance(inner, exp.Literal) or (isinstance(inner, exp.Binary) and not isinstance(inner, PREDICATES)):
        raise FilterError("the filter is a value, not a condition (true or false for each row)",
                          f"compare it with something, {EXAMPLE}", "42804")


def _check_node(node: exp.Expression, resolve: Callable[[str], Any] | None) -> None:
    if isinstance(node, exp.Column):
        _check_column(node, resolve)
    elif isinstance(node, exp.Var):
        if node.name.lower() not in TIME_UNITS or not isinstance(node.parent, ALLOWED):
            raise FilterError(f"`{_short(node.name)}` is not a dimension, value or time unit", SUGGESTION, "42703")
    elif isinstance(node, exp.DataType):
        if node.this not in CAST_TYPES or any(isinstance(e, exp.DataType) for e in node.expressions):
            raise FilterError(f"a cast to `{_short(node.sql(DIALECT))}` is not allowed in a filter",
                              "cast to a plain type: integer, decimal, double, varchar, date, timestamp, boolean",
                              "42846")
    elif isinstance(node, exp.Anonymous):
        name = str(node.this).lower()
        if name not in NAMED_FUNCTIONS:
            _refuse(node)
    elif isinstance(node, exp.Identifier):
        if not isinstance(node.parent, exp.Column):
            _refuse(node)
    elif not isinstance(node, ALLOWED):
        _refuse(node)


def _check_column(column: exp.Column, resolve: Callable[[str], Any] | None) -> None:
    if isinstance(column.this, exp.Star):
        raise FilterError("`*` is not allowed in a filter", SUGGESTION)
    parts = [p.name for p in column.parts]
    if column.args.get("db") is not None or column.args.get("catalog") is not None:
        if any(_is_system(p) for p in parts[:-1]):
            raise _system(parts)
        raise FilterError(f"`{_short('.'.join(parts))}` names a table or schema; a filter names dimensions",
                          "write `dimension` or `view.dimension`", "42P01")
    if resolve is None:
        return
    try:
        resolve(column_text(column))
    except QueryError:
        if any(_is_system(p) for p in parts):
            raise _system(parts) from None
        raise


def _is_system(name: str) -> bool:
    low = name.lower()
    return low in SYSTEM_SCHEMAS or low.startswith(SYSTEM_PREFIXES)


def _system(parts: list[str]) -> FilterError:
    name = next(p for p in parts if _is_system(p))
    what = "an internal table" if name.lower().startswith(("_phloem", "__")) else (
        "the raw source schema" if name.lower() == "raw" else "a system catalog")
    return FilterError(f"`{_short(name)}` is a {what}; a filter reaches only the model's dimensions",
                       f"filter on dimensions (see /api/v1/meta), {EXAMPLE}", "42501")


def _refuse(node: exp.Expression) -> None:
    """The message for a construct the allowlist does not hold."""
    if isinstance(node, exp.Subquery | exp.Query | exp.Exists):
        raise FilterError("a subquery is not allowed in a filter",
                          f"compare dimensions with literal values or an IN list, {EXAMPLE}", "42501")
    if isinstance(node, exp.Table | exp.From | exp.Join | exp.Unnest | exp.Lateral | exp.Values):
        raise FilterError("a table or table function is not allowed in a filter", SUGGESTION, "42501")
    if isinstance(node, STATEMENTS):
        raise FilterError("a statement is not allowed in a filter: a filter is one condition", SUGGESTION, "42501")
    if isinstance(node, exp.Window):
        raise FilterError("a window function is not allowed in a filter", AGGREGATE_HINT, "42P20")
    if isinstance(node, exp.AggFunc):
        raise FilterError(f"aggregate `{_function_name(node)}` is not allowed in a filter", AGGREGATE_HINT, "42803")
    if isinstance(node, exp.Placeholder | exp.Parameter):
        raise FilterError("a parameter is not allowed in a filter", "write the value itself, e.g. country = 'US'")
    if isinstance(node, exp.Star):
        raise FilterError("`*` is not allowed in a filter", SUGGESTION)
    construct = _construct(node)
    if construct:
        raise FilterError(f"{construct} is not allowed in a filter", SUGGESTION, "42601")
    if isinstance(node, exp.Func):
        name = _function_name(node)
        if REACHING.match(name) or isinstance(node, READING):
            raise FilterError(f"function `{name}` is not allowed in a filter: it reads files, the network, the "
                              "environment or the server's state", SUGGESTION, "42501")
        raise FilterError(f"function `{name}` is not allowed in a filter",
                          "use comparisons, IN, LIKE, CASE, CAST and plain scalar functions (upper, lower, "
                          "date_trunc, extract, coalesce, round …): see \"What a client may send\" in the docs", "42883")
    raise FilterError("this construct is not allowed in a filter", SUGGESTION, "42601")


def _function_name(node: exp.Func) -> str:
    """The function as DuckDB spells it (`unnest`, `version`), not as sqlglot names its node."""
    if isinstance(node, exp.Anonymous):
        return _short(str(node.this).lower(), 40)
    try:
        spelled = re.match(r"\s*([A-Za-z_][A-Za-z0-9_]*)", node.sql(DIALECT))
    except Exception:  # a node DuckDB cannot write, or one nested too deep to write: sqlglot's name
        spelled = None
    return _short((spelled.group(1) if spelled else node.sql_name()).lower(), 40)


def _construct(node: exp.Expression) -> str | None:
    """A construct in the user's words: `x['a']` is a subscript, `[1, 2]` a list …"""
    words = {exp.Identifier: "a bare name", exp.Bracket: "a subscript (`x[…]`)", exp.Dot: "a field access (`x.y`)", exp.Array: "a list",
             exp.Struct: "a struct", exp.Lambda: "a lambda", exp.Glob: "GLOB (use LIKE)",
             exp.SimilarTo: "SIMILAR TO (use LIKE or regexp_matches)", exp.Collate: "COLLATE",
             exp.ByteString: "an escape string (E'…')"}
    for cls, word in words.items():
        if isinstance(node, cls):
            return word
    return None


def _short(text: str, limit: int = 60) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "…"


__all__ = ["MAX_DEPTH", "MAX_LENGTH", "FilterError", "check_filter", "column_text", "parse_error_position",
           "parse_filter"]
