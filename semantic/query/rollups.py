"""Rollups resolved against the semantic graph: which columns a rollup table holds and what each one means.

A `RollupSpec` is the one description shared by the loader (its checks), the builder (the table's SELECT),
the planner (matching) and the renderer (reading partials back). `Catalog` is what the warehouse says about
the built tables (rows, freshness), loaded by the project after every build.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from semantic.errors import QueryError, did_you_mean
from semantic.project.model import Measure, Rollup
from semantic.query.graph import METRIC_TIME, Hop, SemanticGraph
from semantic.query.timegrid import valid_zone

# The partial columns each aggregate is stored as; re-aggregated at query time (avg = sum / count).
PARTS: dict[str, tuple[str, ...]] = {
    "sum": ("sum",), "count": ("count",), "avg": ("sum", "count"), "min": ("min",), "max": ("max",),
    "count_distinct": ("distinct",),
}
EXACT_ONLY = {"count_distinct"}  # not additive: exact only at the rollup's own grain and dimensions
PARTITION = "__partition"


@dataclass(frozen=True)
class RollupDim:
    view: str  # the view the dimension belongs to (reached by joins from the rollup's view)
    name: str
    grain: str | None  # time dimensions are stored at a grain
    column: str

    @property
    def key(self) -> tuple[str, str]:
        return self.view, self.name

    @property
    def text(self) -> str:
        return f"{self.view}.{self.name}" + (f"__{self.grain}" if self.grain else "")


@dataclass(frozen=True)
class RollupSpec:
    name: str
    rollup: Rollup
    view: str
    grain: str
    partition: str | None
    timezone: str | None
    bucket: str  # the metric_time column: metric_time__<grain>
    dims: tuple[RollupDim, ...]
    measures: dict[str, Measure]
    columns: dict[str, dict[str, str]]  # measure → part → column
    joins: tuple[Hop, ...]
    sources: tuple[str, ...]  # datasets it reads (for freshness)
    dim_index: dict[tuple[str, str], RollupDim] = field(default_factory=dict, compare=False)

    @property
    def partial_columns(self) -> list[str]:
        return [c for parts in self.columns.values() for c in parts.values()]

    @property
    def key_columns(self) -> list[str]:
        """The columns a row is unique by (partition first, when there is one)."""
        return [*([PARTITION] if self.partition else []), self.bucket, *(d.column for d in self.dims)]


@dataclass(frozen=True)
class RollupState:
    """A built rollup as recorded in `<schema>._phloem_rollups`."""

    rows: int
    partitions: int
    built_at: dt.datetime | None
    fresh_before: dt.datetime | None  # local bucket label: complete before it when its dataset moved on
    behind: bool  # a dataset it reads was rebuilt after it
    current: bool  # built from the model's present definition
    timezone: str | None
    types: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Catalog:
    states: dict[str, RollupState]
    version: str = "empty"


EMPTY = Catalog({})


@dataclass
class RollupProblem:
    path: tuple
    message: str
    suggestion: str = ""


def leaf_measures(model, metric: str, seen: set[str] | None = None) -> list[tuple[str, str]] | None:
    """(view, measure) of every leaf of a metric; None for a conversion (it reads a stream)."""
    from semantic.project.checks import metric_inputs

    seen = set() if seen is None else seen
    m = model.metrics.get(metric)
    if m is None or metric in seen:
        return []
    seen.add(metric)
    if m.conversion:
        return None
    if m.measure:
        view, _, measure = m.measure.rpartition(".")
        if not view:
            view = next((v.name for v in model.views.values() if any(x.name == measure for x in v.measures)), "")
        return [(view, measure)]
    out: list[tuple[str, str]] = []
    for child in metric_inputs(m):
        found = leaf_measures(model, child, seen)
        if found is None:
            return None
        out += found
    return out


def resolve(model, graph: SemanticGraph, r: Rollup, schema_names: set[str] = frozenset()) -> tuple[
        RollupSpec | None, list[RollupProblem]]:
    """The rollup's table layout, or the problems that keep it from having one (with the key they are about)."""
    problems: list[RollupProblem] = []

    def add(path: tuple, message: str, suggestion: str = "") -> None:
        problems.append(RollupProblem(path, message, suggestion))

    view = graph.views.get(r.view)
    if view is None:
        add(("view",), f"unknown view `{r.view}`",
            did_you_mean(r.view, graph.views) or f"known: {', '.join(sorted(graph.views))}")
        return None, problems
    if r.name in schema_names:
        add(("name",), f"rollup name `{r.name}` is already the name of a table in the materialization schema",
            f"rename it, e.g. `{r.name}_rollup`")
    if not view.time:
        add(("view",), f"view `{r.view}` has no time column, so it cannot be rolled up by time",
            f"give view `{r.view}` a `time:`")
        return None, problems
    if r.time and r.time not in (view.time, METRIC_TIME):
        add(("time",), f"a rollup buckets by its view's time column `{view.time}` (metric_time), not `{r.time}`",
            f"remove `time:`; put `{r.time}__{r.grain}` in `dimensions` to group by it")
    timezone = r.timezone if r.timezone is not None else model.settings.timezone
    if r.timezone and not valid_zone(r.timezone):
        add(("timezone",), f"unknown time zone `{r.timezone}`", "write an IANA name, e.g. `UTC` or `Europe/Paris`")
    measures: dict[str, Measure] = {}
    own = graph.measures[r.view]
    for i, name in enumerate(r.measures):
        prefix, _, bare = name.rpartition(".")
        if prefix and prefix != r.view:
            add(("measures", i), f"measure `{name}` is not in view `{r.view}`",
                f"a rollup stores measures of its own view; declare another rollup on `{prefix}`")
        elif bare not in own:
            add(("measures", i), f"unknown measure `{bare}` of view `{r.view}`",
                did_you_mean(bare, own) or f"its measures: {', '.join(own)}")
        else:
            measures[bare] = own[bare]
    for i, name in enumerate(r.metrics):
        if name not in model.metrics:
            add(("metrics", i), f"unknown metric `{name}`", did_you_mean(name, model.metrics) or "list metrics of the model")
            continue
        leaves = leaf_measures(model, name)
        if leaves is None:
            add(("metrics", i), f"metric `{name}` counts conversions over a stream, which a rollup cannot store",
                "remove it from `metrics`")
            continue
        mine = [m for v, m in leaves if v == r.view]
        if not mine:
            views = sorted({v for v, _ in leaves})
            add(("metrics", i), f"metric `{name}` reads no measure of view `{r.view}` (it reads {', '.join(views)})",
                f"declare the rollup on {' or '.join(f'`{v}`' for v in views)}")
        for m in mine:
            measures.setdefault(m, own[m])
    for name, m in measures.items():
        if m.agg not in PARTS:
            at = ("measures", r.measures.index(name)) if name in r.measures else ("metrics",)
            add(at, f"measure `{name}` ({m.agg}) cannot be stored in a rollup",
                "rollups hold sum, count, min, max, avg and count_distinct (exact only at the rollup's own grain "
                "and dimensions); query it from the view")
    dims: list[RollupDim] = []
    joins: list[Hop] = []
    for i, text in enumerate(r.dimensions):
        try:
            d = graph.resolve(text)
            if d.view is None:
                raise QueryError(f"`{text}` is the rollup's own time", f"set `grain:` instead (now {r.grain})")
            target, path = graph.nearest(r.view, d)
        except QueryError as e:
            add(("dimensions", i), e.message, e.suggestion)
            continue
        if any(x.view == target and x.name == d.name for x in dims):
            add(("dimensions", i), f"dimension `{text}` is listed twice", "list it once")
            continue
        dims.append(RollupDim(target, d.name, d.grain, ""))
        for hop in path:
            if hop not in joins:
                joins.append(hop)
    names = [d.name for d in dims]
    dims = [RollupDim(d.view, d.name, d.grain, (d.name if names.count(d.name) == 1 else f"{d.view}__{d.name}") +
                      (f"__{d.grain}" if d.grain else "")) for d in dims]
    if problems:
        return None, problems
    columns = {name: {part: f"{name}__{part}" for part in PARTS[m.agg]} for name, m in measures.items()}
    sources = [graph.views[v].dataset for v in [r.view, *(h.target for h in joins)] if graph.views[v].dataset]
    spec = RollupSpec(r.name, r, r.view, r.grain, r.partition, timezone, f"{METRIC_TIME}__{r.grain}", tuple(dims),
                      measures, columns, tuple(joins), tuple(dict.fromkeys(sources)),
                      {d.key: d for d in dims})
    return spec, []


def resolve_all(model, graph: SemanticGraph) -> dict[str, RollupSpec]:
    """Every rollup of a loaded (so already checked) model."""
    out = {}
    for r in model.rollups.values():
        spec, _ = resolve(model, graph, r)
        if spec is not None:
            out[r.name] = spec
    return out
