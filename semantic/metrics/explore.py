"""The metric-tree explorer's library: a tree valued over two periods with each node's contribution to the
root's change, sparkline series, a dimension drill and what-if. Plain data out, as `semantic.meta` does.

Every function asks the project ordinary metric queries: `tree_values` and `what_if` one per period over all
metrics of the subtree (no dimensions), `series` one by `metric_time` at the grain, `drill` one per period
and dimension. Cumulative, offset and conversion metrics are leaves (`semantic.metrics.decompose`); an offset
metric needs a time grain, so over a whole period its value is null with a reason (the series has it).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from semantic.errors import QueryError
from semantic.metrics import drill as adtributor
from semantic.metrics import whatif
from semantic.metrics.decompose import check_method, decompose_tree, subtree
from semantic.metrics.formula import formula_of
from semantic.metrics.periods import GRAINS as SERIES_GRAINS
from semantic.metrics.periods import Period, add_buckets, as_date, bucket, compare
from semantic.metrics.segments import Segment
from semantic.query.plan import UNIT_RANK, offset_parts
from semantic.query.query import make_query


def _offset_nodes(tree, names: Iterable[str]) -> dict[str, str]:
    """Metrics reading an earlier period, with the offset."""
    return {n: e.offset for n in names for e in tree.children(n) if e.offset}


def _values(project, names: list[str], period: Period, filters, timeout) -> dict[str, Any]:
    """One metric query over the period: each metric's value (None for offsets, which need a grain)."""
    offsets = _offset_nodes(project.compiler.tree, names)
    asked = [n for n in names if n not in offsets]
    out: dict[str, Any] = dict.fromkeys(names)
    if asked:
        table = _run(project, timeout, metrics=asked, filters=list(filters), time_range=period.as_dict()).table
        if table.num_rows:
            out.update({n: table.column(n)[0].as_py() for n in asked})
    return out


def _run(project, timeout, **fields):
    query = make_query(**fields)
    return project.run(query, timeout=timeout) if timeout else project.run(query)


def change_of(value: Any, base: Any) -> Any:
    """value − base, exact for decimals and integers; None when either is."""
    if value is None or base is None:
        return None
    if isinstance(value, float) or isinstance(base, float):
        return float(value) - float(base)
    return value - base  # Decimal and int stay exact


# ---------------------------------------------------------------- the tree


def tree_values(project, root: str, period: Any, comparison: Any = None, filters: Iterable[str] = (),
                method: str = "shapley", timeout: float | None = None, *, rule: str | None = None) -> dict[str, Any]:
    """`root` and the metrics it is computed from over `period` and a comparison period (`rule` and the
    `comparison` dates, see `semantic.metrics.periods.compare`; default: the period just before), with each
    node's contribution to the root's change."""
    check_method(method)
    tree = project.compiler.tree
    levels = subtree(tree, root)
    now = Period.of(period)
    rule, before = compare(now, rule, comparison)
    current = _values(project, list(levels), now, filters, timeout)
    previous = _values(project, list(levels), before, filters, timeout)
    split = decompose_tree(tree, root, previous, current, method, project.model.metrics, levels)
    offsets = _offset_nodes(tree, levels)
    nodes = []
    for name, level in levels.items():
        node, value, base = tree.nodes[name], current[name], previous[name]
        change = change_of(value, base)
        reason = split.reasons.get(name)
        if name in offsets:
            reason = f"`{name}` reads an earlier period ({offsets[name]}), which needs a time grain: see the series"
        nodes.append({
            "name": name, "label": node.label, "kind": node.kind, "formula": node.formula, "format": node.format,
            "good": node.good, "depth": node.depth, "level": level, "value": value, "comparison": base,
            "change": change, "change_pct": float(change) / abs(float(base)) if change is not None and base else None,
            "contribution": split.contributions[name], "share": split.shares[name], "reason": reason})
    edges = [{"parent": e.parent, "child": e.child, "operator": e.operator, "sign": e.sign}
             for name in levels if formula_of(tree, name) is not None for e in tree.children(name)]
    return {"root": root, "method": method, "exact": split.exact, "convention": split.convention,
            "period": now.as_dict(), "comparison": before.as_dict(), "comparison_rule": rule, "nodes": nodes, "edges": edges,
            "residual": split.residual}


# ---------------------------------------------------------------- sparklines


def series(project, root: str, grain: str = "month", periods: int = 12, end: Any = None,
           filters: Iterable[str] = (), timeout: float | None = None) -> dict[str, Any]:
    """Every metric of `root`'s tree per `grain` bucket over the last `periods` buckets up to `end`, in one
    query by `metric_time`; a bucket without rows is null. An offset finer than the grain gives nulls."""
    if grain not in SERIES_GRAINS:
        raise QueryError(f"unknown grain `{grain}`", f"one of: {', '.join(SERIES_GRAINS)}")
    if periods < 1:
        raise QueryError("`periods` must be at least 1")
    tree = project.compiler.tree
    names = list(subtree(tree, root))
    last = as_date(end) if end is not None else dt.date.today()
    first = add_buckets(bucket(last, grain), grain, -(periods - 1))
    buckets = [add_buckets(first, grain, i) for i in range(periods)]
    offsets = _offset_nodes(tree, names)
    asked = [n for n in names if n not in offsets or UNIT_RANK[offset_parts(offsets[n])[1]] >= UNIT_RANK[grain]]
    time = f"metric_time__{grain}"
    rows: dict[dt.date, dict] = {}
    if asked:
        table = _run(project, timeout, metrics=asked, dimensions=[time], filters=list(filters),
                     time_range={"start": first, "end": last}).table
        rows = {as_date(r[time]): r for r in table.to_pylist() if r[time] is not None}
    out = {n: [rows.get(b, {}).get(n) if n in asked else None for b in buckets] for n in names}
    return {"root": root, "grain": grain, "periods": buckets, "series": out}


# ---------------------------------------------------------------- what-if


def what_if(project, root: str, period: Any, changes: Mapping[str, float], filters: Iterable[str] = (),
            timeout: float | None = None, *, comparison: Any = None, rule: str | None = None) -> dict[str, Any]:
    """Every metric of `root`'s tree over `period` before and after moving each metric in `changes` by that
    many percent (formulas recomputed bottom-up; see `semantic.metrics.whatif`). Given a comparison (`rule`
    and/or `comparison` dates, as `tree_values` takes), each node also carries its value over that period."""
    tree = project.compiler.tree
    levels = subtree(tree, root)
    now = Period.of(period)
    values = _values(project, list(levels), now, filters, timeout)
    new = whatif.what_if(tree, root, values, changes, project.model.metrics)
    nodes = [{"name": n, "value": values[n], "new_value": new[n],
              "change": None if new[n] is None or values[n] is None else new[n] - float(values[n])} for n in levels]
    out = {"root": root, "period": now.as_dict(), "changes": dict(changes), "nodes": nodes}
    if rule is not None or comparison is not None:
        rule, before = compare(now, rule, comparison)
        base = _values(project, list(levels), before, filters, timeout)
        for node in nodes:
            node["comparison"] = base[node["name"]]
        out.update(comparison=before.as_dict(), comparison_rule=rule)
    return out


# ---------------------------------------------------------------- drill


def dimensions_of(project, metric: str) -> list[str]:
    """The categorical and boolean dimensions every part of `metric` can be broken down by."""
    graph = project.compiler.graph
    names = dict.fromkeys(n for dims in graph.dims.values() for n, d in dims.items() if d.type != "time"
                          and d.type != "number")
    out = []
    for name in names:
        try:
            project.compile(make_query(metrics=[metric], dimensions=[name]))
        except QueryError:
            continue
        out.append(name)
    return out


def drill_kind(project, metric: str) -> tuple[str, tuple[str, str] | None]:
    """`additive`, `ratio` (with numerator and denominator) or `non_additive` (see `semantic.metrics.drill`)."""
    tree, model = project.compiler.tree, project.model
    if _additive(project, metric):
        return "additive", None
    f = formula_of(tree, metric, model.metrics)
    parts = f.ratio() if f is not None else None
    if parts and all(_additive(project, p) for p in parts):
        return "ratio", parts
    return "non_additive", None


def _additive(project, metric: str) -> bool:
    m = project.model.metrics[metric]
    if m.measure:
        view, _, name = m.measure.rpartition(".")
        measures = project.compiler.graph.measures
        view = view or next(v for v, ms in measures.items() if name in ms)
        return measures[view][name].agg in ("sum", "count")
    f = formula_of(project.compiler.tree, metric, project.model.metrics)
    linear = f.linear() if f is not None and not f.fills else None
    return linear is not None and linear[1] == 0 and all(_additive(project, c) for c in f.children)


def drill(project, metric: str, period: Any, comparison: Any = None, dimensions: Iterable[str] | None = None,
          filters: Iterable[str] = (), t_eep: float = adtributor.T_EEP, t_ep: float = adtributor.T_EP,
          k: int = adtributor.K, timeout: float | None = None, *, rule: str | None = None) -> dict[str, Any]:
    """Which values of which dimensions drove `metric`'s change: every segment ranked, Adtributor's root
    causes first (`semantic.metrics.drill`)."""
    project.compiler.tree.node(metric)
    now = Period.of(period)
    rule, before = compare(now, rule, comparison)
    kind, parts = drill_kind(project, metric)
    dims = list(dimensions) if dimensions else dimensions_of(project, metric)
    asked = [metric, *(parts or ())]
    totals = [_values(project, [metric], p, filters, timeout)[metric] for p in (before, now)]
    elements: list[adtributor.Element] = []
    for d in dims:
        t0, t1 = (_run(project, timeout, metrics=asked, dimensions=[d], filters=list(filters),
                       time_range=p.as_dict()).table for p in (before, now))
        rows0 = {r[0]: r[1:] for r in zip(*(c.to_pylist() for c in t0.columns), strict=True)}
        rows1 = {r[0]: r[1:] for r in zip(*(c.to_pylist() for c in t1.columns), strict=True)}
        if kind == "ratio":
            keys = list(dict.fromkeys([*rows0, *rows1]))
            zero = (None, 0, 0)
            segments = {v: Segment(*(_num(x) for x in (*rows0.get(v, zero)[1:], *rows1.get(v, zero)[1:])))
                        for v in keys}
            elements += adtributor.ratio(d, segments)
        else:
            elements += adtributor.additive(d, {v: r[0] for v, r in rows0.items()}, {v: r[0] for v, r in rows1.items()})
    causes = adtributor.adtributor(elements, t_eep, t_ep, k)
    return {"metric": metric, "kind": kind, "period": now.as_dict(), "comparison": before.as_dict(),
            "comparison_rule": rule, "value0": totals[0], "value1": totals[1], "change": change_of(totals[1], totals[0]),
            "thresholds": {"t_eep": t_eep, "t_ep": t_ep, "k": k}, "dimensions": dims,
            "root_causes": [c.__dict__ for c in causes],
            "items": [e.as_dict() for e in adtributor.ranked(elements, causes)]}


def _num(x: Any) -> float:
    return float(x) if isinstance(x, int | float | Decimal) else 0.0
