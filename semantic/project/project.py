"""`Project`: the one façade over model, warehouse and builds (like SQLMesh's Context)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
from cachetools import LRUCache, TTLCache
from sqlglot import exp

from semantic import events
from semantic.access.context import SecurityContext
from semantic.access.policy import UNRESTRICTED, Access
from semantic.access.scoped import Scoped
from semantic.activity.stream import ident
from semantic.engines import connect
from semantic.errors import BuildError, PhloemError, QueryError, did_you_mean
from semantic.limits import Cancel, Limits, Reading
from semantic.materialize.build import Builder, BuildReport
from semantic.project.load import Model, load_project
from semantic.project.querylog import QueryLog
from semantic.query.compile import Compiled, Compiler
from semantic.query.query import Query, make_query

RESULT_BYTES = 128 * 2**20  # the result cache's budget of real memory (PHLOEM_RESULT_CACHE_MB overrides it)
RESULT_TTL = 300.0
# what a cached answer costs beyond its Arrow buffers (measured under bench/soak.py: ~6 KiB of DuckDB's Arrow export
# per small table, the Table/ChunkedArray/Schema objects, the key's SQL (~1 KiB), the cache's links): charging only
# `nbytes` (~5 KiB for a typical answer) let 256 MiB of budget hold ~1 GiB of answers, and RSS grow for minutes
ENTRY_BYTES = 16 * 1024
COLUMN_BYTES = 2 * 1024


def answer_bytes(table: pa.Table) -> int:
    """The memory a cached answer holds: its buffers plus the fixed cost of the objects around them."""
    return table.nbytes + ENTRY_BYTES + COLUMN_BYTES * table.num_columns


def result_budget() -> int:
    """Bytes the result cache may hold: PHLOEM_RESULT_CACHE_MB (0 turns the cache off), else RESULT_BYTES."""
    value = os.environ.get("PHLOEM_RESULT_CACHE_MB", "").strip()
    if not value:
        return RESULT_BYTES
    try:
        mb = float(value)
    except ValueError:
        raise ValueError(f"PHLOEM_RESULT_CACHE_MB must be a number of megabytes, not {value!r}") from None
    if mb < 0:
        raise ValueError("PHLOEM_RESULT_CACHE_MB must be 0 or more")
    return int(mb * 2**20)
FRESH_SECONDS = 2.0  # how long a "nothing is stale" check is trusted before the warehouse is asked again


@dataclass(frozen=True)
class Answer:
    table: pa.Table | None  # None when the answer is being streamed: see `reading`
    compiled: Compiled
    cached: bool
    reading: Reading | None = None


class Project:
    def __init__(self, model: Model, engine=None, limits: Limits | None = None):
        self.model = model
        self.limits = limits  # the most rows and bytes one answer may have (a server sets them; None: unbounded)
        self.engine = engine or connect(model)
        self.builder = Builder(model, self.engine)
        self.compiler = Compiler(model, self.engine.dialect)
        self._fresh: TTLCache = TTLCache(maxsize=1, ttl=FRESH_SECONDS)
        # answers by model version, build generation and SQL: LRU within a byte budget, each kept RESULT_TTL s
        self.results: TTLCache = TTLCache(maxsize=result_budget(), ttl=RESULT_TTL, getsizeof=answer_bytes)
        self.generation = 0  # bumped by every build that changed a table
        self._lock = threading.Lock()  # guards the caches above: cachetools is not thread-safe
        self._build_lock = threading.Lock()
        self._catalog_loaded = not model.rollups  # rollup state is read from the warehouse on first use
        self._last_build = None  # the newest build time in the warehouse this process has seen
        self._noticed: TTLCache = TTLCache(maxsize=1, ttl=FRESH_SECONDS)  # looked for other processes' builds
        self.broken_rollups: dict[str, str] = {}  # rollups whose build failed: queries read their views meanwhile
        self.query_log = QueryLog(model.root)
        self._scoped: LRUCache = LRUCache(maxsize=256)  # per access: its visible catalog is built once

    @classmethod
    def load(cls, path: Path | str | None = None, engine=None, limits: Limits | None = None) -> Project:
        return cls(load_project(path), engine, limits)

    @property
    def schema(self) -> str:
        return self.model.settings.materialization.schema_

    @events.observed_build
    def build(self, force: bool = False, progress: Callable[[str, int, int], None] | None = None,
              rollups: bool = True, skip: frozenset[str] = frozenset(),
              refresh: frozenset[str] | Callable[[], frozenset[str]] = frozenset(),
              wait: bool = True) -> BuildReport | None:
        """Build what is stale (and `refresh`: datasets and rollups to rebuild anyway; a callable is asked once
        the lock is held) under the warehouse's build lock, so one process builds a schema at a time; with
        `wait=False`, None when another process holds it (nothing was done)."""
        with self._build_lock, self.engine.build_lock(self.schema, wait=wait) as held:
            if not held:
                return None
            refresh = refresh() if callable(refresh) else refresh
            report = self.builder.build(force=force, progress=progress, rollups=rollups, skip=skip, refresh=refresh)
        with self._lock:
            self._fresh["all"] = True
            if report.built:
                self.generation += 1
                self.results.clear()
        last = self.builder.last_built()
        with self._lock:
            self._last_build = last
            self._noticed["all"] = True
        self.refresh_catalog()
        return report

    def notice_builds(self) -> None:
        """Drop cached answers when another process (`phloem worker`, another replica) published tables since;
        the warehouse is asked at most every FRESH_SECONDS."""
        with self._lock:
            if self._noticed.get("all"):
                return
        last = self.builder.last_built()
        with self._lock:
            self._noticed["all"] = True
            if last != self._last_build:
                self._last_build = last
                self.generation += 1
                self.results.clear()

    def refresh_catalog(self) -> None:
        """Re-read which rollups are built (rows, freshness); plans made against older state are recompiled."""
        if self.model.rollups:
            self.compiler.catalog = self.builder.catalog()
        self._catalog_loaded = True

    def ensure_built(self, progress: Callable[[str, int, int], None] | None = None) -> BuildReport | None:
        """Build whatever is missing or stale, so a fresh project just works."""
        with self._lock:
            if self._fresh.get("all"):  # checked moments ago: keep the per-query overhead in microseconds
                return None
        stale = [n for n in self.builder.stale() if n not in self.broken_rollups]
        report = None
        while stale:
            try:
                report = self.build(progress=progress, skip=frozenset(self.broken_rollups))
                break
            except BuildError as e:  # a rollup that cannot be built must not stop queries: they read the view
                if e.rollup is None or e.rollup in self.broken_rollups:
                    raise
                self.broken_rollups[e.rollup] = str(e)
        if report is None:  # another process may have built since
            self.notice_builds()
            self.refresh_catalog()
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

    def ensure_catalog(self) -> None:
        """Read the rollups' state from the warehouse once (builds and freshness checks keep it current)."""
        if not self._catalog_loaded:
            self.refresh_catalog()

    def scoped(self, context: SecurityContext | None) -> Project | Scoped:
        """The project as `context` sees it: its access policies applied to every query and catalog.

        An unrestricted context (no auth, or a model without policies) gets the project itself.
        """
        if context is None or context.unrestricted or not self.model.access_policies:
            return self  # before any policy is parsed: a door's event loop calls this on every request
        access = self.compiler.policies.access(context)
        if access.unrestricted:
            return self
        with self._lock:
            scoped = self._scoped.get(access.key)
        if scoped is None:
            scoped = Scoped(self, context, access)
            with self._lock:
                self._scoped[access.key] = scoped
        return scoped

    def compile(self, query: Query | None = None, use_rollups: bool = True, access: Access = UNRESTRICTED,
                **fields) -> Compiled:
        if use_rollups:
            self.ensure_catalog()
        return self.compiler.compile(query if query is not None else make_query(**fields), use_rollups, access)

    def query(self, query: Query | None = None, progress=None, use_rollups: bool = True,
              access: Access = UNRESTRICTED, **fields) -> pa.Table:
        """Answer a metric query (MODEL.md §6); builds whatever it reads first if needed."""
        query = query if query is not None else make_query(**fields)
        return self.run(query, progress=progress, use_rollups=use_rollups, access=access).table

    def run(self, query: Query, progress=None, use_cache: bool = True, timeout: float | None = None,
            use_rollups: bool = True, cancel: Cancel | None = None, access: Access = UNRESTRICTED,
            limits: Limits | None = None) -> Answer:
        """A query's answer with how it was obtained; repeated queries come from the result cache.

        `use_rollups=False` answers from the views' own tables even where a rollup could (same numbers). An answer
        over `limits` (default: `self.limits`) raises ResultTooLarge; `cancel` interrupts the warehouse query
        (QueryCancelled).
        """
        return self.open(query, progress, use_cache, timeout, use_rollups, cancel, access=access, limits=limits)

    @events.observed_query  # a QueryEvent per answer or failure (semantic/events.py)
    def open(self, query: Query, progress=None, use_cache: bool = True, timeout: float | None = None,
             use_rollups: bool = True, cancel: Cancel | None = None, hold: int | None = None,
             access: Access = UNRESTRICTED, limits: Limits | None = None) -> Answer:
        """As `run`; with `hold` (bytes), an answer larger than that is not read whole: its `table` is None and
        `reading` yields its batches (for a door that streams them; it is not cached)."""
        compiled = self.compile(query, use_rollups, access)
        self.query_log.append(compiled.plan)
        if use_cache:
            try:
                self.notice_builds()
            except PhloemError:  # the warehouse is away: a cached answer is still the last one it gave
                pass
        key = (self.model.version, self.generation, compiled.access, compiled.sql)
        if use_cache:
            with self._lock:
                hit = self.results.get(key)
            if hit is not None:
                _within(hit, limits)  # cached for a role with larger limits
                return Answer(hit, compiled, cached=True)
        self.ensure_built(progress)
        if use_rollups and self.model.rollups and compiled.catalog != self.compiler.catalog.version:
            compiled = self.compile(query, use_rollups, access)  # a build moved the rollups since it was planned
        table = self._read(compiled.sql, timeout, cancel, hold, limits)
        if isinstance(table, Reading):
            return Answer(None, compiled, cached=False, reading=table)
        if use_cache and answer_bytes(table) <= self.results.maxsize:  # larger than the budget: not kept
            with self._lock:
                self.results[key] = table
        return Answer(table, compiled, cached=False)

    def _read(self, sql: str, timeout: float | None, cancel: Cancel | None, hold: int | None,
              limits: Limits | None = None):
        engine, limits = self.engine, limits if limits is not None else self.limits
        if hasattr(engine, "open"):  # DuckDB reads batch by batch: never more than the limits in memory
            return engine.open(sql, timeout=timeout, limits=limits, cancel=cancel).head(hold)
        return engine.arrow(sql, timeout=timeout, limits=limits, cancel=cancel)

    @events.observed_query
    def cached_answer(self, query: Query, access: Access = UNRESTRICTED, limits: Limits | None = None) -> Answer | None:
        """The answer if planning and running it would both be cache hits, else None: it never plans, builds or
        touches the warehouse, so an event loop may call it (the PostgreSQL door answers repeats inline)."""
        if not self._catalog_loaded:
            return None
        with self._lock:
            if not self._noticed.get("all"):  # time to look for other processes' builds: take the slow path
                return None
        compiled = self.compiler.cached(query, access=access)
        if compiled is None:
            return None
        with self._lock:
            hit = self.results.get((self.model.version, self.generation, compiled.access, compiled.sql))
        if hit is None:
            return None
        _within(hit, limits)
        self.query_log.append(compiled.plan)
        return Answer(hit, compiled, cached=True)

    def explain(self, query: Query | None = None, use_rollups: bool = True, access: Access = UNRESTRICTED,
                **fields) -> str:
        return self.compile(query, use_rollups, access, **fields).explain()

    def close(self) -> None:
        self.query_log.close()
        self.engine.close()


def _within(table: pa.Table, limits: Limits | None) -> None:
    """A cached answer is held to the asker's limits too (it may have been read for a role allowed more)."""
    if limits is not None:
        limits.check(table.num_rows, table.nbytes)
