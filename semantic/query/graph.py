"""The semantic graph: views with their dimensions and measures, and the many-to-one joins between them."""

from __future__ import annotations

from dataclasses import dataclass

import sqlglot
from sqlglot import exp

from semantic.errors import ModelError, Problem, QueryError, did_you_mean
from semantic.project.model import GRAINS, Measure, View
from semantic.sqltree import col, ident, parse

METRIC_TIME = "metric_time"


@dataclass(frozen=True)
class Dim:
    view: str
    name: str
    type: str
    sql: str  # over the view's columns


@dataclass(frozen=True)
class Hop:
    """One LEFT JOIN from the many side to the one side of an entity."""

    source: str
    source_column: str
    target: str
    target_column: str
    entity: str


@dataclass(frozen=True)
class DimRef:
    """A requested dimension, resolved: which view's dimension, at which grain, named how in the output."""

    text: str
    view: str | None  # None for metric_time (each leaf's own view time)
    name: str
    grain: str | None
    output: str
    candidates: tuple[str, ...] = ()  # a bare name several views share: each leaf takes the nearest


class SemanticGraph:
    def __init__(self, model):
        self.model = model
        self.schema = model.settings.materialization.schema_
        self.views: dict[str, View] = model.views
        self.dims: dict[str, dict[str, Dim]] = {v.name: _dims(v) for v in self.views.values()}
        self.measures: dict[str, dict[str, Measure]] = {v.name: {m.name: m for m in v.measures} for v in self.views.values()}
        self.hops: dict[str, list[Hop]] = {v.name: [] for v in self.views.values()}
        one_side = {}
        for v in self.views.values():
            for e in v.entities:
                if v.primary_key and e.expr == v.primary_key:
                    one_side[e.name] = (v.name, e.expr)
        for v in self.views.values():
            for e in v.entities:
                target = one_side.get(e.name)
                if target and target[0] != v.name:
                    self.hops[v.name].append(Hop(v.name, e.expr, target[0], target[1], e.name))
        self.paths: dict[tuple[str, str], tuple[Hop, ...]] = {}
        self._tables: dict[str, str] = {}
        problems = []
        for v in self.views:
            for target, paths in self._walk(v).items():
                if len(paths) > 1:
                    routes = "; ".join(" → ".join([v, *(h.target for h in p)]) for p in paths)
                    origin = model.origins.get(("views", v))
                    problems.append(Problem(f"two join paths from view `{v}` to `{target}`: {routes}",
                                            origin.file if origin else "<model>", origin.line("entities") if origin
                                            else None, f"{v}.entities", "remove one entity so the path is unique"))
                self.paths[(v, target)] = tuple(paths[0])
        if problems:
            raise ModelError(problems)

    def _walk(self, start: str) -> dict[str, list[list[Hop]]]:
        found: dict[str, list[list[Hop]]] = {}
        stack: list[tuple[str, list[Hop]]] = [(start, [])]
        while stack:
            view, path = stack.pop()
            for hop in self.hops[view]:
                if hop.target == start or any(h.target == hop.target for h in path):
                    continue
                found.setdefault(hop.target, []).append([*path, hop])
                stack.append((hop.target, [*path, hop]))
        return found

    def relation(self, view: str) -> exp.Expression:
        v = self.views[view]
        if v.dataset:
            return exp.Table(this=ident(v.dataset), db=ident(self.schema))
        if v.table:
            return exp.to_table(v.table)
        return exp.Subquery(this=sqlglot.parse_one(v.sql, read="duckdb"))

    def table_name(self, view: str) -> str:
        """What a leaf over `view` reads, for explain: schema.dataset, the table, or (sql)."""
        name = self._tables.get(view)
        if name is None:
            v = self.views[view]
            name = self._tables[view] = f"{self.schema}.{v.dataset}" if v.dataset else (v.table or f"({view} sql)")
        return name

    def path(self, source: str, target: str) -> tuple[Hop, ...] | None:
        return () if source == target else self.paths.get((source, target))

    def time_dim(self, view: str) -> Dim | None:
        v = self.views[view]
        return self.dims[view].get(v.time) if v.time else None

    def resolve(self, text: str) -> DimRef:
        """`channel`, `orders.channel`, `metric_time__month`, `orders.ordered_at__week` → DimRef."""
        body, grain = text, None
        head, sep, tail = text.rpartition("__")
        if sep and tail in GRAINS:
            body, grain = head, tail
        elif sep and tail and head and (text.startswith(METRIC_TIME) or "." in head or head in self._all_dims()):
            raise QueryError(f"unknown time grain `{tail}` in `{text}`",
                             did_you_mean(tail, GRAINS) or f"grains: {', '.join(GRAINS)}")
        if body == METRIC_TIME:
            return DimRef(text, None, METRIC_TIME, grain or "day", f"{METRIC_TIME}__{grain or 'day'}")
        view_name, _, name = body.rpartition(".")
        if view_name:
            if view_name not in self.views:
                raise QueryError(f"unknown view `{view_name}` in `{text}`", did_you_mean(view_name, self.views))
            if name not in self.dims[view_name]:
                raise QueryError(f"view `{view_name}` has no dimension `{name}`",
                                 did_you_mean(name, self.dims[view_name]) or
                                 f"its dimensions: {', '.join(self.dims[view_name])}")
            candidates = [view_name]
        else:
            candidates = [v for v, dims in self.dims.items() if name in dims]
            if not candidates:
                raise QueryError(f"unknown dimension `{name}`",
                                 did_you_mean(name, [*self._all_dims(), METRIC_TIME]) or
                                 f"known: {', '.join(sorted(self._all_dims()))}")
        dim = self.dims[candidates[0]][name]
        if grain and dim.type != "time":
            raise QueryError(f"`{name}` is not a time dimension, so `__{grain}` does not apply",
                             f"ask for `{name}` without a grain")
        if dim.type == "time" and not grain:
            grain = "day"
        output = f"{name}__{grain}" if grain else name
        return DimRef(text, candidates[0], name, grain, output, tuple(candidates) if len(candidates) > 1 else ())

    def nearest(self, source: str, d: DimRef) -> tuple[str, tuple[Hop, ...]]:
        """The view whose `d` a leaf over `source` reads: the one named, else the closest by joins."""
        options = [(v, self.path(source, v)) for v in (d.candidates or (d.view,))]
        options = sorted(((v, p) for v, p in options if p is not None), key=lambda o: len(o[1]))
        if not options:
            raise QueryError(f"dimension `{d.text}` cannot be reached from view `{source}`",
                             f"ask for a dimension of `{source}` or of a view it joins to many-to-one")
        if len(options) > 1 and len(options[0][1]) == len(options[1][1]):
            raise QueryError(f"dimension `{d.text}` is equally near to view `{source}` in "
                             f"{options[0][0]} and {options[1][0]}", f"qualify it, e.g. `{options[0][0]}.{d.name}`")
        return options[0]

    def _all_dims(self) -> set[str]:
        return {d for dims in self.dims.values() for d in dims}


def _dims(v: View) -> dict[str, Dim]:
    out = {d.name: Dim(v.name, d.name, d.type, d.expr or d.name) for d in v.dimensions}
    if v.time and v.time not in out:
        out[v.time] = Dim(v.name, v.time, "time", v.time)
    return out


def bind_columns(sql: str, alias: str) -> exp.Expression:
    """A view-level SQL expression with its bare columns pointed at `alias`."""
    tree = parse(sql)
    return tree.transform(lambda n: col(n.name, alias) if isinstance(n, exp.Column) and not n.table else n)
