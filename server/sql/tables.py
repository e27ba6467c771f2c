"""The tables semantic SQL offers (MODEL.md §7): one per view, and `metrics`.

A view's table has a column per dimension of the view and per measure. `metrics` has a column per
metric, per dimension (bare names; a name several views share is also there as `view__dim`) and
`metric_time`. Time dimensions also answer to `name__grain` (`ordered_at__month`), unlisted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from semantic.errors import QueryError, did_you_mean
from semantic.project.model import GRAINS, Measure
from semantic.query.graph import METRIC_TIME

SCHEMA = "public"  # the schema BI tools see (and qualify with: Superset writes `public.orders`)
METRICS = "metrics"


@dataclass(frozen=True)
class TableColumn:
    """One column of a semantic table and what a metric query asks for when it is used."""

    name: str
    kind: Literal["dimension", "measure", "metric"]
    ref: str  # Query.dimensions text for a dimension (`orders.channel`), Query.metrics text otherwise
    type: str  # dimension type (categorical, time, boolean, number) or the measure's / metric's kind
    measure: Measure | None = None  # the measure (view tables) or a simple metric's measure (metrics table)
    view: str | None = None  # the view a dimension or measure belongs to
    grain: str | None = None  # time dimensions: hour … year (day when the bare name is used)
    listed: bool = True  # False for accepted spellings the catalog does not show (`ordered_at__month`)

    @property
    def is_time(self) -> bool:
        return self.kind == "dimension" and self.type == "time"

    def at(self, grain: str) -> TableColumn:
        """This time dimension at another grain: `ordered_at` → `ordered_at__month`."""
        if grain == "day":
            return self if self.grain == "day" else TableColumn(self.base, self.kind, self.base_ref, self.type,
                                                                 view=self.view, grain="day")
        return TableColumn(f"{self.base}__{grain}", self.kind, f"{self.base_ref}__{grain}", self.type,
                           view=self.view, grain=grain, listed=False)

    @property
    def base(self) -> str:
        return self.name.removesuffix(f"__{self.grain}") if self.grain and self.grain != "day" else self.name

    @property
    def base_ref(self) -> str:
        return self.ref.removesuffix(f"__{self.grain}") if self.grain and self.grain != "day" else self.ref


@dataclass(frozen=True)
class SemanticTable:
    name: str
    view: str | None  # None for `metrics`
    columns: dict[str, TableColumn] = field(default_factory=dict)
    time: str | None = None  # the column whose plain ranges become the query's time_range

    def listed(self) -> list[TableColumn]:
        return [c for c in self.columns.values() if c.listed]

    def column(self, name: str) -> TableColumn | None:
        """A column by name, including time grains (`ordered_at__week`, `metric_time__month`)."""
        found = self.columns.get(name)
        if found is not None:
            return found
        head, sep, grain = name.rpartition("__")
        base = self.columns.get(head) if sep else None
        if base is not None and base.is_time and grain in GRAINS:
            return base.at(grain)
        return None

    def unknown(self, name: str) -> QueryError:
        names = [c.name for c in self.listed()]
        hint = did_you_mean(name, names)
        if not hint:
            sources = [c for c in self.columns.values() if c.measure and (c.measure.expr or "") == name]
            if sources:
                m = sources[0]
                hint = f"{m.kind} `{m.name}` aggregates it ({m.measure.agg}): write MEASURE({m.name})"
        where = "the `metrics` table" if self.view is None else f"table `{self.name}`"
        return QueryError(f"{where} has no column `{name}`", hint or f"its columns: {', '.join(names)}")


    def star(self, project) -> list[TableColumn]:
        """`*` over a view: its non-time dimensions (grouped) and measures; over `metrics`: every metric in total."""
        if self.view is not None:
            return [c for c in self.listed() if not c.is_time]
        metrics = []
        for c in self.listed():
            if c.kind != "metric":
                continue
            try:
                project.compile(metrics=[c.ref])
            except QueryError:  # e.g. an offset metric, which needs metric_time
                continue
            metrics.append(c)
        return metrics

    def count_star(self) -> TableColumn:
        """COUNT(*): the view's one count measure that counts every row."""
        if self.view is None:
            counts = [c.name for c in self.listed() if c.measure is not None and c.measure.agg == "count"]
            raise QueryError("COUNT(*) on the `metrics` table does not name a metric",
                             f"write MEASURE(x) for a count metric: {', '.join(counts) or 'none is declared'}")
        counts = [c for c in self.listed() if c.kind == "measure" and c.measure.agg == "count"]
        rows = [c for c in counts if not c.measure.expr and not c.measure.filter]
        if len(rows) == 1:
            return rows[0]
        if not counts:
            raise QueryError(f"COUNT(*) on `{self.name}`: the view has no count measure",
                             f"add one to view `{self.name}`: {{name: rows, agg: count}}")
        options = ", ".join(f"COUNT({c.name})" for c in counts)
        reason = "several count measures count rows" if rows else "no count measure counts every row"
        raise QueryError(f"COUNT(*) on `{self.name}` is ambiguous: {reason}", f"write one of {options}")

    def listing_measure(self, dims: list[TableColumn], graph) -> str:
        """No measure asked for: list dimension values through one cheap measure of a view that reaches them all."""
        views = [self.view] if self.view is not None else list(
            dict.fromkeys([*(d.view for d in dims if d.view), *graph.views]))
        needs_time = any(d.ref.startswith(METRIC_TIME) for d in dims)
        for v in views:
            measures = list(graph.measures[v].values())
            if not measures or (needs_time and not graph.views[v].time):
                continue
            if all(_reaches(graph, v, d) for d in dims):
                rows = [m for m in measures if m.agg == "count" and not m.expr and not m.filter]
                return f"{v}.{(rows or measures)[0].name}"
        if self.view is not None:
            raise QueryError(f"view `{self.view}` has no measure, so its dimension values cannot be listed",
                             "add a measure to it, e.g. {name: rows, agg: count}")
        raise QueryError(f"no view reaches all of {', '.join(d.name for d in dims)}",
                         "list values of dimensions that one view can reach")


def _reaches(graph, view: str, d: TableColumn) -> bool:
    if d.ref.startswith(METRIC_TIME):
        return True
    name = d.base_ref.rpartition(".")[2]
    owners = [d.view] if d.view else [v for v, dims in graph.dims.items() if name in dims]
    return any(graph.path(view, o) is not None for o in owners)


class Catalog:
    """Every semantic table of one model version (rebuilt when the project reloads)."""

    def __init__(self, compiler):
        graph, model = compiler.graph, compiler.model
        self.tables: dict[str, SemanticTable] = {}
        for v in model.views.values():
            cols: dict[str, TableColumn] = {}
            for name, d in graph.dims[v.name].items():
                cols[name] = TableColumn(name, "dimension", f"{v.name}.{name}", d.type, view=v.name,
                                         grain="day" if d.type == "time" else None)
            for m in v.measures:  # a dimension and a measure of the same name: the dimension keeps the bare name
                cols.setdefault(m.name, TableColumn(m.name, "measure", f"{v.name}.{m.name}", m.agg, m, v.name))
            self.tables[v.name] = SemanticTable(v.name, v.name, cols, v.time)
        cols = {}
        for name in model.metrics:
            metric = model.metrics[name]
            measure = None
            if metric.measure:
                view, _, mname = metric.measure.rpartition(".")
                measure = graph.measures.get(view, {}).get(mname)
            cols[name] = TableColumn(name, "metric", name, "metric", measure)
        cols.setdefault(METRIC_TIME, TableColumn(METRIC_TIME, "dimension", METRIC_TIME, "time", grain="day"))
        owners: dict[str, list[str]] = {}
        for view, dims in graph.dims.items():
            for name in dims:
                owners.setdefault(name, []).append(view)
        for name, views in owners.items():
            d = graph.dims[views[0]][name]
            cols.setdefault(name, TableColumn(name, "dimension", name, d.type, view=views[0] if len(views) == 1
                                              else None, grain="day" if d.type == "time" else None))
            for view in views:  # `view__dim` always works; it is listed when the bare name is shared
                qualified = f"{view}__{name}"
                cols.setdefault(qualified, TableColumn(qualified, "dimension", f"{view}.{name}", d.type, view=view,
                                                       grain="day" if d.type == "time" else None,
                                                       listed=len(views) > 1))
        self.tables[METRICS] = SemanticTable(METRICS, None, cols, METRIC_TIME)

    def table(self, name: str, schema: str | None = None) -> SemanticTable | None:
        if schema not in (None, SCHEMA):
            return None
        return self.tables.get(name)

    def unknown(self, name: str, schema: str | None, ctes: set[str] | frozenset[str] = frozenset()) -> QueryError:
        full = f"{schema}.{name}" if schema else name
        if schema not in (None, SCHEMA) and name in self.tables:
            return QueryError(f"unknown table `{full}`", f"semantic tables live in schema `{SCHEMA}`: `{name}`")
        names = [*self.tables, *ctes]
        return QueryError(f"unknown table `{full}`",
                          did_you_mean(name, names) or f"tables: {', '.join(self.tables)}")
