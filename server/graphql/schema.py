"""`build_schema(project)`: a GraphQL schema generated from one model version.

`query` returns rows whose fields are the model's metrics and dimensions; the selection set is the query
(selected metric fields are its metrics, selected dimension fields and time grains its dimensions).
`metricTree` values a metric and its subtree over a period and a comparison period; `meta` describes it all.
Names are documented in `server.graphql.names` and docs/graphql.md.
"""

# No `from __future__ import annotations` here: resolvers are closures over types built at runtime, and
# strawberry reads their annotations as objects.

import datetime as dt
import decimal
import types
from dataclasses import dataclass
from enum import Enum
from typing import Annotated, Any

import pyarrow as pa
import strawberry
from strawberry import UNSET
from strawberry.schema.config import StrawberryConfig
from strawberry.types.field import StrawberryField
from strawberry.types.nodes import FragmentSpread, InlineFragment

from semantic.errors import QueryError
from semantic.limits import Cancel
from semantic.meta import describe
from semantic.metrics import periods
from semantic.metrics.decompose import check_method, decompose_tree
from semantic.metrics.explore import change_of
from semantic.project.model import GRAINS
from semantic.project.project import Answer, Project
from semantic.query.query import make_query
from server.graphql import types as t
from server.graphql.extension import PhloemExtension, log_errors, record, translated, with_explain
from server.graphql.names import Catalog, DimensionField, MetricField, catalog, order_grains
from server.graphql.where import compile_where

SCALAR_TYPES = {"categorical": str, "boolean": bool, "number": float}
GRAPHQL_TYPES = {"categorical": "String", "boolean": "Boolean", "number": "Float", "time": "TimeBuckets"}

QUERY_DOC = """Metrics by dimensions. The selection set is the query: the metric fields you select are its
metrics, the dimension fields (and the grains you select under a time dimension) are its dimensions.
Metrics are Float, Int for counts and `format: integer`, and Decimal for money (`format: currency`): the exact
digits as a string, "1234567890123456.78", never rounded through a double."""
TREE_DOC = """A metric and every metric it is computed from, valued over `period` and a comparison period
(`comparisonRule`, and `comparison` for CUSTOM; default: PREVIOUS, the period just before: a whole calendar
month → the month before, as REST /api/v1/tree). One metric query per period, without dimensions; `where`
filters both. Values are Float. `contribution` is each node's part of the root's change (see `method`)."""
METHOD_DOC = ("How a node's change is split among its inputs: shapley (default), lmdi, sequential_volume_first, "
              "sequential_rate_first, integrated_gradients, leave_one_out (not additive). Sums and differences "
              "always split by direct differences.")
RULE_DOC = ("PREVIOUS: the period just before (whole calendar months → as many months before, so a month → the "
            "month before and a quarter → the quarter before; a whole ISO week → the week before; other spans → "
            "as many days before). YEAR_AGO: the same calendar span a year earlier (Feb 29 → Feb 28). CUSTOM: the "
            "`comparison` dates. Default: CUSTOM when `comparison` is given, else PREVIOUS.")


@strawberry.enum(description="How the comparison period of a metric tree is chosen (semantic.metrics.periods).")
class ComparisonRule(Enum):
    PREVIOUS = "previous"
    YEAR_AGO = "year_ago"
    CUSTOM = "custom"


META_DOC = "Views, dimensions, measures, metrics and the metric tree, and the `Row` field of each."


class PhloemSchema(strawberry.Schema):
    def process_errors(self, errors, execution_context=None) -> None:
        log_errors(errors)  # no tracebacks: expected errors are answers, unexpected ones were logged on the spot


def _read(source: Any, name: str) -> Any:
    """Rows are dicts; everything else is an object."""
    return source.get(name) if type(source) is dict else getattr(source, name)


def build_schema(project: Project, timeout: float | None = None) -> strawberry.Schema:
    """The GraphQL schema of `project`'s model; queries that run longer than `timeout` s are cancelled."""
    compiler = project.compiler
    names = catalog(compiler)
    row = _row_type(names)
    where_type = _where_type(names)
    order_type = _order_type(names)
    meta = _meta(compiler, names)

    def run(info: strawberry.Info, **fields: Any) -> Answer:
        query = make_query(**fields)
        cancel = _cancel_of(info)
        if cancel is not None:
            cancel.check()  # the client went away: the operation's remaining queries are not started
        ticket = _ticket_of(info)  # the caller's roles' time, row and byte limits, where the router admitted it
        if ticket is not None:
            answer = project.run(query, timeout=ticket.timeout, cancel=cancel, limits=ticket.limits)
        else:
            answer = project.run(query, timeout=timeout or None, cancel=cancel)
        record(answer)
        return answer

    @translated
    def resolve_query(
        info: strawberry.Info,
        where: Annotated[where_type | None, strawberry.argument(description="Filters on dimensions.")] = None,
        time_range: Annotated[t.TimeRange | None, strawberry.argument(
            description="Each view's rows whose time column is in the range.")] = None,
        order_by: Annotated[list[order_type] | None, strawberry.argument(
            description="Sort by selected fields, in order.")] = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> list[row]:
        wanted = Selection.of(info.selected_fields, names)
        if not wanted.metrics:
            raise QueryError("select at least one metric field in `query`",
                             f"e.g. query {{ {next(iter(names.metrics), 'revenue')} metricTime {{ month }} }}")
        outputs = wanted.outputs(compiler.graph)
        answer = run(info, metrics=[m.metric for m in wanted.metrics], dimensions=[d for d, _, _ in wanted.dims],
                     filters=compile_where(where, names), time_range=_range(time_range),
                     order_by=_order(order_by or [], wanted, outputs, names), limit=limit, offset=offset)
        return wanted.rows(answer.table)

    @translated
    def resolve_tree(
        info: strawberry.Info,
        root_: Annotated[str, strawberry.argument(name="root", description="A metric's name (`net_revenue`) or "
                                                                            "its field (`netRevenue`).")],
        period: t.PeriodInput,
        comparison: Annotated[t.PeriodInput | None, strawberry.argument(
            description="The dates of a CUSTOM comparison (given alone, it implies CUSTOM).")] = None,
        comparison_rule: Annotated[ComparisonRule | None, strawberry.argument(
            name="comparisonRule", description=RULE_DOC)] = None,
        where: Annotated[where_type | None, strawberry.argument(description="Filters on dimensions.")] = None,
        method: Annotated[str, strawberry.argument(description=METHOD_DOC)] = "shapley",
    ) -> t.MetricTree:
        tree = compiler.tree
        name = names.metrics[root_].metric if root_ in names.metrics else root_
        levels = _subtree(tree, name, names)
        now = _period(period)
        custom = (comparison.start, comparison.end) if comparison else None
        _, before = periods.compare((now.start, now.end), comparison_rule.value if comparison_rule else None, custom)
        before = t.Period(start=before.start, end=before.end)
        filters = compile_where(where, names)
        check_method(method)

        def values(p: t.Period) -> dict[str, Any]:
            table = run(info, metrics=list(levels), filters=filters, time_range={"start": p.start, "end": p.end}).table
            return {m: (table.column(i)[0].as_py() if table.num_rows else None) for i, m in enumerate(levels)}

        current, previous = values(now), values(before)
        split = decompose_tree(tree, name, previous, current, method, project.model.metrics, levels)
        nodes = [_tree_node(tree.nodes[n], level, current[n], previous[n], names.metric_field(n),
                            [_edge(e) for e in tree.children(n)], split.contributions[n], split.shares[n])
                 for n, level in levels.items()]
        return t.MetricTree(root=name, period=now, comparison=before, nodes=nodes,
                            edges=[e for node in nodes for e in node.children], method=method, exact=split.exact,
                            residual=split.residual)

    def resolve_meta() -> t.Meta:
        return meta

    query = _make_type("Query", {
        "query": (list[row], strawberry.field(resolver=resolve_query, name="query", description=QUERY_DOC)),
        "metric_tree": (t.MetricTree, strawberry.field(resolver=resolve_tree, name="metricTree",
                                                       description=TREE_DOC)),
        "meta": (t.Meta, strawberry.field(resolver=resolve_meta, name="meta", description=META_DOC)),
    })
    config = StrawberryConfig(default_resolver=_read, scalar_map=t.SCALARS)
    return with_explain(PhloemSchema(query=query, config=config, extensions=[PhloemExtension]))


# ---------------------------------------------------------------- the selection set is the query


@dataclass
class Selection:
    metrics: list[MetricField]
    dims: list[tuple[str, DimensionField, str | None]]  # (library text, field, grain)
    times: list[DimensionField]  # time fields selected, with or without grains under them

    @classmethod
    def of(cls, selected: list, names: Catalog) -> "Selection":
        metrics: dict[str, MetricField] = {}
        dims: dict[str, tuple[str, DimensionField, str | None]] = {}
        times: dict[str, DimensionField] = {}

        def walk(selections: list, time: DimensionField | None) -> None:
            for s in selections:
                if _skipped(s):
                    continue
                if isinstance(s, FragmentSpread | InlineFragment):
                    walk(s.selections, time)
                elif time is not None:
                    if s.name in GRAINS:
                        dims.setdefault(time.grain(s.name), (time.grain(s.name), time, s.name))
                elif s.name in names.metrics:
                    metrics.setdefault(s.name, names.metrics[s.name])
                elif s.name in names.dimensions:
                    d = names.dimensions[s.name]
                    if d.type == "time":
                        times.setdefault(d.field, d)
                        walk(s.selections, d)
                    else:
                        dims.setdefault(d.text, (d.text, d, None))

        for top in selected:
            walk(top.selections, None)
        return cls(list(metrics.values()), list(dims.values()), list(times.values()))

    def outputs(self, graph) -> dict[str, str]:
        """Each selected dimension's column name in the answer (MODEL.md §8, names in results)."""
        refs = [graph.resolve(text) for text, _, _ in self.dims]
        plain = [r.output for r in refs]
        return {text: (f"{r.view}__{r.output}" if plain.count(r.output) > 1 else r.output)
                for (text, _, _), r in zip(self.dims, refs, strict=True)}

    def rows(self, table: pa.Table) -> list[dict]:
        """The answer as row dicts keyed by field attribute; a time field is a dict of its grains."""
        n = len(self.dims)
        assert table.num_columns == n + len(self.metrics), table.column_names
        plain: dict[str, list] = {}
        times: dict[str, dict[str, list]] = {d.attr: {} for d in self.times}  # `{ __typename }` alone: no grains
        for i, (_, d, grain) in enumerate(self.dims):
            column = table.column(i)
            if grain is None:
                plain[d.attr] = _dimension_values(column, d.type)
            else:
                times[d.attr][grain] = column.to_pylist()
        for j, m in enumerate(self.metrics):
            plain[m.attr] = _metric_values(table.column(n + j), m.integer, m.money)
        out = []
        for r in range(table.num_rows):
            item = {attr: values[r] for attr, values in plain.items()}
            for attr, grains in times.items():
                item[attr] = {g: values[r] for g, values in grains.items()}
            out.append(item)
        return out


def _ticket_of(info: strawberry.Info):
    """The operation's admission (`context_value={"ticket": …}`): its roles' limits, if the router set them."""
    context = info.context
    return context.get("ticket") if isinstance(context, dict) else None


def _cancel_of(info: strawberry.Info) -> Cancel | None:
    """The request's off switch (`context_value={"cancel": …}`, set by the HTTP router), if any."""
    context = info.context
    return context.get("cancel") if isinstance(context, dict) else None


def _skipped(s) -> bool:
    d = s.directives or {}
    return bool(d.get("skip", {}).get("if")) or ("include" in d and not d["include"].get("if"))


def _order(order_by: list, wanted: Selection, outputs: dict[str, str], names: Catalog) -> list[str]:
    out = []
    for item in order_by:
        field = item.field.value
        sign = "-" if item.desc else ""
        if field in names.metrics:
            targets = [names.metrics[field].metric] if names.metrics[field] in wanted.metrics else []
        else:
            grains = {g: text for text, d, g in wanted.dims if d.field == field}
            targets = [outputs[grains[g]] for g in order_grains(grains)] if None not in grains else \
                [outputs[grains[None]]]
        if not targets:
            selected = [m.field for m in wanted.metrics] + list(dict.fromkeys(d.field for _, d, _ in wanted.dims))
            raise QueryError(f"cannot order by `{field}`: it is not selected",
                             f"select `{field}` too, or order by one of: {', '.join(selected)}")
        out += [sign + name for name in targets]
    return out


def _range(time_range: Any) -> dict | None:
    if time_range is None or (time_range.start is None and time_range.end is None):
        return None
    return {"start": time_range.start, "end": time_range.end}


# ---------------------------------------------------------------- values


def _metric_values(column: pa.ChunkedArray, integer: bool, money: bool = False) -> list:
    kind = column.type
    if money:  # Decimals as they are; a double or integer result is exact in the Decimal scalar's serializer
        return column.to_pylist()
    if integer:
        if pa.types.is_integer(kind):
            return column.to_pylist()
        return [None if v is None else int(round(v)) for v in column.to_pylist()]  # `format: integer` displays whole
    if pa.types.is_decimal(kind):
        return [None if v is None else float(v) for v in column.to_pylist()]
    return column.to_pylist()


def _dimension_values(column: pa.ChunkedArray, kind: str) -> list:
    values = column.to_pylist()
    if kind == "categorical" and not pa.types.is_string(column.type) and not pa.types.is_large_string(column.type):
        return [None if v is None else (v.isoformat() if isinstance(v, dt.date) else str(v)) for v in values]
    if kind == "number" and pa.types.is_decimal(column.type):
        return [None if v is None else float(v) for v in values]
    return values


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _subtree(tree, name: str, names: Catalog) -> dict[str, int]:
    """`name` and every metric it is computed from, breadth-first, with their distance from it."""
    tree.node(name)  # an unknown metric is a QueryError with a suggestion
    levels, queue = {name: 0}, [name]
    for parent in queue:  # the queue grows while it is walked
        for e in tree.children(parent):
            if e.child not in levels:
                levels[e.child] = levels[parent] + 1
                queue.append(e.child)
    offset = next((e for n in levels for e in tree.children(n) if e.offset), None)
    if offset is not None:
        raise QueryError(f"`{offset.parent}` reads `{offset.child}` {offset.offset} earlier, which needs a time "
                         "grain, and a metric tree values each metric over a whole period",
                         f"query it by time instead: query {{ {names.metric_field(offset.parent) or offset.parent} "
                         "metricTime { month } }")
    return levels


def _tree_node(node, level: int, value: Any, base: Any, field: str | None, children: list[t.MetricTreeEdge],
               contribution: float | None = None, share: float | None = None) -> t.MetricTreeNode:
    change = change_of(value, base)
    return t.MetricTreeNode(
        name=node.name, field=field, label=node.label, description=node.description, kind=node.kind,
        formula=node.formula, format=node.format, good=node.good, depth=node.depth, level=level,
        value=_float(value), comparison_value=_float(base), change=_float(change),
        change_pct=_float(change / abs(base)) if change is not None and base else None, children=children,
        contribution=contribution, share=share)


def _period(p: Any) -> t.Period:
    if p.start > p.end:
        raise QueryError(f"the period starts ({p.start}) after it ends ({p.end})", "swap start and end")
    return t.Period(start=p.start, end=p.end)


def _edge(e) -> t.MetricTreeEdge:
    return t.MetricTreeEdge(parent=e.parent, child=e.child, operator=e.operator, sign=e.sign, alias=e.alias,
                            offset=e.offset)


# ---------------------------------------------------------------- types generated from the model


def _make_type(name: str, fields: dict[str, tuple[Any, StrawberryField]], description: str | None = None,
               is_input: bool = False, build=None) -> type:
    """A strawberry type from (annotation, field) pairs keyed by attribute; `build(cls)` may add more first."""
    namespace: dict[str, Any] = {"__annotations__": {attr: annotation for attr, (annotation, _) in fields.items()}}
    for attr, (_, f) in fields.items():
        namespace[attr] = f
    cls = types.new_class(name, (), {}, lambda ns: ns.update(namespace))
    if build:
        build(cls)
    return (strawberry.input if is_input else strawberry.type)(cls, description=description)


def _row_type(names: Catalog) -> type:
    fields: dict[str, tuple[Any, StrawberryField]] = {}
    for m in names.metrics.values():
        kind = int if m.integer else decimal.Decimal if m.money else float
        fields[m.attr] = (kind | None, strawberry.field(name=m.field, description=m.description))
    for d in names.dimensions.values():
        kind = t.TimeBuckets if d.type == "time" else SCALAR_TYPES[d.type] | None
        fields[d.attr] = (kind, strawberry.field(name=d.field, description=d.description))
    return _make_type("Row", fields, "One row of a metric query: the metrics and dimensions you selected.")


def _where_type(names: Catalog) -> type:
    fields: dict[str, tuple[Any, StrawberryField]] = {
        d.attr: (t.FILTER_TYPES[d.type] | None, strawberry.field(name=d.field, default=UNSET, description=d.description))
        for d in names.dimensions.values()}

    def combinators(cls: type) -> None:  # Where refers to itself
        for attr, name, annotation, doc in (
                ("and_", "and", list[cls] | None, "All of these hold (an empty list is true)."),
                ("or_", "or", list[cls] | None, "At least one of these holds (an empty list is false)."),
                ("not_", "not", cls | None, "This does not hold.")):
            cls.__annotations__[attr] = annotation
            setattr(cls, attr, strawberry.field(name=name, default=UNSET, description=doc))

    return _make_type("Where", fields, "Conditions on dimensions; everything written in one `Where` must hold. "
                      "Compiled to one SQL boolean over dimension names (values are always literals).",
                      is_input=True, build=combinators)


def _order_type(names: Catalog) -> type:
    members = {f"f{i}": strawberry.enum_value(f.field, name=f.field, description=f.description)
               for i, f in enumerate([*names.metrics.values(), *names.dimensions.values()])}
    row_field = strawberry.enum(Enum("RowField", members),
                                description="A metric or dimension field of `Row`. A time field sorts by every "
                                            "grain selected under it.")
    return _make_type("OrderBy", {
        "field": (row_field, strawberry.field(name="field")),
        "desc": (bool, strawberry.field(name="desc", default=False)),
    }, "Sort by a selected field; ascending unless `desc`. NULLs sort last.", is_input=True)


def _meta(compiler, names: Catalog) -> t.Meta:
    d = describe(compiler)
    views = [t.MetaView(
        name=v["name"], label=v["label"], description=v["description"], time=v["time"], primary_key=v["primary_key"],
        entities=[t.MetaEntity(**e) for e in v["entities"]],
        dimensions=[t.MetaDimension(**x, field=names.dimension_field(x["qualified"])) for x in v["dimensions"]],
        measures=[t.MetaMeasure(**x) for x in v["measures"]],
        joins=[t.MetaJoin(**j) for j in v["joins"]]) for v in d["views"]]
    metrics = []
    for m in d["metrics"]:
        field = names.metric_field(m["name"])
        metrics.append(t.MetaMetric(
            **{k: v for k, v in m.items() if k != "children"}, field=field,
            graphql_type=names.metrics[field].graphql_type if field else "Float",
            children=[t.MetaMetricChild(**c) for c in m["children"]]))
    fields = [t.MetaField(field=f.field, kind="metric", name=f.metric, type=f.graphql_type)
              for f in names.metrics.values()]
    fields += [t.MetaField(field=f.field, kind="dimension", name=f.text, type=GRAPHQL_TYPES[f.type])
               for f in names.dimensions.values()]
    return t.Meta(project=d["project"], version=d["version"], time_dimension=d["time_dimension"], grains=d["grains"],
                  views=views, metrics=metrics, tree=t.MetaTree(roots=d["tree"]["roots"],
                                                               edges=[t.MetaEdge(**e) for e in d["tree"]["edges"]]),
                  fields=fields)


__all__ = ["build_schema"]
