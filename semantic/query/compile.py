"""Query → Plan → SQL, cached per model version and normalized query."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import cached_property

from cachetools import LRUCache

from semantic.metrics.tree import MetricTree
from semantic.query.graph import SemanticGraph
from semantic.query.plan import Plan, Planner
from semantic.query.query import Query
from semantic.query.render import render


@dataclass(frozen=True)
class Compiled:
    plan: Plan
    sql: str

    def explain(self) -> str:
        return f"{self.plan.describe()}\n\nSQL:\n{self.sql}"


class Compiler:
    """Compiles queries against one model version; the cache dies with the model (reload = new Compiler)."""

    def __init__(self, model, dialect: str = "duckdb", cache_size: int = 1024):
        self.model, self.dialect = model, dialect
        self.cache: LRUCache = LRUCache(maxsize=cache_size)
        self._lock = threading.Lock()  # cachetools caches are not thread-safe; the doors compile from many threads

    @cached_property
    def graph(self) -> SemanticGraph:
        return SemanticGraph(self.model)

    @cached_property
    def tree(self) -> MetricTree:
        return MetricTree.from_metrics(self.model.metrics)

    def compile(self, query: Query) -> Compiled:
        key = (self.model.version, self.dialect, query.key())
        with self._lock:
            hit = self.cache.get(key)
        if hit is not None:
            return hit
        plan = Planner(self.graph, self.tree, self.model.streams).plan(query)
        compiled = Compiled(plan, render(self.graph, plan, self.dialect).sql(dialect=self.dialect, identify=True))
        with self._lock:
            self.cache[key] = compiled
        return compiled
