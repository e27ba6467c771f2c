"""Small SQL pieces the renderer and the rollup builder share: buckets, literals, aggregates, view filters."""

from __future__ import annotations

import datetime as dt

from sqlglot import exp

from semantic.project.model import DURATION, Measure
from semantic.query.graph import SemanticGraph, bind_columns
from semantic.sqltree import cast, col, parse


def interval(n: int, unit: str) -> exp.Interval:
    return exp.Interval(this=exp.Literal.string(str(n)), unit=exp.var(unit.upper()))


def duration(text: str) -> exp.Interval:
    m = DURATION.match(text)
    return interval(int(m.group(1)), m.group(2))


def truncate(value: exp.Expression, grain: str) -> exp.Expression:
    """The first instant of the bucket: DATE for day and coarser, TIMESTAMP for hour."""
    trunc = exp.Anonymous(this="DATE_TRUNC", expressions=[exp.Literal.string(grain), cast(value, "timestamp")])
    return trunc if grain == "hour" else cast(trunc, "date")


def timestamp(value: dt.date | dt.datetime) -> exp.Expression:
    return cast(exp.Literal.string(value.isoformat(sep=" ") if isinstance(value, dt.datetime)
                                       else value.isoformat()), "timestamp")


def label(value: dt.datetime, grain: str) -> exp.Expression:
    """A bucket label literal, typed like the bucket column: DATE for day and coarser, TIMESTAMP for hour."""
    if grain == "hour":
        return timestamp(value)
    return cast(exp.Literal.string(value.date().isoformat()), "date")


def localize(value: exp.Expression, tz: str | None) -> exp.Expression:
    """Timestamps are naive UTC; a `timezone:` converts them to local wall time before bucketing."""
    if not tz:
        return value
    utc = exp.AtTimeZone(this=cast(value, "timestamp"), zone=exp.Literal.string("UTC"))
    return exp.AtTimeZone(this=utc, zone=exp.Literal.string(tz))


def agg(measure: Measure, value: exp.Expression | None, dialect: str) -> exp.Expression:
    a = measure.agg
    if a == "count":
        return exp.Count(this=value if value is not None else exp.Star())
    if a == "count_distinct" or (a == "approx_count_distinct" and dialect != "duckdb"):
        return exp.Count(this=exp.Distinct(expressions=[value]))
    if a == "approx_count_distinct":
        return exp.ApproxDistinct(this=value)
    if a == "median":  # continuous: interpolated in floating point on every engine (DuckDB rounds decimals)
        return exp.PercentileCont(this=cast(value, "double"), expression=exp.Literal.number(0.5))
    if a == "percentile":
        if measure.discrete:
            return exp.PercentileDisc(this=value, expression=exp.Literal.number(measure.p))
        return exp.PercentileCont(this=cast(value, "double"), expression=exp.Literal.number(measure.p))
    return {"sum": exp.Sum, "avg": exp.Avg, "min": exp.Min, "max": exp.Max}[a](this=value)


def measure_value(view: str, measure: Measure) -> exp.Expression | None:
    """The measure's argument bound to the view (None for a plain row count)."""
    if measure.agg == "count" and not measure.expr:
        return None
    return bind_columns(measure.expr or measure.name, view)


def view_condition(graph: SemanticGraph, view: str, sql: str) -> exp.Expression:
    """A filter over the view's dimension names and source columns."""
    dims = graph.dims[view]
    tree = parse(sql)

    def bind(node):
        if isinstance(node, exp.Column) and not node.table:
            dim = dims.get(node.name)
            if dim and dim.sql != node.name:
                return exp.Paren(this=bind_columns(dim.sql, view))
            return col(node.name, view)
        return node

    return tree.transform(bind)


def filtered(aggregate: exp.Expression, cond: exp.Expression | None) -> exp.Expression:
    return exp.Filter(this=aggregate, expression=exp.Where(this=cond)) if cond is not None else aggregate
