"""Tenants: one model served to many, each on its own warehouse schemas or database (docs/tenants.md).

A tenant's model is the project's model with its sources renamed (`schemas: {raw: acme_raw}`, a pass over each
activity's and view's SQL tree, never a string replace), its own database when it names one, and its own
materialization schema. Each tenant is a separate `Project`: its own builds, rollups and caches, so no answer
computed for one tenant is ever found in another's cache.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import replace

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from semantic.access.context import SecurityContext
from semantic.engines import connect, expand_env
from semantic.errors import Forbidden, ModelError, Problem, did_you_mean
from semantic.limits import Limits
from semantic.materialize.build import BuildReport
from semantic.project.load import PROJECT_FILE, Model
from semantic.project.model import Materialization, Warehouse
from semantic.project.project import Project

DEFAULT_SCHEMA = {"duckdb": "main", "postgres": "public"}  # where an unqualified table name is read from


def renamed(sql: str, schemas: dict[str, str], dialect: str) -> str:
    """`sql` reading each source schema from its tenant's (`raw.orders` → `acme_raw.orders`); unqualified names
    count as the warehouse's default schema (`main`, `public`). Unchanged SQL is returned as written."""
    tree = sqlglot.parse_one(sql, read=dialect)
    ctes = {c.alias_or_name for c in tree.find_all(exp.CTE)}
    changed = [_rename(t, schemas, dialect) for t in tree.find_all(exp.Table) if t.name not in ctes or t.db]
    return tree.sql(dialect=dialect) if any(changed) else sql


def _rename(table: exp.Table, schemas: dict[str, str], dialect: str) -> bool:
    if not isinstance(table.this, exp.Identifier) or table.args.get("catalog") is not None:
        return False  # a table function (read_csv), or another database named on purpose
    db = table.args.get("db")
    schema = DEFAULT_SCHEMA.get(dialect, "main") if db is None else db.name if db.quoted else db.name.lower()
    if schema not in schemas:
        return False
    table.set("db", exp.to_identifier(schemas[schema]))
    return True


def _renamed_table(name: str, schemas: dict[str, str]) -> str:
    """A view's `table: raw.orders` as the tenant reads it."""
    table = exp.to_table(name, dialect="duckdb")
    return table.sql("duckdb") if _rename(table, schemas, "duckdb") else name


def tenant_model(model: Model, name: str) -> Model:
    """The model as tenant `name` is served: its sources, its warehouse, its own materialization schema."""
    settings = model.settings
    if name not in settings.tenants:
        raise KeyError(name)
    tenant = settings.tenants[name]
    dialect = settings.warehouse.engine
    warehouse = settings.warehouse
    if tenant.database:
        warehouse = Warehouse(engine="duckdb", database=tenant.database)
    elif tenant.dsn:
        warehouse = Warehouse(engine="postgres", dsn=tenant.dsn)
    own = settings.model_copy(update={"warehouse": warehouse, "tenants": {},
                                      "materialization": Materialization(schema=settings.tenant_schema(name))})
    streams, views = model.streams, model.views
    if tenant.schemas:
        try:
            streams = {n: s.model_copy(update={"activities": tuple(
                a.model_copy(update={"sql": renamed(a.sql, tenant.schemas, dialect)}) for a in s.activities)})
                for n, s in model.streams.items()}
            views = {n: v.model_copy(update={
                "sql": renamed(v.sql, tenant.schemas, "duckdb") if v.sql else None,  # views' SQL is read as DuckDB's
                "table": _renamed_table(v.table, tenant.schemas) if v.table else None})
                for n, v in model.views.items()}
        except SqlglotError as e:  # the loader parsed this SQL already; say which tenant it failed for
            raise ModelError([Problem(f"tenant `{name}`: cannot rename the source schemas: {e}", PROJECT_FILE,
                                      None, f"tenants.{name}.schemas")]) from None
    return replace(model, settings=own, streams=streams, views=views)


def _warehouse_key(model: Model) -> tuple[str, str]:
    """Which warehouse a model reads: tenants with the same key share one engine (one pool, one DuckDB handle)."""
    w = model.settings.warehouse
    if w.engine == "postgres":
        return ("postgres", expand_env(w.dsn or ""))
    return ("duckdb", model.database_path)


class Tenants:
    """The projects of one model version: the model as written (`default`) and one per tenant, made on first use.

    Engines are shared between projects that read the same warehouse and kept across reloads (`reloaded`).
    """

    def __init__(self, model: Model, limits: Limits | None = None, engines: dict | None = None):
        self.model, self.limits = model, limits
        self._engines: dict[tuple[str, str], object] = dict(engines or {})
        self._projects: dict[str, Project] = {}
        self._lock = threading.Lock()
        self.default = Project(model, engine=self._engine_for(model), limits=limits)

    @property
    def names(self) -> list[str]:
        return list(self.model.settings.tenants)

    @property
    def configured(self) -> bool:
        return bool(self.model.settings.tenants)

    def _engine_for(self, model: Model):
        key = _warehouse_key(model)
        engine = self._engines.get(key)
        if engine is None:
            engine = self._engines[key] = connect(model)
        else:
            allow = getattr(engine, "allow", None)
            if allow is not None:  # PostgreSQL: the reader role may read this tenant's schemas too
                from semantic.engines import client_reads

                allow(client_reads(model))
        return engine

    def project(self, name: str) -> Project:
        """Tenant `name`'s project (Forbidden for a tenant the project does not configure)."""
        with self._lock:
            project = self._projects.get(name)
            if project is None:
                if name not in self.model.settings.tenants:
                    raise Forbidden(f"tenant `{name}` is not served here",
                                    did_you_mean(name, self.names) or "ask the operator to add it under `tenants:`")
                model = tenant_model(self.model, name)
                project = Project(model, engine=self._engine_for(model), limits=self.limits)
                project.query_log = self.default.query_log  # one model, one log of query shapes for suggestions
                self._projects[name] = project
        return project

    def for_context(self, context: SecurityContext | None) -> Project:
        """The project a security context queries. Without `tenants:` every context gets the model as written;
        with them, the context's tenant's project, and a restricted context without a tenant is refused."""
        context = context or SecurityContext.anonymous()
        if not self.configured:
            return self.default
        if context.tenant is None:
            if context.unrestricted:
                return self.default
            raise Forbidden(f"`{context.user}` belongs to no tenant, and this server serves only its tenants",
                            "the identity needs a tenant (the token's or API key's `tenant`)")
        if context.tenant not in self.model.settings.tenants:
            raise Forbidden(f"tenant `{context.tenant}` is not served here",
                            "check the identity's tenant, or ask the operator to add it under `tenants:`")
        return self.project(context.tenant)

    def projects(self, only: str | None = None) -> Iterator[tuple[str, Project]]:
        """(name, project) of every tenant (or only one), in the order phloem.yml lists them."""
        if only is not None and only not in self.model.settings.tenants:
            raise Forbidden(f"unknown tenant `{only}`", did_you_mean(only, self.names) or
                            f"tenants: {', '.join(self.names) or 'none configured'}")
        for name in self.names:
            if only is None or name == only:
                yield name, self.project(name)

    def build(self, tenant: str | None = None, force: bool = False,
              progress: Callable[[str, str, int, int], None] | None = None) -> dict[str, BuildReport]:
        """Build every tenant (or one); without tenants, the model as written under the name ''. Each tenant's
        build is atomic on its own: a failure stops at that tenant and leaves it and those after it as they were."""
        if not self.configured and tenant is None:
            return {"": self.default.build(force=force, progress=_labelled(progress, ""))}
        return {name: project.build(force=force, progress=_labelled(progress, name))
                for name, project in self.projects(tenant)}

    def ensure_built(self) -> None:
        """Build what is missing or stale for every tenant (or the model as written without tenants)."""
        if not self.configured:
            self.default.ensure_built()
        for _, project in self.projects():
            project.ensure_built()

    def reloaded(self, model: Model) -> Tenants:
        """The projects of a new model version, on the same engines (fresh caches); engines no tenant reads any
        more are closed."""
        new = Tenants(model, self.limits, self._engines)
        keep = {_warehouse_key(model)} | {_warehouse_key(tenant_model(model, n)) for n in model.settings.tenants}
        for key in list(new._engines):
            if key not in keep:
                new._engines.pop(key).close()
        return new

    def release(self) -> None:
        """After a reload: the old projects' log files (their engines are the new version's)."""
        self.default.query_log.close()

    def close(self) -> None:
        self.default.query_log.close()
        for engine in self._engines.values():
            engine.close()


def _labelled(progress, tenant: str):
    if progress is None:
        return None
    return lambda name, done, total: progress(tenant, name, done, total)


def projects(model: Model, limits: Limits | None = None) -> Tenants:
    """Every tenant's project of `model` (the worker and `phloem build` build them all)."""
    return Tenants(model, limits)
