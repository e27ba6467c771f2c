"""A filter's literals must fit the dimensions they are compared with: `total > 'abc'` or `ordered_at > 5` is a
QueryError naming the dimension's type, at every door (explain included) and before any SQL runs."""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Callable

from sqlglot import exp

from semantic.errors import QueryError

COMPARISONS = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.NullSafeEQ, exp.NullSafeNEQ)
BOOLEAN_TEXT = {"true", "false", "t", "f", "yes", "no", "y", "n", "1", "0", "on", "off"}
EXAMPLES = {"number": "{dim} > 100", "time": "{dim} >= '2024-01-01'", "boolean": "{dim} = true"}
WORDS = {"number": "a number", "time": "a date or timestamp", "boolean": "true or false"}


def check_literal_types(tree: exp.Expression, type_of: Callable[[str], str | None]) -> None:
    """Raise a QueryError for the first literal that cannot be a value of the dimension it is compared with.

    `type_of` maps a column's name in `tree` to its dimension type (categorical, number, boolean, time), or None.
    """
    for node in tree.find_all(*COMPARISONS, exp.In, exp.Between):
        if isinstance(node, exp.In):
            pairs = [(node.this, v) for v in node.expressions]
        elif isinstance(node, exp.Between):
            pairs = [(node.this, node.args.get("low")), (node.this, node.args.get("high"))]
        else:
            pairs = [(node.this, node.expression), (node.expression, node.this)]
        for column, value in pairs:
            if isinstance(column, exp.Column) and value is not None:
                kind = type_of(column.name)
                if kind in WORDS and not _fits(value, kind):
                    name = column.name
                    raise QueryError(f"`{name}` is a {kind} dimension, and "
                                     f"{value.sql('duckdb')} is not {WORDS[kind]}",
                                     f"compare it with {WORDS[kind]}, e.g. {EXAMPLES[kind].format(dim=name)}")


def _fits(value: exp.Expression, kind: str) -> bool:
    """Whether a literal can be a value of a dimension of `kind`; anything that is not a literal is left alone."""
    if isinstance(value, exp.Neg | exp.Paren):
        return _fits(value.this, kind)
    if isinstance(value, exp.Null):
        return True
    if isinstance(value, exp.Boolean):
        return kind == "boolean"
    if isinstance(value, exp.Cast) and isinstance(value.this, exp.Literal):  # date '2024-01-01'
        to = value.to.this
        if to in exp.DataType.TEMPORAL_TYPES:
            return kind == "time" and _is_instant(value.this.name)
        return True
    if not isinstance(value, exp.Literal):
        return True
    text = value.name
    if not value.is_string:
        return kind == "number" or (kind == "boolean" and text in ("0", "1"))
    if kind == "number":
        try:
            return decimal.Decimal(text.strip()).is_finite()
        except decimal.InvalidOperation:
            return False
    if kind == "time":
        return _is_instant(text)
    return text.strip().lower() in BOOLEAN_TEXT


def _is_instant(text: str) -> bool:
    text = text.strip()
    for parse in (dt.date.fromisoformat, dt.datetime.fromisoformat):
        try:
            parse(text)
            return True
        except ValueError:
            pass
    return False
