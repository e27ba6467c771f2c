"""`Project`: the one façade over model, warehouse and builds (like SQLMesh's Context)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
from cachetools import TTLCache
from sqlglot import exp

from semantic.activity.stream import ident
from semantic.engines import connect
from semantic.errors import QueryError, did_you_mean
from semantic.materialize.build import Builder, BuildReport
from semantic.project.load import Model, load_project
from semantic.query.compile import Compiled, Compiler
from semantic.query.query import Query, make_query

RESULT_BYTES = 256 * 2**20
RESULT_TTL = 300.0
FRESH_SECONDS = 2.0  # how long a "nothing is stale" check is trusted before the warehouse is asked again


@dataclass(frozen=True)
class Answer:
    table: pa.Table
    compiled: Compiled
    cached: bool


class Project:
    def __init__(self, model: Model, engine=None):
        self.model = model
        self.engine = engine or connect(model)
        self.builder = Builder(model, self.engine)
        self.compiler = Compiler(model, self.engine.dialect)
        self._fresh: TTLCache = TTLCache(maxsize=1, ttl=FRESH_SECONDS)
        # answers by model version, build generation and SQL: LRU within a byte budget, each kept RESULT_TTL s
        self.results: TTLCache = TTLCache(maxsize=RESULT_BYTES, ttl=RESULT_TTL, getsizeof=lambda t: t.nbytes or 1)
        self.generation = 0  # bumped by every build that changed a table
        self._lock = threading.Lock()  # guards the caches above: cachetools is not thread-safe
        self._build_lock = threading.Lock()

    @classmethod
    def load(cls, path: Path | str | None = None, engine=None) -> Project:
        return cls(load_project(path), engine)

    @property
    def schema(self) -> str:
        return self.model.settings.materialization.schema_

    def build(self, force: bool = False, progress: Callable[[str, int, int], None] | None = None) -> BuildReport:
        with self._build_lock:  # one build at a time per project
            report = self.builder.build(force=force, progress=progress)
        with self._lock:
            self._fresh["all"] = True
            if report.built:
                self.generation += 1
                self.results.clear()
        return report

    def ensure_built(self, progress: Callable[[str, int, int], None] | None = None) -> BuildReport | None:
        """Build whatever is missing or stale, so a fresh project just works."""
        with self._lock:
            if self._fresh.get("all"):  # checked moments ago: keep the per-query overhead in microseconds
                return None
        report = self.build(progress=progress) if self.builder.stale() else None
        with self._lock:
            self._fresh["all"] = True
        return report

    def dataset(self, name: str, limit: int | None = None, progress=None) -> pa.Table:
        if name not in self.model.datasets:
            raise QueryError(f"unknown dataset `{name}`",
                             did_you_mean(name, self.model.datasets) or f"known: {', '.join(self.model.datasets)}")
        self.ensure_built(progress)
        d = self.model.datasets[name]
        query = exp.select(*(exp.column(ident(c)) for c in [*d.output_columns(), *d.include]))
        query = query.from_(exp.Table(this=ident(name), db=ident(self.schema)))
        if limit is not None:
            query = query.limit(limit)
        return self.engine.arrow(query)

    def compile(self, query: Query | None = None, **fields) -> Compiled:
        return self.compiler.compile(query if query is not None else make_query(**fields))

    def query(self, query: Query | None = None, progress=None, **fields) -> pa.Table:
        """Answer a metric query (MODEL.md §6); builds whatever it reads first if needed."""
        return self.run(query if query is not None else make_query(**fields), progress=progress).table

    def run(self, query: Query, progress=None, use_cache: bool = True, timeout: float | None = None) -> Answer:
        """A query's answer with how it was obtained; repeated queries come from the result cache."""
        compiled = self.compiler.compile(query)
        key = (self.model.version, self.generation, compiled.sql)
        if use_cache:
            with self._lock:
                hit = self.results.get(key)
            if hit is not None:
                return Answer(hit, compiled, cached=True)
        self.ensure_built(progress)
        table = self.engine.arrow(compiled.sql, timeout=timeout) if timeout else self.engine.arrow(compiled.sql)
        if use_cache:
            with self._lock:
                self.results[key] = table
        return Answer(table, compiled, cached=False)

    def explain(self, query: Query | None = None, **fields) -> str:
        return self.compile(query, **fields).explain()

    def close(self) -> None:
        self.engine.close()
