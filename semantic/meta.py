"""What a project offers, as plain data: every door (REST meta, GraphQL, pg catalog) describes the same model."""

from __future__ import annotations

from typing import Any

from semantic.project.model import GRAINS
from semantic.query.graph import METRIC_TIME


def describe(compiler) -> dict[str, Any]:
    model, graph, tree = compiler.model, compiler.graph, compiler.tree
    views = []
    for v in model.views.values():
        dims = []
        for name, d in graph.dims[v.name].items():
            declared = next((x for x in v.dimensions if x.name == name), None)
            dims.append({
                "name": name, "qualified": f"{v.name}.{name}", "type": d.type,
                "grains": list(GRAINS) if d.type == "time" else [],
                "label": (declared.label if declared else None) or name.replace("_", " "),
                "description": (declared.description if declared else None) or "",
            })
        views.append({
            "name": v.name, "label": v.label or v.name.replace("_", " "), "description": v.description or "",
            "time": v.time, "primary_key": v.primary_key,
            "entities": [{"name": e.name, "column": e.expr} for e in v.entities],
            "dimensions": dims,
            "measures": [{"name": m.name, "qualified": f"{v.name}.{m.name}", "agg": m.agg, "expr": m.expr or m.name,
                          "filter": m.filter, "label": m.label or m.name.replace("_", " "),
                          "description": m.description or ""} for m in v.measures],
            "joins": [{"to": h.target, "on": h.entity} for h in graph.hops[v.name]],
        })
    metrics = []
    for name, node in tree.nodes.items():
        m = model.metrics[name]
        metrics.append({
            "name": name, "kind": node.kind, "formula": node.formula, "measure": node.measure,
            "label": node.label, "description": node.description, "format": node.format, "good": node.good,
            "owner": node.owner, "depth": node.depth, "join_to_timespine": m.join_to_timespine,
            "children": [{"metric": e.child, "operator": e.operator, "sign": e.sign, "alias": e.alias,
                          "offset": e.offset} for e in tree.children(name)],
        })
    return {
        "project": model.settings.name, "version": model.version, "time_dimension": METRIC_TIME,
        "grains": list(GRAINS), "views": views, "metrics": metrics, "rollups": rollups(compiler),
        "tree": {"roots": tree.roots(),
                 "edges": [{"parent": e.parent, "child": e.child, "operator": e.operator, "sign": e.sign}
                           for e in tree.edges]},
    }


def rollups(compiler) -> list[dict[str, Any]]:
    """Each rollup's definition, refresh schedule and what the warehouse last reported about it."""
    out = []
    for name, spec in compiler.rollups.items():
        r, state = spec.rollup, compiler.catalog.states.get(name)
        out.append({
            "name": name, "view": spec.view, "description": r.description or "",
            "measures": list(spec.measures), "dimensions": [d.text for d in spec.dims], "grain": spec.grain,
            "partition": spec.partition, "refresh": r.refresh, "incremental": r.incremental,
            "freshness": r.freshness, "timezone": spec.timezone,
            "built": None if state is None else {
                "rows": state.rows, "partitions": state.partitions,
                "refreshed_at": state.built_at.isoformat() if state.built_at else None,
                "fresh_before": state.fresh_before.isoformat() if state.fresh_before else None,
                "behind": state.behind, "current": state.current},
        })
    return out
