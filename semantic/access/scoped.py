"""The project as one security context sees it: every query is planned with its access, catalogs list only what
it may see. Doors ask `project.scoped(context)` and use the result as they would the project."""

from __future__ import annotations

from dataclasses import replace
from functools import cached_property

from semantic.access.context import SecurityContext
from semantic.access.policy import Access
from semantic.errors import Forbidden


def visible_model(model, access: Access):
    """The model with only the members `access` may see: what catalogs (meta, GraphQL, pg_catalog) list.

    Queries are still planned on the whole model: a visible metric may be made of hidden measures.
    """
    views = {}
    for name, view in model.views.items():
        if not access.view_visible(name):
            continue
        views[name] = view.model_copy(update={
            "dimensions": tuple(d for d in view.dimensions if access.member_visible(name, d.name)),
            "measures": tuple(m for m in view.measures if access.member_visible(name, m.name))})
    metrics = {n: m for n, m in model.metrics.items() if access.metric_visible(n)}
    return replace(model, views=views, metrics=metrics)


def visible_tree(tree, access: Access):
    """The metric tree of the visible metrics. A visible metric made partly of hidden ones is a leaf here: its
    value may be seen, but it is not split into (or valued through) what may not be."""
    from semantic.metrics.tree import MetricTree

    nodes = {n: node for n, node in tree.nodes.items() if access.metric_visible(n)}
    split = {n for n in nodes if all(e.child in nodes for e in tree.children(n))}
    children = {n: tree.children(n) if n in split else () for n in nodes}
    edges = tuple(e for e in tree.edges if e.parent in split)
    depth: dict[str, int] = {}

    def depth_of(name: str) -> int:  # as MetricTree counts it, over the visible edges only
        if name not in depth:
            depth[name] = 1 + max((depth_of(e.child) for e in children[name]), default=-1)
        return depth[name]

    nodes = {n: replace(node, depth=depth_of(n)) for n, node in nodes.items()}
    return MetricTree(nodes, edges, children)


class ScopedCompiler:
    """The compiler seen through an access: its model and graph are the visible ones; plans use the access."""

    def __init__(self, compiler, access: Access, model):
        self._compiler, self.access, self.model = compiler, access, model

    @cached_property
    def graph(self):
        from semantic.query.graph import SemanticGraph

        return SemanticGraph(self.model)

    @cached_property
    def tree(self):
        return visible_tree(self._compiler.tree, self.access)

    @cached_property
    def rollups(self) -> dict:
        """The rollups over what the access may see (the planner still uses every rollup it may)."""
        a = self.access
        return {n: s for n, s in self._compiler.rollups.items() if a.view_visible(s.view)
                and all(a.member_visible(s.view, m) for m in s.measures)
                and all(a.member_visible(d.view, d.name) for d in s.dims)}

    def compile(self, query, use_rollups: bool = True):
        return self._compiler.compile(query, use_rollups, self.access)

    def cached(self, query, use_rollups: bool = True):
        return self._compiler.cached(query, use_rollups, self.access)

    def __getattr__(self, name: str):
        return getattr(self._compiler, name)


class Scoped:
    """A project restricted to one access (see `Project.scoped`); anything not about data is the project's own."""

    def __init__(self, project, context: SecurityContext, access: Access):
        self.project, self.context, self.access = project, context, access
        self.model = visible_model(project.model, access)
        self.compiler = ScopedCompiler(project.compiler, access, self.model)

    def compile(self, query=None, use_rollups: bool = True, **fields):
        return self.project.compile(query, use_rollups, access=self.access, **fields)

    def open(self, query, *args, **kwargs):
        return self.project.open(query, *args, access=self.access, **kwargs)

    def run(self, query, *args, **kwargs):
        return self.project.run(query, *args, access=self.access, **kwargs)

    def query(self, query=None, progress=None, use_rollups: bool = True, **fields):
        return self.project.query(query, progress, use_rollups, access=self.access, **fields)

    def explain(self, query=None, use_rollups: bool = True, **fields) -> str:
        return self.project.explain(query, use_rollups, access=self.access, **fields)

    def cached_answer(self, query, **kwargs):
        return self.project.cached_answer(query, access=self.access, **kwargs)

    def dataset(self, *args, **kwargs):
        raise Forbidden("datasets are row-level tables no access policy filters, so only unrestricted users "
                        "may read them", "ask for metrics by dimensions instead")

    def __getattr__(self, name: str):
        return getattr(self.project, name)
