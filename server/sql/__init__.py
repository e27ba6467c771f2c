"""Semantic SQL: BI-style SQL over views and the `metrics` table, answered through metric queries.

Shared by the HTTP SQL endpoint and the PostgreSQL-wire door: `SemanticSQL(project).run(sql, params)`.

Tables (schema `public`, which may be written or left out):
- one per view, named after it: a column per dimension and per measure of the view;
- `metrics`: a column per metric, per dimension (bare names; a name several views share is also there as
  `view__dim`, and a bare shared name reads, for each metric, the nearest view's dimension) and `metric_time`.
  A metric and a dimension of the same name: the column is the metric (`view__dim` reaches the dimension).
- Time dimensions are DATE columns at day grain; `name__grain` (`ordered_at__month`, `metric_time__week`)
  and `DATE_TRUNC('grain', name)` give the other grains (hour … year; DATE for day and coarser).

Rules:
1. A SELECT over one semantic table is one metric query. Its grain is its GROUP BY (dimensions, by name,
   alias or position, or DATE_TRUNC of a time dimension); without GROUP BY, the dimensions the SELECT names.
   A coarser bucket of a grouped time dimension (DATE_TRUNC('year', m) over GROUP BY m__month) is computed
   from it. GROUP BY an expression of dimensions (UPPER(channel), EXTRACT(year FROM ordered_at)) groups the
   metric query by those dimensions and the outer step again by the expression, summing sums and counts and
   keeping min and max; any other measure or a derived metric there is an error.
   The table has one row per group, never per source row: `SELECT channel FROM orders` (with or without
   DISTINCT or GROUP BY) lists the channels; `SELECT *` over a view is its non-time dimensions, grouped, with
   every measure (time dimensions are left out: they would make a row per day; name them to get them);
   `SELECT *` over `metrics` is every metric that has a total (no dimensions).
2. Measures: MEASURE(x), the measure's own aggregate (SUM for sum, COUNT for count, COUNT(DISTINCT x) or
   COUNT_DISTINCT(x) for count_distinct, AVG, MIN, MAX, MEDIAN or PERCENTILE_CONT(0.5) WITHIN GROUP (ORDER BY x)
   for median, PERCENTILE_CONT/DISC(p) for percentile) or the bare name: all mean the measure aggregated at
   the grain. Another aggregate (AVG of a sum measure) is an error naming the measure's aggregate.
   COUNT(*) (or COUNT(1)) over a view is its one `count` measure without expr and filter; zero or several is
   an error.
3. Metrics, on `metrics`: MEASURE(m), the bare name, or any of SUM/AVG/MIN/MAX/ANY_VALUE(m) mean the metric at
   the query's grain — `SUM(margin)` is the margin by the grouped dimensions, not a sum of margins (BI tools
   wrap every numeric column in an aggregate); a simple metric also answers to its measure's own aggregate.
4. Values with no measure (listing dimension values, `SELECT DISTINCT channel FROM orders`, MIN/MAX/COUNT
   DISTINCT of a dimension) are read through one count measure of the view (any measure when it has none;
   on `metrics`, of the first view that reaches every dimension asked for); its column is dropped.
5. WHERE: a plain range (>=, >, <, <=, =, BETWEEN against a literal, in top-level ANDs) on the time column
   (the view's time dimension; `metric_time` on `metrics`) becomes the query's time_range, applied at row
   level; a date bound works on whole days (`< '2024-02-01'` ends on 31 January), a bound with a time of day
   on instants. Every other condition becomes a filter over dimension names (=, <>, IN, LIKE, IS NULL, OR, NOT,
   functions …). Measures and aggregates belong in HAVING.
6. Everything around the aggregates and dimensions — arithmetic, CASE, functions, window functions, HAVING,
   ORDER BY, LIMIT/OFFSET, DISTINCT, and any outer SELECT, CTE, UNION or JOIN of semantic subqueries — runs in
   DuckDB (the outer step, see outer.py) over the answers, with PostgreSQL semantics (NULLs sort first in
   DESC). ORDER BY and LIMIT go into the metric query too when that gives the same rows; a SELECT that only
   picks columns returns the answer without the outer step.
7. Output column names follow PostgreSQL (`sum`, `count`, `?column?`), except MEASURE(x), named `x`.
8. Parameters `$1…$n` are bound as typed literals in the parsed tree. Only SELECT (and WITH … SELECT) runs:
   anything else is a read-only QueryError; joins of semantic tables, subqueries inside a semantic SELECT,
   aggregates of expressions (SUM(a - b)), FILTER, ROLLUP/CUBE/GROUPING SETS are QueryErrors saying what to
   write instead. Errors of the outer step (an unknown function, say) are QueryErrors too.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa
from cachetools import LRUCache
from sqlglot.optimizer.normalize_identifiers import normalize_identifiers

from semantic.limits import Cancel, Limits, Reading
from semantic.query.query import Query
from server.memo import ByIdentity
from server.sql import outer
from server.sql.rewrite import Rewriter, Rewritten
from server.sql.statement import name_outputs, parse
from server.sql.tables import Catalog

__all__ = ["Catalog", "SemanticSQL", "SqlAnswer"]

REWRITES = 1024  # statements (text and parameter values) kept rewritten per model version


@dataclass(frozen=True)
class SqlAnswer:
    table: pa.Table | None  # None when the answer is being streamed: see `reading`
    cached: bool  # every metric query came from the result cache
    queries: list[Query]
    reading: Reading | None = None


DOOR = object()  # "the door's own time limit", as opposed to None: no limit


class SemanticSQL:
    def __init__(self, project, timeout: float | None = None):
        self.project = project
        self.timeout = timeout  # seconds each metric query and the outer step may run (QueryTimeout after)
        self._catalog: tuple[object, Catalog] | None = None
        self._rewrites: tuple[object, LRUCache] | None = None  # (compiler, rewrites of that model version)
        self._lock = threading.Lock()
        self._picked = ByIdentity(REWRITES)  # answers' columns picked, by the answer (see cached_run)

    @property
    def catalog(self) -> Catalog:
        """The semantic tables of the project's current model (rebuilt when it reloads)."""
        compiler = self.project.compiler
        cached = self._catalog
        if cached is None or cached[0] is not compiler:
            cached = (compiler, Catalog(compiler))
            self._catalog = cached
        return cached[1]

    def rewrite(self, sql: str, params: Sequence | None = None) -> Rewritten:
        """The statement as metric queries and an outer step; repeats (same text and values) come from a cache,
        as parsing and rewriting cost a millisecond and dashboards repeat themselves."""
        rewrites, key = self._rewrites_cache(), _key(sql, params)
        if key is not None:
            with self._lock:
                hit = rewrites.get(key)
            if hit is not None:
                return hit
        statement = normalize_identifiers(parse(sql, params), dialect="postgres")
        name_outputs(statement)
        rewritten = Rewriter(self.catalog, self.project).rewrite(statement)
        if key is not None:
            with self._lock:
                rewrites[key] = rewritten
        return rewritten

    def _rewrites_cache(self) -> LRUCache:
        compiler = self.project.compiler
        held = self._rewrites
        if held is None or held[0] is not compiler:  # a new model version: its own rewrites
            held = self._rewrites = (compiler, LRUCache(maxsize=REWRITES))
        return held[1]

    def cached_run(self, sql: str, params: Sequence | None = None, limits: Limits | None = None) -> SqlAnswer | None:
        """The answer when it needs no parsing, planning or warehouse work (a repeated statement whose one
        metric query is in the result cache, its columns picked as they are), else None. Never blocks."""
        key = _key(sql, params)
        held = self._rewrites
        if key is None or held is None or held[0] is not self.project.compiler:
            return None
        with self._lock:
            plan = held[1].get(key)
        direct = plan.direct if plan is not None else None
        if direct is None or not hasattr(self.project, "cached_answer"):
            return None
        answer = self.project.cached_answer(direct.query, **({"limits": limits} if limits is not None else {}))
        if answer is None:
            return None
        picked = self._picked.get(answer.table, key)  # one answer, one table: callers keep its encoding
        if picked is None:
            with self._lock:
                picked = self._picked.put(answer.table, key,
                                          SqlAnswer(_picked(direct, answer.table), True, [direct.query]))
        return picked

    def run(self, sql: str, params: Sequence | None = None, cancel: Cancel | None = None, timeout=DOOR,
            limits: Limits | None = None) -> SqlAnswer:
        return self.open(sql, params, cancel, timeout=timeout, limits=limits)

    def open(self, sql: str, params: Sequence | None = None, cancel: Cancel | None = None,
             hold: int | None = None, timeout=DOOR, limits: Limits | None = None) -> SqlAnswer:
        """As `run`; with `hold` (bytes), an outer step's answer larger than that is left being read: its `table`
        is None and `reading` yields its batches. Every answer is held to `limits` (default: the project's);
        `timeout`: seconds (None: no limit), default the door's."""
        plan = self.rewrite(sql, params)
        answers, cached = {}, []
        timeout = self.timeout if timeout is DOOR else timeout
        options = {"timeout": timeout} if timeout else {}
        if cancel is not None:
            options["cancel"] = cancel
        if limits is not None:
            options["limits"] = limits
        direct = plan.direct
        queries = [s.query for s in plan.selects]
        if direct is not None and hold is not None:
            # only columns picked from one metric query: its answer streams as it is read, when it is large
            answer = self.project.open(direct.query, hold=hold, **options)
            if answer.reading is not None:
                return SqlAnswer(None, False, queries, _PickedReading(answer.reading, direct))
            return SqlAnswer(_picked(direct, answer.table.rename_columns(direct.columns)), answer.cached,
                             queries)
        for s in plan.selects:
            answer = self.project.run(s.query, **options)
            answers[s.name] = answer.table.rename_columns(s.columns)
            cached.append(answer.cached)
        if direct is not None:
            table = _picked(direct, answers[direct.name])
        else:
            limits = limits if limits is not None else getattr(self.project, "limits", None)
            table = outer.open_(plan.statement, answers, timeout, limits, cancel).head(hold)
            if isinstance(table, Reading):
                return SqlAnswer(None, False, queries, table)
        return SqlAnswer(table, bool(cached) and all(cached), queries)

    def explain(self, sql: str, params: Sequence | None = None) -> str:
        """The metric queries the statement became (each with its plan and SQL), and the outer step."""
        plan = self.rewrite(sql, params)
        parts = []
        for s in plan.selects:
            compiled = self.project.compile(s.query)
            parts.append("\n".join([
                f"semantic SELECT {s.name} over `{s.table}`:", _indent(s.source), "metric query:",
                _indent(describe(s.query)), "plan:", _indent(compiled.explain()),
                f"answer columns: {', '.join(s.columns)}"]))
        direct = plan.direct
        if direct is not None:
            picked = ", ".join(f"{direct.columns[i]} AS {name}" for i, name in direct.direct)
            parts.append(f"outer step: none (the answer, its columns picked and renamed: {picked})")
        else:
            parts.append("outer step (DuckDB, over the answers):\n" + _indent(outer.to_sql(plan.statement)))
        return "\n\n".join(parts)


class _PickedReading:
    """A metric query's answer being read, its columns picked and renamed batch by batch (see `_picked`)."""

    def __init__(self, reading: Reading, direct):
        self.reading, self.columns = reading, [i for i, _ in direct.direct]
        self.schema = pa.schema([reading.schema.field(i).with_name(name) for i, name in direct.direct])

    def batches(self):
        for batch in self.reading.batches():
            yield pa.RecordBatch.from_arrays([batch.column(i) for i in self.columns], schema=self.schema)

    def interrupt(self) -> None:
        self.reading.interrupt()


def _picked(direct, table: pa.Table) -> pa.Table:
    """The answer of a SELECT that only picks columns: those columns, under the names the SELECT gave them."""
    return table.select([i for i, _ in direct.direct]).rename_columns([n for _, n in direct.direct])


def _key(sql: str, params: Sequence | None) -> tuple | None:
    """The rewrite cache's key: the text and the values (with their types: 1 and True differ), if hashable."""
    values = tuple((type(v), v) for v in params or ())
    try:
        hash(values)
    except TypeError:
        return None
    return sql, values


def describe(query: Query) -> str:
    fields = query.model_dump(exclude_defaults=True, mode="json")
    lines = []
    for key, value in fields.items():
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        elif isinstance(value, dict):
            value = f"{value.get('start') or '…'} → {value.get('end') or '…'}"
        lines.append(f"{key}: {value}")
    return "\n".join(lines)


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())
