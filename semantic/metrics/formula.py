"""A metric's formula over its children, evaluated in Python: what decompositions and what-if compute with.

The formula is the metric's own (`expr`, or `numerator / denominator` for a ratio), parsed once with sqlglot
and compiled to a Python function of the children's values. It follows the SQL the planner renders: a NULL
child makes the result NULL unless `COALESCE`d (or the input has `fill_nulls_with`), and `x / 0` is NULL
(the planner divides by `NULLIF(x, 0)`). NULL is raised as `Undefined` with the reason, never returned as
infinity. Values may be floats or `Dual` numbers (for derivatives).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import sqlglot
from sqlglot import exp

from semantic.metrics.tree import MetricTree


class Undefined(ArithmeticError):
    """The formula is NULL for these values: a division by zero or a NULL input."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Term:
    """`coef · Π child^power`, one monomial of a formula written as a sum of products."""

    coef: float
    powers: dict[str, int]


@dataclass(frozen=True)
class Formula:
    metric: str
    text: str
    expr: exp.Expression
    aliases: dict[str, str]  # the name the formula uses → the child metric
    fills: dict[str, float] = field(default_factory=dict)  # alias → the value of a NULL child
    _fn: Callable = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_fn", _compile(self.expr, self.aliases, self.fills))

    @property
    def children(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.aliases.values()))

    def __call__(self, values: Mapping[str, object]):
        """The formula's value for these child values (by child metric name); raises `Undefined` for NULL."""
        return self._fn(values)

    def value(self, values: Mapping[str, object]) -> float | None:
        try:
            return float(self(values))
        except Undefined:
            return None

    def linear(self) -> tuple[dict[str, float], float] | None:
        """`(coefficients by child, constant)` when the formula is a sum of children times constants."""
        terms = self.terms()
        if terms is None or any(sum(t.powers.values()) > 1 or any(p != 1 for p in t.powers.values()) for t in terms):
            return None
        coefs: dict[str, float] = {}
        for t in terms:
            for child in t.powers:
                coefs[child] = coefs.get(child, 0.0) + t.coef
        return coefs, sum(t.coef for t in terms if not t.powers)

    def terms(self) -> list[Term] | None:
        """The formula as a signed sum of products and quotients of children, or None (`COALESCE`, `ABS` …)."""
        return _terms(self.expr, self.aliases)

    def ratio(self) -> tuple[str, str] | None:
        """`(numerator, denominator)` children when the formula is exactly `a / b`."""
        node = _strip(self.expr)
        if isinstance(node, exp.Div):
            num, den = _strip(node.this), _strip(node.expression)
            if isinstance(num, exp.Column) and isinstance(den, exp.Column):
                return self.aliases[num.name], self.aliases[den.name]
        return None


def leaf_reason(tree: MetricTree, name: str) -> str | None:
    """Why `name` is not split into its children (None when it is): the explorer treats it as a leaf."""
    edges = tree.children(name)
    if not edges:
        return None
    if tree.node(name).kind == "cumulative":
        return f"`{name}` accumulates `{edges[0].child}` over a window, not over the period, so it is a leaf here"
    offset = next((e for e in edges if e.offset), None)
    if offset is not None:
        return f"`{name}` reads `{offset.child}` {offset.offset} earlier, so it is a leaf here"
    return None


def formula_of(tree: MetricTree, name: str, metrics: Mapping | None = None) -> Formula | None:
    """The formula of a metric split into its children, or None for a leaf (measure, cumulative, offset,
    conversion, or a formula this module cannot evaluate). `metrics` (the model's) adds `fill_nulls_with`."""
    node = tree.node(name)
    edges = tree.children(name)
    if not edges or leaf_reason(tree, name) is not None:
        return None
    aliases = {(e.alias or e.child): e.child for e in edges}
    fills: dict[str, float] = {}
    if metrics is not None and name in metrics:
        m = metrics[name]
        for alias, child in aliases.items():
            inp = m.inputs.get(alias) if m.inputs else None
            fill = inp.fill_nulls_with if inp and inp.fill_nulls_with is not None else \
                getattr(metrics.get(child), "fill_nulls_with", None)
            if fill is not None:
                fills[alias] = float(fill)
    try:
        return Formula(name, node.formula, sqlglot.parse_one(node.formula, read="duckdb"), aliases, fills)
    except (Unsupported, sqlglot.errors.ParseError):
        return None


class Unsupported(ValueError):
    """A formula construct this module does not evaluate (the metric is then a leaf of the decomposition)."""


# ---------------------------------------------------------------- compile to Python


def _is_zero(x) -> bool:
    return float(x) == 0.0


def _compile(node: exp.Expression, aliases: dict[str, str], fills: dict[str, float]) -> Callable:
    def c(n: exp.Expression) -> Callable:
        return _compile(n, aliases, fills)

    if isinstance(node, exp.Column):
        alias = node.name
        if alias not in aliases:
            raise Unsupported(f"unknown input `{alias}`")
        child, fill = aliases[alias], fills.get(alias)

        def column(v):
            x = v.get(child)
            if x is None:
                if fill is None:
                    raise Undefined(f"`{child}` has no value")
                return fill
            return x
        return column
    if isinstance(node, exp.Literal) and not node.is_string:
        number = float(node.this)
        return lambda v: number
    if isinstance(node, exp.Null):
        return lambda v: _raise(Undefined("the formula is NULL"))
    if isinstance(node, exp.Paren | exp.Cast | exp.TryCast):
        return c(node.this)
    if isinstance(node, exp.Neg):
        inner = c(node.this)
        return lambda v: -inner(v)
    if isinstance(node, exp.Add | exp.Sub | exp.Mul | exp.Div | exp.Pow):
        a, b = c(node.this), c(node.expression)
        if isinstance(node, exp.Add):
            return lambda v: a(v) + b(v)
        if isinstance(node, exp.Sub):
            return lambda v: a(v) - b(v)
        if isinstance(node, exp.Mul):
            return lambda v: a(v) * b(v)
        if isinstance(node, exp.Pow):
            def power(v):
                try:
                    out = a(v) ** b(v)
                except (ZeroDivisionError, OverflowError):
                    raise Undefined(f"{node.sql('duckdb')} is undefined") from None
                if isinstance(out, complex):
                    raise Undefined(f"{node.sql('duckdb')} is not a real number")
                return out
            return power
        text = node.expression.sql("duckdb")

        def divide(v):
            den = b(v)
            if _is_zero(den):
                raise Undefined(f"division by zero ({text} = 0)")
            return a(v) / den
        return divide
    if isinstance(node, exp.Coalesce):
        options = [c(node.this), *(c(e) for e in node.expressions)]

        def coalesce(v):
            for option in options:
                try:
                    return option(v)
                except Undefined:
                    continue
            raise Undefined("every COALESCE argument is NULL")
        return coalesce
    if isinstance(node, exp.Nullif):
        a, b = c(node.this), c(node.expression)

        def nullif(v):
            x = a(v)
            if float(x) == float(b(v)):
                raise Undefined(f"{node.sql('duckdb')} is NULL")
            return x
        return nullif
    if isinstance(node, exp.Abs):
        inner = c(node.this)
        return lambda v: abs(inner(v))
    if isinstance(node, exp.Greatest | exp.Least):
        options = [c(node.this), *(c(e) for e in node.expressions)]
        pick = max if isinstance(node, exp.Greatest) else min
        return lambda v: pick((o(v) for o in options), key=float)
    raise Unsupported(f"cannot evaluate `{node.sql('duckdb')}`")


def _raise(e: Exception):
    raise e


def _strip(node: exp.Expression) -> exp.Expression:
    while isinstance(node, exp.Paren | exp.Cast | exp.TryCast):
        node = node.this
    return node


# ---------------------------------------------------------------- a sum of monomials (LMDI, linearity)


def _terms(node: exp.Expression, aliases: dict[str, str]) -> list[Term] | None:
    node = _strip(node)
    if isinstance(node, exp.Column):
        return [Term(1.0, {aliases[node.name]: 1})] if node.name in aliases else None
    if isinstance(node, exp.Literal) and not node.is_string:
        return [Term(float(node.this), {})]
    if isinstance(node, exp.Neg):
        inner = _terms(node.this, aliases)
        return None if inner is None else [Term(-t.coef, t.powers) for t in inner]
    if not isinstance(node, exp.Add | exp.Sub | exp.Mul | exp.Div | exp.Pow):
        return None
    a, b = _terms(node.this, aliases), _terms(node.expression, aliases)
    if a is None or b is None:
        return None
    if isinstance(node, exp.Add):
        return _simplify(a + b)
    if isinstance(node, exp.Sub):
        return _simplify(a + [Term(-t.coef, t.powers) for t in b])
    if isinstance(node, exp.Mul):
        return _simplify([_times(x, y) for x in a for y in b])
    if len(b) != 1:  # a quotient or power by a sum is not a monomial
        return None
    (t,) = b
    if isinstance(node, exp.Div):
        if t.coef == 0:
            return None
        return _simplify([_times(x, Term(1 / t.coef, {k: -p for k, p in t.powers.items()})) for x in a])
    if t.powers or len(a) != 1 or t.coef != int(t.coef):  # x ** n, n a whole constant
        return None
    n = int(t.coef)
    return [Term(a[0].coef ** n, {k: p * n for k, p in a[0].powers.items()})]


def _times(x: Term, y: Term) -> Term:
    powers = dict(x.powers)
    for k, p in y.powers.items():
        powers[k] = powers.get(k, 0) + p
    return Term(x.coef * y.coef, {k: p for k, p in powers.items() if p})


def _simplify(terms: list[Term]) -> list[Term]:
    merged: dict[tuple, float] = {}
    for t in terms:
        key = tuple(sorted(t.powers.items()))
        merged[key] = merged.get(key, 0.0) + t.coef
    return [Term(c, dict(k)) for k, c in merged.items() if c != 0 or not k]


# ---------------------------------------------------------------- derivatives


class Dual:
    """`a + b·ε` with ε² = 0: evaluating a formula on one gives its value and its exact derivative."""

    __slots__ = ("a", "b")

    def __init__(self, a: float, b: float = 0.0):
        self.a, self.b = float(a), float(b)

    @staticmethod
    def lift(x) -> Dual:
        return x if isinstance(x, Dual) else Dual(float(x))

    def __float__(self) -> float:
        return self.a

    def __add__(self, o):
        o = Dual.lift(o)
        return Dual(self.a + o.a, self.b + o.b)

    __radd__ = __add__

    def __sub__(self, o):
        o = Dual.lift(o)
        return Dual(self.a - o.a, self.b - o.b)

    def __rsub__(self, o):
        return Dual.lift(o) - self

    def __mul__(self, o):
        o = Dual.lift(o)
        return Dual(self.a * o.a, self.a * o.b + self.b * o.a)

    __rmul__ = __mul__

    def __truediv__(self, o):
        o = Dual.lift(o)
        return Dual(self.a / o.a, (self.b * o.a - self.a * o.b) / (o.a * o.a))

    def __rtruediv__(self, o):
        return Dual.lift(o) / self

    def __neg__(self):
        return Dual(-self.a, -self.b)

    def __abs__(self):
        return -self if self.a < 0 else self

    def __pow__(self, o):
        n = float(o)
        return Dual(self.a ** n, n * self.a ** (n - 1) * self.b if self.b else 0.0)


def derivative(formula: Formula, values: Mapping[str, float], child: str) -> float:
    """∂formula/∂child at `values` (exact, by dual numbers); raises `Undefined` where the formula is."""
    point = {k: (Dual(v, 1.0) if k == child else v) for k, v in values.items()}
    out = formula(point)
    d = out.b if isinstance(out, Dual) else 0.0
    if not math.isfinite(d):
        raise Undefined(f"the slope of `{formula.metric}` in `{child}` is infinite")
    return d
