"""Materialize streams, datasets and rollups atomically: stage every table, then swap them all in one transaction."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

from sqlglot import exp

from semantic.activity.dataset import compile_dataset
from semantic.activity.stream import activity_select, ident, stream_view, table_name
from semantic.errors import BuildError, ModelError
from semantic.materialize.rollups import RollupBuilds, RollupJob
from semantic.project.load import Model
from semantic.project.model import Activity, Stream
from semantic.project.verify import staged_problems
from semantic.query.rollups import Catalog

STAGE = "__stage_"
BUILDS = "_phloem_builds"  # what each table was built from, so stale tables are rebuilt and fresh ones kept


@dataclass
class Target:
    """One table to build: its final name, the query, and a fingerprint of what it depends on."""

    name: str
    kind: str  # activity | dataset | rollup
    query: exp.Expression | None
    fingerprint: str


@dataclass
class BuildReport:
    built: list[str] = field(default_factory=list)
    fresh: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    rollups: dict[str, RollupJob] = field(default_factory=dict)  # rebuilt rollups: which partitions, how many rows


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


class Builder:
    def __init__(self, model: Model, engine):
        self.model, self.engine = model, engine
        self.schema = model.settings.materialization.schema_
        self.dialect = engine.dialect

    def table(self, name: str, staged: bool = False) -> exp.Table:
        return exp.Table(this=ident(STAGE + name if staged else name), db=ident(self.schema))

    def targets(self, staged: set[str] = frozenset()) -> list[Target]:
        """Every table of the project in build order; datasets read the staged copy of activities in `staged`."""
        out: list[Target] = []
        fingerprints: dict[str, str] = {}
        for stream in self.model.streams.values():
            for a in stream.activities:
                query = activity_select(stream, a, self.dialect)
                fp = _digest(query.sql(self.dialect))
                fingerprints[stream.name] = _digest(fingerprints.get(stream.name, ""), fp)
                out.append(Target(table_name(stream, a), "activity", query, fp))
        for d in self.model.datasets.values():
            stream = self.model.streams[d.stream]
            live = compile_dataset(stream, d, self.table_of(), self.model.dataset_columns, self.dialect)
            query = compile_dataset(stream, d, self.table_of(staged), self.model.dataset_columns,
                                    self.dialect) if staged else live
            out.append(Target(d.name, "dataset", query, _digest(live.sql(self.dialect), fingerprints[d.stream])))
        return out

    def table_of(self, staged: set[str] = frozenset()) -> Callable[[Stream, Activity], exp.Table]:
        def resolve(stream: Stream, activity: Activity) -> exp.Table:
            name = table_name(stream, activity)
            return self.table(name, staged=name in staged)

        return resolve

    def built_fingerprints(self) -> dict[str, str]:
        if not self.engine.table_exists(self.schema, BUILDS):
            return {}
        return dict(self.engine.rows(f'select name, fingerprint from "{self.schema}"."{BUILDS}"'))

    @cached_property
    def rollups(self) -> RollupBuilds:
        return RollupBuilds(self.model, self.engine)

    @cached_property
    def fingerprints(self) -> dict[str, str]:
        """What each table should be built from; the model is immutable, so compiled once."""
        tables = {t.name: t.fingerprint for t in self.targets()}
        return {**tables, **(self.rollups.fingerprints(tables) if self.model.rollups else {})}

    def catalog(self) -> Catalog:
        """The built rollups as the planner sees them (rows, freshness, built from the present definition?)."""
        return self.rollups.catalog(self.fingerprints, BUILDS)

    def stale(self) -> list[str]:
        """Names of tables that are missing or were built from another definition (one catalog round trip)."""
        s = self.schema
        try:  # publish records each table in the same transaction that creates it, so the record is enough
            built = dict(self.engine.rows(
                f'select b.name, b.fingerprint from "{s}"."{BUILDS}" b join information_schema.tables t '
                f"on t.table_schema = '{s}' and t.table_name = b.name"))
        except Exception:  # no builds table yet: nothing is built
            return list(self.fingerprints)
        return [n for n, fp in self.fingerprints.items() if built.get(n) != fp]

    def build(self, force: bool = False, progress: Callable[[str, int, int], None] | None = None,
              rollups: bool = True, skip: frozenset[str] = frozenset(),
              refresh: frozenset[str] = frozenset()) -> BuildReport:
        """Stage what is stale, then publish all of it at once; on any failure nothing visible changes.

        Rollups come after the datasets they read (from the staged copies when those were rebuilt too);
        `rollups=False` leaves them as they are (queries then read their stale tail from the dataset), `skip`
        leaves these rollups as they are. `refresh` names datasets and rollups to rebuild although up to date
        (their schedule is due: the warehouse's rows may have changed); a dataset is rebuilt with its stream's
        activities. A rollup that fails raises a BuildError naming it (`.rollup`).
        """
        report = BuildReport()
        self.engine.execute(f'create schema if not exists "{self.schema}"')
        self.drop_stages()
        stale = set(self.stale())
        names = {t.name for t in self.targets()} if force else stale - set(self.model.rollups)
        names |= self.refreshed_tables(refresh)
        todo = [t for t in self.targets(staged=names) if t.name in names]
        jobs: list[RollupJob] = []
        if rollups and self.model.rollups:
            jobs = [j for j in self.rollups.jobs(self.fingerprints, force, stale & set(self.model.rollups), names,
                                                 self.built_at(), due=refresh) if j.name not in skip]
        report.fresh = [t for t in self.fingerprints if t not in names and t not in {j.name for j in jobs}]
        total = len(todo) + len(jobs)
        try:
            for i, t in enumerate(todo):
                if progress:
                    progress(t.name, i, total)
                start = time.perf_counter()
                self.engine.create_table_as(self.table(t.name, staged=True), t.query)
                report.seconds[t.name] = time.perf_counter() - start
            for i, job in enumerate(jobs, start=len(todo)):
                if progress:
                    progress(job.name, i, total)
                start = time.perf_counter()
                try:
                    self.rollups.stage(job, names)
                except BuildError as e:
                    e.rollup = job.name
                    raise
                report.seconds[job.name] = time.perf_counter() - start
            # unique ids and keys, and time columns, depend on the data: refuse it before anything is published
            problems = staged_problems(self.model, self.engine, {t.name: self.table(t.name, staged=True) for t in todo})
            if problems:
                raise ModelError(problems)
            if todo or jobs:
                self.publish(todo + [Target(j.name, "rollup", None, j.fingerprint) for j in jobs], jobs)
        finally:
            self.drop_stages()
        report.built = [t.name for t in todo] + [j.name for j in jobs]
        report.rollups = {j.name: j for j in jobs}
        if progress:
            progress("done", total, total)
        return report

    def refreshed_tables(self, refresh: frozenset[str]) -> set[str]:
        """The tables a refresh of these datasets rebuilds: each dataset and its stream's activity tables."""
        out: set[str] = set()
        for name in refresh & set(self.model.datasets):
            stream = self.model.streams[self.model.datasets[name].stream]
            out |= {name, *(table_name(stream, a) for a in stream.activities)}
        return out

    def last_built(self):
        """When the newest table was published (None before the first build): changes with every build anywhere."""
        if not self.engine.table_exists(self.schema, BUILDS):
            return None
        return self.engine.rows(f'select max(built_at), count(*) from "{self.schema}"."{BUILDS}"')[0]

    def built_at(self) -> dict:
        if not self.engine.table_exists(self.schema, BUILDS):
            return {}
        return dict(self.engine.rows(f'select name, built_at from "{self.schema}"."{BUILDS}"'))

    def publish(self, targets: list[Target], jobs: list[RollupJob] = ()) -> None:
        s = self.schema
        with self.engine.transaction() as tx:
            tx.execute(f'create table if not exists "{s}"."{BUILDS}" (name text primary key, fingerprint text, '
                       'built_at timestamp)')
            for stream in self.model.streams.values():
                tx.execute(f'drop view if exists "{s}"."{stream.name}"')
            for t in targets:
                tx.execute(f'drop table if exists "{s}"."{t.name}"')
                tx.execute(f'alter table "{s}"."{STAGE}{t.name}" rename to "{t.name}"')
                tx.execute(f'delete from "{s}"."{BUILDS}" where name = ?', [t.name])
                tx.execute(f'insert into "{s}"."{BUILDS}" values (?, ?, now())', [t.name, t.fingerprint])
            for stream in self.model.streams.values():
                view = exp.Create(this=self.table(stream.name), kind="VIEW", replace=True,
                                  expression=stream_view(stream, self.table_of(), self.dialect))
                tx.execute(view)
            if jobs:
                self.rollups.record(tx, jobs, BUILDS)

    def drop_stages(self) -> None:
        for name in self.engine.tables(self.schema, STAGE):
            self.engine.execute(f'drop table if exists "{self.schema}"."{name}"')
