"""Query → Plan → SQL, cached per model version and normalized query."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import cached_property

from cachetools import LRUCache

from semantic.access.policy import UNRESTRICTED, Access, Policies
from semantic.metrics.tree import MetricTree
from semantic.query.graph import SemanticGraph
from semantic.query.match import Matcher
from semantic.query.plan import Plan, Planner
from semantic.query.query import Query
from semantic.query.render import render
from semantic.query.rollups import EMPTY, Catalog, RollupSpec, resolve_all


@dataclass(frozen=True)
class Compiled:
    plan: Plan
    sql: str
    catalog: str = ""  # the rollup catalog version it was planned against ("" without rollups)
    access: str = UNRESTRICTED.key  # the access it was planned for: answers are cached per access too

    def explain(self) -> str:
        return f"{self.plan.describe()}\n\nSQL:\n{self.sql}"


class Compiler:
    """Compiles queries against one model version; the cache dies with the model (reload = new Compiler)."""

    def __init__(self, model, dialect: str = "duckdb", cache_size: int = 1024):
        self.model, self.dialect = model, dialect
        self.cache: LRUCache = LRUCache(maxsize=cache_size)
        self._lock = threading.Lock()  # cachetools caches are not thread-safe; the doors compile from many threads
        self._catalog: Catalog = EMPTY
        self._matcher: Matcher | None = None

    @cached_property
    def graph(self) -> SemanticGraph:
        return SemanticGraph(self.model)

    @cached_property
    def tree(self) -> MetricTree:
        return MetricTree.from_metrics(self.model.metrics)

    @cached_property
    def rollups(self) -> dict[str, RollupSpec]:
        return resolve_all(self.model, self.graph)

    @property
    def catalog(self) -> Catalog:
        return self._catalog

    @catalog.setter
    def catalog(self, catalog: Catalog) -> None:
        """What the warehouse holds (set by the project after builds); plans are keyed by its version."""
        if catalog.version != self._catalog.version:
            self._catalog, self._matcher = catalog, None

    def matcher(self) -> Matcher | None:
        if not self.model.rollups:
            return None
        matcher = self._matcher
        if matcher is None or matcher.catalog is not self._catalog:
            settings = self.model.settings
            matcher = self._matcher = Matcher(self.rollups, self._catalog, settings.timezone,
                                              settings.materialization.schema_)
        return matcher

    @cached_property
    def policies(self) -> Policies:
        return Policies(self.model, self.graph)

    def _key(self, query: Query, use_rollups: bool, matcher: Matcher | None, access: Access) -> tuple[tuple, str]:
        """The plan cache's key (per access: plans differ by the policies' rows), and the rollup catalog version."""
        catalog = matcher.catalog.version if matcher else ""
        return (self.model.version, self.dialect, access.key,
                (query.key(), catalog) if use_rollups else (query.key(), None)), catalog

    def cached(self, query: Query, use_rollups: bool = True, access: Access = UNRESTRICTED) -> Compiled | None:
        """The query's plan if it was compiled before, else None (never plans: callers that must not block)."""
        key, _ = self._key(query, use_rollups, self.matcher() if use_rollups else None, access)
        with self._lock:
            return self.cache.get(key)

    def compile(self, query: Query, use_rollups: bool = True, access: Access = UNRESTRICTED) -> Compiled:
        matcher = self.matcher() if use_rollups else None
        key, catalog = self._key(query, use_rollups, matcher, access)
        with self._lock:
            hit = self.cache.get(key)
        if hit is not None:
            return hit
        plan = Planner(self.graph, self.tree, self.model.streams, matcher, access).plan(query)
        compiled = Compiled(plan, render(self.graph, plan, self.dialect).sql(dialect=self.dialect, identify=True),
                            catalog, access.key)
        with self._lock:
            self.cache[key] = compiled
        return compiled
