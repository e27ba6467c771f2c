"""Rollups as SQL: the SELECT a rollup table is built from, and a leaf's values read back from its partials.

Partials re-aggregate to exactly what the view would give: sum of sums, sum of counts (0 when none), min of
mins, max of maxes, avg as sum of sums / sum of counts, and a stored count_distinct read as is (the matcher
allows it only at the rollup's own grain and dimensions).
"""

from __future__ import annotations

import datetime as dt

from sqlglot import exp

from semantic.query.graph import SemanticGraph, bind_columns
from semantic.query.rollups import PARTITION, RollupSpec
from semantic.query.sqlparts import (
    filtered,
    label,
    localize,
    measure_value,
    timestamp,
    truncate,
    view_condition,
)
from semantic.query.timegrid import to_utc
from semantic.sqltree import cast, col, ident, parse

INTEGERS = ("bigint", "integer", "smallint", "int8", "int4", "int2")


def rollup_select(graph: SemanticGraph, spec: RollupSpec, dialect: str, since: dt.datetime | None = None,
                  partitions: list | None = None) -> exp.Select:
    """The rollup's rows computed from its view: partition, bucket, dimensions and partials, one row per key.

    `since`: only buckets from this local label on (the freshness tail); `partitions`: only these partitions.
    """
    view = spec.view
    query = exp.select().from_(exp.alias_(graph.relation(view), view, table=True))
    for hop in spec.joins:
        on = exp.EQ(this=col(hop.source_column, hop.source), expression=col(hop.target_column, hop.target))
        query = query.join(exp.alias_(graph.relation(hop.target), hop.target, table=True), on=on,
                           join_type="left", copy=False)
    ts = bind_columns(graph.dims[view][graph.views[view].time].sql, view)
    local = localize(ts, spec.timezone)
    keys: list[exp.Expression] = []
    if spec.partition:
        keys.append(exp.alias_(truncate(local, spec.partition), PARTITION, quoted=True))
    keys.append(exp.alias_(truncate(local.copy(), spec.grain), spec.bucket, quoted=True))
    for d in spec.dims:
        value = bind_columns(graph.dims[d.view][d.name].sql, d.view)
        keys.append(exp.alias_(truncate(localize(value, spec.timezone), d.grain) if d.grain else value, d.column,
                               quoted=True))
    partials = []
    for name, m in spec.measures.items():
        value = measure_value(view, m)
        cond = view_condition(graph, view, m.filter) if m.filter else None
        for part, column in spec.columns[name].items():
            if part in ("count", "distinct"):
                arg = exp.Star() if value is None else value.copy()
                aggregate = exp.Count(this=exp.Distinct(expressions=[arg]) if part == "distinct" else arg)
            else:
                aggregate = {"sum": exp.Sum, "min": exp.Min, "max": exp.Max}[part](this=value.copy())
            partials.append(exp.alias_(filtered(aggregate, cond.copy() if cond is not None else None), column,
                                       quoted=True))
    query = query.select(*keys, *partials, copy=False)
    if since is not None:
        query = query.where(exp.GTE(this=truncate(local.copy(), spec.grain), expression=label(since, spec.grain)),
                            copy=False)
        utc = to_utc(since, spec.timezone)
        if utc is not None:  # a plain range on the stored time lets the warehouse skip older blocks
            query = query.where(exp.GTE(this=cast(ts.copy(), "timestamp"),
                                        expression=timestamp(utc - dt.timedelta(days=1))), copy=False)
    if partitions is not None:
        query = query.where(exp.In(this=truncate(local.copy(), spec.partition),
                                   expressions=[label(p, spec.partition) for p in partitions]), copy=False)
    return query.group_by(*(exp.Literal.number(i + 1) for i in range(len(keys))), copy=False)


def relation(graph: SemanticGraph, use, dialect: str) -> exp.Expression:
    """The rollup table, or — when its dataset moved on — its complete buckets UNION ALL the rest from the view."""
    spec = use.spec
    table = exp.Table(this=ident(spec.name), db=ident(use.schema))
    if use.tail is None:
        return table
    columns = [*spec.key_columns, *spec.partial_columns]
    kept = exp.select(*(col(c) for c in columns)).from_(table).where(
        exp.LT(this=col(spec.bucket), expression=label(use.tail, spec.grain)))
    fresh = rollup_select(graph, spec, dialect, since=use.tail)
    return exp.Subquery(this=exp.union(kept, fresh, distinct=False))


def dim_value(use, leaf, d, alias: str) -> exp.Expression:
    """A query dimension read from the rollup: its stored column, re-truncated when the query asks coarser."""
    spec = use.spec
    if d.view is None:
        value, stored = col(spec.bucket, alias), spec.grain
    else:
        rd = spec.dim_index[(leaf.dim_views[d.text], d.name)]
        value, stored = col(rd.column, alias), rd.grain
    return truncate(value, d.grain) if d.grain and d.grain != stored else value


def range_conditions(use, alias: str) -> list[exp.Expression]:
    """The time range as whole buckets (the matcher checked it cuts none)."""
    spec, conds = use.spec, []
    if use.low is not None:
        conds.append(exp.GTE(this=col(spec.bucket, alias), expression=label(use.low, spec.grain)))
    if use.high is not None:
        conds.append(exp.LT(this=col(spec.bucket, alias), expression=label(use.high, spec.grain)))
    return conds


def metric_condition(use, m, alias: str) -> exp.Expression | None:
    """A metric's own filter over the rollup's stored dimensions of its view."""
    if not m.filter:
        return None
    spec = use.spec

    def bind(node):
        if isinstance(node, exp.Column) and not node.table:
            return col(spec.dim_index[(spec.view, node.name)].column, alias)
        return node

    return exp.Paren(this=parse(m.filter).transform(bind))


def partial(use, m, alias: str) -> exp.Expression:
    """The one partial a single-part aggregate accumulates (cumulative leaves)."""
    return col(next(iter(use.spec.columns[m.measure.name].values())), alias)


def reaggregate(use, m, alias: str, dialect: str, value_of=None) -> exp.Expression:
    """The leaf metric's value from the partials of the rows in its group."""
    measure, spec = m.measure, use.spec
    columns = spec.columns[measure.name]
    if value_of is not None:  # cumulative: each row carries its one partial and the metric filter
        value, cond = value_of(m)
        parts = {next(iter(columns)): value}
    else:
        parts = {part: col(column, alias) for part, column in columns.items()}
        cond = metric_condition(use, m, alias)

    def total(part: str, fn=exp.Sum) -> exp.Expression:
        return filtered(fn(this=parts[part]), cond.copy() if cond is not None else None)

    kind = measure.agg
    if kind == "sum":
        stored = use.types.get(columns["sum"], "").lower()
        return cast(total("sum"), "bigint") if dialect == "postgres" and stored in INTEGERS else total("sum")
    if kind == "count":
        return cast(exp.Coalesce(this=total("count"), expressions=[exp.Literal.number(0)]), "bigint")
    if kind == "avg":
        stored = use.types.get(columns["sum"], "").lower()
        exact = dialect == "postgres" and not any(t in stored for t in ("double", "real", "float"))
        return exp.Div(this=cast(total("sum"), "numeric" if exact else "double"),
                       expression=exp.Nullif(this=total("count"), expression=exp.Literal.number(0)))
    if kind == "count_distinct":
        return exp.Coalesce(this=total("distinct", exp.Max), expressions=[exp.Literal.number(0)])
    return total(kind, {"min": exp.Min, "max": exp.Max}[kind])
