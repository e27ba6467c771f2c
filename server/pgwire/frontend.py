"""The SQL side of the PostgreSQL-wire door: statements in, typed results out (the protocol layer encodes them).

Each statement goes one of four ways:
- commands the door answers itself (commands.py): BEGIN/COMMIT/ROLLBACK/SAVEPOINT/RELEASE, SET/RESET/SHOW,
  DISCARD, DEALLOCATE, DECLARE/FETCH/MOVE/CLOSE, LISTEN/UNLISTEN, EXPLAIN;
- catalog and constant queries (anything reading pg_catalog, information_schema, or no table at all): typed by
  the binder as PostgreSQL 15 would type them, translated to DuckDB and run on the catalog (catalog.py);
- semantic queries (reading the views and `metrics`): through the semantic SQL layer (server/sql), with `*` over
  a view meaning all its catalog columns, as a PostgreSQL client expects;
- anything that writes: refused (25006, the door is read-only).

`describe` types a statement without running it: catalog queries by the binder alone, semantic ones by compiling
them (DuckDB binds the SQL; PostgreSQL plans it under LIMIT 0). `cancel` interrupts the session's running DuckDB
query (catalog, or semantic on a DuckDB warehouse; on PostgreSQL it lands when the query returns); the statement
fails with 57014 and the session goes on.

Errors are `QueryError`s (or `QueryTimeout`) carrying `sqlstate`; when a query string held several statements,
`error.results` holds the results of the statements before the failing one.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import decimal
import itertools
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa
import sqlglot
from cachetools import LRUCache
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError
from sqlglot.optimizer.normalize_identifiers import normalize_identifiers

from semantic.access.context import SecurityContext
from semantic.errors import PhloemError, QueryError, QueryTimeout, WarehouseError
from semantic.limits import BATCH_ROWS, WATCHDOG, Cancel, Limits, collect
from semantic.project.project import Answer
from semantic.query.filters import parse_error_position
from semantic.query.statements import check_statement, engine_message
from server.pgwire import commands as C
from server.pgwire import pgtypes as T
from server.pgwire.binder import Binder, error
from server.pgwire.catalog import LOCKED, NAMESPACES, Catalog, semantic_relations
from server.pgwire.translate import Context, Translator
from server.pgwire.types import INT_RANGE, WireValueError, int_in_range

READ_ONLY = "25006"


@dataclass
class Column:
    name: str
    type_oid: int
    type_size: int = -1
    type_modifier: int = -1


@dataclass
class Result:
    tag: str  # CommandComplete tag: "SELECT 3", "SET", "BEGIN", "SHOW", "COMMIT", …
    columns: list[Column] | None  # None: no RowDescription
    table: pa.Table | None
    notices: list[str] = field(default_factory=list)  # NoticeResponse texts (WARNING), e.g. "there is already …"
    constant: bool = False  # the same whenever the statement runs again (SELECT 1, SELECT version())


class RowResult(Result):
    """A result of rows the door computed itself (`SELECT $1::int`), kept as Python values: the protocol layer
    sends `rows` without Arrow (~30 µs a statement); `table` is made only when something asks for it."""

    def __init__(self, columns: list[Column], rows: list[tuple]):
        self.tag, self.columns, self.rows, self.notices, self.constant = f"SELECT {len(rows)}", columns, rows, [], False
        self._table: pa.Table | None = None

    @property
    def table(self) -> pa.Table:
        if self._table is None:
            arrays = [pa.array([r[i] for r in self.rows], T.arrow_type(c.type_oid)) for i, c in enumerate(self.columns)]
            self._table = pa.Table.from_arrays(arrays, names=[c.name for c in self.columns])
        return self._table


class QueryCanceled(QueryTimeout):
    """The client cancelled the running statement (CancelRequest)."""

    sqlstate = "57014"


class Session:
    """One connection's state: who, where, its settings, transaction status, cursors, and its running statement."""

    def __init__(self, user: str, database: str, options: dict | None, pid: int,
                 context: SecurityContext | None = None):
        self.user, self.database, self.pid = user, database, pid
        # who authenticated: the mapped roles of a SCRAM user; the unrestricted demo's for trust and library use
        self.security_context = context if context is not None else SecurityContext.anonymous()
        self.settings: dict[str, str] = dict(C.DEFAULTS)
        self.settings["session_authorization"] = user
        self._apply_startup(options or {})
        self.status = "I"  # I idle, T in a transaction block, E in a failed block
        self.savepoints: list[str] = []
        self.cursors: dict[str, C.Cursor] = {}
        self.lock = threading.Lock()  # one statement at a time
        self._cancelled = threading.Event()
        self._interrupt: Callable[[], None] | None = None
        self._connection: tuple[Catalog, duckdb.DuckDBPyConnection, list] | None = None
        self.plans: dict[tuple, _Plan] = {}  # statement text and parameter types -> what it became (see _Plan)

    def _apply_startup(self, options: dict) -> None:
        for key, value in options.items():
            if key in ("user", "database"):
                continue
            if key == "options":  # `-c name=value` / `--name=value`
                for name, val in re.findall(r"(?:-c\s*|--)([A-Za-z_.]+)=((?:\\ |\S)+)", str(value)):
                    self.settings[C.canonical(name.replace("-", "_"))] = val.replace("\\ ", " ")
                continue
            name = C.canonical(key)
            if name not in C.FIXED:
                self.settings[name] = str(value)

    def parameter_status(self) -> dict[str, str]:
        """The settings PostgreSQL reports in ParameterStatus (send them after authentication, and again when a
        statement changed one: compare before and after `execute`)."""
        return {name: self.settings.get(name, "") for name in C.REPORTED}

    @property
    def search_path(self) -> list[str]:
        return C.search_path(self.settings, self.user)

    def context(self) -> Context:
        existing = [s for s in self.search_path if s in NAMESPACES]
        return Context(self.user, self.database, existing, self.pid, self.settings.get("server_version", "15"))


class _SchemaOnly:
    """The project, answering each metric query with its columns and no rows, without running it: DuckDB binds
    the compiled SQL (its types, no execution); PostgreSQL plans it under LIMIT 0, which reads nothing."""

    def __init__(self, project):
        self._project = project
        self._types = duckdb.connect(":memory:", config=LOCKED)
        self._lock = threading.Lock()

    def __getattr__(self, name: str):
        return getattr(self._project, name)

    def run(self, query, **options) -> Answer:  # Project.run's options (cache, timeout …) do not apply
        compiled = self._project.compile(query)
        self._project.ensure_built()
        engine = self._project.engine
        if engine.dialect != "duckdb":
            return Answer(engine.arrow(f"SELECT * FROM ({compiled.sql}) AS _q LIMIT 0"), compiled, cached=False)
        columns = engine.columns(compiled.sql)
        return Answer(self._empty(columns), compiled, cached=False)

    def _empty(self, columns: list[tuple[str, str]]) -> pa.Table:
        """An empty Arrow table with the columns DuckDB would return."""
        if not columns:
            return pa.table({})
        items = []
        for i, (_, kind) in enumerate(columns):
            if not re.fullmatch(r"[A-Za-z0-9_ (),\[\]]+", kind):  # ENUM('a', …), STRUCT(…): as text
                kind = "VARCHAR"
            items.append(f"CAST(NULL AS {kind}) AS c{i}")
        with self._lock:
            try:
                table = self._types.sql(f"SELECT {', '.join(items)} LIMIT 0").to_arrow_table()
            except duckdb.Error:
                table = pa.table({f"c{i}": pa.array([], pa.string()) for i in range(len(columns))})
        return table.rename_columns([name for name, _ in columns])


_RUNNING: contextvars.ContextVar[Session | None] = contextvars.ContextVar("pgwire_session", default=None)


def _interruptible_engine(engine) -> None:
    """Let a session interrupt the DuckDB queries its statements start (CancelRequest).

    Project.run keeps its own ways (cache, rollups, query log); only the engine's `open` learns, while a pg
    session runs a statement (a context variable says which), to take the session's cancel as its own. Other
    doors and warehouses are untouched.
    """
    if getattr(engine, "dialect", None) != "duckdb" or not hasattr(engine, "open") or \
            getattr(engine, "_pgwire_interruptible", False):
        return
    original = engine.open

    def open_(query, params=None, timeout=None, limits=None, cancel=None):
        session = _RUNNING.get()
        if session is None or cancel is not None:
            return original(query, params, timeout, limits, cancel)
        if session._cancelled.is_set():
            raise QueryCanceled("canceling statement due to user request")
        stop = Cancel()
        session._interrupt = stop
        return original(query, params, timeout, limits, stop)

    engine.open = open_
    engine._pgwire_interruptible = True




def _interruptible(session: Session, cursor: duckdb.DuckDBPyConnection, sql: str, timeout: float | None,
                   limits: Limits | None = None) -> pa.Table:
    """Run `sql` on `cursor`, interrupted by the session's cancel or after `timeout` seconds, refused past
    `limits`."""
    session._interrupt = cursor.interrupt
    watch = None
    try:
        if session._cancelled.is_set():
            raise QueryCanceled("canceling statement due to user request")
        if timeout:
            watch = WATCHDOG.schedule(timeout, cursor.interrupt)
        return collect(cursor.sql(sql).to_arrow_reader(BATCH_ROWS), limits)
    except duckdb.InterruptException:
        if session._cancelled.is_set():
            raise QueryCanceled("canceling statement due to user request") from None
        raise QueryTimeout(f"canceling statement due to statement timeout ({timeout:g} s)") from None
    finally:
        session._interrupt = None
        if watch is not None:
            WATCHDOG.cancel(watch)


class _Version:
    """What one model version needs, as one access sees it: its semantic SQL door, a describing twin of it, and
    its catalog (pg_class, pg_attribute, information_schema list only what that access may see)."""

    def __init__(self, runtime, project, context: SecurityContext):
        from server.sql import SemanticSQL

        self.runtime = runtime
        self.of = runtime.project  # the model version this is of (a tenant's project is not runtime.project)
        self.project = project
        self.sql = runtime.sql(context)
        _interruptible_engine(project.engine)
        self.schema = SemanticSQL(_SchemaOnly(self.sql.project))
        self.catalog = Catalog(semantic_relations(self.sql, lambda text: self.schema.run(text).table.schema))
        self.describes: LRUCache = LRUCache(maxsize=512)


class Frontend:
    def __init__(self, runtime):
        self.runtime = runtime
        self._lock = threading.Lock()
        self._versions: tuple[object, LRUCache] | None = None  # the current project's versions, by access key
        self._pids = itertools.count(4200)

    def version(self, session: Session | None = None) -> _Version:
        """The current model version as the session's security context sees it (rebuilt when the runtime
        reloaded a new model)."""
        current = self.runtime.project
        context = session.security_context if session is not None else SecurityContext.anonymous()
        project = self.runtime.project_for(context)  # its tenant's (Forbidden for an unknown one)
        scoped = project.scoped(context)
        key = (id(project), None if scoped is project else scoped.access.key)
        with self._lock:
            held = self._versions
            if held is None or held[0] is not current:
                held = self._versions = (current, LRUCache(maxsize=256))
            version = held[1].get(key)
            if version is None:
                version = held[1][key] = _Version(self.runtime, project, context)
            return version

    @property
    def catalog(self) -> Catalog:
        """The unrestricted catalog (tests and tools; sessions use `version(session).catalog`)."""
        return self.version().catalog

    def session(self, user: str, database: str, options: dict | None = None,
                context: SecurityContext | None = None) -> Session:
        return Session(user, database, options, next(self._pids), context)

    # -------------------------------------------------------------- describe

    def describe(self, session: Session, sql: str, param_oids: Sequence[int] = ()) -> tuple[list[int], list[Column] | None]:
        """Parameter types and row description of one statement, without running it (a semantic query is compiled
        with stand-in values of its parameters' types, and its SQL bound, not run)."""
        statements = C.split(sql)
        if not statements:
            return list(param_oids), None
        text, tokens = statements[0]
        first = tokens[0].text.upper()
        count = max(len(param_oids), _max_param(tokens))
        declared = list(param_oids) + [0] * (count - len(param_oids))
        if first == "SHOW":
            names, _ = C.show_statement(tokens, session.settings)
            return [], [_column(n, T.TEXT) for n in names]
        if first in ("FETCH",):
            cursor = session.cursors.get(_cursor_name(tokens))
            return declared, list(cursor.columns) if cursor else None
        if first == "EXPLAIN":
            return declared, [_column("QUERY PLAN", T.TEXT)]
        if first not in _QUERY_STARTS:
            return [t or T.TEXT for t in declared], None
        version = self.version(session)
        key = (text, tuple(declared), tuple(session.search_path))
        hit = version.describes.get(key)
        if hit is not None:
            return hit
        statement = _parse(text, session)
        route, binder = self._route(session, version, statement, declared)
        types = binder.params(count)
        if route == "catalog":
            columns = [_column(n, T.oid_of(t), m) for (n, t), m in zip(binder.outputs, binder.typmods, strict=True)]
        else:
            values = [_placeholder(t) for t in types]
            rewritten = _expand_stars(statement, version.catalog) or text
            try:
                table = version.schema.run(rewritten, values).table
            except PhloemError as e:
                raise _semantic_error(e) from None
            columns = _columns(table.schema)
        version.describes[key] = (types, columns)
        return types, columns

    # -------------------------------------------------------------- execute

    def execute(self, session: Session, sql: str, params: Sequence | None = None,
                param_oids: Sequence[int] = ()) -> list[Result]:
        """Run every statement of `sql` (several only in the simple protocol); [] for an empty query string.
        `param_oids`: the parameters' types as the client declared them (0: infer), which type `SELECT $1`."""
        results: list[Result] = []
        with session.lock:
            session._cancelled.clear()
            statements = C.split(sql)
            keep = _plan_key(sql, params, param_oids) if len(statements) == 1 else None
            for text, tokens in statements:
                try:
                    results.append(self._statement(session, text, tokens, list(params or []), param_oids, keep))
                except PhloemError as e:
                    raise _failed(session, e, results) from None
        return results

    def answer_now(self, session: Session, sql: str, params: Sequence | None = None,
                   param_oids: Sequence[int] = ()) -> list[Result] | None:
        """`execute`'s results when caches hold them (a statement this session ran before: a constant, or a
        metric query in the result cache), computed in microseconds on the caller's thread; else None (then
        call `execute`, in a worker). Why: a thread hop alone costs ~100 µs, PostgreSQL answers in ~60."""
        plan = session.plans.get(_plan_key(sql, params, param_oids))
        if plan is None or plan.version.of is not self.runtime.project \
                or session.status == "E" or not session.lock.acquire(blocking=False):
            return None
        try:
            if session._cancelled.is_set():  # a cancel that came after the last statement ended
                session._cancelled.clear()
            result = plan.answer_now(list(params) if params else [], session)
        except PhloemError as e:
            raise _failed(session, e, []) from None
        finally:
            session.lock.release()
        return None if result is None else [result]

    def cancel(self, session: Session) -> None:
        """Interrupt the session's running statement (it fails with 57014; the session stays usable)."""
        session._cancelled.set()
        interrupt = session._interrupt
        if interrupt is not None:
            interrupt()

    def _statement(self, session: Session, text: str, tokens: list[C.Token], params: list,
                   param_oids: Sequence[int] = (), keep: tuple | None = None) -> Result:
        first = tokens[0].text.upper()
        second = tokens[1].text.upper() if len(tokens) > 1 else ""
        if session.status == "E" and first not in ("COMMIT", "END", "ROLLBACK", "ABORT"):
            raise error("current transaction is aborted, commands ignored until end of transaction block", "25P02")
        if first in _TRANSACTION:
            return self._transaction(session, tokens)
        if first in ("SET", "RESET", "DISCARD"):
            session.plans.clear()  # search_path, the user … shape how statements are bound and translated
        if first == "SET":
            changes = C.set_statement(tokens, session.settings)
            session.settings.update(changes)
            return Result("SET", None, None)
        if first == "RESET":
            name = " ".join(t.text for t in tokens[1:])
            if name.upper() == "ALL":
                kept = {k: session.settings[k] for k in ("session_authorization",)}
                session.settings = dict(C.DEFAULTS) | kept
            else:
                key = C.canonical(name)
                session.settings[key] = C.DEFAULTS.get(key, "")
            return Result("RESET", None, None)
        if first == "SHOW":
            names, rows = C.show_statement(tokens, session.settings)
            table = pa.table({f"c{i}": [r[i] for r in rows] for i in range(len(names))}).rename_columns(names)
            return Result("SHOW", [_column(n, T.TEXT) for n in names], table)
        if first == "DISCARD":
            if second == "ALL":
                session.settings = dict(C.DEFAULTS) | {"session_authorization": session.user}
                session.cursors.clear()
            return Result(f"DISCARD {second}".strip(), None, None)
        if first == "DEALLOCATE":
            return Result("DEALLOCATE ALL" if "ALL" in (second, tokens[-1].text.upper()) else "DEALLOCATE", None,
                          None)
        if first in ("LISTEN", "UNLISTEN"):
            return Result(first, None, None)
        if first == "DECLARE":
            return self._declare(session, tokens, text, params)
        if first in ("FETCH", "MOVE"):
            return self._fetch(session, tokens, first)
        if first == "CLOSE":
            if second == "ALL":
                session.cursors.clear()
                return Result("CLOSE CURSOR ALL", None, None)
            if session.cursors.pop(_cursor_name(tokens), None) is None:
                raise error(f'cursor "{_cursor_name(tokens)}" does not exist', "34000")
            return Result("CLOSE CURSOR", None, None)
        if first == "EXPLAIN":
            return self._explain(session, text, tokens, params)
        if first in _QUERY_STARTS:
            return self._query(session, text, params, param_oids, keep)
        if first in _WRITES:
            raise error(f"cannot execute {first} in a read-only transaction", READ_ONLY,
                        "the PostgreSQL door of Phloem only reads: SELECT from the views and `metrics`")
        if first not in _COMMANDS:  # not a PostgreSQL statement at all (a typo): what PostgreSQL's parser says
            raise error(f'syntax error at or near "{tokens[0].text}"', "42601")
        raise error(f"{first} is not supported", "0A000",
                    "send SELECT statements (protocol-level prepared statements and cursors work)")

    def _transaction(self, session: Session, tokens: list[C.Token]) -> Result:
        words = [t.text.upper() for t in tokens]
        first = words[0]
        notices = []
        if first in ("BEGIN", "START"):
            if session.status != "I":
                notices.append("there is already a transaction in progress")
            else:
                session.status = "T"
            return Result("START TRANSACTION" if first == "START" else "BEGIN", None, None, notices)
        if first in ("COMMIT", "END"):
            failed = session.status == "E"
            if session.status == "I":
                notices.append("there is no transaction in progress")
            self._end(session)
            return Result("ROLLBACK" if failed else "COMMIT", None, None, notices)
        if first in ("ROLLBACK", "ABORT"):
            if "TO" in words:
                name = tokens[-1].text if tokens[-1].kind == "ident" else tokens[-1].text.lower()
                if name not in session.savepoints:
                    raise error(f'savepoint "{name}" does not exist', "3B001")
                del session.savepoints[session.savepoints.index(name) + 1:]
                session.status = "T"
                return Result("ROLLBACK", None, None)
            if session.status == "I":
                notices.append("there is no transaction in progress")
            self._end(session)
            return Result("ROLLBACK", None, None, notices)
        name = tokens[-1].text if tokens[-1].kind == "ident" else tokens[-1].text.lower()
        if first == "SAVEPOINT":
            if session.status == "I":
                raise error("SAVEPOINT can only be used in transaction blocks", "25P01")
            session.savepoints.append(name)
            return Result("SAVEPOINT", None, None)
        # RELEASE [SAVEPOINT] name
        if name not in session.savepoints:
            raise error(f'savepoint "{name}" does not exist', "3B001")
        del session.savepoints[session.savepoints.index(name):]
        return Result("RELEASE", None, None)

    def _end(self, session: Session) -> None:
        session.status = "I"
        session.savepoints.clear()
        for name in [n for n, c in session.cursors.items() if not c.hold]:
            del session.cursors[name]

    # -------------------------------------------------------------- queries

    def _query(self, session: Session, text: str, params: list, param_oids: Sequence[int] = (),
               keep: tuple | None = None) -> Result:
        """Run one query; `keep`: remember what it became under that key (see answer_now)."""
        version = self.version(session)
        plan = session.plans.get(keep) if keep is not None else None
        if plan is not None and plan.version is version:
            result = plan.answer_now(params, session)
            if result is not None:
                return result
            if plan.route == "semantic":
                return self._semantic_query(session, version, plan.rewritten, plan.values(params))
        statement = _parse(text, session)
        declared = [(param_oids[i] if i < len(param_oids) else 0) for i in range(len(params))]
        route, binder = self._route(session, version, statement, declared)
        count = max(len(params), _max_param_in(statement))
        if count > len(params):
            raise error(f"bind message supplies {len(params)} parameters, but the statement requires {count}",
                        "08P01")
        types = binder.params(count)
        values = [_coerce(v, t) for v, t in zip(params, types, strict=False)]
        if route == "catalog":
            template = _template(statement, binder.outputs, types)
            result = self._catalog_query(session, version, statement, binder, values, types)
            fixed = result if result.constant and count == 0 else None  # with parameters, the template says
            if keep is not None and (template is not None or fixed is not None):
                _remember(session, keep, _Plan(version, "constant", tuple(types), result=fixed, template=template))
            return result
        rewritten = _expand_stars(statement, version.catalog) or text
        if keep is not None:
            _remember(session, keep, _Plan(version, "semantic", tuple(types), rewritten=rewritten))
        return self._semantic_query(session, version, rewritten, values)

    def _semantic_query(self, session: Session, version: _Version, rewritten: str, values: list) -> Result:
        running = _RUNNING.set(session)
        try:
            with version.runtime.admit(_context(session)) as ticket:  # its roles' limits (53300, 57014, 54000)
                answer = version.sql.run(rewritten, values, timeout=ticket.timeout, limits=ticket.limits)
        except PhloemError as e:
            raise _semantic_error(e) from None
        finally:
            _RUNNING.reset(running)
        if session._cancelled.is_set():
            raise QueryCanceled("canceling statement due to user request")
        return _result(answer.table)

    def _route(self, session: Session, version: _Version, statement: exp.Expression,
               declared: list[int]) -> tuple[str, Binder]:
        """("catalog" | "semantic", the bound statement's binder). Semantic statements are bound leniently: the
        semantic layer accepts more than the catalog lists (`ordered_at__month`, MEASURE(x))."""
        catalog = version.catalog
        ctes = {c.alias_or_name for c in statement.find_all(exp.CTE)}
        semantic = catalogs = False
        for table in statement.find_all(exp.Table):
            if not isinstance(table.this, exp.Identifier) or (table.name in ctes and not table.db):
                continue
            schema = table.db or None
            if schema in ("pg_catalog", "information_schema"):
                catalogs = True
                continue
            found = catalog.relation(schema, table.name, session.search_path)
            if found is not None and found.schema != "public":
                catalogs = True
            elif schema in (None, "public"):
                semantic = True
            else:
                raise error(f'schema "{schema}" does not exist', "3F000",
                            "the semantic tables are in schema public; the catalog in pg_catalog")
        if semantic and catalogs:
            raise error("a statement reads either the semantic tables or the catalog, not both", "0A000",
                        "query pg_catalog / information_schema and the views in separate statements")
        binder = Binder(catalog, session.search_path, declared)
        if semantic:
            try:
                binder.bind(statement.copy())
            except Exception:  # only parameter types are read here; the semantic layer judges the SQL
                pass
            return "semantic", binder
        binder.bind(statement)
        return "catalog", binder

    def _catalog_query(self, session: Session, version: _Version, statement: exp.Expression, binder: Binder,
                       values: list, types: list[int]) -> Result:
        _bind_params(statement, values, types)
        translator = Translator(version.catalog, session.context())
        translated = translator.translate(statement)
        outputs = binder.outputs
        row = _constant_row(translated, outputs)
        if row is not None:  # SELECT 1, SELECT $1::int, SELECT version(): no round trip to DuckDB
            table = pa.Table.from_arrays([pa.array([v]) for v in row], names=[f"c{i}" for i in range(len(row))])
        else:
            table = self._run_catalog(session, version.catalog, translator.generate(translated))
        columns = [_column(n, T.oid_of(t), m) for (n, t), m in zip(outputs, binder.typmods, strict=True)]
        arrays = []
        for i, (_, t) in enumerate(outputs):
            arrays.append(_as_type(table.column(i) if i < table.num_columns else pa.nulls(table.num_rows), t))
        result = pa.Table.from_arrays(arrays, names=[c.name for c in columns]) if arrays else table
        return Result(f"SELECT {table.num_rows}", columns, result, constant=row is not None)

    def _run_catalog(self, session: Session, catalog: Catalog, sql: str) -> pa.Table:
        try:
            return _interruptible(session, self._connection(session, catalog), sql, self.runtime.timeout,
                                  self.runtime.project.limits)
        except duckdb.Error as e:
            raise _duckdb_error(e) from None

    def _connection(self, session: Session, catalog: Catalog) -> duckdb.DuckDBPyConnection:
        """The session's connection to the catalog, its temporary tables in step with the session."""
        held = session._connection
        facts = [session.user, session.database, session.pid, session.settings.get("application_name", ""),
                 sorted(session.settings.items())]
        if held is None or held[0] is not catalog:
            if held is not None:
                held[1].close()
            held = (catalog, catalog.connect(), [])
            session._connection = held
        if held[2] != facts:
            con = held[1]
            con.execute("DELETE FROM temp.pgw_session")
            con.execute("INSERT INTO temp.pgw_session VALUES (?, ?, ?, ?)", facts[:4])
            con.execute("DELETE FROM temp.pgw_settings")
            con.executemany("INSERT INTO temp.pgw_settings VALUES (?, ?)", facts[4])
            held[2][:] = facts
        return held[1]

    # -------------------------------------------------------------- cursors and EXPLAIN

    def _declare(self, session: Session, tokens: list[C.Token], text: str, params: list) -> Result:
        words = [t.text.upper() for t in tokens]
        if "FOR" not in words or "CURSOR" not in words:
            raise error("syntax error in DECLARE: write DECLARE name CURSOR [WITH HOLD] FOR SELECT …", "42601")
        name = tokens[1].text if tokens[1].kind == "ident" else tokens[1].text.lower()
        at = words.index("FOR", words.index("CURSOR"))
        hold = "HOLD" in words[:at] and "WITHOUT" not in words[:at]
        if session.status == "I" and not hold:
            raise error("DECLARE CURSOR can only be used in transaction blocks", "25P01")
        if name in session.cursors:
            raise error(f'cursor "{name}" already exists', "42P03")
        result = self._query(session, text[tokens[at + 1].start - tokens[0].start:], params)
        session.cursors[name] = C.Cursor(result.columns or [], result.table, hold)
        return Result("DECLARE CURSOR", None, None)

    def _fetch(self, session: Session, tokens: list[C.Token], command: str) -> Result:
        name = _cursor_name(tokens)
        cursor = session.cursors.get(name)
        if cursor is None:
            raise error(f'cursor "{name}" does not exist', "34000")
        words = [t.text.upper() for t in tokens[1:-1] if t.text.upper() not in ("FROM", "IN")]
        total = cursor.table.num_rows
        count = 1
        if words:
            head = words[0]
            if head in ("ALL",) or words[-1] == "ALL":
                count = total
            elif head in ("NEXT", "FORWARD") and len(words) == 1:
                count = 1
            elif head in ("FORWARD",) and words[1].isdigit():
                count = int(words[1])
            elif head.isdigit():
                count = int(head)
            elif head == "FIRST":
                cursor.position, count = 0, 1
            else:
                raise error(f"FETCH {' '.join(words)} is not supported: cursors here only move forward", "0A000")
        start = cursor.position
        rows = cursor.table.slice(start, max(0, min(count, total - start)))
        cursor.position = start + rows.num_rows
        if command == "MOVE":
            return Result(f"MOVE {rows.num_rows}", None, None)
        return Result(f"FETCH {rows.num_rows}", list(cursor.columns), rows)

    def _explain(self, session: Session, text: str, tokens: list[C.Token], params: list) -> Result:
        at = 1
        while at < len(tokens) and tokens[at].text.upper() in ("ANALYZE", "VERBOSE", "(", ")", ",", "COSTS", "FORMAT",
                                                               "TEXT", "ON", "OFF", "TRUE", "FALSE", "BUFFERS"):
            at += 1
        inner = text[tokens[at].start - tokens[0].start:]
        statement = _parse(inner, session)
        version = self.version(session)
        route, _ = self._route(session, version, statement, [0] * len(params))
        if route == "catalog":
            plan = "catalog query (answered from the door's own pg_catalog)"
        else:
            try:
                plan = version.sql.explain(_expand_stars(statement, version.catalog) or inner, params)
            except PhloemError as e:
                raise _semantic_error(e) from None
        lines = plan.splitlines() or [""]
        return Result("EXPLAIN", [_column("QUERY PLAN", T.TEXT)], pa.table({"QUERY PLAN": lines}))


# ------------------------------------------------------------------ helpers

_TRANSACTION = {"BEGIN", "START", "COMMIT", "END", "ROLLBACK", "ABORT", "SAVEPOINT", "RELEASE"}
_QUERY_STARTS = {"SELECT", "WITH", "VALUES", "TABLE", "("}
_WRITES = {"INSERT", "UPDATE", "DELETE", "MERGE", "UPSERT", "CREATE", "DROP", "ALTER", "TRUNCATE", "GRANT", "REVOKE",
           "COMMENT", "VACUUM", "ANALYZE", "REINDEX", "CLUSTER", "LOCK", "CALL", "DO", "REFRESH", "SECURITY",
           "IMPORT", "REASSIGN", "CHECKPOINT"}
# the other words PostgreSQL 15 starts a statement with (gram.y); any other first word is a syntax error
_COMMANDS = _TRANSACTION | _QUERY_STARTS | _WRITES | {
    "SET", "RESET", "SHOW", "DISCARD", "DEALLOCATE", "LISTEN", "UNLISTEN", "NOTIFY", "DECLARE", "FETCH", "MOVE",
    "CLOSE", "EXPLAIN", "COPY", "PREPARE", "EXECUTE", "LOAD"}


def _column(name: str, oid: int, typmod: int = -1) -> Column:
    return Column(name, oid, T.typlen(oid), typmod)


def _columns(schema: pa.Schema) -> list[Column]:
    out = []
    for f in schema:
        oid, typmod = T.from_arrow(f.type)
        out.append(_column(f.name, oid, typmod))
    return out


def _parse(text: str, session: Session) -> exp.Expression:
    try:
        statements = [s for s in sqlglot.parse(text, read="postgres") if s is not None]
    except (ParseError, TokenError) as e:  # where it stopped, never sqlglot's wording (it names its classes)
        raise error(f"syntax error{parse_error_position(e)}", "42601") from None
    if len(statements) != 1:
        raise error("one statement expected", "42601")
    statement = normalize_identifiers(statements[0], dialect="postgres")
    # session.settings holds every default as well: the names current_setting may read
    return check_statement(statement, {k.lower() for k in session.settings})  # before the catalog's DuckDB or the semantic layer sees it


def _cursor_name(tokens: list[C.Token]) -> str:
    last = tokens[-1]
    return last.text if last.kind == "ident" else last.text.lower()


def _max_param(tokens: list[C.Token]) -> int:
    return max((int(t.text[1:]) for t in tokens if t.kind == "param"), default=0)


def _max_param_in(statement: exp.Expression) -> int:
    found = 0
    for p in statement.find_all(exp.Parameter):
        value = p.this
        if isinstance(value, exp.Literal) and not value.is_string:
            found = max(found, int(value.this))
    return found


def _placeholder(t: int):
    """A value of type `t` that only stands in for a parameter while a statement is described."""
    if t in T.INTEGER_TYPES or t == T.OID:
        return 0
    if t in (T.FLOAT4, T.FLOAT8):
        return 0.0
    if t == T.NUMERIC:
        return decimal.Decimal(0)
    if t == T.BOOL:
        return True
    if t == T.DATE:
        return dt.date(2000, 1, 1)
    if t in (T.TIMESTAMP, T.TIMESTAMPTZ):
        return dt.datetime(2000, 1, 1)
    return ""


_TRUE_WORDS = {"t", "true", "y", "yes", "on", "1"}
_FALSE_WORDS = {"f", "false", "n", "no", "off", "0"}


def _coerce(value, t: int):
    """A parameter sent as text, read as the type its context gives it (what PostgreSQL's input functions do)."""
    if not isinstance(value, str) or t in T.STRING_TYPES or t in T.REG_TYPES:
        return value
    text = value.strip()
    try:
        if t in T.INTEGER_TYPES or t == T.OID:
            return int(text)
        if t in (T.FLOAT4, T.FLOAT8):
            return float(text)
        if t == T.NUMERIC:
            return decimal.Decimal(text)
        if t == T.BOOL:
            if text.lower() in _TRUE_WORDS:
                return True
            if text.lower() in _FALSE_WORDS:
                return False
            raise ValueError(text)
        if t == T.DATE:
            return dt.date.fromisoformat(text[:10])
        if t in (T.TIMESTAMP, T.TIMESTAMPTZ):
            stamp = re.sub(r"\s*([+-]\d\d(:?\d\d)?)$", "", text)  # '2024-01-05 10:00:00+00' → naive (UTC)
            return dt.datetime.fromisoformat(stamp)
    except (ValueError, decimal.InvalidOperation):
        raise error(f'invalid input syntax for type {T.typname(t)}: "{value}"', "22P02") from None
    return value


def _literal(value, t: int) -> exp.Expression:
    if value is None:
        return exp.null()
    if isinstance(value, bool):
        return exp.Boolean(this=value)
    if isinstance(value, int | float | decimal.Decimal):
        return exp.Literal.number(value) if value >= 0 else exp.Neg(this=exp.Literal.number(-value))
    if isinstance(value, dt.datetime):
        return exp.cast(exp.Literal.string(value.isoformat(sep=" ")), "TIMESTAMP")
    if isinstance(value, dt.date):
        return exp.cast(exp.Literal.string(value.isoformat()), "DATE")
    if isinstance(value, bytes | bytearray | memoryview):  # any bytes, not only UTF-8: as hex, unhexed by DuckDB
        return exp.func("unhex", exp.Literal.string(bytes(value).hex()))
    return exp.Literal.string(str(value))


def _bind_params(statement: exp.Expression, values: list, types: list[int]) -> None:
    for p in list(statement.find_all(exp.Parameter)):
        value = p.this
        if not (isinstance(value, exp.Literal) and not value.is_string):
            continue
        n = int(value.this)
        node = _literal(values[n - 1], types[n - 1])
        node.meta["pgtype"] = types[n - 1]
        p.replace(node)


_NOT_CONSTANT = object()
_INTEGERS = (T.INT2, T.INT4, T.INT8)


def _constant_row(translated: exp.Expression, outputs: list) -> list | None:
    """The one row of a translated SELECT of plain constants whose values are already those of their output
    types (integers in range, text without escapes, booleans, NULL), computed without DuckDB; else None
    (anything else, `1.5`, `'x'::varchar(1)`, an out-of-range cast, runs on DuckDB as before)."""
    if not isinstance(translated, exp.Select) or len(translated.expressions) != len(outputs) or not outputs:
        return None
    if any(value for key, value in translated.args.items() if key != "expressions"):
        return None  # FROM, WHERE, DISTINCT, LIMIT …
    row = []
    for item, (_, t) in zip(translated.expressions, outputs, strict=True):
        value = _constant(item.this if isinstance(item, exp.Alias) else item, t)
        if value is _NOT_CONSTANT:
            return None
        row.append(value)
    return row


def _constant(e: exp.Expression, t: int):
    if isinstance(e, exp.Cast):  # the binder typed the output as the cast's target: `t`
        e = e.this
    if isinstance(e, exp.Null):
        return None
    if isinstance(e, exp.Boolean):
        return e.this if t == T.BOOL else _NOT_CONSTANT
    if isinstance(e, exp.Literal) and e.is_string:
        text = e.this
        if "\\" in text or t not in (T.TEXT, T.NAME) or (t == T.NAME and len(text.encode()) >= 64):
            return _NOT_CONSTANT
        return text
    negative = isinstance(e, exp.Neg)
    if negative:
        e = e.this
    if isinstance(e, exp.Literal) and not e.is_string and t in _INTEGERS and re.fullmatch(r"[0-9]+", str(e.this)):
        value = -int(e.this) if negative else int(e.this)
        lo, hi = INT_RANGE[t]
        if lo <= value <= hi:
            return value
    return _NOT_CONSTANT


def _as_type(column: pa.ChunkedArray, t) -> pa.ChunkedArray | pa.Array:
    target = T.arrow_type(t)
    if target is None or column.type == target:
        return column
    if pa.types.is_null(column.type):
        return pa.nulls(len(column), target)
    try:
        return column.cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        if pa.types.is_string(target):
            return pa.array([None if v is None else str(v) for v in column.to_pylist()], pa.string())
        return column


def _expand_stars(statement: exp.Expression, catalog: Catalog) -> str | None:
    """`*` over a view → its catalog columns, so a client gets the columns the catalog promised (the semantic
    layer's own `*` leaves time dimensions out). `metrics` keeps the semantic `*` (every metric, in total)."""
    ctes = {c.alias_or_name for c in statement.find_all(exp.CTE)}
    changed = False
    statement = statement.copy()
    for select in statement.find_all(exp.Select):
        from_ = select.args.get("from_")
        if from_ is None or select.args.get("joins") or not isinstance(from_.this, exp.Table):
            continue
        table = from_.this
        if not isinstance(table.this, exp.Identifier) or table.db not in ("", "public") or \
                (table.name in ctes and not table.db):
            continue
        relation = catalog.semantic.get(table.name)
        if relation is None or table.name == "metrics":
            continue
        alias = table.alias_or_name
        items = []
        for item in select.expressions:
            star = isinstance(item, exp.Star) or (isinstance(item, exp.Column) and isinstance(item.this, exp.Star)
                                                  and item.table == alias)
            if star:
                items.extend(exp.column(c.name, quoted=True) for c in relation.columns)
                changed = True
            else:
                items.append(item)
        select.set("expressions", items)
    return statement.sql(dialect="postgres") if changed else None


_DUCKDB_STATES = (("Catalog Error: Table", "42P01"), ("Catalog Error: Scalar Function", "42883"),
                  ("Catalog Error: Table Function", "42883"), ("Binder Error: Referenced column", "42703"),
                  ("Binder Error: No function matches", "42883"), ("Parser Error", "42601"),
                  ("Conversion Error", "22P02"), ("Invalid Input Error", "22P02"),
                  ("Out of Range Error", "22003"), ("Binder Error", "42804"),
                  ("Permission Error", "42501"))  # the locked catalog database refused a file, URL or extension


def _duckdb_error(e: duckdb.Error) -> QueryError:
    message = str(e).splitlines()[0]
    state = next((s for prefix, s in _DUCKDB_STATES if message.startswith(prefix)), "XX000")
    if state == "22P02" and "out of range" in message:  # a cast that overflowed, not text that did not parse
        state = "22003"
    return error(f"the catalog query failed: {engine_message(message)}", state,
                 "the door serves PostgreSQL 15's catalog; this part of it is not implemented")


_SEMANTIC_STATES = (("unknown table", "42P01"), ("has no column", "42703"), ("unknown dimension", "42703"),
                    ("has no dimension", "42703"), ("unknown metric", "42703"), ("does not parse", "42601"),
                    ("read-only", READ_ONLY), ("not supported", "0A000"), ("must appear in GROUP BY", "42803"),
                    ("parameter", "08P01"), ("not accepted", "0A000"), ("out of range", "22003"),
                    ("conversion error", "22P02"), ("failed", "42000"))


def _sqlstate(e: PhloemError) -> str:
    if isinstance(e, QueryTimeout):
        return "57014"
    if isinstance(e, WarehouseError) and not isinstance(e, QueryError):
        return "58000"  # system_error: the warehouse failed (down, restarting), not this statement nor Phloem
    if isinstance(e, QueryError):
        message = e.message.lower()
        return next((s for pattern, s in _SEMANTIC_STATES if pattern in message), "42000")
    return "XX000"


def _semantic_error(e: PhloemError) -> PhloemError:
    if not hasattr(e, "sqlstate"):
        e.sqlstate = _sqlstate(e)
    return e


# ------------------------------------------------------------------ plans: repeated statements without parsing

PLANS = 256  # statements remembered per session


def _context(session: Session | None) -> SecurityContext:
    """Who runs the session's statements: the authenticated user's context, else the unrestricted one (trust)."""
    return getattr(session, "security_context", None) or SecurityContext.anonymous()


@dataclass
class _Plan:
    """What a statement text became in one session (for one model version): a constant result, a template of
    constants and parameters, or semantic SQL to hand to the semantic layer. A repeat skips parsing, binding
    and translating (~1 ms), and `answer_now` serves it without a thread when its answer is at hand."""

    version: _Version
    route: str  # "constant" | "semantic"
    types: tuple[int, ...]  # the parameters' types
    result: Result | None = None  # constant, no parameters: the whole result
    template: tuple | None = None  # constant with parameters: (columns, the parameter each output is)
    rewritten: str = ""  # semantic: the statement, `*` over views expanded
    last: tuple | None = None  # semantic: (table, Result) last answered, so one answer is one Result object

    def values(self, params: list) -> list:
        if len(params) < len(self.types):
            raise error(f"bind message supplies {len(params)} parameters, but the statement requires "
                        f"{len(self.types)}", "08P01")
        return [v if type(v) is not str else _coerce(v, t) for v, t in zip(params, self.types, strict=False)]

    def answer_now(self, params: list, session: Session | None = None) -> Result | None:
        if self.result is not None:
            return self.result
        if self.template is not None:
            columns, items = self.template
            values = self.values(params)
            row = tuple([_in_range(values[i], c.type_oid) for c, i in zip(columns, items, strict=True)])
            return RowResult(columns, [row])
        if self.route == "semantic":
            runtime, context = self.version.runtime, _context(session)
            limits = runtime.quotas.allowance(context).limits
            answer = self.version.sql.cached_run(self.rewritten, self.values(params), limits=limits)
            if answer is None:
                return None  # run in a worker: admitted there
            runtime.admit(context).release()  # a repeat answered from the cache counts as a request too
            last = self.last
            if last is None or last[0] is not answer.table:
                last = self.last = (answer.table, _result(answer.table))
            return last[1]
        return None


# parameter types a template passes through as they are (their Arrow type holds the coerced value exactly)
_PASSED = {T.INT2, T.INT4, T.INT8, T.TEXT, T.VARCHAR, T.BOOL, T.FLOAT8, T.BYTEA}


def _template(statement: exp.Expression, outputs: list, types: list[int]) -> tuple | None:
    """(columns, items) when `statement` is a SELECT of bare parameters (`SELECT $1`, `SELECT $1::int`) and
    constants, its outputs of types whose values pass unchanged; else None."""
    if not types or not isinstance(statement, exp.Select) or len(statement.expressions) != len(outputs):
        return None
    if any(value for key, value in statement.args.items() if key != "expressions"):
        return None
    columns, items = [], []
    for item, (name, t) in zip(statement.expressions, outputs, strict=True):
        oid = T.oid_of(t)
        node = item.this if isinstance(item, exp.Alias) else item
        cast = isinstance(node, exp.Cast)
        if cast:
            node = node.this
        if not isinstance(node, exp.Parameter) or not isinstance(node.this, exp.Literal):
            return None
        n = int(node.this.this)
        given = types[n - 1]
        integers = given in _INTEGERS and oid in _INTEGERS
        if oid not in _PASSED or not (given == oid or (cast and integers)):
            return None
        if cast and node.parent.args.get("to") is not None and node.parent.args["to"].expressions:
            return None  # varchar(2): a length to enforce
        columns.append(_column(name, oid))
        items.append(n - 1)
    return columns, tuple(items)


def _in_range(value, oid: int):
    if oid not in _INTEGERS or value is None:
        return value
    try:
        return int_in_range(value, oid)
    except WireValueError as e:
        raise error(str(e), e.sqlstate) from None


def _plan_key(sql: str, params: Sequence | None, param_oids: Sequence[int]) -> tuple:
    """The text and each parameter's declared type (0: none), as a session's plans are keyed."""
    if not params:
        return sql, ()
    n = len(params)
    if len(param_oids) == n:
        return sql, tuple(param_oids)
    declared = tuple(param_oids[:n])
    return sql, declared + (0,) * (n - len(declared))


def _remember(session: Session, key: tuple, plan: _Plan) -> None:
    if len(session.plans) >= PLANS:
        session.plans.pop(next(iter(session.plans)))  # the oldest: a client cycling texts cannot grow it
    session.plans[key] = plan


def _result(table: pa.Table) -> Result:
    return Result(f"SELECT {table.num_rows}", _columns(table.schema), table)


def _failed(session: Session, e: PhloemError, results: list[Result]) -> PhloemError:
    """A statement's error, as `execute` raises it: with its SQLSTATE, the block failed, earlier results kept."""
    _semantic_error(e)
    if session.status == "T":
        session.status = "E"
    e.results = results
    return e
