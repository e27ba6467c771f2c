"""The GraphQL types every model shares: filters, time buckets, periods, the metric tree and `meta`."""

from __future__ import annotations

import datetime as dt
import decimal
import types
from typing import NewType

import strawberry
from strawberry.types.scalar import ScalarDefinition

from semantic.errors import QueryError

# ---------------------------------------------------------------- scalars

TimePoint = NewType("TimePoint", object)


def parse_time_point(value: object) -> dt.date | dt.datetime:
    """`2024-12-31` is a date (the whole day, as in the library); anything longer is a date-time."""
    if isinstance(value, dt.date):
        return value
    text = str(value).strip()
    try:
        return dt.date.fromisoformat(text) if len(text) == 10 else naive_utc(dt.datetime.fromisoformat(text))
    except ValueError:
        raise QueryError(f"`{value}` is not an ISO date or date-time",
                         "write 2024-12-31 (a whole day) or 2024-12-31T18:00:00") from None


def naive_utc(value: dt.datetime) -> dt.datetime:
    """The library's timestamps are naive UTC: an offset given by the client is applied, then dropped."""
    return value.astimezone(dt.UTC).replace(tzinfo=None) if value.tzinfo else value


def decimal_text(value: decimal.Decimal | float | int) -> str:
    """Exact plain digits (`1234567890123456.78`, never `1.2E+15`); a double is written as the shortest digits
    that read back as the same double."""
    if not isinstance(value, decimal.Decimal):
        value = decimal.Decimal(repr(value)) if isinstance(value, float) else decimal.Decimal(value)
    return format(value, "f")


SCALARS: dict[object, ScalarDefinition] = {
    decimal.Decimal: strawberry.scalar(
        name="Decimal", serialize=decimal_text, parse_value=lambda v: decimal.Decimal(str(v)),
        description="An exact decimal number written as a JSON string, `\"1234567890123456.78\"`, so that no "
                    "digit is lost to a double. Money (`format: currency`) metrics are Decimal."),
    TimePoint: strawberry.scalar(
        name="TimePoint", serialize=lambda v: v.isoformat(), parse_value=parse_time_point,
        description="An ISO date `2024-12-31` (the whole day) or date-time `2024-12-31T18:00:00` (UTC unless an "
                    "offset is given)."),
}

# ---------------------------------------------------------------- rows


@strawberry.type(description="A time dimension's value at each grain you select. `hour` is a DateTime; day and "
                             "coarser are the Date that starts the bucket (weeks start on Monday).")
class TimeBuckets:
    hour: dt.datetime | None = None
    day: dt.date | None = None
    week: dt.date | None = None
    month: dt.date | None = None
    quarter: dt.date | None = None
    year: dt.date | None = None


# ---------------------------------------------------------------- filters
# Absent and null differ: `equals: null` means IS NULL, `notEquals: null` IS NOT NULL; any other null bound
# is no bound at all, so optional variables (`gte: $from`) need no special casing.

_OPS = "equals, notEquals, in, notIn, gt, gte, lt, lte, between: [low, high] (inclusive), isNull"
ORDERED = ("equals", "not_equals", "in_", "not_in", "gt", "gte", "lt", "lte", "between", "is_null")


def _filter(name: str, scalar: type, ops: tuple[str, ...], description: str) -> type:
    """An input with one optional field per operator; lists for in/notIn/between, a Boolean for isNull."""
    annotations, fields = {}, {}
    for op in ops:
        kind = bool if op == "is_null" else list[scalar] if op in ("in_", "not_in", "between") else scalar
        annotations[op] = kind | None
        fields[op] = strawberry.field(default=strawberry.UNSET, name="in" if op == "in_" else None)
    cls = types.new_class(name, (), {}, lambda ns: ns.update({"__annotations__": annotations, **fields}))
    return strawberry.input(cls, description=description)


StringFilter = _filter("StringFilter", str, (*ORDERED[:-1], "contains", "is_null"),
                       f"Conditions on a text dimension, all of which must hold: {_OPS}, contains (a substring, "
                       "case-sensitive). SQL semantics: NULL never matches notEquals/notIn.")
FloatFilter = _filter("FloatFilter", float, ORDERED, f"Conditions on a number dimension, all of which must hold: {_OPS}.")
BooleanFilter = _filter("BooleanFilter", bool, ("equals", "not_equals", "in_", "not_in", "is_null"),
                        "Conditions on a boolean dimension: equals, notEquals, in, notIn, isNull.")
DateFilter = _filter("DateFilter", dt.date, ORDERED,
                     f"Conditions on a date bucket (the Date that starts it): {_OPS}.")
DateTimeFilter = _filter("DateTimeFilter", dt.datetime, ORDERED,
                         f"Conditions on an hour bucket (the DateTime that starts it): {_OPS}.")


@strawberry.input(description="Conditions on a time dimension, per grain: `{month: {gte: \"2024-01-01\"}}` keeps "
                              "rows whose month bucket starts on or after that date. For a plain range of "
                              "instants use the query's `timeRange`.")
class TimeFilter:
    hour: DateTimeFilter | None = strawberry.UNSET
    day: DateFilter | None = strawberry.UNSET
    week: DateFilter | None = strawberry.UNSET
    month: DateFilter | None = strawberry.UNSET
    quarter: DateFilter | None = strawberry.UNSET
    year: DateFilter | None = strawberry.UNSET


FILTER_TYPES = {"categorical": StringFilter, "number": FloatFilter, "boolean": BooleanFilter, "time": TimeFilter}


@strawberry.input(description="Rows of each view whose own time column falls in the range; a date `end` includes "
                              "that whole day. Either bound may be omitted.")
class TimeRange:
    start: TimePoint | None = None
    end: TimePoint | None = None


# ---------------------------------------------------------------- the metric tree


@strawberry.input(description="Whole days, both ends included.")
class PeriodInput:
    start: dt.date
    end: dt.date


@strawberry.type(description="Whole days, both ends included.")
class Period:
    start: dt.date
    end: dt.date


@strawberry.type(description="`parent` is computed from `child`: its operator in the parent's formula (+ - * / "
                             "numerator denominator cumulative offset f) and its sign (+1: the child going up moves "
                             "the parent up).")
class MetricTreeEdge:
    parent: str
    child: str
    operator: str
    sign: int
    alias: str
    offset: str | None


@strawberry.type(description="A metric of the tree with its value over the period and the comparison period. "
                             "`change` = value − comparisonValue; `changePct` = change / |comparisonValue| as a "
                             "fraction (0.1 = +10 %), null when the comparison value is 0 or null.")
class MetricTreeNode:
    name: str
    field: str | None = strawberry.field(description="The metric's field on `Row`.")
    label: str
    description: str
    kind: str
    formula: str
    format: str | None
    good: str = strawberry.field(description="`up` or `down`: which direction is good news.")
    depth: int = strawberry.field(description="0 for a leaf metric, 1 + the deepest child otherwise.")
    level: int = strawberry.field(description="Distance from the tree's root (the root is 0).")
    value: float | None
    comparison_value: float | None
    change: float | None
    change_pct: float | None
    children: list[MetricTreeEdge]
    contribution: float | None = strawberry.field(
        default=None, description="This node's part of the root's change (the root's is its change); the leaves' "
                                  "contributions sum to the root's change. Null below a node that is not split "
                                  "(cumulative, conversion) or where a formula divides by zero.")
    share: float | None = strawberry.field(
        default=None, description="contribution / the root's change; null when the root did not change.")


@strawberry.type(description="A metric and everything it is computed from, valued over two periods.")
class MetricTree:
    root: str
    period: Period
    comparison: Period
    nodes: list[MetricTreeNode] = strawberry.field(description="The root first, then breadth-first.")
    edges: list[MetricTreeEdge]
    method: str = strawberry.field(default="shapley", description="How each node's change was split.")
    exact: bool = strawberry.field(default=True, description="The leaves' contributions sum to the root's change.")
    residual: float | None = strawberry.field(
        default=0.0, description="The root's change minus the leaves' contributions (0 when exact).")


# ---------------------------------------------------------------- meta (mirrors semantic.meta.describe)


@strawberry.type
class MetaEntity:
    name: str
    column: str


@strawberry.type
class MetaDimension:
    name: str
    qualified: str
    type: str
    grains: list[str]
    label: str
    description: str
    field: str | None = strawberry.field(description="The qualified field on `Row` (and `Where`).")


@strawberry.type
class MetaMeasure:
    name: str
    qualified: str
    agg: str
    expr: str
    filter: str | None
    label: str
    description: str


@strawberry.type
class MetaJoin:
    to: str
    on: str


@strawberry.type
class MetaView:
    name: str
    label: str
    description: str
    time: str | None
    primary_key: str | None
    entities: list[MetaEntity]
    dimensions: list[MetaDimension]
    measures: list[MetaMeasure]
    joins: list[MetaJoin]


@strawberry.type
class MetaMetricChild:
    metric: str
    operator: str
    sign: int
    alias: str
    offset: str | None


@strawberry.type
class MetaMetric:
    name: str
    field: str | None = strawberry.field(description="The metric's field on `Row`.")
    graphql_type: str = strawberry.field(description="`Int`, `Float`, or `Decimal` (money).")
    kind: str
    formula: str
    measure: str | None
    label: str
    description: str
    format: str | None
    good: str
    owner: str | None
    depth: int
    join_to_timespine: bool
    children: list[MetaMetricChild]


@strawberry.type
class MetaEdge:
    parent: str
    child: str
    operator: str
    sign: int


@strawberry.type
class MetaTree:
    roots: list[str]
    edges: list[MetaEdge]


@strawberry.type(description="One field of `Row`: what it asks the library for.")
class MetaField:
    field: str
    kind: str = strawberry.field(description="`metric` or `dimension`.")
    name: str = strawberry.field(description="The metric's name, or the dimension as the library spells it "
                                             "(`country`, `orders.country`, `metric_time`).")
    type: str = strawberry.field(description="Int, Float, Decimal (money), String, Boolean, or TimeBuckets for time dimensions.")


@strawberry.type(description="What the project offers: views, their dimensions and measures, the metrics and "
                             "their tree, and how each maps to a `Row` field.")
class Meta:
    project: str
    version: str
    time_dimension: str
    grains: list[str]
    views: list[MetaView]
    metrics: list[MetaMetric]
    tree: MetaTree
    fields: list[MetaField]
