"""Aggregate awareness: for each leaf of a plan, every rollup that can answer it, and the cheapest one.

A rollup answers a leaf when re-aggregating its partials gives the numbers the view would: it stores every
measure, dimension and filter dimension the leaf needs, at a grain the query's grains can be made from
(day → week, day → month → quarter → year, hour → day; never week → month), the time range cuts no bucket,
the time zone is the same, and count_distinct is read only at the rollup's own grain and dimensions. Among
those, the fewest recorded rows wins; every other candidate is kept with the reason it was not used.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import lru_cache

from sqlglot import exp

from semantic.project.model import DURATION, serves
from semantic.query.rollups import EXACT_ONLY, Catalog, RollupSpec, RollupState
from semantic.query.timegrid import MICRO, instant, is_boundary, shift, to_local, truncate
from semantic.sqltree import parse


@dataclass(frozen=True)
class RollupUse:
    """The rollup a leaf reads, and which of its buckets: [low, high) local labels; `tail` unions the dataset."""

    spec: RollupSpec
    schema: str
    rows: int
    low: dt.datetime | None
    high: dt.datetime | None
    tail: dt.datetime | None
    types: dict[str, str]

    @property
    def table(self) -> str:
        return f"{self.schema}.{self.spec.name}"


@dataclass(frozen=True)
class Choice:
    metrics: list  # the leaf's metrics this table answers
    rollup: RollupUse | None
    candidates: list


@dataclass(frozen=True)
class Candidate:
    rollup: str
    rows: int | None
    reason: str | None = None  # None: the one chosen


def duration_parts(text: str) -> tuple[int, str]:
    m = DURATION.match(text)
    return int(m.group(1)), m.group(2)


def _n(rows: int) -> str:
    return f"{rows:,}"


@lru_cache(maxsize=1024)
def filter_columns(sql: str) -> tuple[str, ...]:
    return tuple(sorted({c.name for c in parse(sql).find_all(exp.Column)}))


def window_aligned(n: int, unit: str, grain: str) -> bool:
    """Whether `end − n unit` falls on a bucket boundary of `grain` whenever `end` does."""
    if grain == "hour":
        return unit in ("hour", "day", "week", "month", "quarter", "year")
    if grain == "day":
        return unit in ("day", "week", "month", "quarter", "year")
    if grain == "week":
        return unit == "week" or (unit == "day" and n % 7 == 0)
    months = {"month": 1, "quarter": 3, "year": 12}
    return unit in months and (n * months[unit]) % months[grain] == 0


def row_interval(time_range, offset: str | None, grain: str | None) -> tuple[dt.datetime | None, dt.datetime | None]:
    """The UTC instants [lo, hi) a leaf's rows must fall in — the same the renderer writes as SQL."""
    if time_range is None:
        return None, None
    start, end = time_range.start, time_range.end
    if offset:
        n, unit = duration_parts(offset)

        def back(v):
            return truncate(shift(truncate(instant(v), grain), -n, unit), grain)

        return (back(start) if start is not None else None,
                shift(back(end), 1, grain) if end is not None else None)
    lo = instant(start) if start is not None else None
    if end is None:
        return lo, None
    return lo, (end + MICRO if isinstance(end, dt.datetime) else instant(end) + dt.timedelta(days=1))


class Need:
    """What one leaf asks of a table, computed once and checked against every candidate."""

    def __init__(self, leaf, plan):
        self.leaf = leaf
        self.dims = [((leaf.dim_views[d.text], d.name), d.grain, d.text) for d in plan.dims if d.view is not None]
        # a rollup answers under an access policy only if it stores every dimension the policy's condition reads
        self.filters = [((leaf.dim_views[d.text], d.name), d.grain, d.text)
                        for d in (*plan.filter_dims, *leaf.row_dims) if d.view is not None]
        self.grains = {d.grain for d in (*plan.dims, *plan.filter_dims, *leaf.row_dims) if d.view is None}
        self.grain = plan.grain
        self.exact = frozenset((key, grain) for key, grain, _ in self.dims)
        self.time_range = plan.query.time_range
        self.interval = row_interval(self.time_range, leaf.offset, plan.grain)


class Matcher:
    def __init__(self, specs: dict[str, RollupSpec], catalog: Catalog, timezone: str | None, schema: str):
        self.catalog, self.timezone, self.schema = catalog, timezone, schema
        self.by_view: dict[str, list[RollupSpec]] = {}
        for spec in specs.values():
            self.by_view.setdefault(spec.view, []).append(spec)
        self.exact = {s.name: frozenset((d.key, d.grain) for d in s.dims) for s in specs.values()}

    def choose(self, leaf, plan) -> list[Choice]:
        """The leaf's metrics grouped by the table that answers them, each with every candidate's verdict.

        One group when a single rollup answers every metric (or none answers any); else each metric goes to
        the cheapest rollup that answers it, and the planner splits the leaf along the groups.
        """
        specs = self.by_view.get(leaf.view) if leaf.kind != "conversion" else None
        if not specs:
            return [Choice(leaf.metrics, None, [])]
        need = Need(leaf, plan)
        ranges: dict[str, tuple] = {}
        common: dict[str, tuple[str | None, RollupUse | None, int | None]] = {}
        for spec in specs:
            state = self.catalog.states.get(spec.name)
            reason, use = self.reason(spec, state, need), None
            if reason is None:
                if spec.grain not in ranges:
                    ranges[spec.grain] = self.aligned(need, spec.grain, spec.timezone)
                low, high, reason = ranges[spec.grain]
            if reason is None:
                reason, tail = self.freshness(spec, state, high)
                use = None if reason else RollupUse(spec, self.schema, state.rows, low, high, tail, state.types)
            common[spec.name] = (reason, use, state.rows if state else None)
        verdicts = {(spec.name, m.column): self.measure_reason(spec, need, m)
                    for spec in specs if common[spec.name][0] is None for m in leaf.metrics}
        whole = self.pick(specs, common, verdicts, leaf.metrics)
        if whole.rollup is not None or len(leaf.metrics) == 1:
            return [whole]
        groups: dict[str | None, list] = {}
        for m in leaf.metrics:
            fits = [common[s.name][1] for s in specs if common[s.name][0] is None and verdicts[(s.name, m.column)] is None]
            best = min(fits, key=lambda u: (u.rows, u.spec.name), default=None)
            groups.setdefault(best.spec.name if best else None, []).append(m)
        if len(groups) == 1:
            return [whole]
        return [self.pick(specs, common, verdicts, metrics) for metrics in groups.values()]

    def pick(self, specs: list[RollupSpec], common: dict, verdicts: dict, metrics: list) -> Choice:
        usable: list[RollupUse] = []
        rejected: list[Candidate] = []
        for spec in specs:
            reason, use, rows = common[spec.name]
            if reason is None:
                reason = next((r for m in metrics if (r := verdicts[(spec.name, m.column)])), None)
            if reason is None:
                usable.append(use)
            else:
                rejected.append(Candidate(spec.name, rows, reason))
        if not usable:
            return Choice(metrics, None, rejected)
        best = min(usable, key=lambda u: (u.rows, u.spec.name))
        rejected += [Candidate(u.spec.name, u.rows, f"larger: {_n(u.rows)} rows vs {_n(best.rows)}")
                     for u in usable if u is not best]
        return Choice(metrics, best, [Candidate(best.spec.name, best.rows), *rejected])

    def freshness(self, spec: RollupSpec, state: RollupState, high: dt.datetime | None) -> tuple:
        """(reason, tail): a rollup whose dataset moved on answers from its complete buckets, plus the dataset's
        rows from `fresh_before` on (`freshness: union`), or not at all (`freshness: dataset`)."""
        if not state.behind or (high is not None and state.fresh_before is not None and high <= state.fresh_before):
            return None, None
        if spec.rollup.freshness == "dataset" or state.fresh_before is None:
            since = f" from {state.fresh_before:%Y-%m-%d %H:%M}" if state.fresh_before else ""
            return f"behind its dataset{since} (freshness: {spec.rollup.freshness})", None
        return None, state.fresh_before

    def reason(self, spec: RollupSpec, state: RollupState | None, need: Need) -> str | None:
        """Why `spec` cannot answer the leaf whatever its measures, or None (range and freshness come after)."""
        if state is None:
            return "not built yet (run `phloem build`)"
        if not state.current:
            return "built from an older definition (run `phloem build`)"
        if (spec.timezone or "UTC") != (self.timezone or "UTC"):
            return f"buckets in time zone {spec.timezone or 'UTC'}, the project's is {self.timezone or 'UTC'}"
        for what, wanted in (("dimension", need.dims), ("filter dimension", need.filters)):
            for key, grain, text in wanted:
                d = spec.dim_index.get(key)
                if d is None:
                    return f"lacks {what} {text}"
                if grain and not serves(d.grain, grain):
                    return f"stores {d.name} by {d.grain}, which cannot serve {grain}"
        for grain in need.grains:
            if not serves(spec.grain, grain):
                return f"grain {spec.grain} cannot serve {grain}"
        if need.leaf.kind == "cumulative":
            return self.cumulative_reason(spec, need)
        return None

    def measure_reason(self, spec: RollupSpec, need: Need, m) -> str | None:
        """Why `spec` cannot give this one metric of the leaf, or None."""
        measure = m.measure
        if measure.name not in spec.measures:
            return f"lacks measure {measure.name}"
        for column in filter_columns(m.filter) if m.filter else ():
            d = spec.dim_index.get((spec.view, column))
            if d is None or d.grain:
                return f"metric {m.metric} filters on {column}, which the rollup does not store"
        if measure.agg in EXACT_ONLY:
            if need.leaf.kind == "cumulative":
                return f"{measure.agg} {measure.name} cannot accumulate from stored counts"
            if need.grain != spec.grain or need.exact != self.exact[spec.name]:
                dims = ", ".join(d.text for d in spec.dims) or "no dimension"
                return f"{measure.agg} {measure.name} is exact only at its grain {spec.grain} by {dims}"
        if measure.agg == "avg" and need.leaf.kind == "cumulative":
            return "avg cannot accumulate from stored sums and counts"
        return None

    def cumulative_reason(self, spec: RollupSpec, need: Need) -> str | None:
        """A window from buckets equals the window from rows when every window edge is a bucket edge."""
        c, grain = need.leaf.cumulative, spec.grain
        if self.timezone:
            return "cumulative windows are in UTC, the rollup's buckets are local"
        tr = need.time_range
        if tr is not None and isinstance(tr.end, dt.datetime):
            return f"time range ends at {tr.end}, inside a {grain} bucket"
        if need.grain is None and (c.window or c.grain_to_date) and (tr is None or tr.end is None):
            return "the window ends at the last row, inside a bucket"
        if c.period_agg in ("first", "avg") and grain not in ("hour", "day"):
            return f"period_agg {c.period_agg} needs daily values, the grain is {grain}"
        if c.window:
            n, unit = duration_parts(c.window)
            if not window_aligned(n, unit, grain):
                return f"window {c.window} does not start on a {grain} boundary"
        if c.grain_to_date and not serves(grain, c.grain_to_date):
            return f"grain {grain} cannot serve {c.grain_to_date}-to-date"
        return None

    def aligned(self, need: Need, grain: str, tz: str | None) -> tuple:
        """(low, high, reason): the time range as local bucket labels, or why it cuts a bucket."""
        tr, offset = need.time_range, need.leaf.offset
        bounds = []
        for edge, value, given in (("starts", need.interval[0], tr.start if tr else None),
                                   ("ends", need.interval[1], tr.end if tr else None)):
            if value is None:
                bounds.append(None)
                continue
            local = to_local(value, tz)
            if local is None or not is_boundary(local, grain):
                where = f"the range {offset} earlier" if offset else "time range"
                shown = value if offset else given
                return None, None, f"{where} {edge} at {shown}, inside a {grain} bucket"
            bounds.append(local)
        return bounds[0], bounds[1], None
