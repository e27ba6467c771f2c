"""How much of a metric's change between two periods each input explains, node by node and down to the root.

Period 0 is the comparison, period 1 the current period; a node `y = f(x_1 … x_n)` changes by
`Δ = f(x¹) − f(x⁰)` and each child gets a contribution `c_i` (reference: shared/reference/metric-trees).

*One node.* A formula that is a sum of children times constants (`revenue - discounts - refunds`) splits
by direct differences, `c_k = a_k · Δx_k`: a subtracted child has its sign flipped, and every method agrees.
Any other formula (`*`, `/`, functions) splits by the chosen method:

- `shapley` (default): exact Shapley values, 2^n evaluations of the formula with children switched between
  periods; symmetric, independent of operand order, defined for zeros and negatives.
- `lmdi`: LMDI-I, `c_i = L(y¹, y⁰) · ln(x_i¹ / x_i⁰)` per product term; refused unless the formula is a sum of
  products and quotients of positive values.
- `sequential_volume_first` / `sequential_rate_first`: children switched one at a time in formula order
  (`orders * aov`: orders first) or in reverse order.
- `integrated_gradients`: `Δx_i ∫₀¹ ∂f/∂x_i` along the straight path (Gauss–Legendre, exact derivatives).
- `leave_one_out`: `f(x¹) − f(x¹ with x_i at x_i⁰)`; NOT additive, so `exact` is false.

A formula that is NULL for the values (a division by zero, a NULL input) gives no contributions and a
reason, never infinity.

*Down the tree (the propagation rule).* Nested chaining, §1.4 of the reference: every node `n` carries the
part of the root's change that flows through it, `C_n` (`C_root = Δroot`). A node splits its own change
among its children and passes them its flow in proportion, `C_child += (C_n / Δn) · c_child`, summed over
every parent of the child in a DAG (a metric used by two parents receives both flows). The flows are
conserved at each node, so the leaves' contributions sum to the root's change. When a node's own change is
0 its flow is 0 and the ratio `C_n / Δn` is replaced by the chain of slopes `Σ_parents (C_p / Δp) ·
∂f_p/∂n` at the periods' midpoint, which only decides how offsetting children are shown. Cumulative,
offset and conversion metrics, and formulas this library cannot evaluate, are leaves.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from semantic.errors import QueryError
from semantic.metrics.formula import Formula, Undefined, derivative, formula_of, leaf_reason
from semantic.metrics.tree import MetricTree

METHODS = ("shapley", "lmdi", "sequential_volume_first", "sequential_rate_first", "integrated_gradients",
           "leave_one_out")
NON_ADDITIVE = ("leave_one_out",)
CONVENTION = ("nested: sums and differences split by direct differences (sign flipped when subtracted), other "
              "formulas by the method; each node passes its share of the root's change to its children in "
              "proportion to their contributions to the node's change, summed over every path")
MAX_PLAYERS = 16  # 65,536 evaluations of the formula
EPS = 1e-12


def check_method(method: str) -> str:
    if method not in METHODS:
        raise QueryError(f"unknown decomposition method `{method}`", f"one of: {', '.join(METHODS)}")
    return method


@dataclass(frozen=True)
class Split:
    """One node's change split among its children (None with a reason when the formula is undefined)."""

    contributions: dict[str, float] | None
    delta: float | None
    reason: str | None = None


def split(formula: Formula, x0: Mapping, x1: Mapping, method: str = "shapley") -> Split:
    """Each child's contribution to `formula`'s change from values `x0` (period 0) to `x1` (period 1)."""
    check_method(method)
    ys = []
    for label, x in (("the comparison period", x0), ("the current period", x1)):
        try:
            ys.append(float(formula(x)))
        except Undefined as e:
            return Split(None, None, f"`{formula.metric}` = {formula.text} is undefined in {label}: {e.reason}")
    delta = ys[1] - ys[0]
    linear = formula.linear()
    try:
        if linear is not None:
            a0, a1 = _filled(formula, x0), _filled(formula, x1)
            out = {c: linear[0].get(c, 0.0) * (a1[c] - a0[c]) for c in formula.children}
        elif method == "lmdi":
            out = lmdi(formula, x0, x1)
        elif method == "integrated_gradients":
            out = integrated_gradients(formula, x0, x1)
        elif method == "leave_one_out":
            out = leave_one_out(formula.children, formula, x0, x1)
        elif method.startswith("sequential"):
            players = formula.children if method == "sequential_volume_first" else formula.children[::-1]
            out = sequential(players, formula, x0, x1)
        else:
            out = shapley(formula.children, formula, x0, x1)
    except (Undefined, ZeroDivisionError, OverflowError) as e:
        reason = e.reason if isinstance(e, Undefined) else "a division by zero or an overflow"
        return Split(None, delta, f"`{formula.metric}` = {formula.text} cannot be split ({method}): {reason}")
    if not all(math.isfinite(c) for c in out.values()):
        return Split(None, delta, f"`{formula.metric}` = {formula.text} gives infinite contributions")
    return Split(out, delta)


def _filled(formula: Formula, x: Mapping) -> dict[str, float]:
    out = {}
    for alias, child in formula.aliases.items():
        value = x.get(child)
        if value is None:
            value = formula.fills.get(alias)
        if value is None:
            raise Undefined(f"`{child}` has no value")
        out.setdefault(child, float(value))
    return out


def _mixed(players, x0: Mapping, x1: Mapping, switched) -> dict:
    return {**x0, **{p: x1.get(p) for p in players if p in switched}}


# ---------------------------------------------------------------- one node, by method


def shapley(players, f: Callable, x0: Mapping, x1: Mapping) -> dict[str, float]:
    """Exact Shapley values of the switch from `x0` to `x1`, with `f` evaluated once per subset of players."""
    n = len(players)
    if n > MAX_PLAYERS:
        raise QueryError(f"Shapley over {n} inputs needs 2^{n} evaluations", "use method=sequential_volume_first")
    cache: dict[int, float] = {}

    def v(mask: int) -> float:
        if mask not in cache:
            cache[mask] = float(f({**x0, **{p: x1.get(p) for i, p in enumerate(players) if mask >> i & 1}}))
        return cache[mask]

    weights = [math.factorial(s) * math.factorial(n - s - 1) / math.factorial(n) for s in range(n)]
    out = {}
    for i, p in enumerate(players):
        bit = 1 << i
        out[p] = math.fsum(weights[m.bit_count()] * (v(m | bit) - v(m)) for m in range(1 << n) if not m & bit)
    return out


def sequential(players, f: Callable, x0: Mapping, x1: Mapping) -> dict[str, float]:
    """Switch the players to period 1 one at a time, in order; each gets the change its switch makes."""
    out, before, done = {}, float(f(x0)), []
    for p in players:
        done.append(p)
        after = float(f(_mixed(players, x0, x1, done)))
        out[p], before = after - before, after
    return out


def leave_one_out(players, f: Callable, x0: Mapping, x1: Mapping) -> dict[str, float]:
    """The change that goes away if only this player had stayed at period 0 (not additive)."""
    y1 = float(f(x1))
    return {p: y1 - float(f({**x1, p: x0.get(p)})) for p in players}


def log_mean(p: float, q: float) -> float:
    """L(p, q) = (p − q) / (ln p − ln q), L(p, p) = p."""
    ratio = p / q
    return p if abs(ratio - 1) < 1e-15 else (p - q) / math.log(ratio)


def lmdi(formula: Formula, x0: Mapping, x1: Mapping) -> dict[str, float]:
    """LMDI-I per product term `a · Π x^e`: `a · L(P¹, P⁰) · e · ln(x¹/x⁰)`; linear terms by direct difference."""
    terms = formula.terms()
    if terms is None:
        raise QueryError(f"LMDI applies to sums of products and quotients; `{formula.metric}` = {formula.text} "
                         "is not one", "use method=shapley")
    a0, a1 = _filled(formula, x0), _filled(formula, x1)
    out = dict.fromkeys(formula.children, 0.0)
    for t in terms:
        if not t.powers:
            continue
        if list(t.powers.values()) == [1]:
            (c,) = t.powers
            out[c] += t.coef * (a1[c] - a0[c])
            continue
        for c in t.powers:
            for label, a in (("the comparison period", a0), ("the current period", a1)):
                if a[c] <= 0:
                    raise QueryError(f"LMDI needs positive values: `{c}` is {a[c]:g} in {label} (in `{formula.metric}`"
                                     f" = {formula.text})", "use method=shapley, which accepts zero and negative values")
        p0 = math.prod(a0[c] ** e for c, e in t.powers.items())
        p1 = math.prod(a1[c] ** e for c, e in t.powers.items())
        weight = t.coef * log_mean(p1, p0)
        for c, e in t.powers.items():
            out[c] += weight * e * math.log(a1[c] / a0[c])
    return out


def log_shares(formula: Formula, x0: Mapping, x1: Mapping) -> dict[str, float] | None:
    """Relative impact `ln(x_i¹/x_i⁰) / ln(y¹/y⁰)` (divisors inverted); sums to 1. None when y did not move."""
    delta = float(formula(x1)) - float(formula(x0))
    if delta == 0:
        return None
    return {c: v / delta for c, v in lmdi(formula, x0, x1).items()}


_GAUSS: tuple[list[float], list[float]] | None = None


def integrated_gradients(formula: Formula, x0: Mapping, x1: Mapping, points: int = 48) -> dict[str, float]:
    """`Δx_i ∫₀¹ ∂f/∂x_i(x⁰ + t·Δx) dt` by Gauss–Legendre quadrature; exact for polynomial formulas."""
    global _GAUSS
    if _GAUSS is None:
        import numpy as np

        nodes, weights = np.polynomial.legendre.leggauss(points)
        _GAUSS = [float(t + 1) / 2 for t in nodes], [float(w) / 2 for w in weights]
    a0, a1 = _filled(formula, x0), _filled(formula, x1)
    out = {}
    for c in formula.children:
        step = a1[c] - a0[c]
        slope = math.fsum(w * derivative(formula, {k: a0[k] + t * (a1[k] - a0[k]) for k in a0}, c)
                          for t, w in zip(*_GAUSS, strict=True)) if step else 0.0
        out[c] = step * slope
    delta = float(formula(a1)) - float(formula(a0))
    if abs(math.fsum(out.values()) - delta) > 1e-9 * max(1.0, abs(delta)):
        raise Undefined("the path between the periods comes near a division by zero; use shapley")
    return out


# ---------------------------------------------------------------- down the tree


def subtree(tree: MetricTree, root: str) -> dict[str, int]:
    """`root` and the metrics its change is split into, breadth-first, with their distance from it (a
    cumulative, offset or conversion metric is a leaf: its inputs are not listed)."""
    tree.node(root)
    levels, queue = {root: 0}, [root]
    for parent in queue:
        if formula_of(tree, parent) is None:
            continue
        for e in tree.children(parent):
            if e.child not in levels:
                levels[e.child] = levels[parent] + 1
                queue.append(e.child)
    return levels


@dataclass(frozen=True)
class TreeSplit:
    root: str
    method: str
    exact: bool  # the leaves' contributions sum to the root's change
    change: float | None
    residual: float | None  # root change − Σ leaf contributions (0 unless leave_one_out or undefined)
    contributions: dict[str, float | None]  # each node's part of the ROOT's change
    shares: dict[str, float | None]  # contribution / root change
    reasons: dict[str, str] = field(default_factory=dict)  # why a contribution is null
    splits: dict[str, Split] = field(default_factory=dict)  # each node's split of its own change
    convention: str = CONVENTION


def decompose_tree(tree: MetricTree, root: str, values0: Mapping, values1: Mapping, method: str = "shapley",
                   metrics: Mapping | None = None, nodes=None) -> TreeSplit:
    """Every node's contribution to the root's change from `values0` to `values1` (metric → value)."""
    check_method(method)
    nodes = list(nodes) if nodes is not None else list(subtree(tree, root))
    inside = set(nodes)
    formulas = {n: formula_of(tree, n, metrics) for n in nodes}
    formulas = {n: f for n, f in formulas.items() if f is not None and set(f.children) <= inside}
    v0 = {n: _float(values0.get(n)) for n in nodes}
    v1 = {n: _float(values1.get(n)) for n in nodes}
    flow: dict[str, float | None] = dict.fromkeys(nodes)
    reasons: dict[str, str] = {}
    change = None if v0[root] is None or v1[root] is None else v1[root] - v0[root]
    if change is None:
        reasons[root] = f"`{root}` has no value in the {'comparison' if v0[root] is None else 'current'} period"
        return TreeSplit(root, method, False, None, None, flow, dict.fromkeys(nodes), reasons)
    flow[root] = change
    order = _parents_first(root, formulas)
    parents = {n: [p for p in order if p in formulas and n in formulas[p].children] for n in order}
    rate: dict[str, float] = {}  # C_n / Δn: how much of the root's change one unit of n's change carries
    splits: dict[str, Split] = {}
    leaves: list[str] = []
    for n in order:
        f = formulas.get(n)
        if flow[n] is None:  # below a node that could not be split
            continue
        if f is None:
            leaves.append(n)
            continue
        s = splits[n] = split(f, {c: v0[c] for c in f.children}, {c: v1[c] for c in f.children}, method)
        if s.contributions is None:
            reasons[n] = s.reason or "undefined"
            leaves.append(n)
            continue
        scale = max(1.0, abs(v0[n] or 0.0), abs(v1[n] or 0.0))
        if abs(s.delta) > EPS * scale:
            rate[n] = flow[n] / s.delta
        else:
            rate[n] = 1.0 if n == root else math.fsum(rate.get(p, 0.0) * _slope(formulas[p], v0, v1, n) for p in parents[n])
        for c, x in s.contributions.items():
            flow[c] = (flow[c] or 0.0) + rate[n] * x
    for n in nodes:
        if flow[n] is None and n not in reasons:
            reasons[n] = _unreached(tree, n, inside, formulas, reasons)
    residual = change - math.fsum(flow[n] for n in leaves)
    exact = method not in NON_ADDITIVE and abs(residual) <= 1e-9 * max(1.0, abs(v0[root]), abs(v1[root]))
    shares = {n: (None if flow[n] is None or change == 0 else flow[n] / change) for n in nodes}
    return TreeSplit(root, method, exact, change, 0.0 if exact else residual, flow, shares, reasons, splits)


def _float(value) -> float | None:
    return None if value is None else float(value)


def _parents_first(root: str, formulas: dict[str, Formula]) -> list[str]:
    """Nodes reachable from `root` through splittable formulas, each after all of its parents."""
    seen: set[str] = set()
    post: list[str] = []

    def visit(n: str) -> None:
        seen.add(n)
        for c in formulas[n].children if n in formulas else ():
            if c not in seen:
                visit(c)
        post.append(n)

    visit(root)
    return post[::-1]


def _slope(f: Formula, v0: Mapping, v1: Mapping, child: str) -> float:
    try:
        mid = _filled(f, {c: None if v0[c] is None or v1[c] is None else (v0[c] + v1[c]) / 2 for c in f.children})
        return derivative(f, mid, child)
    except (Undefined, ZeroDivisionError):
        return 0.0


def _unreached(tree: MetricTree, n: str, inside: set[str], formulas: dict, reasons: dict) -> str:
    for e in tree.edges:
        if e.child == n and e.parent in inside:
            if e.parent in reasons and e.parent in formulas:
                return f"`{e.parent}` could not be split: {reasons[e.parent]}"
            if e.parent not in formulas:
                return leaf_reason(tree, e.parent) or f"`{e.parent}` is not split into its inputs"
    return "not reached from the root"


def flat_shapley(tree: MetricTree, root: str, leaves0: Mapping, leaves1: Mapping,
                 metrics: Mapping | None = None) -> dict[str, float]:
    """The alternative rule: one Shapley split over the root as a function of its leaves (2^leaves evaluations)."""
    from semantic.metrics.whatif import evaluate

    players = list(leaves0)

    def f(values: Mapping) -> float:
        out = evaluate(tree, root, values, metrics)[root]
        if out is None:
            raise Undefined(f"`{root}` is undefined")
        return out

    return shapley(players, f, leaves0, leaves1)
