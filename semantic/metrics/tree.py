"""The metric tree: metrics as nodes, 'is computed from' as edges with their operator and sign."""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlglot
from sqlglot import exp

from semantic.errors import QueryError, did_you_mean
from semantic.project.model import Metric


@dataclass(frozen=True)
class Edge:
    parent: str
    child: str
    operator: str  # + - * / numerator denominator cumulative offset
    sign: int  # +1: the child moving up moves the parent up; -1: moves it down
    alias: str = ""  # the name the parent's formula uses for this child (inputs:)
    offset: str | None = None


@dataclass(frozen=True)
class Node:
    name: str
    kind: str  # simple | derived | ratio | cumulative | conversion
    formula: str
    measure: str | None
    format: str | None
    good: str
    label: str
    description: str
    owner: str | None
    depth: int  # 0 for a leaf; 1 + the deepest child otherwise


@dataclass(frozen=True)
class MetricTree:
    nodes: dict[str, Node]
    edges: tuple[Edge, ...]
    children_of: dict[str, tuple[Edge, ...]] = field(repr=False)

    @classmethod
    def from_metrics(cls, metrics: dict[str, Metric]) -> MetricTree:
        edges = [e for m in metrics.values() for e in _edges(m)]
        children: dict[str, list[Edge]] = {name: [] for name in metrics}
        for e in edges:
            children[e.parent].append(e)
        depth: dict[str, int] = {}

        def depth_of(name: str) -> int:
            if name not in depth:
                depth[name] = 1 + max((depth_of(e.child) for e in children[name]), default=-1)
            return depth[name]

        nodes = {
            name: Node(name, m.kind, formula(m), m.measure, m.format, m.good, m.label or name.replace("_", " "),
                       m.description or "", m.owner, depth_of(name))
            for name, m in metrics.items()
        }
        return cls(nodes, tuple(edges), {k: tuple(v) for k, v in children.items()})

    def children(self, name: str) -> tuple[Edge, ...]:
        return self.children_of[name]

    def roots(self) -> list[str]:
        used = {e.child for e in self.edges}
        return [n for n in self.nodes if n not in used]

    def leaves(self, name: str) -> list[str]:
        """The simple / conversion metrics `name` is ultimately computed from."""
        self.node(name)
        if not self.children_of[name]:
            return [name]
        return list(dict.fromkeys(leaf for e in self.children_of[name] for leaf in self.leaves(e.child)))

    def node(self, name: str) -> Node:
        if name not in self.nodes:
            raise QueryError(f"unknown metric `{name}`", did_you_mean(name, self.nodes) or
                             f"known metrics: {', '.join(sorted(self.nodes))}")
        return self.nodes[name]


def formula(m: Metric) -> str:
    if m.expr:
        return m.expr
    if m.ratio:
        return f"{m.ratio.numerator} / {m.ratio.denominator}"
    if m.cumulative:
        c = m.cumulative
        return f"cumulative({c.metric}, " + (f"window {c.window}" if c.window else
                                             f"{c.grain_to_date} to date" if c.grain_to_date else "all time") + ")"
    if m.conversion:
        c = m.conversion
        return f"{c.calculation}({c.base} → {c.conversion} within {c.window})"
    return f"{m.measure}"


def _edges(m: Metric) -> list[Edge]:
    if m.ratio:
        return [Edge(m.name, m.ratio.numerator, "numerator", 1), Edge(m.name, m.ratio.denominator, "denominator", -1)]
    if m.cumulative:
        return [Edge(m.name, m.cumulative.metric, "cumulative", 1)]
    if not m.expr:
        return []
    out: dict[str, Edge] = {}

    def walk(node: exp.Expression, sign: int, operator: str) -> None:
        if isinstance(node, exp.Column):
            inp = m.inputs.get(node.name)
            child = inp.metric if inp else node.name
            out.setdefault(node.name, Edge(m.name, child, operator, sign, node.name, inp.offset if inp else None))
        elif isinstance(node, exp.Paren):
            walk(node.this, sign, operator)
        elif isinstance(node, exp.Neg):
            walk(node.this, -sign, "-")
        elif isinstance(node, exp.Add):
            walk(node.this, sign, operator if operator in "+-" else operator)
            walk(node.expression, sign, "+" if operator in "+-" else operator)
        elif isinstance(node, exp.Sub):
            walk(node.this, sign, operator)
            walk(node.expression, -sign, "-" if operator in "+-" else operator)
        elif isinstance(node, exp.Div):
            walk(node.this, sign, "/")
            walk(node.expression, -sign, "/")
        elif isinstance(node, exp.Mul):
            walk(node.this, sign, "*")
            walk(node.expression, sign, "*")
        else:
            for child in node.iter_expressions():
                walk(child, sign, "f")

    walk(sqlglot.parse_one(m.expr, read="duckdb"), 1, "+")
    return list(out.values())
