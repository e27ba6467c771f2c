"""Datasets: a primary activity plus temporal joins (MODEL.md §3), compiled to one sqlglot SELECT.

Each pick relationship (first/last/nth × ever/before/after/in_between) becomes a LEFT JOIN whose ON clause
selects at most one row per primary row, using the stored occurrence, next and previous timestamps
instead of a window over the join. Aggregates are grouped per entity (`aggregate_all_ever`) or over a
range join per primary row. Only first/last with extra `join` conditions fall back to ranking candidates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import sqlglot
from sqlglot import exp

from semantic.activity.stream import PREV, base_columns, cast_to, col, entity_key, ident, occurrence_columns
from semantic.project.model import Activity, Append, Column, Dataset, Stream
from semantic.sqltree import with_ctes

TableOf = Callable[[Stream, Activity], exp.Table]
ORDER_COLUMNS = ("activity_occurrence", "activity_repeated_at", PREV)
ZERO_FILL = {"phloem": {"count", "count_distinct", "sum_bool"}, "dbt_aql": {"count", "count_distinct", "sum", "sum_bool"}}


@dataclass(frozen=True)
class _Scope:
    """How names in a user expression resolve: table alias per qualifier, and which ones read as text."""

    default: str
    qualified: dict[str, str]
    text: frozenset[str]


def bind(sql: str, scope: _Scope, dialect: str = "duckdb") -> exp.Expression:
    """Parse a user SQL expression (in the warehouse's dialect) and point its columns at our table aliases."""
    tree = sqlglot.parse_one(sql, read=dialect)

    def fix(node: exp.Expression) -> exp.Expression:
        if not isinstance(node, exp.Column):
            return node
        qualifier = node.table or ""
        alias = scope.qualified.get(qualifier, scope.default) if qualifier else scope.default
        bound = col(node.name, alias)
        # feature_json.x (and joined./primary.x in dbt-aql compat) reads the feature as text, as dbt-aql's JSON does
        return exp.cast(bound, "text") if qualifier in scope.text else bound

    return tree.transform(fix)


def first(x: exp.Expression, order: list[exp.Ordered], dialect: str) -> exp.Expression:
    """The first non-NULL value of x in `order` (dbt-aql's min(ts || value) skips NULLs too), NULL if none.

    DuckDB: FIRST(x ORDER BY …) FILTER (WHERE x IS NOT NULL); elsewhere the head of the filtered array.
    """
    present = exp.Where(this=exp.not_(exp.Is(this=x.copy(), expression=exp.Null())))
    if dialect == "duckdb":
        return exp.Filter(this=exp.First(this=exp.Order(this=x, expressions=order)), expression=present)
    head = exp.Literal.number(1)  # offset=1: already 1-based, sqlglot must not shift it
    values = exp.Filter(this=exp.ArrayAgg(this=exp.Order(this=x, expressions=order)), expression=present)
    return exp.Bracket(this=exp.Paren(this=values), expressions=[head], offset=1)


class DatasetCompiler:
    def __init__(self, stream: Stream, dataset: Dataset, table_of: TableOf,
                 includes: dict[str, tuple[str, Append]] | None = None, dialect: str = "duckdb"):
        self.stream, self.dataset, self.table_of, self.dialect = stream, dataset, table_of, dialect
        self.compat = dataset.compat
        self.ctes: list[tuple[str, exp.Expression]] = []
        self.appends = list(dataset.append)
        for name in dataset.include:  # `include (x)`: the dataset column's single column, renamed to x
            _, ap = (includes or {})[name]
            self.appends.append(ap.model_copy(update={"columns": (ap.columns[0].model_copy(update={"name": name}),)}))

    # ------------------------------------------------------------ sources

    def source(self, activity: Activity, filters: tuple[str, ...], keys: list[str] = ()) -> exp.Expression:
        """The rows of one activity after its filters, with occurrence recomputed when they changed."""
        table = self.table_of(self.stream, activity)
        if not filters and not keys:
            return table
        scope = _Scope("t", {"feature_json": "t"}, frozenset({"feature_json"}))
        cols = [col(c, "t") for c in base_columns(self.stream, activity)]
        q = exp.select(*cols, *occurrence_columns(self.stream, "t", [col(k, "t") for k in keys]))
        q = q.from_(exp.alias_(table, "t", table=True))
        for f in filters:
            q = q.where(self.bind(f, scope))
        return q

    def bind(self, sql: str, scope: _Scope) -> exp.Expression:
        return bind(sql, scope, self.dialect)

    def cte(self, name: str, query: exp.Expression) -> exp.Table:
        if isinstance(query, exp.Table):
            return query
        self.ctes.append((name, query))
        return exp.Table(this=ident(name))

    # ------------------------------------------------------------ compile

    def select(self) -> exp.Select:
        d, s = self.dataset, self.stream
        primary = s.activity(d.primary.activity)
        p_rows = self.cte("primary_rows", self.source(primary, d.primary.filter))
        cohort = exp.select(exp.Star()).from_(p_rows)
        sel = d.primary
        cohort = cohort.where({
            "all": None,
            "first": exp.EQ(this=col("activity_occurrence"), expression=exp.Literal.number(1)),
            "last": exp.Is(this=col("activity_repeated_at"), expression=exp.Null()),
            "nth": exp.EQ(this=col("activity_occurrence"), expression=exp.Literal.number(sel.nth or 0)),
        }[sel.select]) if sel.select != "all" else cohort
        cohort_table = self.cte("cohort", cohort)

        pscope = _Scope("p", {"feature_json": "p"}, frozenset({"feature_json"}))
        outputs = [exp.alias_(self.column_expr(c, pscope, None), c.name, quoted=True) for c in d.columns]
        query = exp.select().from_(exp.alias_(cohort_table, "p", table=True))
        for i, ap in enumerate(self.appends, start=1):
            query, cols = self.join(query, ap, f"j{i}")
            outputs += cols
        query = query.select(*outputs, copy=False)
        # stored in time order, so a time-range filter on the dataset skips whole blocks (zone maps)
        query = query.order_by(col("ts", "p"), col("activity_id", "p"), copy=False)
        return with_ctes(query, self.ctes)

    def column_expr(self, c: Column, scope: _Scope, agg_alias: str | None) -> exp.Expression:
        if agg_alias is not None:  # aggregated in a CTE under the column's own name
            value: exp.Expression = col(c.name, agg_alias)
            zero = c.agg in ZERO_FILL[self.compat]
            fill = c.fill if c.fill is not None else (0 if zero else None)
        else:
            value = self.bind(c.expr, scope) if c.expr else col(c.name, scope.default)
            fill = c.fill
        if c.type:
            value = cast_to(value, c.type, self.dialect)
        if fill is not None:
            value = exp.Coalesce(this=value, expressions=[exp.convert(fill)])
        return value

    # ------------------------------------------------------------ joins

    def join(self, query: exp.Select, ap: Append, alias: str) -> tuple[exp.Select, list[exp.Expression]]:
        s = self.stream
        activity = s.activity(ap.activity)
        keys = [k.joined for k in ap.join_keys]
        rows = self.cte(f"{alias}_rows", self.source(activity, ap.filter, keys))
        text = frozenset({"feature_json", "joined", "primary"} if self.compat == "dbt_aql" else {"feature_json"})
        jscope = _Scope(alias, {"feature_json": alias, "joined": alias, "primary": "p"}, text)
        on = [exp.EQ(this=entity_key(s, "p"), expression=entity_key(s, alias))]
        on += [exp.EQ(this=col(k.primary, "p"), expression=col(k.joined, alias)) for k in ap.join_keys]
        extra = [self.bind(j, jscope) for j in ap.join]

        if ap.is_aggregate:
            return self.aggregate(query, ap, alias, rows, on, extra, jscope)
        kind, _, window = ap.relationship.partition("_")
        picked = self.pick(kind, window, ap.nth, alias)
        if extra and kind != "nth":  # first/last among candidates passing extra conditions: rank them
            return self.ranked(query, ap, alias, rows, on + self.window(window, alias) + extra, jscope, kind)
        cond = exp.and_(*on, *picked, *extra)
        query = query.join(exp.alias_(rows, alias, table=True), on=cond, join_type="left")
        scope = _Scope(alias, jscope.qualified, jscope.text)
        return query, [exp.alias_(self.column_expr(c, scope, None), c.name, quoted=True) for c in ap.columns]

    def window(self, window: str, j: str) -> list[exp.Expression]:
        """Candidate rows by time: strict before/after; in between runs to the next primary row."""
        jts, pts, nxt = col("ts", j), col("ts", "p"), col("activity_repeated_at", "p")
        if window in ("ever", "all_ever"):
            return []
        if window == "before":
            return [exp.LT(this=jts, expression=pts)]
        if window == "after":
            return [exp.GT(this=jts, expression=pts)]
        upper = exp.LT if self.compat == "dbt_aql" else exp.LTE
        return [exp.GT(this=jts, expression=pts),
                exp.or_(exp.Is(this=nxt.copy(), expression=exp.Null()), upper(this=jts.copy(), expression=nxt.copy()))]

    def pick(self, kind: str, window: str, nth: int | None, j: str) -> list[exp.Expression]:
        """ON conditions that leave exactly the one picked candidate, from stored order columns."""
        occ, rep, prev = col("activity_occurrence", j), col("activity_repeated_at", j), col(PREV, j)
        jts, pts, nxt = col("ts", j), col("ts", "p"), col("activity_repeated_at", "p")
        is_null = lambda e: exp.Is(this=e.copy(), expression=exp.Null())  # noqa: E731
        if kind == "nth":
            return [exp.EQ(this=occ, expression=exp.Literal.number(nth)), *self.window(window, j)]
        if window == "ever":
            return [exp.EQ(this=occ, expression=exp.Literal.number(1)) if kind == "first" else is_null(rep)]
        if window == "before":
            if kind == "first":
                return [exp.EQ(this=occ, expression=exp.Literal.number(1)), exp.LT(this=jts, expression=pts)]
            # the last one before p: its next occurrence is at or after p (or there is none)
            return [exp.LT(this=jts, expression=pts), exp.or_(is_null(rep), exp.GTE(this=rep.copy(), expression=pts.copy()))]
        first_after = [exp.GT(this=jts, expression=pts), exp.or_(is_null(prev), exp.LTE(this=prev.copy(), expression=pts.copy()))]
        if window == "after":
            return first_after if kind == "first" else [is_null(rep), exp.GT(this=jts.copy(), expression=pts.copy())]
        # in_between: (p.ts, next] (dbt-aql: (p.ts, next)); open-ended on the last primary row
        if kind == "first":
            return [*first_after, *self.window("in_between", j)[1:]]
        strict = self.compat == "dbt_aql"
        in_window = (exp.LT if strict else exp.LTE)(this=jts.copy(), expression=nxt.copy())
        beyond = (exp.GTE if strict else exp.GT)(this=rep.copy(), expression=nxt.copy())
        return [exp.GT(this=jts.copy(), expression=pts.copy()), exp.or_(
            exp.and_(is_null(nxt), is_null(rep)),
            exp.and_(in_window, exp.or_(is_null(rep), beyond)),
        )]

    def row_key(self, p: str, alias: bool = False) -> list[exp.Expression]:
        """What tells primary rows apart: entity and occurrence (activity_id may repeat, e.g. identical rows)."""
        key = [entity_key(self.stream, p), col("activity_occurrence", p)]
        return [exp.alias_(k, f"_pid{i}", quoted=True) for i, k in enumerate(key)] if alias else key

    def same_row(self, table: str) -> list[exp.Expression]:
        """ON conditions matching a per-primary-row CTE (keyed by `row_key(alias=True)`) to the primary row."""
        return [exp.EQ(this=col(f"_pid{i}", table), expression=k) for i, k in enumerate(self.row_key("p"))]

    def ranked(self, query, ap: Append, alias: str, rows, cond: list, jscope: _Scope, kind: str):
        """first/last with extra join conditions: rank the candidates of each primary row."""
        desc = kind == "last"
        order = exp.Order(expressions=[exp.Ordered(this=col("ts", alias), desc=desc),
                                       exp.Ordered(this=col("activity_id", alias), desc=desc)])
        rank = exp.Window(this=exp.RowNumber(), partition_by=self.row_key("p"), order=order)
        values = [exp.alias_(self.column_expr(c, jscope, None), c.name, quoted=True) for c in ap.columns]
        candidates = exp.select(*self.row_key("p", alias=True), *values, exp.alias_(rank, "_rank", quoted=True))
        candidates = candidates.from_(exp.alias_(exp.Table(this=ident("cohort")), "p", table=True))
        candidates = candidates.join(exp.alias_(rows, alias, table=True), on=exp.and_(*cond), join_type="inner")
        picked = exp.select(exp.Star()).from_(candidates.subquery("c")).where(
            exp.EQ(this=col("_rank", "c"), expression=exp.Literal.number(1)))
        name = f"{alias}_picked"
        self.ctes.append((name, picked))
        query = query.join(exp.alias_(exp.Table(this=ident(name)), alias, table=True),
                           on=exp.and_(*self.same_row(alias)), join_type="left")
        return query, [exp.alias_(col(c.name, alias), c.name, quoted=True) for c in ap.columns]

    def aggregate(self, query, ap: Append, alias: str, rows, on: list, extra: list, jscope: _Scope):
        values = [exp.alias_(self.agg_expr(c, jscope, alias), c.name, quoted=True) for c in ap.columns]
        name = f"{alias}_agg"
        if ap.relationship == "aggregate_all_ever" and not extra:
            # one aggregate per entity (and keys), whatever the primary row's time
            keys = [exp.alias_(entity_key(self.stream, alias), "_key", quoted=True)]
            keys += [exp.alias_(col(k.joined, alias), f"_k{i}", quoted=True) for i, k in enumerate(ap.join_keys)]
            grouped = exp.select(*keys, *values).from_(exp.alias_(rows, alias, table=True))
            grouped = grouped.group_by(*(exp.Literal.number(i + 1) for i in range(len(keys))))
            self.ctes.append((name, grouped))
            cond = [exp.EQ(this=entity_key(self.stream, "p"), expression=col("_key", name))]
            cond += [exp.EQ(this=col(k.primary, "p"), expression=col(f"_k{i}", name)) for i, k in enumerate(ap.join_keys)]
        else:
            window = ap.relationship.removeprefix("aggregate_")
            joined = exp.select(*self.row_key("p", alias=True), *values)
            joined = joined.from_(exp.alias_(exp.Table(this=ident("cohort")), "p", table=True))
            joined = joined.join(exp.alias_(rows, alias, table=True),
                                 on=exp.and_(*on, *self.window(window, alias), *extra), join_type="inner")
            self.ctes.append((name, joined.group_by(exp.Literal.number(1), exp.Literal.number(2))))
            cond = self.same_row(name)
        query = query.join(exp.Table(this=ident(name)), on=exp.and_(*cond), join_type="left")
        return query, [exp.alias_(self.column_expr(c, jscope, name), c.name, quoted=True) for c in ap.columns]

    def agg_expr(self, c: Column, scope: _Scope, j: str) -> exp.Expression:
        x = self.bind(c.expr, scope) if c.expr else (col(c.name, j) if c.agg != "count" else None)
        order = [exp.Ordered(this=col("ts", j)), exp.Ordered(this=col("activity_id", j))]
        if c.agg == "count":
            return exp.Count(this=x if x is not None else exp.Star())
        if c.agg == "count_distinct":
            return exp.Count(this=exp.Distinct(expressions=[x]))
        if c.agg in ("first_value", "last_value"):
            if c.agg == "last_value":
                order = [exp.Ordered(this=o.this, desc=True) for o in order]
            return first(x, order, self.dialect)
        if c.agg == "listagg":
            return exp.GroupConcat(this=exp.Order(this=exp.cast(x, "text"), expressions=order),
                                   separator=exp.Literal.string(","))
        if c.agg == "listagg_distinct":
            distinct = exp.Distinct(expressions=[exp.cast(x, "text")])
            return exp.GroupConcat(this=exp.Order(this=distinct, expressions=[exp.Ordered(this=exp.cast(x.copy(), "text"))]),
                                   separator=exp.Literal.string(","))
        if c.agg == "is_null":
            return exp.EQ(this=exp.Count(this=x), expression=exp.Literal.number(0))
        if c.agg == "not_null":
            return exp.GT(this=exp.Count(this=x), expression=exp.Literal.number(0))
        if c.agg == "sum_bool":
            return exp.Sum(this=exp.cast(exp.cast(x, "boolean"), "int"))
        func = {"sum": exp.Sum, "avg": exp.Avg, "min": exp.Min, "max": exp.Max, "median": exp.Median}[c.agg]
        return func(this=x)


def compile_dataset(stream: Stream, dataset: Dataset, table_of: TableOf,
                    includes: dict[str, tuple[str, Append]] | None = None, dialect: str = "duckdb") -> exp.Select:
    return DatasetCompiler(stream, dataset, table_of, includes, dialect).select()
