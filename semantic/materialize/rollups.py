"""Building rollups: after the datasets, staged beside the live table and published in the same transaction.

A rollup with `partition:` is refreshed by partition: the partitions of its `incremental` window and the
missing ones are recomputed from the dataset, the others copied from the live table into the staged one, so
the publish stays one atomic rename. What was built is recorded in `<schema>._phloem_rollups` (one row per
rollup: rows, fingerprint, time zone, freshness) and `<schema>._phloem_rollup_partitions` (rows and build
time of each partition); the planner reads them back as a `Catalog`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field

from sqlglot import exp

from semantic.query.graph import SemanticGraph, bind_columns
from semantic.query.match import duration_parts
from semantic.query.rollup_sql import rollup_select
from semantic.query.rollups import EMPTY, PARTITION, Catalog, RollupSpec, RollupState, resolve_all
from semantic.query.sqlparts import label, localize, truncate
from semantic.query.timegrid import instant, shift
from semantic.query.timegrid import truncate as bucket_start
from semantic.sqltree import col, ident

STATE = "_phloem_rollups"
PARTITIONS = "_phloem_rollup_partitions"
STAGE = "__stage_"


@dataclass
class RollupJob:
    """One rollup to (re)build: everything, or only some partitions."""

    spec: RollupSpec
    fingerprint: str
    incremental: bool
    rebuilt: list[dt.datetime] = field(default_factory=list)  # partitions recomputed (all, on a full build)
    kept: dict[dt.datetime, dt.datetime] = field(default_factory=dict)  # partition → when it was built
    rows: dict[dt.datetime | None, int] = field(default_factory=dict)
    fresh_before: dt.datetime | None = None
    types: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name


def fingerprint(spec: RollupSpec, graph: SemanticGraph, dialect: str, datasets: dict[str, str]) -> str:
    """What a rollup is built from: its SELECT and the definitions of the datasets it reads."""
    parts = [rollup_select(graph, spec, dialect).sql(dialect), spec.timezone or "",
             *(datasets.get(d, "") for d in spec.sources)]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def restage(query: exp.Expression, schema: str, staged: set[str]) -> exp.Expression:
    """The same query reading the staged copy of every table in `staged` (built earlier in this build)."""
    if not staged:
        return query

    def swap(node):
        if isinstance(node, exp.Table) and node.db == schema and node.name in staged:
            return exp.Table(this=ident(STAGE + node.name), db=ident(schema), alias=node.args.get("alias"))
        return node

    return query.transform(swap)


def is_due(refreshed_at: dt.datetime | None, refresh: str | None, now: dt.datetime) -> bool:
    if refresh is None or refreshed_at is None:
        return True
    n, unit = duration_parts(refresh)
    return shift(refreshed_at, n, unit) <= now


class RollupBuilds:
    def __init__(self, model, engine):
        self.model, self.engine = model, engine
        self.schema = model.settings.materialization.schema_
        self.dialect = engine.dialect
        self.graph = SemanticGraph(model)
        self.specs = resolve_all(model, self.graph)

    def table(self, name: str, staged: bool = False) -> str:
        return f'"{self.schema}"."{STAGE + name if staged else name}"'

    def fingerprints(self, datasets: dict[str, str]) -> dict[str, str]:
        return {name: fingerprint(spec, self.graph, self.dialect, datasets) for name, spec in self.specs.items()}

    # ------------------------------------------------------------ what was built

    def recorded(self) -> dict[str, dict]:
        """Each built rollup's state row and partitions (empty before the first rollup build)."""
        if not self.engine.table_exists(self.schema, STATE):
            return {}
        out = {}
        for name, fp, refreshed_at, source_built_at in self.engine.rows(
                f'select rollup, fingerprint, refreshed_at, source_built_at from "{self.schema}"."{STATE}"'):
            out[name] = {"fingerprint": fp, "refreshed_at": refreshed_at, "source_built_at": source_built_at,
                         "partitions": {}}
        for name, part, built_at in self.engine.rows(
                f'select rollup, part, built_at from "{self.schema}"."{PARTITIONS}" where part is not null'):
            if name in out:
                out[name]["partitions"][instant(part)] = built_at
        return out

    def jobs(self, fingerprints: dict[str, str], force: bool, stale: set[str], rebuilt: set[str],
             built_at: dict[str, dt.datetime], due: frozenset[str] = frozenset()) -> list[RollupJob]:
        """Rollups to build now: new or changed ones in full; the rest when a dataset they read moved on and
        their `refresh` interval has passed (or `force`, or they are in `due`: the worker found their schedule
        due), by partition where they declare `incremental`."""
        recorded = self.recorded()
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        out = []
        for name, spec in self.specs.items():
            state = recorded.get(name)
            if name in stale or state is None or state["fingerprint"] != fingerprints[name]:
                out.append(RollupJob(spec, fingerprints[name], incremental=False))
                continue
            moved = bool(rebuilt & set(spec.sources)) or any(
                state["source_built_at"] is None or (built_at.get(s) and built_at[s] > state["source_built_at"])
                for s in spec.sources)
            if force or name in due or (moved and is_due(state["refreshed_at"], spec.rollup.refresh, now)):
                job = RollupJob(spec, fingerprints[name], incremental=bool(spec.rollup.incremental))
                job.kept = dict(state["partitions"])
                out.append(job)
        return out

    # ------------------------------------------------------------ staging

    def stage(self, job: RollupJob, staged: set[str]) -> None:
        """Create `__stage_<rollup>`: recomputed partitions, plus the live table's others when incremental."""
        spec = job.spec
        full = restage(rollup_select(self.graph, spec, self.dialect), self.schema, staged)
        target = exp.Table(this=ident(STAGE + spec.name), db=ident(self.schema))
        window_start = None
        if spec.partition:
            data, latest = self.partitions_in_data(spec, staged)
            if spec.rollup.incremental and latest is not None:
                n, unit = duration_parts(spec.rollup.incremental)
                window_start = bucket_start(shift(latest, -n, unit), spec.partition)
            if job.incremental:
                rebuild = sorted(p for p in data if p not in job.kept or (window_start and p >= window_start))
                job.kept = {p: t for p, t in job.kept.items() if p in data and p not in rebuild}
                job.rebuilt = rebuild
                self.engine.create_table_as(target, self.incremental_query(spec, job, staged))
            else:
                job.kept, job.rebuilt = {}, sorted(data)
                self.engine.create_table_as(target, full)
            counts = self.engine.rows(f'select {PARTITION}, count(*) from {self.table(spec.name, True)} group by 1')
            job.rows = {instant(p): n for p, n in counts}
            if window_start is not None:
                job.fresh_before = window_start
            elif data:
                job.fresh_before = max(data)
        else:
            self.engine.create_table_as(target, full)
            (n, last), = self.engine.rows(f'select count(*), max("{spec.bucket}") from {self.table(spec.name, True)}')
            job.rows = {None: n}
            job.fresh_before = instant(last) if last is not None else None
        job.types = dict(self.engine.columns(f"select * from {self.table(spec.name, True)}"))

    def partitions_in_data(self, spec: RollupSpec, staged: set[str]) -> tuple[list[dt.datetime], dt.datetime | None]:
        """The partitions the view's rows fall in, and its latest local time."""
        view = self.graph.views[spec.view]
        local = localize(bind_columns(self.graph.dims[spec.view][view.time].sql, spec.view), spec.timezone)
        query = exp.select(truncate(local, spec.partition), exp.Max(this=local.copy())).from_(
            exp.alias_(self.graph.relation(spec.view), spec.view, table=True)).group_by(exp.Literal.number(1))
        rows = self.engine.rows(restage(query, self.schema, staged))
        parts = sorted(instant(p) for p, _ in rows if p is not None)
        latest = max((instant(t) for _, t in rows if t is not None), default=None)
        return parts, latest

    def incremental_query(self, spec: RollupSpec, job: RollupJob, staged: set[str]) -> exp.Expression:
        fresh = restage(rollup_select(self.graph, spec, self.dialect, partitions=job.rebuilt), self.schema, staged)
        if not job.kept:
            return fresh
        columns = [*spec.key_columns, *spec.partial_columns]
        kept = exp.select(*(col(c) for c in columns)).from_(exp.Table(this=ident(spec.name), db=ident(self.schema)))
        kept = kept.where(exp.In(this=col(PARTITION), expressions=[label(p, spec.partition) for p in job.kept]))
        return exp.union(kept, fresh, distinct=False) if job.rebuilt else kept

    # ------------------------------------------------------------ publishing

    def record(self, tx, jobs: list[RollupJob], builds: str) -> None:
        """Inside the publish transaction: each rebuilt rollup's state and partitions."""
        s = self.schema
        tx.execute(f'create table if not exists "{s}"."{STATE}" (rollup text primary key, fingerprint text, '
                   'timezone text, rows bigint, partitions bigint, fresh_before timestamp, source_built_at timestamp, '
                   'refreshed_at timestamp, types text)')
        tx.execute(f'create table if not exists "{s}"."{PARTITIONS}" (rollup text, part timestamp, rows bigint, '
                   'built_at timestamp)')
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        for job in jobs:
            tx.execute(f'delete from "{s}"."{STATE}" where rollup = ?', [job.name])
            tx.execute(f'delete from "{s}"."{PARTITIONS}" where rollup = ?', [job.name])
            for part, n in job.rows.items():
                tx.execute(f'insert into "{s}"."{PARTITIONS}" values (?, ?, ?, ?)',
                           [job.name, part, n, job.kept.get(part, now) if part is not None else now])
            sources = ", ".join(f"'{d}'" for d in job.spec.sources) or "null"
            tx.execute(f'insert into "{s}"."{STATE}" values (?, ?, ?, ?, ?, ?, '
                       f'(select max(built_at) from "{s}"."{builds}" where name in ({sources})), ?, ?)',
                       [job.name, job.fingerprint, job.spec.timezone, sum(job.rows.values()),
                        len([p for p in job.rows if p is not None]), job.fresh_before, now,
                        json.dumps(job.types)])

    def catalog(self, fingerprints: dict[str, str], builds: str) -> Catalog:
        """What the warehouse holds, for the planner; empty before the first rollup build."""
        s = self.schema
        try:
            rows = self.engine.rows(f'select rollup, fingerprint, timezone, rows, partitions, fresh_before, '
                                    f'source_built_at, refreshed_at, types from "{s}"."{STATE}"')
            built = dict(self.engine.rows(f'select name, built_at from "{s}"."{builds}"'))
        except Exception:  # noqa: BLE001 - no state table yet: nothing is built
            return EMPTY
        states = {}
        for name, fp, tz, n, parts, fresh_before, source_built_at, refreshed_at, types in rows:
            spec = self.specs.get(name)
            if spec is None:
                continue
            behind = any(built.get(d) is not None and (source_built_at is None or built[d] > source_built_at)
                         for d in spec.sources)
            states[name] = RollupState(int(n), int(parts), refreshed_at, instant(fresh_before) if fresh_before else None,
                                       behind, fp == fingerprints.get(name), tz, json.loads(types or "{}"))
        version = hashlib.sha256(repr(sorted((k, v) for k, v in states.items())).encode()).hexdigest()[:16]
        return Catalog(states, version)
