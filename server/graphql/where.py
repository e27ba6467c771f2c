"""`Where` → the library's filters: structured `{dimension, op, values}` when it is a plain AND of conditions the
library spells, else one SQL boolean over dimension names built as a sqlglot tree (values are literals)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlglot import exp
from strawberry import UNSET

from semantic.errors import QueryError
from semantic.query.plan import structured_filter
from semantic.query.query import Filter
from server.graphql.names import Catalog, DimensionField
from server.graphql.types import naive_utc

# GraphQL operator → the library's op; `contains` has none (it becomes STRPOS(...) > 0).
OPS = {"equals": "=", "not_equals": "!=", "in_": "in", "not_in": "not in", "gt": ">", "gte": ">=", "lt": "<",
       "lte": "<=", "between": "between", "contains": "contains", "is_null": "is null"}
GRAIN_ATTRS = ("hour", "day", "week", "month", "quarter", "year")


@dataclass(frozen=True)
class Condition:
    dimension: str  # as the library spells it: `country`, `orders.country`, `metric_time__month`
    op: str  # a library op, or `contains`
    values: tuple[Any, ...] = ()

    @property
    def structured(self) -> bool:
        """Whether the library's `{dimension, op, values}` form can say it (an empty IN cannot)."""
        return self.op != "contains" and not (self.op in ("in", "not in") and not self.values)

    def expression(self) -> exp.Expression:
        column = dimension_column(self.dimension)
        if self.op == "contains":
            return exp.GT(this=exp.StrPosition(this=column, substr=exp.convert(self.values[0])),
                          expression=exp.Literal.number(0))
        if self.op in ("in", "not in") and not self.values:  # nothing is in an empty list
            return exp.false() if self.op == "in" else exp.true()
        tree = structured_filter(Filter(dimension=self.dimension, op=self.op, values=self.values))
        return tree.transform(lambda n: column.copy() if isinstance(n, exp.Column) else n)


def dimension_column(text: str) -> exp.Column:
    """`orders.country` → "orders"."country" (the library reads a qualified column back as `view.dim`)."""
    view, _, name = text.rpartition(".")
    return exp.column(name, table=view or None, quoted=True)


def compile_where(where: Any, catalog: Catalog) -> list[dict | str]:
    """The query's `filters` for a `Where` input (None or empty → no filter)."""
    if where is None or where is UNSET:
        return []
    plain = _conjuncts(where, catalog)
    if plain is not None:
        return [{"dimension": c.dimension, "op": c.op, "values": list(c.values)} for c in plain]
    return [_expression(where, catalog).sql(dialect="duckdb")]


def _conditions(where: Any, catalog: Catalog) -> list[Condition]:
    """The dimension conditions written directly in one `Where` object (not its and/or/not)."""
    out = []
    for d in catalog.dimensions.values():
        spec = getattr(where, d.attr, UNSET)
        if spec is UNSET or spec is None:
            continue
        if d.type == "time":
            for grain in GRAIN_ATTRS:
                sub = getattr(spec, grain, UNSET)
                if sub is not UNSET and sub is not None:
                    out += _ops(sub, d, d.grain(grain), f"{d.field}.{grain}")
        else:
            out += _ops(spec, d, d.text, d.field)
    return out


def _ops(spec: Any, d: DimensionField, dimension: str, where: str) -> list[Condition]:
    out = []
    for attr, op in OPS.items():
        value = getattr(spec, attr, UNSET)
        if value is UNSET:
            continue
        if value is None:  # null: IS NULL for equals, IS NOT NULL for notEquals, no bound otherwise
            if attr in ("equals", "not_equals"):
                out.append(Condition(dimension, "is null" if attr == "equals" else "is not null"))
            continue
        if attr == "is_null":
            out.append(Condition(dimension, "is null" if value else "is not null"))
            continue
        values = tuple(_literal(v) for v in value) if isinstance(value, list) else (_literal(value),)
        if attr == "between" and len(values) != 2:
            raise QueryError(f"`between` on `{where}` takes two values, got {len(values)}",
                             "write between: [low, high] (both included)")
        out.append(Condition(dimension, op, values))
    return out


def _literal(value: Any) -> Any:
    return naive_utc(value) if isinstance(value, dt.datetime) else value


def _conjuncts(where: Any, catalog: Catalog) -> list[Condition] | None:
    """All conditions when `where` is a plain AND the library's structured filters can say; else None."""
    if _given(where, "or_") is not None or _given(where, "not_") is not None:
        return None
    out = _conditions(where, catalog)
    for sub in _given(where, "and_") or []:
        more = _conjuncts(sub, catalog)
        if more is None:
            return None
        out += more
    return out if all(c.structured for c in out) else None


def _expression(where: Any, catalog: Catalog) -> exp.Expression:
    parts = [c.expression() for c in _conditions(where, catalog)]
    ands = _given(where, "and_")
    if ands is not None:
        parts.append(_join(exp.and_, [_expression(w, catalog) for w in ands], exp.true()))
    ors = _given(where, "or_")
    if ors is not None:
        parts.append(_join(exp.or_, [_expression(w, catalog) for w in ors], exp.false()))
    negated = _given(where, "not_")
    if negated is not None:
        parts.append(exp.Not(this=exp.Paren(this=_expression(negated, catalog))))
    return _join(exp.and_, parts, exp.true())


def _join(combine, parts: list[exp.Expression], empty: exp.Expression) -> exp.Expression:
    """and/or over parts, each parenthesized; an empty AND is true and an empty OR is false."""
    if not parts:
        return empty
    if len(parts) == 1:
        return parts[0]
    return combine(*(exp.Paren(this=p) for p in parts), copy=False)


def _given(where: Any, attr: str) -> Any:
    value = getattr(where, attr, UNSET)
    return None if value is UNSET else value
