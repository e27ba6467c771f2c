"""A semantic SELECT's WHERE → the metric query's time_range (plain ranges on the time column) and filters.

Time columns are dates (day grain), so a bound that is a date works on whole days (`ordered_at < '2024-02-01'`
ends on 31 January); a bound with a time of day works on instants, at row level.
"""

from __future__ import annotations

import datetime as dt
import re

from sqlglot import exp

from semantic.query.filters import check_filter
from semantic.query.query import TimeRange

MICRO = dt.timedelta(microseconds=1)
DAY = dt.timedelta(days=1)


def conjuncts(condition: exp.Expression) -> list[exp.Expression]:
    if isinstance(condition, exp.And):
        return [*conjuncts(condition.this), *conjuncts(condition.expression)]
    if isinstance(condition, exp.Paren) and isinstance(condition.this, exp.And):
        return conjuncts(condition.this)
    return [condition]


ZONED_DATE = re.compile(r"^(\d{4}-\d{2}-\d{2})\s*[+-]\d{2}(:?\d{2})?$")


def constant(node: exp.Expression) -> dt.date | dt.datetime | None:
    """A date or timestamp literal: '2024-01-01', DATE '2024-01-01', '2024-01-01 10:00'::timestamp,
    TO_TIMESTAMP('2024-01-01 00:00:00.000000', 'YYYY-MM-DD HH24:MI:SS.US') (Superset), TO_DATE(…)."""
    while isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, exp.StrToTime | exp.StrToDate) and _is_text(node.this) and _is_text(node.args.get("format")):
        try:
            value = dt.datetime.strptime(node.this.this, node.args["format"].this)
        except ValueError:
            return None
        return value.date() if isinstance(node, exp.StrToDate) else value
    if isinstance(node, exp.Cast) and node.to.this in TIMES:
        value = constant(node.this)
        if node.to.this == exp.DataType.Type.DATE:
            return value.date() if isinstance(value, dt.datetime) else value
        return value if value is None or isinstance(value, dt.datetime) else dt.datetime.combine(value, dt.time())
    if not _is_text(node):
        return None
    text = node.this.strip()
    zoned_date = ZONED_DATE.match(text)  # pgjdbc's setDate sends '2023-01-01 +00': a date, whatever the zone
    if zoned_date:
        text = zoned_date.group(1)
    try:
        if len(text) == 10:
            return dt.date.fromisoformat(text)
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    # timestamps are naive and mean UTC (MODEL.md §8): an offset converts to UTC
    return value if value.tzinfo is None else value.astimezone(dt.UTC).replace(tzinfo=None)


def _is_text(node) -> bool:
    return isinstance(node, exp.Literal) and node.is_string


TIMES = {exp.DataType.Type.DATE, exp.DataType.Type.TIMESTAMP, exp.DataType.Type.TIMESTAMPTZ}
FLIP = {exp.GT: exp.LT, exp.GTE: exp.LTE, exp.LT: exp.GT, exp.LTE: exp.GTE, exp.EQ: exp.EQ}


def bounds(cond: exp.Expression, is_time_column) -> list[tuple[str, dt.date | dt.datetime]] | None:
    """('start'|'end', value) pairs when `cond` is a plain range on the time column, else None."""
    if isinstance(cond, exp.Between) and is_time_column(cond.this):
        low, high = constant(cond.args["low"]), constant(cond.args["high"])
        if low is None or high is None:
            return None
        return [("start", low), ("end", high)]
    cls = type(cond)
    if cls not in FLIP:
        return None
    left, right = cond.this, cond.expression
    if is_time_column(right) and not is_time_column(left):
        left, right, cls = right, left, FLIP[cls]
    if not is_time_column(left):
        return None
    value = constant(right)
    if value is None:
        return None
    instant = isinstance(value, dt.datetime)
    step = MICRO if instant else DAY
    if cls is exp.GTE:
        return [("start", value)]
    if cls is exp.GT:
        return [("start", value + step)]
    if cls is exp.LTE:
        return [("end", value)]
    if cls is exp.LT:
        return [("end", value - step)]
    return None if instant else [("start", value), ("end", value)]  # = a date: that whole day


def _first_instant(v) -> dt.datetime:
    return v if isinstance(v, dt.datetime) else dt.datetime.combine(v, dt.time())


def _last_instant(v) -> dt.datetime:
    return v if isinstance(v, dt.datetime) else dt.datetime.combine(v + DAY, dt.time()) - MICRO


def split(where: exp.Expression | None, is_time_column) -> tuple[TimeRange | None, list[exp.Expression]]:
    """The tightest time range the top-level AND implies, and every other conjunct as a filter.

    Each condition passes the filter check every door's filters pass (its columns are resolved already)."""
    if where is None:
        return None, []
    check_filter(where)
    start = end = None
    filters, ranges = [], []
    for cond in conjuncts(where):
        found = bounds(cond, is_time_column)
        if found is None:
            filters.append(cond)
            continue
        ranges.append(cond)
        for side, value in found:
            if side == "start" and (start is None or _first_instant(value) > _first_instant(start)):
                start = value
            if side == "end" and (end is None or _last_instant(value) < _last_instant(end)):
                end = value
    if start is None and end is None:
        return None, filters
    if start is not None and end is not None and _first_instant(start) > _last_instant(end):
        return None, [*filters, *ranges]  # an empty range: no rows, as the filters themselves say
    return TimeRange(start=start, end=end), filters
