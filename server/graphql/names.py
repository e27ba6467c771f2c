"""GraphQL names for the model's metrics and dimensions, and what each `Row` field asks the library for.

Conventions (also in the schema's descriptions and docs/graphql.md):
- model names are camelCased: `net_revenue` → `netRevenue`, `revenue_7d` → `revenue7d`;
- every metric is a field; a metric wins its bare name over a dimension (the dimension becomes `<name>Dim`);
- every dimension name is a field (`country`) that resolves as the library resolves a bare name, and every
  view's dimension is also a qualified field `<view>_<dimension>` (`orders_country`, `orderLines_orderedAt`);
- `metricTime` is the shared time dimension; time dimensions are objects with one sub-field per grain;
- `and`, `or`, `not` are kept for `Where`, so a dimension with one of those names takes the `Dim` suffix;
- if two model names still meet (`revenue_7d` and `revenue7d`), a later metric keeps its snake_case name and a
  later dimension takes the `Dim` suffix (then a number, as a last resort).
"""

from __future__ import annotations

import keyword
from dataclasses import dataclass

from semantic.project.model import GRAINS
from semantic.query.graph import METRIC_TIME

COUNT_AGGS = ("count", "count_distinct", "approx_count_distinct")
RESERVED = frozenset({"and", "or", "not"})


@dataclass(frozen=True)
class MetricField:
    field: str  # the GraphQL name
    metric: str  # the model name
    integer: bool  # Int (counts, `format: integer`) rather than Float
    description: str
    money: bool = False  # `format: currency`: the exact Decimal scalar rather than Float

    @property
    def graphql_type(self) -> str:
        return "Int" if self.integer else "Decimal" if self.money else "Float"

    @property
    def attr(self) -> str:
        return python_name(self.field)


@dataclass(frozen=True)
class DimensionField:
    field: str
    text: str  # what the library is asked for: `country`, `orders.country`, `metric_time`
    type: str  # categorical | boolean | number | time
    description: str

    @property
    def attr(self) -> str:
        return python_name(self.field)

    def grain(self, grain: str) -> str:
        return f"{self.text}__{grain}"


@dataclass(frozen=True)
class Catalog:
    """Every `Row` field of one model version, by GraphQL name."""

    metrics: dict[str, MetricField]
    dimensions: dict[str, DimensionField]

    def metric_field(self, metric: str) -> str | None:
        return next((f.field for f in self.metrics.values() if f.metric == metric), None)

    def dimension_field(self, text: str) -> str | None:
        return next((f.field for f in self.dimensions.values() if f.text == text), None)


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def python_name(field: str) -> str:
    """The attribute behind a field: its GraphQL name, unless that is a Python keyword."""
    return f"{field}_" if keyword.iskeyword(field) or keyword.issoftkeyword(field) else field


def catalog(compiler) -> Catalog:
    model, graph = compiler.model, compiler.graph
    taken: set[str] = {"true", "false", "null"}  # valid field names, but not enum values (`OrderBy.field`)

    def claim(*candidates: str) -> str:
        for name in candidates:
            if name not in taken:
                taken.add(name)
                return name
        n = 2
        while f"{candidates[0]}{n}" in taken:
            n += 1
        taken.add(f"{candidates[0]}{n}")
        return f"{candidates[0]}{n}"

    metrics: dict[str, MetricField] = {}
    for name in model.metrics:
        field = claim(camel(name), name)
        node = compiler.tree.nodes[name]
        about = node.label + (f": {node.description.rstrip('.')}" if node.description else "")
        kind = f"metric `{name}` ({node.kind}{', ' + node.format if node.format else ''}): {node.formula}"
        metrics[field] = MetricField(field, name, is_integer(name, model, graph), f"{about} — {kind}",
                                     model.metrics[name].format == "currency")

    taken |= RESERVED
    dimensions: dict[str, DimensionField] = {}
    field = claim(camel(METRIC_TIME), camel(METRIC_TIME) + "Dim")
    dimensions[field] = DimensionField(field, METRIC_TIME, "time", "`metric_time`: the time of every view "
                                       "(each metric's own view time column), at the grains you select.")
    bare: dict[str, list] = {}
    for dims in graph.dims.values():
        for name, d in dims.items():
            bare.setdefault(name, []).append(d)
    for name, dims in bare.items():
        types = {d.type for d in dims}
        if len(types) > 1 and "time" in types:
            continue  # a time dimension in one view and not in another: only the qualified fields
        views = ", ".join(d.view for d in dims)
        how = " (each metric reads it from its nearest view)" if len(dims) > 1 else ""
        field = claim(camel(name), camel(name) + "Dim")
        dimensions[field] = DimensionField(field, name, types.pop() if len(types) == 1 else "categorical",
                                           f"dimension `{name}` of {views}{how}")
    for view, dims in graph.dims.items():
        for name, d in dims.items():
            field = claim(f"{camel(view)}_{camel(name)}")
            dimensions[field] = DimensionField(field, f"{view}.{name}", d.type, f"dimension `{view}.{name}`")
    return Catalog(metrics, dimensions)


def is_integer(name: str, model, graph) -> bool:
    """Int for `format: integer` and for counts (a count measure, a cumulative count, a conversion count)."""
    m = model.metrics.get(name)
    if m is None:
        return False
    if m.format is not None:
        return m.format == "integer"
    if m.measure:
        view, _, measure = m.measure.rpartition(".")
        views = [view] if view else [v for v, ms in graph.measures.items() if measure in ms]
        return bool(views) and graph.measures[views[0]][measure].agg in COUNT_AGGS
    if m.cumulative:  # an average of counts over a period is not a count
        return m.cumulative.period_agg != "avg" and is_integer(m.cumulative.metric, model, graph)
    if m.conversion:
        return m.conversion.calculation == "count"
    return False


def order_grains(grains) -> list[str]:
    """Grains coarsest first (the order an `orderBy` on a time field sorts by)."""
    return sorted(grains, key=GRAINS.index, reverse=True)
