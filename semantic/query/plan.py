"""Query + Model → Plan: which view answers each leaf metric, at which grain, reached through which joins.

The plan exists before any SQL and prints itself (`explain`). Every metric of the query is reduced to a
formula over *leaf columns*; each leaf is one aggregate over one view (or one stream, for conversions).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field, replace

from sqlglot import exp

from semantic.access.policy import (
    UNRESTRICTED,
    Access,
    check_dimension,
    check_granted,
    check_metric,
    dimensions_of,
)
from semantic.errors import Forbidden, QueryError, did_you_mean
from semantic.metrics.tree import MetricTree
from semantic.project.model import GRAINS, Conversion, Cumulative, Measure, Metric
from semantic.query.filter_types import check_literal_types
from semantic.query.filters import check_filter, column_text, parse_filter
from semantic.query.graph import METRIC_TIME, DimRef, Hop, SemanticGraph
from semantic.query.match import Candidate, Matcher, RollupUse, duration_parts
from semantic.query.query import Query, parse_order
from semantic.sqltree import cast, parse

UNIT_RANK = {"second": -2, "minute": -1, "hour": 0, "day": 1, "week": 2, "month": 3, "quarter": 4, "year": 5}


@dataclass(frozen=True)
class LeafMetric:
    column: str  # the leaf column this metric's value lands in
    metric: str
    measure: Measure | None
    filter: str | None  # the metric's own filter, on top of the measure's


@dataclass
class Leaf:
    """One aggregate over one view (or stream) at the query grain; its rows are unique per dimension tuple."""

    name: str
    view: str | None
    kind: str  # measure | cumulative | conversion
    metrics: list[LeafMetric] = field(default_factory=list)
    joins: list[Hop] = field(default_factory=list)
    offset: str | None = None
    cumulative: Cumulative | None = None
    conversion: Conversion | None = None
    feature_dims: dict[str, str] = field(default_factory=dict)  # conversion: output → base feature
    dim_views: dict[str, str] = field(default_factory=dict)  # dimension text → the view this leaf reads it from
    table: str = ""  # what the leaf reads when no rollup answers it
    rollup: RollupUse | None = None  # the rollup that answers it (chosen by the Matcher)
    candidates: list[Candidate] = field(default_factory=list)  # every rollup considered, the chosen one first
    public: bool = False  # feeds only `public` metrics: access policies' row filters do not apply
    row_filter: exp.Expression | None = None  # the access policy's condition on this leaf's rows
    row_dims: list[DimRef] = field(default_factory=list)  # the dimensions that condition reads

    def describe(self) -> str:
        what = ", ".join(f"{m.column}={m.measure.agg if m.measure else self.kind}({m.metric})" for m in self.metrics)
        via = " ".join(f"⋈ {h.target} on {h.entity}" for h in self.joins)
        extra = f" offset {self.offset}" if self.offset else ""
        if self.cumulative:
            c = self.cumulative
            extra += f" cumulative {c.window or (c.grain_to_date + ' to date' if c.grain_to_date else 'all time')}"
        source = self.view or (self.conversion.stream if self.conversion else "?")
        lines = [f"{self.name}: {what} from {source}{(' ' + via) if via else ''}{extra}"]
        if self.row_filter is not None:
            lines.append(f"    rows: {self.row_filter.sql('duckdb')} (access policy)")
        r = self.rollup
        if r is not None:
            tail = f"; rows from {r.tail:%Y-%m-%d %H:%M} on read from {self.table}" if r.tail else ""
            refresh = f"; refresh every {r.spec.rollup.refresh}" if r.spec.rollup.refresh else ""
            lines.append(f"    table: {r.table} (rollup {r.spec.name}, {r.rows:,} rows, grain {r.spec.grain}"
                         f"{refresh}{tail})")
        else:
            lines.append(f"    table: {self.table or source}")
        lines += [f"    not used: {c.rollup} — {c.reason}" for c in self.candidates if c.reason]
        return "\n".join(lines)

    def tables(self) -> dict:
        """Which table the leaf reads and why each other candidate was not used, as plain data."""
        r = self.rollup
        return {"leaf": self.name, "metrics": [m.metric for m in self.metrics],
                "table": r.table if r else (self.table or self.view), "rollup": r.spec.name if r else None,
                "rows": r.rows if r else None, "tail_from": str(r.tail) if r and r.tail else None,
                "rejected": [{"rollup": c.rollup, "reason": c.reason} for c in self.candidates if c.reason]}


@dataclass
class Plan:
    query: Query
    dims: list[DimRef]
    leaves: list[Leaf]
    metrics: dict[str, exp.Expression]  # output metric → formula over leaf columns
    filters: list[exp.Expression]  # over DimRef outputs' source dims (resolved per leaf at render)
    filter_dims: list[DimRef]
    order: list[tuple[str, bool]]
    grain: str | None  # metric_time grain when requested
    spine: bool = False  # some metric says join_to_timespine: every period in range appears

    def describe(self) -> str:
        lines = [f"metrics: {', '.join(self.metrics)}", f"by: {', '.join(d.output for d in self.dims) or '(total)'}"]
        if self.filters:
            lines.append("where: " + " AND ".join(f.sql("duckdb") for f in self.filters))
        tr = self.query.time_range
        if tr:
            lines.append(f"time range: {tr.start or '…'} → {tr.end or '…'}")
        lines += ["leaves:", *(f"  {leaf.describe()}" for leaf in self.leaves), "formulas:"]
        lines += [f"  {name} = {f.sql('duckdb')}" for name, f in self.metrics.items()]
        return "\n".join(lines)

    def tables(self) -> list[dict]:
        return [leaf.tables() for leaf in self.leaves]


offset_parts = duration_parts  # "1 month" → (1, "month")


class Planner:
    def __init__(self, graph: SemanticGraph, tree: MetricTree, streams: dict, matcher: Matcher | None = None,
                 access: Access = UNRESTRICTED):
        self.graph, self.tree, self.streams, self.matcher, self.access = graph, tree, streams, matcher, access
        self.public = False  # planning a `public` metric's formula (or one inside a formula)

    def plan(self, query: Query) -> Plan:
        self.query = query
        self.leaves: dict[tuple, Leaf] = {}
        check_granted(self.access)
        dims = [self.resolve(d) for d in dict.fromkeys(query.dimensions)]  # a repeated dimension counts once
        tr = query.time_range
        if tr and tr.start is not None and tr.end is not None and _instant(tr.start) > _instant(tr.end):
            raise QueryError(f"time_range starts ({tr.start}) after it ends ({tr.end})", "swap start and end")
        outputs = [d.output for d in dims]
        for d in dims:  # two dims with the same name: name them view__name
            if outputs.count(d.output) > 1:
                object.__setattr__(d, "output", f"{d.view}__{d.output}")
        seen: set[str] = set()
        for i, d in enumerate(dims):  # still the same (`country` and `orders.country`): number the later one
            if d.output in seen:
                object.__setattr__(d, "output", f"{d.output}_{i + 1}")
            seen.add(d.output)
        self.dims = dims
        grains = [d.grain for d in dims if d.view is None]
        self.grain = min(grains, key=GRAINS.index) if grains else None  # the finest metric_time grain
        self.filters, self.filter_dims = self._filters(query)
        metrics = {}
        for name in query.metrics:
            check_metric(self.access, name, self.graph.model)
            metric = self.metric(name)
            expr = self.formula(metric, None, None)
            if metric.fill_nulls_with is not None:
                expr = exp.Coalesce(this=expr, expressions=[exp.convert(metric.fill_nulls_with)])
            metrics[name] = expr
        order = [parse_order(o) for o in query.order_by]
        known = [d.output for d in dims] + list(metrics)
        for name, _ in order:
            if name not in known:

                raise QueryError(f"cannot order by `{name}`: it is not a requested metric or dimension",
                                 did_you_mean(name, known) or f"order by one of: {', '.join(known)}")
        spine = self.grain is not None and any(self.metric(n).join_to_timespine for n in query.metrics)
        plan = Plan(query, dims, list(self.leaves.values()), metrics, self.filters, self.filter_dims, order,
                    self.grain, spine)
        leaves = []
        for leaf in plan.leaves:
            self._route(leaf)
            leaf.table = self.graph.table_name(leaf.view) if leaf.view else f"{self.graph.schema}.{leaf.conversion.stream}"
            choices = self.matcher.choose(leaf, plan) if self.matcher is not None else []
            if len(choices) == 1:
                leaf.rollup, leaf.candidates = choices[0].rollup, choices[0].candidates
            leaves += [leaf] if len(choices) <= 1 else [  # a rollup per group of its metrics
                replace(leaf, name=f"{leaf.name}_{i}", metrics=c.metrics, rollup=c.rollup, candidates=c.candidates)
                for i, c in enumerate(choices)]
        plan.leaves = leaves
        return plan

    def resolve(self, text: str) -> DimRef:
        """A dimension the query names, which the access may see; under a policy a mistake's suggestion comes
        from nothing hidden."""
        try:
            ref = self.graph.resolve(text)
        except QueryError as e:
            if self.access.unrestricted:
                raise
            raise QueryError(e.message, "see /api/v1/meta for what you may ask") from None
        check_dimension(self.access, ref)
        return ref

    def metric(self, name: str) -> Metric:
        if name not in self.graph.model.metrics and "." in name:
            return self.measure_metric(name)
        self.tree.node(name)  # raises a QueryError with a suggestion
        return self.graph.model.metrics[name]

    def measure_metric(self, ref: str) -> Metric:
        """`view.measure` asked for directly (SQL doors, ad-hoc queries): a simple metric named after it."""
        view, _, measure = ref.partition(".")
        if view not in self.graph.measures or measure not in self.graph.measures[view]:
            known = [f"{v}.{m}" for v, ms in self.graph.measures.items() for m in ms]
            raise QueryError(f"unknown measure `{ref}`", did_you_mean(ref, known) or f"known: {', '.join(known)}")
        return Metric(name=ref.replace(".", "__"), measure=ref)

    # ------------------------------------------------------------ formulas

    def formula(self, m: Metric, offset: str | None, cumulative: Cumulative | None) -> exp.Expression:
        """The metric as an expression over leaf columns, registering the leaves it needs."""
        if m.public and not self.public:  # a public metric is over every row wherever it is used (a benchmark)
            self.public = True
            try:
                return self.formula(m, offset, cumulative)
            finally:
                self.public = False
        if m.measure:
            return self.leaf_column(m, offset, cumulative)
        if m.conversion:
            if offset or cumulative:
                raise QueryError(f"conversion metric `{m.name}` cannot be offset or accumulated",
                                 "use it directly")
            return self.conversion_column(m)
        if m.ratio:
            num = self.formula(self.metric(m.ratio.numerator), offset, cumulative)
            den = self.formula(self.metric(m.ratio.denominator), offset, cumulative)
            return divide(num, den)
        if m.cumulative:
            if cumulative:
                raise QueryError(f"`{m.name}` accumulates an accumulated metric", "accumulate the base metric once")
            if self.grain is None and (m.cumulative.window or m.cumulative.grain_to_date) and not self.query.time_range:
                pass  # no time: the value at the end of all data
            return self.formula(self.metric(m.cumulative.metric), offset, m.cumulative)
        tree = parse(m.expr)

        def replace(node: exp.Expression) -> exp.Expression:
            if isinstance(node, exp.Column):
                inp = m.inputs.get(node.name)
                child = self.metric(inp.metric if inp else node.name)
                child_offset = combine_offsets(offset, inp.offset if inp else None)
                value = self.formula(child, child_offset, cumulative)
                fill = inp.fill_nulls_with if inp and inp.fill_nulls_with is not None else child.fill_nulls_with
                if fill is not None:
                    value = exp.Coalesce(this=value, expressions=[exp.convert(fill)])
                return exp.Paren(this=value)
            return node

        tree = tree.transform(replace)  # columns first, so divisions below wrap already-replaced operands
        return tree.transform(lambda n: divide(n.this, n.expression) if type(n) is exp.Div else n)

    def leaf_column(self, m: Metric, offset: str | None, cumulative: Cumulative | None) -> exp.Expression:
        view, _, measure_name = m.measure.rpartition(".")
        if not view:
            view = next(v for v, ms in self.graph.measures.items() if measure_name in ms)
        measure = self.graph.measures[view][measure_name]
        if offset:
            self._check_offset(m.name, offset)
        kind = "cumulative" if cumulative else "measure"
        key = (view, offset, cumulative, kind, self.public)
        leaf = self.leaves.get(key)
        if leaf is None:
            leaf = Leaf(f"leaf_{len(self.leaves)}", view, kind, offset=offset, cumulative=cumulative,
                        public=self.public)
            self.leaves[key] = leaf
        column = m.name + (f"__{re.sub(r'[^a-z0-9]+', '_', offset)}" if offset else "") + \
            (f"__{leaf.name}" if cumulative else "") + ("__public" if leaf.public else "")
        if not any(x.column == column for x in leaf.metrics):
            leaf.metrics.append(LeafMetric(column, m.name, measure, m.filter))
        return exp.column(column, table="merged", quoted=True)

    def conversion_column(self, m: Metric) -> exp.Expression:
        key = ("conversion", m.name, self.public)
        column = m.name + ("__public" if self.public else "")
        if key not in self.leaves:
            leaf = Leaf(f"leaf_{len(self.leaves)}", None, "conversion", conversion=m.conversion, public=self.public)
            leaf.metrics.append(LeafMetric(column, m.name, None, m.filter))
            self.leaves[key] = leaf
        return exp.column(column, table="merged", quoted=True)

    def _check_offset(self, metric: str, offset: str) -> None:
        if self.grain is None:
            raise QueryError(f"`{metric}` reads an earlier period ({offset}), so the query needs metric_time",
                             "add e.g. `metric_time__month` to the dimensions")
        _, unit = offset_parts(offset)
        if UNIT_RANK[unit] < UNIT_RANK[self.grain]:
            raise QueryError(f"offset `{offset}` is finer than the query's grain `{self.grain}`",
                             f"query at `metric_time__{unit}` or finer, or offset by whole {self.grain}s")

    # ------------------------------------------------------------ filters and routes

    def _filters(self, query: Query) -> tuple[list[exp.Expression], list[DimRef]]:
        """Each filter as an expression whose columns are dimension refs (`"dimension"` placeholders)."""
        exprs, refs = [], {}
        def resolve(text: str) -> DimRef:
            if text not in refs:
                refs[text] = self.resolve(text)
            return refs[text]

        for f in query.filters:
            if isinstance(f, str):  # client text: only a checked condition over dimensions goes on (filters.py)
                try:
                    tree = parse_filter(f, resolve)
                except (QueryError, RecursionError):
                    raise
                except Exception:  # noqa: BLE001 - sqlglot itself trips on some malformed text (`->`)
                    raise QueryError(f"the filter `{f[:60]}` does not parse",
                                     "write a condition on dimension values, e.g. country in ('US', 'CA')") from None
                exprs.append(tree.transform(lambda n: exp.column(column_text(n), quoted=True)
                                            if isinstance(n, exp.Column) else n, copy=False))
            else:
                resolve(f.dimension)
                exprs.append(check_filter(structured_filter(f)))  # its values are literals; checked all the same
        for tree in exprs:
            if not isinstance(tree, exp.Condition) or isinstance(tree, exp.Query):  # `interval 1 day`, `*`
                raise QueryError(f"the filter `{tree.sql('duckdb')[:60]}` is not a condition",
                                 "write a condition on dimension values, e.g. country in ('US', 'CA')")
            check_literal_types(tree, lambda name: self._dim_type(refs[name]) if name in refs else None)
        return exprs, list(refs.values())

    def _dim_type(self, ref: DimRef) -> str:
        return "time" if ref.view is None else self.graph.dims[ref.candidates[0] if ref.candidates else ref.view][
            ref.name].type

    def _row_policy(self, leaf: Leaf, view: str | None) -> list[DimRef]:
        """The access policy's condition on the view this leaf's rows come from, and the dimensions it reads."""
        cond = None if leaf.public or view is None else self.access.rows.get(view)
        if cond is None:
            return []
        leaf.row_filter = cond
        leaf.row_dims = [self.graph.resolve(text) for text in dimensions_of(cond)]
        return leaf.row_dims

    def _route(self, leaf: Leaf) -> None:
        """Check every dimension and filter is reachable from the leaf's view; record the joins needed."""
        needed = [*self.dims, *self.filter_dims]
        if leaf.kind == "conversion":
            self._route_conversion(leaf, needed)
            return
        view = self.graph.views[leaf.view]
        for d in [*needed, *self._row_policy(leaf, leaf.view)]:
            if d.view is None:
                if not view.time:
                    raise QueryError(f"view `{leaf.view}` has no time column, so `{d.text}` cannot apply to "
                                     f"{', '.join(m.metric for m in leaf.metrics)}", f"give view `{leaf.view}` a `time:`")
                continue
            try:
                target, path = self.graph.nearest(leaf.view, d)
            except QueryError as e:
                raise QueryError(f"{e.message} (metric {', '.join(m.metric for m in leaf.metrics)})",
                                 e.suggestion) from None
            leaf.dim_views[d.text] = target
            for hop in path:
                if hop not in leaf.joins:
                    leaf.joins.append(hop)
        if (self.query.time_range or leaf.cumulative) and not view.time:
            raise QueryError(f"view `{leaf.view}` has no time column for the time range", "give it a `time:`")

    def _route_conversion(self, leaf: Leaf, needed: list[DimRef]) -> None:
        cv = leaf.conversion
        stream = self.streams[cv.stream]
        base = stream.activity(cv.base)
        features = {f.name for f in base.features}
        entity_view = next((v for v in self.graph.views.values()
                            for e in v.entities if e.name == stream.entity and v.primary_key == e.expr), None)
        if entity_view is None and not leaf.public and self.access.rows:
            raise Forbidden(f"conversion metric {leaf.metrics[0].metric} has no view of its entity "
                            f"`{stream.entity}` for your access policy to filter", "ask for it with a role that "
                            "sees every row, or give the entity a view")
        for d in [*needed, *self._row_policy(leaf, entity_view.name if entity_view else None)]:
            if d.view is None:
                continue
            if d.name in features and "." not in d.text:
                leaf.feature_dims[d.output] = d.name
                continue
            try:
                target, path = self.graph.nearest(entity_view.name, d) if entity_view else (None, None)
            except QueryError:
                path = None
            if path is None:
                raise QueryError(f"dimension `{d.text}` is not a feature of `{cv.base}` nor reachable from entity "
                                 f"`{stream.entity}` (conversion metric {leaf.metrics[0].metric})",
                                 f"use one of: {', '.join(sorted(features))}")
            leaf.dim_views[d.text] = target
            hops = [Hop("__base__", stream.entity, entity_view.name, entity_view.primary_key, stream.entity), *path]
            for hop in hops:
                if hop not in leaf.joins:
                    leaf.joins.append(hop)


def _instant(value) -> dt.datetime:
    return value if isinstance(value, dt.datetime) else dt.datetime.combine(value, dt.time())


def combine_offsets(a: str | None, b: str | None) -> str | None:
    if not a or not b:
        return a or b
    (na, ua), (nb, ub) = offset_parts(a), offset_parts(b)
    if ua != ub:
        raise QueryError(f"cannot combine offsets `{a}` and `{b}`", "nest offsets of the same unit only")
    return f"{na + nb} {ua}s"


def divide(num: exp.Expression, den: exp.Expression) -> exp.Expression:
    """NULL-safe division in floating point: x / 0 is NULL, never infinity or an error."""
    return exp.Div(this=cast(exp.Paren(this=num), "double"),
                   expression=exp.Nullif(this=exp.Paren(this=den), expression=exp.Literal.number(0)))


def structured_filter(f) -> exp.Expression:
    column = exp.column(f.dimension, quoted=True)
    values = [exp.convert(v) for v in f.values]
    op = f.op
    if op in ("in", "not in"):
        cond = exp.In(this=column, expressions=values)
        return exp.Not(this=cond) if op == "not in" else cond
    if op == "between":
        if len(values) != 2:
            raise QueryError(f"`between` on `{f.dimension}` needs two values", "values: [low, high]")
        return exp.Between(this=column, low=values[0], high=values[1])
    if op in ("is null", "is not null"):
        cond = exp.Is(this=column, expression=exp.Null())
        return exp.Not(this=cond) if op == "is not null" else cond
    if len(values) != 1:
        raise QueryError(f"`{op}` on `{f.dimension}` takes one value", "use `in` for several")
    cls = {"=": exp.EQ, "!=": exp.NEQ, "<>": exp.NEQ, ">": exp.GT, ">=": exp.GTE, "<": exp.LT, "<=": exp.LTE,
           "like": exp.Like}[op]
    return cls(this=column, expression=values[0])


__all__ = ["GRAINS", "METRIC_TIME", "Leaf", "Plan", "Planner"]
