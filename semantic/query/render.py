"""Plan → one sqlglot SELECT: each leaf aggregated in its own view at the query grain, then merged.

Leaves are merged by UNION ALL + GROUP BY on the query's dimensions (every leaf has one row per group, so
MAX picks its value): an outer join of any number of leaves, NULL-safe on the dimensions, with no fan-out.
"""

from __future__ import annotations

import datetime as dt

from sqlglot import exp

from semantic.activity.stream import entity_key
from semantic.errors import QueryError
from semantic.query import rollup_sql
from semantic.query.graph import SemanticGraph, bind_columns
from semantic.query.plan import Leaf, Plan
from semantic.query.sqlparts import agg, duration, interval, localize, timestamp, truncate, view_condition
from semantic.sqltree import cast, col, ident, with_ctes


class Renderer:
    def __init__(self, graph: SemanticGraph, plan: Plan, dialect: str = "duckdb"):
        self.graph, self.plan, self.dialect = graph, plan, dialect
        self.ctes: list[tuple[str, exp.Expression]] = []
        self.dims = plan.dims
        self.filter_refs = {d.text: d for d in plan.filter_dims}

    # ------------------------------------------------------------ per leaf

    def dim_expr(self, leaf: Leaf, d, time_alias: str | None = None) -> exp.Expression:
        if leaf.rollup is not None:
            return rollup_sql.dim_value(leaf.rollup, leaf, d, leaf.view)
        if d.view is None:
            if leaf.kind == "conversion":
                value = col("ts", "__base__")
            else:
                view = self.graph.views[leaf.view]
                value = bind_columns(self.graph.dims[leaf.view][view.time].sql, time_alias or leaf.view)
        elif leaf.kind == "conversion" and d.output in leaf.feature_dims:
            value = col(leaf.feature_dims[d.output], "__base__")
        else:
            view = leaf.dim_views.get(d.text, d.view)
            value = bind_columns(self.graph.dims[view][d.name].sql, view)
        return truncate(self.local(value), d.grain) if d.grain else value

    def local(self, value: exp.Expression) -> exp.Expression:
        """Timestamps are naive UTC; the project's `timezone:` converts them before bucketing."""
        return localize(value, self.graph.model.settings.timezone)

    def time_column(self, leaf: Leaf) -> exp.Expression:
        if leaf.kind == "conversion":
            return col("ts", "__base__")
        if leaf.rollup is not None:  # bucket starts: only used where the matcher checked they are UTC edges
            return cast(col(leaf.rollup.spec.bucket, leaf.view), "timestamp")
        view = self.graph.views[leaf.view]
        return cast(bind_columns(self.graph.dims[leaf.view][view.time].sql, leaf.view), "timestamp")

    def where(self, leaf: Leaf, with_time: bool = True) -> list[exp.Expression]:
        conds = []
        for f in self.plan.filters:
            def bind(node, leaf=leaf):
                if isinstance(node, exp.Column) and node.name in self.filter_refs:
                    return exp.Paren(this=self.dim_expr(leaf, self.filter_refs[node.name]))
                return node
            conds.append(f.copy().transform(bind))
        if leaf.row_filter is not None:  # the access policy's rows: bound like a filter, on this leaf only
            refs = {d.text: d for d in leaf.row_dims}
            conds.append(exp.Paren(this=leaf.row_filter.copy().transform(
                lambda n: exp.Paren(this=self.dim_expr(leaf, refs[n.name]))
                if isinstance(n, exp.Column) and n.name in refs else n)))
        tr = self.plan.query.time_range
        if with_time and tr and leaf.rollup is not None:
            conds += rollup_sql.range_conditions(leaf.rollup, leaf.view)
        elif with_time and tr:
            conds += self.range_conditions(self.time_column(leaf), tr.start, tr.end, leaf.offset)
        return conds

    def range_conditions(self, ts, start, end, offset: str | None) -> list[exp.Expression]:
        """time_range at row level; a date `end` includes its whole day; offsets look further back."""
        if offset:
            return self.shifted_range(ts, start, end, offset)
        conds = []
        if start is not None:
            conds.append(exp.GTE(this=ts.copy(), expression=timestamp(start)))
        if end is not None:
            if isinstance(end, dt.datetime):
                conds.append(exp.LTE(this=ts.copy(), expression=timestamp(end)))
            else:
                conds.append(exp.LT(this=ts.copy(), expression=timestamp(end + dt.timedelta(days=1))))
        return conds

    def shifted_range(self, ts, start, end, offset: str) -> list[exp.Expression]:
        """Rows an offset input needs: the buckets (range's buckets − offset), whole."""
        grain = self.plan.grain
        back = lambda v: cast(truncate(exp.Sub(this=cast(truncate(timestamp(v), grain), "timestamp"),  # noqa: E731
                                                   expression=duration(offset)), grain), "timestamp")
        conds = []
        if start is not None:
            conds.append(exp.GTE(this=ts.copy(), expression=back(start)))
        if end is not None:
            conds.append(exp.LT(this=ts.copy(), expression=exp.Add(this=back(end), expression=interval(1, grain))))
        return conds

    def source(self, leaf: Leaf) -> exp.Select:
        """FROM the leaf's view, LEFT JOINed many-to-one to every view its dimensions live in."""
        if leaf.kind == "conversion":
            query = exp.select().from_(self.conversion_base(leaf))
        elif leaf.rollup is not None:  # the rollup holds every dimension already: no joins
            relation = rollup_sql.relation(self.graph, leaf.rollup, self.dialect)
            return exp.select().from_(exp.alias_(relation, leaf.view, table=True))
        else:
            query = exp.select().from_(exp.alias_(self.graph.relation(leaf.view), leaf.view, table=True))
        for hop in leaf.joins:
            on = exp.EQ(this=col(hop.source_column, hop.source), expression=col(hop.target_column, hop.target))
            query = query.join(exp.alias_(self.graph.relation(hop.target), hop.target, table=True), on=on,
                               join_type="left", copy=False)
        return query

    def measure_value(self, leaf: Leaf, m) -> tuple[exp.Expression | None, exp.Expression | None]:
        """The measure's argument and its filter (measure filter AND metric filter), bound to the view."""
        measure = m.measure
        if leaf.rollup is not None:
            return rollup_sql.partial(leaf.rollup, m, leaf.view), rollup_sql.metric_condition(leaf.rollup, m, leaf.view)
        value = None if (measure.agg == "count" and not measure.expr) else bind_columns(measure.expr or measure.name,
                                                                                         leaf.view)
        conds = [self.view_condition(leaf.view, f) for f in (measure.filter, m.filter) if f]
        return value, (exp.and_(*conds) if conds else None)

    def view_condition(self, view: str, sql: str) -> exp.Expression:
        return view_condition(self.graph, view, sql)

    def aggregate(self, leaf: Leaf, m, value_of=None) -> exp.Expression:
        if leaf.rollup is not None:
            return rollup_sql.reaggregate(leaf.rollup, m, leaf.view, self.dialect, value_of)
        value, cond = value_of(m) if value_of else self.measure_value(leaf, m)
        result = agg(m.measure, value, self.dialect)
        return exp.Filter(this=result, expression=exp.Where(this=cond)) if cond is not None else result

    def leaf_query(self, leaf: Leaf) -> exp.Expression:
        if leaf.kind == "conversion":
            return self.conversion(leaf)
        if leaf.kind == "cumulative":
            return self.cumulative(leaf)
        query = self.source(leaf)
        outputs = [exp.alias_(self.dim_expr(leaf, d), d.output, quoted=True) for d in self.dims]
        aggs = [exp.alias_(self.aggregate(leaf, m), m.column, quoted=True) for m in leaf.metrics]
        query = query.select(*outputs, *aggs, copy=False)
        for cond in self.where(leaf):
            query = query.where(cond, copy=False)
        if self.dims:
            query = query.group_by(*(exp.Literal.number(i + 1) for i in range(len(self.dims))), copy=False)
        return query

    # ------------------------------------------------------------ cumulative

    def cumulative(self, leaf: Leaf) -> exp.Expression:
        """Each period's value over its window: periods where the base has rows × the rows in their window."""
        c, grain = leaf.cumulative, self.plan.grain
        other = [d for d in self.dims if d.view is not None]
        rows_name, periods_name = f"{leaf.name}_rows", f"{leaf.name}_periods"
        rows = self.source(leaf).select(
            *(exp.alias_(self.dim_expr(leaf, d), d.output, quoted=True) for d in other),
            exp.alias_(self.time_column(leaf), "__ts", quoted=True))
        for i, m in enumerate(leaf.metrics):
            value, cond = self.measure_value(leaf, m)
            rows = rows.select(exp.alias_(value if value is not None else exp.Literal.number(1), f"__v{i}", quoted=True),
                               exp.alias_(cond if cond is not None else exp.true(), f"__f{i}", quoted=True), copy=False)
        for cond in self.where(leaf, with_time=False):
            rows = rows.where(cond, copy=False)
        tr = self.plan.query.time_range
        if tr and tr.end is not None:  # inputs come from all data up to the range's end
            rows = rows.where(self.range_conditions(col("__ts", None), None, tr.end, None)[0].transform(
                lambda n: self.time_column(leaf) if isinstance(n, exp.Column) and n.name == "__ts" else n), copy=False)
        self.ctes.append((rows_name, rows))
        r = lambda name: col(name, "r")  # noqa: E731
        value_of = lambda m: (r(f"__v{leaf.metrics.index(m)}"), r(f"__f{leaf.metrics.index(m)}"))  # noqa: E731
        if grain is None:  # no metric_time: the value at the end of the range (or of the data)
            end = self.range_end(rows_name)
            query = exp.select(*(exp.alias_(r(d.output), d.output, quoted=True) for d in other),
                               *(exp.alias_(self.aggregate(leaf, m, value_of), m.column, quoted=True)
                                 for m in leaf.metrics))
            query = query.from_(exp.alias_(exp.Table(this=ident(rows_name)), "r", table=True), copy=False)
            query = query.where(exp.LT(this=r("__ts"), expression=end), copy=False)
            start = self.window_start(c, end)
            if start is not None:
                query = query.where(exp.GTE(this=r("__ts"), expression=start), copy=False)
            if other:
                query = query.group_by(*(exp.Literal.number(i + 1) for i in range(len(other))), copy=False)
            return query
        times = [d for d in self.dims if d.view is None]
        label = next(d.output for d in times if d.grain == grain)  # the finest grain drives the window
        periods = exp.select(*(col(d.output) for d in other),
                             *(exp.alias_(truncate(col("__ts"), d.grain), d.output, quoted=True) for d in times))
        periods = periods.distinct().from_(exp.Table(this=ident(rows_name)), copy=False)
        for cond in self.range_conditions(col("__ts"), tr.start if tr else None, tr.end if tr else None, None):
            periods = periods.where(cond, copy=False)
        self.ctes.append((periods_name, periods))
        keys = [d.output for d in self.dims]
        if c.period_agg == "avg":
            # the mean over every day of the period (within the range) of that day's cumulative value
            days = exp.select(*(col(k, "p") for k in keys), exp.alias_(cast(col("t", "d"), "timestamp"), "__day",
                                                                         quoted=True))
            first = cast(col(label, "p"), "timestamp")
            series = exp.Anonymous(this="GENERATE_SERIES", expressions=[
                first, exp.Sub(this=exp.Add(this=first.copy(), expression=interval(1, grain)),
                               expression=interval(1, "day")), interval(1, "day")])
            days = days.from_(exp.alias_(exp.Table(this=ident(periods_name)), "p", table=True), copy=False).join(
                exp.Table(this=series, alias=exp.TableAlias(this=ident("d"), columns=[ident("t")])), join_type="cross",
                copy=False)
            for cond in self.range_conditions(col("t", "d"), tr.start if tr else None, tr.end if tr else None, None):
                days = days.where(cond, copy=False)
            self.ctes.append((f"{leaf.name}_days", days))
            end = exp.Add(this=col("__day", "p"), expression=interval(1, "day"))
            daily = self.window_join(leaf, f"{leaf.name}_days", rows_name, [*keys, "__day"], end, "left", value_of)
            self.ctes.append((f"{leaf.name}_daily", daily))
            query = exp.select(*(exp.alias_(col(k), k, quoted=True) for k in keys), *(
                exp.alias_(exp.Avg(this=exp.Coalesce(this=col(m.column), expressions=[exp.Literal.number(0)])),
                           m.column, quoted=True) for m in leaf.metrics))
            query = query.from_(exp.Table(this=ident(f"{leaf.name}_daily")), copy=False)
            return query.group_by(*(exp.Literal.number(i + 1) for i in range(len(keys))), copy=False)
        step = grain if c.period_agg != "first" else ("hour" if grain == "hour" else "day")
        end = exp.Add(this=cast(col(label, "p"), "timestamp"), expression=interval(1, step))
        if tr and tr.end is not None and c.period_agg == "last":  # a period cut by the range ends with it
            end = exp.Least(this=end, expressions=[self.range_end(rows_name)])
        return self.window_join(leaf, periods_name, rows_name, keys, end, "inner", value_of)

    def window_join(self, leaf: Leaf, periods: str, rows: str, keys: list[str], end: exp.Expression, how: str,
                    value_of) -> exp.Select:
        """Aggregate, for each period row, the input rows inside its window ending at `end`."""
        other = [d.output for d in self.dims if d.view is not None]
        on = [exp.NullSafeEQ(this=col(o, "r"), expression=col(o, "p")) for o in other]
        on.append(exp.LT(this=col("__ts", "r"), expression=end))
        start = self.window_start(leaf.cumulative, end.copy())
        if start is not None:
            on.append(exp.GTE(this=col("__ts", "r"), expression=start))
        query = exp.select(*(exp.alias_(col(k, "p"), k, quoted=True) for k in keys),
                           *(exp.alias_(self.aggregate(leaf, m, value_of), m.column, quoted=True)
                             for m in leaf.metrics))
        query = query.from_(exp.alias_(exp.Table(this=ident(periods)), "p", table=True), copy=False)
        query = query.join(exp.alias_(exp.Table(this=ident(rows)), "r", table=True), on=exp.and_(*on),
                           join_type=how, copy=False)
        return query.group_by(*(exp.Literal.number(i + 1) for i in range(len(keys))), copy=False)

    def window_start(self, c, end: exp.Expression) -> exp.Expression | None:
        if c.window:
            return exp.Sub(this=end, expression=duration(c.window))
        if c.grain_to_date:
            last_instant = exp.Sub(this=end, expression=interval(1, "microsecond"))
            return cast(exp.Anonymous(this="DATE_TRUNC", expressions=[exp.Literal.string(c.grain_to_date),
                                                                         last_instant]), "timestamp")
        return None

    def range_end(self, rows_name: str) -> exp.Expression:
        tr = self.plan.query.time_range
        if tr and tr.end is not None:
            end = tr.end if isinstance(tr.end, dt.datetime) else tr.end + dt.timedelta(days=1)
            return timestamp(end)
        latest = exp.select(exp.Max(this=col("__ts"))).from_(exp.Table(this=ident(rows_name)))
        return exp.Add(this=exp.Subquery(this=latest), expression=interval(1, "microsecond"))

    # ------------------------------------------------------------ conversion

    def conversion_base(self, leaf: Leaf) -> exp.Expression:
        cv = leaf.conversion
        stream = self.graph.model.streams[cv.stream]
        schema = self.graph.schema
        base = exp.Table(this=ident(f"{stream.name}__{cv.base}"), db=ident(schema))
        conv = exp.Table(this=ident(f"{stream.name}__{cv.conversion}"), db=ident(schema))
        converted = exp.select(exp.Literal.number(1)).from_(exp.alias_(conv, "c", table=True)).where(exp.and_(
            exp.EQ(this=entity_key(stream, "c"), expression=entity_key(stream, "b")),
            exp.GT(this=col("ts", "c"), expression=col("ts", "b")),
            exp.LTE(this=col("ts", "c"), expression=exp.Add(this=col("ts", "b"), expression=duration(cv.window))),
        ))
        rows = exp.select(exp.Star(), exp.alias_(exp.Exists(this=converted), "__converted", quoted=True))
        return exp.alias_(exp.Subquery(this=rows.from_(exp.alias_(base, "b", table=True), copy=False)), "__base__", table=True)

    def conversion(self, leaf: Leaf) -> exp.Expression:
        cv = leaf.conversion
        converted = exp.Filter(this=exp.Count(this=exp.Star()),
                               expression=exp.Where(this=col("__converted", "__base__")))
        value = converted if cv.calculation == "count" else exp.Div(
            this=cast(converted, "double"), expression=exp.Nullif(this=exp.Count(this=exp.Star()),
                                                                      expression=exp.Literal.number(0)))
        query = self.source(leaf).select(*(exp.alias_(self.dim_expr(leaf, d), d.output, quoted=True) for d in self.dims),
                                         exp.alias_(value, leaf.metrics[0].column, quoted=True))
        for cond in self.where(leaf):
            query = query.where(cond, copy=False)
        if self.dims:
            query = query.group_by(*(exp.Literal.number(i + 1) for i in range(len(self.dims))), copy=False)
        return query

    # ------------------------------------------------------------ the whole query

    def render(self) -> exp.Select:
        plan = self.plan
        base = [leaf for leaf in plan.leaves if not leaf.offset]
        shifted = [leaf for leaf in plan.leaves if leaf.offset]
        if not base:
            raise QueryError("every metric of this query reads only earlier periods",
                             "add a metric without an offset, e.g. the metric being compared")
        home: dict[str, str] = {}
        for leaf in plan.leaves:
            self.ctes.append((leaf.name, self.leaf_query(leaf)))
            for m in leaf.metrics:
                home[m.column] = leaf.name
        outputs = [d.output for d in self.dims]
        if len(base) == 1:
            merged = exp.Table(this=ident(base[0].name))
            for m in base[0].metrics:
                home[m.column] = "merged"
        else:
            columns = [m.column for leaf in base for m in leaf.metrics]
            owner = {m.column: leaf.name for leaf in base for m in leaf.metrics}
            branches = []
            for leaf in base:
                mine = {m.column for m in leaf.metrics}
                branches.append(exp.select(*(col(o) for o in outputs),
                                           *(col(c) if c in mine else exp.alias_(self.missing(owner[c], c), c, quoted=True)
                                             for c in columns)).from_(exp.Table(this=ident(leaf.name))))
            union = branches[0]
            for b in branches[1:]:
                union = exp.union(union, b, distinct=False)
            merged_q = exp.select(*(col(o) for o in outputs),
                                  *(exp.alias_(exp.Max(this=col(c)), c, quoted=True) for c in columns))
            merged_q = merged_q.from_(exp.Subquery(this=union, alias=exp.TableAlias(this=ident("u"))), copy=False)
            if outputs:
                merged_q = merged_q.group_by(*(exp.Literal.number(i + 1) for i in range(len(outputs))), copy=False)
            self.ctes.append(("merged_leaves", merged_q))
            merged = exp.Table(this=ident("merged_leaves"))
            for c in columns:
                home[c] = "merged"
        if plan.spine:
            merged = self.spine(merged)
        query = exp.select(*(exp.alias_(col(o, "merged"), o, quoted=True) for o in outputs))
        query = query.from_(exp.alias_(merged, "merged", table=True), copy=False)
        for leaf in shifted:
            on = []
            for d in self.dims:
                if d.view is None:
                    if d.grain != plan.grain:
                        continue  # coarser labels follow from the finest one
                    # the bucket holding (this bucket − offset): 31 March → 29 February; a week → its week
                    target = truncate(exp.Sub(this=cast(col(d.output, "merged"), "timestamp"),
                                              expression=duration(leaf.offset)), d.grain)
                    on.append(exp.EQ(this=col(d.output, leaf.name), expression=target))
                else:
                    on.append(exp.NullSafeEQ(this=col(d.output, leaf.name), expression=col(d.output, "merged")))
            query = query.join(exp.Table(this=ident(leaf.name)), on=exp.and_(*on) if on else exp.true(),
                               join_type="left", copy=False)

        def place(node):
            if isinstance(node, exp.Column) and node.table == "merged" and node.name in home:
                return col(node.name, home[node.name])
            return node

        for name, formula in plan.metrics.items():
            query = query.select(exp.alias_(formula.copy().transform(place), name, quoted=True), copy=False)
        if plan.order:
            query = query.order_by(*(exp.Ordered(this=col(name), desc=desc, nulls_first=False)
                                     for name, desc in plan.order), copy=False)
        if plan.query.limit is not None:
            query = query.limit(plan.query.limit, copy=False)
        if plan.query.offset:
            query = query.offset(plan.query.offset, copy=False)
        return with_ctes(query, self.ctes)


    def missing(self, owner: str, column: str) -> exp.Expression:
        """NULL for a column another leaf computes; typed like it where a bare NULL would not be."""
        if self.dialect == "duckdb":
            return exp.null()
        # PostgreSQL types NULL UNION ALL NULL as text, which then clashes with a third branch's numbers
        return exp.Subquery(this=exp.select(col(column)).from_(exp.Table(this=ident(owner))).limit(0))

    def spine(self, merged: exp.Table) -> exp.Table:
        """join_to_timespine: every period in range, for each combination of the other dimensions seen."""
        grain = self.plan.grain
        times = [d for d in self.dims if d.view is None]
        label = next(d.output for d in times if d.grain == grain)
        coarser = [d for d in times if d.output != label]
        other = [d.output for d in self.dims if d.view is not None]
        tr = self.plan.query.time_range
        bounds = []
        last = tr.end if tr else None
        if last is not None and not isinstance(last, dt.datetime):
            last = dt.datetime.combine(last, dt.time(23, 59, 59, 999999))
        for value, fn in ((tr.start if tr else None, exp.Min), (last, exp.Max)):
            if value is not None:
                bounds.append(cast(truncate(timestamp(value), grain), "timestamp"))
            else:
                bounds.append(cast(exp.Subquery(this=exp.select(fn(this=col(label))).from_(merged.copy())),
                                       "timestamp"))
        series = exp.Anonymous(this="GENERATE_SERIES", expressions=[*bounds, interval(1, grain)])
        periods = exp.select(exp.alias_(cast(col("t", "s"), "timestamp" if grain == "hour" else "date"), label,
                                        quoted=True))
        periods = periods.from_(exp.Table(this=series, alias=exp.TableAlias(this=ident("s"), columns=[ident("t")])), copy=False)
        seen = exp.select(*(col(o) for o in other)).distinct().from_(merged.copy())
        spine = exp.select(col(label, "p"), *(exp.alias_(truncate(col(label, "p"), d.grain), d.output, quoted=True)
                                              for d in coarser), *(col(o, "o") for o in other)).from_(periods.subquery("p"))
        if other:
            spine = spine.join(seen.subquery("o"), join_type="cross", copy=False)
        m_cols = [c for leaf in self.plan.leaves if not leaf.offset for c in (m.column for m in leaf.metrics)]
        keys = [label, *(d.output for d in coarser), *other]
        filled = exp.select(*(col(o, "sp") for o in keys), *(col(c, "m") for c in m_cols))
        filled = filled.from_(spine.subquery("sp"), copy=False).join(
            exp.alias_(merged.copy(), "m", table=True), join_type="left",
            on=exp.and_(*(exp.NullSafeEQ(this=col(o, "sp"), expression=col(o, "m")) for o in keys)))
        self.ctes.append(("spined", filled))
        return exp.Table(this=ident("spined"))


def render(graph: SemanticGraph, plan: Plan, dialect: str = "duckdb") -> exp.Select:
    return Renderer(graph, plan, dialect).render()
