"""What-if and targets on a metric tree: recompute every node bottom-up from changed inputs.

A what-if changes some metrics of a period by a percentage and evaluates each formula above them on the
changed values (the formulas of `semantic.metrics.formula`, NULL-safe as the SQL is). A changed metric is an
input: its own inputs keep their values. Metrics not above a change keep their values exactly. Cumulative,
offset and conversion metrics are leaves: they do not follow their inputs.
"""

from __future__ import annotations

from collections.abc import Mapping

from semantic.errors import QueryError, did_you_mean
from semantic.metrics.formula import Formula, formula_of
from semantic.metrics.tree import MetricTree


class Formulas(dict):
    """Each metric's formula (None for a leaf), parsed once."""

    def __init__(self, tree: MetricTree, metrics: Mapping | None = None):
        super().__init__()
        self.tree, self.metrics = tree, metrics

    def __missing__(self, name: str) -> Formula | None:
        self[name] = formula_of(self.tree, name, self.metrics)
        return self[name]


def evaluate(tree: MetricTree, root: str, inputs: Mapping, metrics: Mapping | None = None,
             formulas: Formulas | None = None) -> dict[str, float | None]:
    """`root` and everything below it computed from `inputs` (a value for each leaf; a value given for an
    inner metric holds it fixed)."""
    formulas = formulas if formulas is not None else Formulas(tree, metrics)
    out: dict[str, float | None] = {}

    def value(n: str) -> float | None:
        if n not in out:
            f = formulas[n]
            if n in inputs or f is None:
                v = inputs.get(n)
            else:
                v = f.value({c: value(c) for c in f.children})
            out[n] = None if v is None else float(v)
        return out[n]

    value(root)
    return out


def what_if(tree: MetricTree, root: str, values: Mapping, changes: Mapping[str, float],
            metrics: Mapping | None = None) -> dict[str, float | None]:
    """The new value of every metric under `root` when each metric in `changes` moves by that many percent."""
    unknown = [n for n in changes if n not in values]
    if unknown:
        raise QueryError(f"`{unknown[0]}` is not in the tree of `{root}`",
                         did_you_mean(unknown[0], values) or f"change one of: {', '.join(values)}")
    formulas = Formulas(tree, metrics)
    new: dict[str, float | None] = {}
    moved: dict[str, bool] = {}

    def value(n: str) -> float | None:
        if n in new:
            return new[n]
        base = None if values.get(n) is None else float(values[n])
        f = formulas[n]
        if n in changes:
            new[n], moved[n] = (None if base is None else base * (1 + float(changes[n]) / 100)), True
        elif f is None or not any(c in values for c in f.children):
            new[n], moved[n] = base, False
        else:
            kids = {c: value(c) for c in f.children}
            moved[n] = any(moved.get(c, False) for c in f.children)
            new[n] = f.value(kids) if moved[n] else base
        return new[n]

    for n in values:
        value(n)
    return new


def elasticity(tree: MetricTree, root: str, values: Mapping, metric: str, pct: float = 1.0,
               metrics: Mapping | None = None) -> float | None:
    """The root's relative change over `metric`'s relative change, for a `pct` % move of `metric`."""
    new = what_if(tree, root, values, {metric: pct}, metrics)
    if new[root] is None or not values.get(root):
        return None
    return (new[root] / float(values[root]) - 1) / (pct / 100)


# ---------------------------------------------------------------- targets


def required_growth(current: float, target: float, periods: int) -> float:
    """The compound rate per period that takes `current` to `target` in `periods` periods."""
    return (target / current) ** (1 / periods) - 1


def equal_relative_split(factors: Mapping[str, float], target_ratio: float) -> dict[str, float]:
    """Grow every factor of a product by the same ratio so the product grows by `target_ratio`."""
    growth = target_ratio ** (1 / len(factors))
    return {k: v * growth for k, v in factors.items()}


def solve_for(tree: MetricTree, root: str, inputs: Mapping, metric: str, target: float,
              metrics: Mapping | None = None) -> float:
    """The value of `metric` that brings `root` to `target`, every other input held (secant method)."""
    formulas = Formulas(tree, metrics)

    def gap(x: float) -> float:
        out = evaluate(tree, root, {**inputs, metric: x}, formulas=formulas)[root]
        if out is None:
            raise QueryError(f"`{root}` is undefined when `{metric}` is {x:g}")
        return out - target

    start = evaluate(tree, root, inputs, formulas=formulas).get(metric) if metric not in inputs else inputs[metric]
    if start is None:
        raise QueryError(f"`{metric}` is not under `{root}` or has no value")
    a = float(start)
    b = a * 1.01 if a else 1.0
    ga, gb = gap(a), gap(b)
    for _ in range(100):
        if gb == ga:
            break
        a, b = b, b - gb * (b - a) / (gb - ga)
        ga, gb = gb, gap(b)
        if abs(gb) <= 1e-12 * max(1.0, abs(target)):
            return b
    raise QueryError(f"no value of `{metric}` brings `{root}` to {target:g}", "change another input")
