"""A PostgreSQL warehouse (15 or newer): the one place that knows the psycopg driver.

Connections: one writer (DDL, builds, the atomic publish; serialized by a lock) and a small pool of
readers for `arrow()` / `rows()`. Readers never share the writer's connection, so a query from another
thread neither sees a half-done publish nor aborts it with its own error, and PostgreSQL runs them in
parallel (one locked connection would queue every dashboard query behind a long build statement).

Client queries (`arrow()`, given `client_reads`) run on connections logged in as `phloem_reader`: a role
Phloem creates with SELECT on the materialization schema and the tables views name, and nothing else (no
`raw`, no file functions, no superuser), in read-only sessions with the server's time limit. Builds and
Phloem's own reads (`rows()`, `columns()`, …) stay with the configured user. When the role cannot log in,
client connections `SET ROLE` to it; when it cannot be set up at all they run as the configured user, still
read-only; `reader_problem` says which and why (also logged once, at the first connection).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import inspect
import logging
import os
import re
import select
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
import pyarrow as pa
from psycopg import sql as pgsql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.types.string import TextLoader
from sqlglot import exp

from semantic.engines.pgarrow import TEXT_LOADED, column_array, to_arrow
from semantic.errors import BuildError, QueryError, QueryTimeout, WarehouseError
from semantic.limits import BATCH_ROWS, NO_LIMITS, Cancel, Limits, QueryCancelled

MAX_NAME = 63  # PostgreSQL silently truncates longer identifiers (NAMEDATALEN - 1)
READER_ROLE = "phloem_reader"
GRANT_RETRY = 5.0  # seconds between looks for tables clients may read that do not exist yet
# a build's backend polls its client this often, so a killed builder's statement (and lock) ends within it
CLIENT_CHECK_MS = 1000
log = logging.getLogger("phloem.warehouse")
_said: set[str] = set()  # problems logged by this process (a CLI command opens a project more than once)
_PARAMS = re.compile(r"""('(?:[^']|'')*'|"(?:[^"]|"")*")|\?|%""")


def paramstyle(sql: str) -> str:
    """Our statements use `?` (DuckDB's style); psycopg wants `%s`, and a literal `%` doubled."""
    def swap(m: re.Match) -> str:
        if m.group(1):
            return m.group(1).replace("%", "%%")
        return "%s" if m.group(0) == "?" else "%%"

    return _PARAMS.sub(swap, sql)


def describe_dsn(dsn: str) -> str:
    """user@host:port/dbname of a DSN, for messages (never the password)."""
    try:
        parts = conninfo_to_dict(dsn)
    except psycopg.Error as e:
        raise WarehouseError(f"invalid PostgreSQL dsn: {_first_line(e)}") from None
    user = f"{parts['user']}@" if parts.get("user") else ""
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"{user}{parts.get('host') or 'localhost'}{port}/{parts.get('dbname') or parts.get('user') or ''}"


def scram_verifier(password: str, iterations: int = 4096) -> str:
    """PostgreSQL's stored SCRAM-SHA-256 form of a password, so the password itself never travels in a statement."""
    salt = os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    stored = hashlib.sha256(hmac.new(salted, b"Client Key", "sha256").digest()).digest()
    server = hmac.new(salted, b"Server Key", "sha256").digest()
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored)}:{b64(server)}"


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _message(e: psycopg.Error) -> str:
    hint = getattr(getattr(e, "diag", None), "message_hint", None)
    return _first_line(e) + (f" (hint: {hint})" if hint else "")


class RejectedQuery(WarehouseError, QueryError):
    """PostgreSQL refused a client query for what it asks (a type mismatch, a permission): the client's to fix,
    as DuckDB's refusals are."""

    def __init__(self, message: str, suggestion: str = ""):
        QueryError.__init__(self, message, suggestion)


# rows libpq hands over at a time (chunked rows need libpq 17 and psycopg 3.2; before, one by one: slower, bounded)
CHUNKED = {"size": BATCH_ROWS} if psycopg.pq.version() >= 170000 and "size" in inspect.signature(
    psycopg.Cursor.stream).parameters else {}


def _joined(description, batches: list[pa.Table]) -> pa.Table:
    """One table of the batches; a column whose type each batch inferred from its own values (numeric without a
    scale, arrays) and that differs between them is built again from all its values, as from the whole answer."""
    if len(batches) == 1:
        return batches[0]
    first = batches[0].schema
    if all(b.schema.equals(first) for b in batches[1:]):
        return pa.concat_tables(batches)
    columns = []
    for i, column in enumerate(description):
        parts = [b.column(i) for b in batches]
        if all(p.type.equals(parts[0].type) for p in parts):
            columns.append(pa.chunked_array([c for p in parts for c in p.chunks], parts[0].type))
        elif all(pa.types.is_decimal(p.type) for p in parts):
            columns.append(_widened(parts))
        else:
            columns.append(pa.chunked_array([column_array(column, [v for p in parts for v in p.to_pylist()])]))
    return pa.Table.from_arrays(columns, names=first.names)


def _widened(parts: list[pa.ChunkedArray]) -> pa.ChunkedArray:
    """Decimal batches of different scales at the largest one, in 38 digits when every value fits (the type the
    whole answer infers), else 76; exact, and no Python object per value."""
    scale = max(p.type.scale for p in parts)
    try:
        return pa.chunked_array([p.cast(pa.decimal128(38, scale)) for p in parts])
    except pa.ArrowInvalid:
        return pa.chunked_array([p.cast(pa.decimal256(76, scale)) for p in parts])


def _alive(conn: psycopg.Connection) -> bool:
    """Whether an idle connection is still open at the server's end. The server says nothing unasked to an idle
    session (no LISTEN here) except when it ends it: a FATAL message and the socket's end make it readable."""
    if conn.closed:
        return False
    try:
        readable, _, _ = select.select([conn.fileno()], [], [], 0)
    except (OSError, ValueError, psycopg.Error):
        return False
    return not readable


@contextmanager
def _server_errors(timeout: float | None = None, client: bool = False, cancel: Cancel | None = None) -> Iterator[None]:
    """The server's refusal as a WarehouseError with its first line (and hint), never a driver traceback."""
    try:
        yield
    except psycopg.errors.QueryCanceled:  # 57014: our statement_timeout, or a cancel request
        if cancel is not None and cancel.cancelled:
            raise QueryCancelled("the client went away; its query was cancelled") from None
        after = f" than {timeout:g} s" if timeout else ""
        raise QueryTimeout(f"the query ran longer{after} and was cancelled") from None
    except (psycopg.ProgrammingError, psycopg.DataError) as e:
        if not client:
            raise WarehouseError(f"PostgreSQL: {_message(e)}") from None
        fix = "client queries may read only the model's views and metrics" if isinstance(
            e, psycopg.errors.InsufficientPrivilege) else "check the types of filter values against their dimensions"
        raise RejectedQuery(f"PostgreSQL: {_message(e)}", fix) from None
    except psycopg.Error as e:
        raise WarehouseError(f"PostgreSQL: {_message(e)}") from None


@dataclass(frozen=True)
class ClientReads:
    """What client queries may read: whole schemas (the materialization schema) and the single tables views name."""

    schemas: tuple[str, ...]
    tables: tuple[tuple[str, str], ...] = ()  # (schema, table)


class PostgresEngine:
    dialect = "postgres"

    def __init__(self, dsn: str, readers: int = 4, connect_timeout: int = 10, client_reads: ClientReads | None = None):
        self.dsn, self.connect_timeout = dsn, connect_timeout
        self.where = describe_dsn(dsn)
        self._lock = threading.RLock()  # the writer: one statement or transaction at a time
        self._writer: psycopg.Connection | None = None
        self._idle: dict[bool, list[psycopg.Connection]] = {False: [], True: []}  # by "runs client queries"
        self._idle_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(readers)
        self._closed = False
        self.client_reads = client_reads
        reads = client_reads or ClientReads(())
        self._wanted = {(s,) for s in reads.schemas} | set(reads.tables)  # schemas and tables to grant
        self.reader_problem: str | None = None  # why client queries cannot run as the reader role
        self._role: bool | None = None  # the reader role is usable; None: not tried yet
        self._granted: set[tuple[str, ...]] = set()  # schemas and tables the role may read so far
        self._prepare_lock = threading.Lock()
        self._reader_dsn: str | None = None  # the role logging in itself, when it can
        self._next_grant = 0.0  # monotonic time of the next look for what is not granted yet
        self._build_key: int | None = None  # the advisory lock the writer's session holds, if any

    def allow(self, reads: ClientReads) -> None:
        """Let client queries read these too (another tenant's schemas in this database); granted at the next one."""
        with self._prepare_lock:
            self._wanted = self._wanted | {(s,) for s in reads.schemas} | set(reads.tables)
            self._next_grant = 0.0

    # ------------------------------------------------------------ connections

    def _connect(self, dsn: str) -> psycopg.Connection:
        conn = psycopg.connect(dsn, autocommit=True, connect_timeout=self.connect_timeout)
        conn.execute("SET TIME ZONE 'UTC'")  # timestamps are naive and mean UTC (MODEL.md §8)
        for name in TEXT_LOADED:
            conn.adapters.register_loader(name, TextLoader)
        conn._phloem_timeout = None  # the statement_timeout set on it (None: the server's default)
        return conn

    def _open(self) -> psycopg.Connection:
        try:
            conn = self._connect(self.dsn)
        except psycopg.Error as e:
            raise WarehouseError(f"cannot connect to PostgreSQL at {self.where}: {_first_line(e)} — is the server "
                                 "running and warehouse.dsn in phloem.yml right?") from None
        if self.client_reads is not None and self._role is None:  # at the first connection: startup or build
            self._prepare_readers(conn)
        return conn

    def _open_client(self) -> psycopg.Connection:
        """A connection for client queries: logged in as the reader role (or SET ROLE to it), read-only."""
        if self._role is None:
            self._open().close()  # sets up the role
        conn = None
        if self._reader_dsn:
            try:
                conn = self._connect(self._reader_dsn)
            except psycopg.OperationalError:  # e.g. another process with another configured password reset it
                self._login_again()
        try:
            if conn is None and self._reader_dsn:
                conn = self._connect(self._reader_dsn)
            elif conn is None:
                conn = self._open()
                if self._role:
                    conn.execute(pgsql.SQL("SET ROLE {}").format(pgsql.Identifier(READER_ROLE)))
            conn.execute("SET default_transaction_read_only = on")
        except psycopg.Error as e:
            raise WarehouseError(f"PostgreSQL: {_message(e)}") from None
        return conn

    # ------------------------------------------------------------ the reader role

    def _ensure_readers(self) -> None:
        """Grant what the role may read once it exists (the materialization schema appears at the first build);
        a table a view names that does not exist yet is looked for again every few seconds, not every query."""
        if self._role and self._granted != self._wanted and time.monotonic() >= self._next_grant:
            self._next_grant = time.monotonic() + GRANT_RETRY
            with self._reader(client=False) as conn:
                self._prepare_readers(conn)

    def _prepare_readers(self, conn: psycopg.Connection) -> None:
        """Create the reader role if needed, grant it SELECT on what clients may read, and find how it logs in.
        Never raises: what cannot be done is `reader_problem`, logged once."""
        with self._prepare_lock:
            problem = None
            for attempt in range(3):  # other processes create the role and grant at the same moment
                try:
                    with conn.transaction():
                        self._granted = self._grant(conn)
                    break
                except psycopg.errors.InsufficientPrivilege as e:
                    problem = _message(e)
                    break
                except psycopg.Error as e:
                    problem = _message(e)
                    if attempt == 2 or conn.closed or isinstance(e, psycopg.OperationalError):
                        break
                    problem = None
            user, superuser = conn.info.parameter_status("session_authorization") or "?", \
                conn.info.parameter_status("is_superuser") == "on"
            if problem is not None:
                self._role = False
                self._warn(f"client queries on PostgreSQL run as `{user}`{' (a superuser)' if superuser else ''}, "
                           f"read-only, because the role `{READER_ROLE}` cannot be set up: {problem} — run Phloem "
                           f"as a user with CREATEROLE once, or create the role yourself (docs/postgres.md, "
                           f"\"The warehouse\")")
                return
            first = self._role is None
            self._role = True
            if first:
                self._reader_dsn, why = self._reader_login(conn)
                if why:
                    self._cannot_log_in(user, why)

    def _warn(self, problem: str) -> None:
        self.reader_problem = problem
        if problem not in _said:
            _said.add(problem)
            log.warning("%s", problem)

    def _grant(self, conn: psycopg.Connection) -> set[tuple[str, ...]]:
        """The role, its membership for the configured user, and SELECT on what exists of `client_reads`."""
        role = pgsql.Identifier(READER_ROLE)
        if not conn.execute("select 1 from pg_roles where rolname = %s", [READER_ROLE]).fetchone():
            conn.execute(pgsql.SQL("CREATE ROLE {} NOLOGIN").format(role))
        if not conn.execute("select pg_has_role(current_user, %s, 'MEMBER')", [READER_ROLE]).fetchone()[0]:
            conn.execute(pgsql.SQL("GRANT {} TO CURRENT_USER").format(role))
        granted: set[tuple[str, ...]] = set()
        for (schema,) in sorted(w for w in self._wanted if len(w) == 1):
            if not conn.execute("select 1 from pg_namespace where nspname = %s", [schema]).fetchone():
                continue  # not built yet: granted at the first client query after the build
            name = pgsql.Identifier(schema)
            conn.execute(pgsql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(name, role))
            conn.execute(pgsql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(name, role))
            # tables later builds create (as this user) are readable too
            conn.execute(pgsql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA {} GRANT SELECT ON TABLES TO {}")
                         .format(name, role))
            granted.add((schema,))
        for schema, table in sorted(w for w in self._wanted if len(w) == 2):
            if conn.execute("select to_regclass(%s)", [f'"{schema}"."{table}"']).fetchone()[0] is None:
                continue
            conn.execute(pgsql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(pgsql.Identifier(schema), role))
            conn.execute(pgsql.SQL("GRANT SELECT ON {} TO {}").format(pgsql.Identifier(schema, table), role))
            granted.add((schema, table))
        # a GRANT by a user without the right is only a WARNING: check that it took
        for (schema, *_) in granted:
            if not conn.execute("select has_schema_privilege(%s, %s, 'USAGE')", [READER_ROLE, schema]).fetchone()[0]:
                raise psycopg.errors.InsufficientPrivilege(f"cannot grant USAGE on schema {schema}")
        return granted

    def _reader_login(self, conn: psycopg.Connection) -> tuple[str | None, str | None]:
        """(DSN of the role logging in itself, None) or (None, why not). A session that logged in as the role cannot
        step back to the configured user (SET ROLE can be undone by a query calling set_config('role', …)).

        Its password is derived from the configured password, so every Phloem process with that DSN agrees on it
        without storing one; it is (re)set only when logging in with it fails."""
        parts = conninfo_to_dict(self.dsn)
        secret = parts.get("password") or os.environ.get("PGPASSWORD")
        if not secret:
            return None, "the configured DSN has no password to derive the role's from"
        password = hmac.new(secret.encode(), f"{READER_ROLE}:{parts.get('user', '')}".encode(), "sha256").hexdigest()
        dsn = make_conninfo(self.dsn, user=READER_ROLE, password=password)
        for attempt in range(2):
            try:
                psycopg.connect(dsn, connect_timeout=self.connect_timeout).close()
                return dsn, None
            except psycopg.Error as e:
                why = _first_line(e)
            if attempt == 0:
                try:
                    conn.execute(pgsql.SQL("ALTER ROLE {} LOGIN PASSWORD {}").format(
                        pgsql.Identifier(READER_ROLE), pgsql.Literal(scram_verifier(password))))
                except psycopg.Error as e:
                    return None, _message(e)
        return None, why.replace(password, "…")

    def _login_again(self) -> None:
        """Another process with a different configured password reset the role's: set it back (or SET ROLE)."""
        conn = self._open()
        try:
            user = conn.info.parameter_status("session_authorization") or "?"
            with self._prepare_lock:
                self._reader_dsn, why = self._reader_login(conn)
        finally:
            conn.close()
        if why:
            self._cannot_log_in(user, why)

    def _cannot_log_in(self, user: str, why: str) -> None:
        self._warn(f"client queries on PostgreSQL run as `{user}` switched to the role `{READER_ROLE}` (SET ROLE), "
                   f"read-only, because that role cannot log in itself: {why} — allow it in pg_hba.conf like "
                   f"`{user}` (docs/postgres.md, \"The warehouse\")")

    def _writer_conn(self) -> psycopg.Connection:
        writer = self._writer
        # replaced only between transactions: inside one, a fresh connection would run the rest outside it
        between = writer is not None and writer.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        if writer is None or writer.closed or (between and not _alive(writer)):
            if self._build_key is not None:  # a new session would build without the lock: stop instead
                raise WarehouseError("PostgreSQL: the connection holding the build lock was lost; the build stopped "
                                     "and published nothing")
            if writer is not None:
                writer.close()
            self._writer = self._open()
        return self._writer

    @staticmethod
    def lock_key(key: str) -> int:
        """The advisory lock number of a build key (a schema): the same in every process, a signed 64-bit int."""
        return int.from_bytes(hashlib.sha256(f"phloem build {key}".encode()).digest()[:8], "big", signed=True)

    @contextmanager
    def build_lock(self, key: str, wait: bool = True) -> Iterator[bool]:
        """Hold the right to build `key` (a schema) across every process on this database: True when held, False
        when another session holds it and not `wait`.

        A session advisory lock taken by the writer, the connection every build statement runs on: PostgreSQL
        releases it when that session ends, and a killed builder's session ends within CLIENT_CHECK_MS (its
        backend notices the dead client), so the lock never outlives a statement that could still publish."""
        number = self.lock_key(key)
        with self._lock:
            with _server_errors():
                conn = self._writer_conn()
                conn.execute(f"SET client_connection_check_interval = {CLIENT_CHECK_MS}")
                if wait:
                    held = bool(conn.execute("select pg_advisory_lock(%s) is null", [number]).fetchone())
                else:
                    held = conn.execute("select pg_try_advisory_lock(%s)", [number]).fetchone()[0]
            if not held:
                yield False
                return
            self._build_key = number
            try:
                yield True
            finally:
                self._build_key = None
                if not conn.closed:
                    with _server_errors():
                        conn.execute("select pg_advisory_unlock(%s)", [number])

    @contextmanager
    def _reader(self, client: bool = False) -> Iterator[psycopg.Connection]:
        with self._slots:
            conn = self._pooled(client)
            if conn is None:
                conn = self._open_client() if client else self._open()
            try:
                yield conn
            finally:
                idle = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
                if idle and not self._closed:
                    with self._idle_lock:
                        self._idle[client].append(conn)
                else:
                    conn.close()

    def _pooled(self, client: bool) -> psycopg.Connection | None:
        """An idle connection still open at the server's end, if any. The others are closed: after PostgreSQL
        restarted (or an admin ended its backends) each would fail one query, long after the server is back."""
        while True:
            with self._idle_lock:
                idle = self._idle[client]
                conn = idle.pop() if idle else None
            if conn is None or _alive(conn):
                return conn
            conn.close()

    def _limit(self, conn: psycopg.Connection, timeout: float | None, always: bool = False) -> None:
        """The server cancels the connection's statements after `timeout` s (set when it changes, or `always`:
        a client query may have changed it with set_config)."""
        if always or conn._phloem_timeout != timeout:
            conn.execute(f"SET statement_timeout = {max(1, round(timeout * 1000)) if timeout else 0}")
            conn._phloem_timeout = timeout

    def _run(self, cur: psycopg.Cursor, query: str | exp.Expression, params: list | None) -> None:
        text = self.sql(query)
        cur.execute(paramstyle(text) if params is not None else text, params)

    # ------------------------------------------------------------ the engine interface

    def sql(self, query: str | exp.Expression) -> str:
        return query if isinstance(query, str) else query.sql(dialect=self.dialect, identify=True)

    def execute(self, query: str | exp.Expression, params: list | None = None) -> None:
        with self._lock, self._writer_conn().cursor() as cur, _server_errors():
            self._run(cur, query, params)

    def arrow(self, query: str | exp.Expression, params: list | None = None, timeout: float | None = None,
              limits: Limits | None = None, cancel: Cancel | None = None) -> pa.Table:
        """Run a client query on a pooled reader connection (safe across threads) and return Arrow; PostgreSQL
        cancels it after `timeout` s (QueryTimeout) or when `cancel` is called (QueryCancelled); past `limits`,
        ResultTooLarge (the answer is read and counted in batches: at most the limit and one batch are fetched)."""
        client = self.client_reads is not None
        if client:
            self._ensure_readers()
        if cancel is not None:
            cancel.check()  # the client already went away: not started
        with self._reader(client) as conn, conn.cursor() as cur, _server_errors(timeout, client=True, cancel=cancel):
            self._limit(conn, timeout, always=client)
            unbind = cancel.bind(conn.cancel) if cancel is not None else None
            try:
                table = self._streamed(cur, query, params, limits or NO_LIMITS)
            except BaseException:
                if client and self._changed(conn):
                    conn.close()
                raise
            finally:
                if unbind:
                    unbind()
            if client and self._changed(conn):
                conn.close()
                raise WarehouseError("PostgreSQL: the query changed its connection's role or read-only setting; "
                                     "its answer was withheld")
            return table

    @staticmethod
    def _changed(conn: psycopg.Connection) -> bool:
        """The server reports these when a statement changes them (set_config): such a connection is never reused."""
        return not conn.closed and (conn.info.parameter_status("is_superuser") != "off"
                                    or conn.info.parameter_status("default_transaction_read_only") != "on")

    def _streamed(self, cur: psycopg.Cursor, query: str | exp.Expression,
                  params: list | None, limits: Limits) -> pa.Table:
        """The answer read in batches of BATCH_ROWS (libpq's chunked rows: the whole result is never in the
        client), each made Arrow and counted against `limits` as it comes; past them the query is cancelled."""
        text = self.sql(query)
        rows = cur.stream(paramstyle(text) if params is not None else text, params, **CHUNKED)
        batches, batch, nrows, nbytes = [], [], 0, 0
        try:
            for row in rows:
                batch.append(row)
                if len(batch) == BATCH_ROWS:
                    table = to_arrow(cur.description, batch)
                    nrows, nbytes, batch = nrows + table.num_rows, nbytes + table.nbytes, []
                    limits.check(nrows, nbytes)
                    batches.append(table)
        finally:
            rows.close()  # abandoned early: psycopg cancels the statement and drains the connection
        if not batch and not batches:  # psycopg keeps no description of an empty stream: the columns, unrun
            columns = f"select * from ({text.rstrip().rstrip(';')}\n) as _q limit 0"
            cur.execute(columns if params is None else paramstyle(columns), params)
            return to_arrow(cur.description, [])
        if batch:
            table = to_arrow(cur.description, batch)
            limits.check(nrows + table.num_rows, nbytes + table.nbytes)
            batches.append(table)
        return _joined(cur.description, batches)

    def rows(self, query: str | exp.Expression, params: list | None = None) -> list[tuple]:
        with self._reader() as conn, conn.cursor() as cur, _server_errors():
            self._limit(conn, None)  # Phloem's own reads: no client time limit left on a pooled connection
            self._run(cur, query, params)
            return cur.fetchall() if cur.description is not None else []

    def columns(self, query: str | exp.Expression) -> list[tuple[str, str]]:
        """Names and types a query returns, without running it over the data."""
        with self._reader() as conn, conn.cursor() as cur, _server_errors():
            self._limit(conn, None)
            self._run(cur, f"select * from ({self.sql(query)}) as _q limit 0", None)
            return [(c.name, c.type_display) for c in cur.description]

    def table_exists(self, schema: str, name: str) -> bool:
        return bool(self.rows("select 1 from information_schema.tables where table_schema = ? and table_name = ?",
                              [schema, name]))

    def tables(self, schema: str, prefix: str = "") -> list[str]:
        # left() rather than LIKE: the `_` of our prefixes would be wildcards
        return [r[0] for r in self.rows(
            "select table_name from information_schema.tables where table_schema = ?"
            " and left(table_name, length(?)) = ? order by 1", [schema, prefix, prefix])]

    @contextmanager
    def transaction(self):
        """All-or-nothing: readers see every change of the block or none of it."""
        with self._lock, _server_errors(), self._writer_conn().transaction():
            yield self

    def create_table_as(self, table: exp.Table, query: exp.Expression) -> None:
        name = table.sql(dialect=self.dialect)
        too_long = [p.name for p in table.parts if len(p.name.encode()) > MAX_NAME]
        if too_long:
            raise BuildError(f"building {name} failed: `{too_long[0]}` is longer than PostgreSQL's {MAX_NAME}-byte "
                             "limit for names — shorten the dataset or activity name")
        try:
            with self.transaction():  # no CREATE OR REPLACE TABLE in PostgreSQL
                self.execute(f"drop table if exists {self.sql(table)}")
                self.execute(exp.Create(this=table, kind="TABLE", expression=query))
        except WarehouseError as e:
            raise BuildError(f"building {name} failed: {str(e).removeprefix('PostgreSQL: ')}") from None

    def copy(self, statement: str, chunks: Iterable[bytes | memoryview]) -> int:
        """COPY … FROM STDIN on the writer, fed with `chunks`; returns the rows copied. Atomic inside transaction()."""
        with self._lock, self._writer_conn().cursor() as cur, _server_errors():
            with cur.copy(statement) as copy:
                for chunk in chunks:
                    copy.write(chunk)
            return cur.rowcount

    def close(self) -> None:
        self._closed = True
        with self._lock, self._idle_lock:
            for conn in [*self._idle[False], *self._idle[True], *([self._writer] if self._writer else [])]:
                conn.close()
            self._idle, self._writer = {False: [], True: []}, None
