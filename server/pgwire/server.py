"""The PostgreSQL wire protocol server: asyncio for the sockets, a thread pool for the queries.

One `Connection` per client runs the protocol state machine (startup, TLS, SCRAM, simple and extended
query, cursors, cancel); the SQL itself is the frontend's (`server.pgwire.frontend.Frontend`): `describe`,
`execute` and `cancel` over a per-connection `Session`. Queries and large result encodings run in worker
threads, so the event loop keeps accepting connections and CancelRequests while DuckDB works.

Safety: a malformed or hostile packet ends that one connection (ProtocolViolation -> FATAL 08P01), never the
server; messages are capped (64 MiB), startup packets at 10,000 bytes, the startup and authentication phase
at `startup_timeout` seconds, and connections at `max_connections` (53300 beyond); the frontend enforces the
query time limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import ipaddress
import logging
import os
import secrets
import ssl
import struct
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property

from semantic import events
from semantic.access.context import SecurityContext
from server import observability
from server.loop import new_event_loop
from server.memo import ByIdentity
from server.observability.metrics import PG_CONNECTIONS
from server.pgwire import messages as m
from server.pgwire.auth import AuthFailed, ScramExchange, Verifier, load_users
from server.pgwire.messages import Body, InvalidEncoding, ProtocolViolation
from server.pgwire.portals import (
    CloseCursor,
    Deallocate,
    Declare,
    Fetch,
    LocalResult,
    Portal,
    Statement,
    fetch_rows,
    is_empty,
    parse_cursor_command,
)
from server.pgwire.pump import Pump
from server.pgwire.types import WireValueError, decode_param, encode_rows, encode_values, type_size

log = logging.getLogger("phloem.pgwire")

_READY = {status: m.ready_for_query(status) for status in "ITE"}
_I16 = struct.Struct("!h")
_I32 = struct.Struct("!i")
SERVER_VERSION = "15.6 (Phloem)"
STARTUP_LIMIT = 10_000  # bytes, as PostgreSQL
AUTH_LIMIT = 65_535  # bytes of a SASL message: an unauthenticated client cannot make the server hold more
SMALL_RESULT = 4096  # values encoded on the event loop (~1 ms at most); larger results in worker threads
SENT = 64  # encodings of recently sent small results and row descriptions kept per connection
BATCH_ROWS = 32_768  # rows per encoded chunk when streaming a large result
# parameters PostgreSQL reports with ParameterStatus (GUC_REPORT), and their values here
REPORTED = {
    "server_version": SERVER_VERSION, "server_encoding": "UTF8", "client_encoding": "UTF8",
    "DateStyle": "ISO, MDY", "TimeZone": "UTC", "integer_datetimes": "on", "standard_conforming_strings": "on",
    "IntervalStyle": "postgres", "application_name": "", "is_superuser": "off",
    "default_transaction_read_only": "off", "in_hot_standby": "off",
}
NO_USERS_HINT = ("set PHLOEM_PG_USERS=user:password, or PHLOEM_PG_TRUST=loopback to allow passwordless local "
                 "connections")
_REPORTED_LOWER = {k.lower(): k for k in REPORTED}
# what this server speaks, whatever a client asks for (pgjdbc refuses anything but UTF8 and these two 'on')
FIXED = {"client_encoding": "UTF8", "server_encoding": "UTF8", "integer_datetimes": "on",
         "standard_conforming_strings": "on"}


@dataclass
class PgConfig:
    """How the server listens and whom it lets in. `from_env` reads the PHLOEM_PG_* variables."""

    host: str = "127.0.0.1"
    port: int = 15432  # 0: any free port (see PgServer.port)
    users: dict[str, Verifier] | None = None  # SCRAM verifiers by user name; None: none configured
    identities: dict[str, SecurityContext] = field(default_factory=dict)  # who a user is (roles…); absent: no roles
    trust: str = "none"  # who may connect without a password: none | loopback | all
    ssl_cert: str | None = None  # PEM certificate chain and key: TLS on SSLRequest, else 'N'
    ssl_key: str | None = None
    require_tls: bool = False  # refuse connections that did not negotiate TLS
    max_connections: int = 100
    max_message_size: int = 64 * 2**20
    workers: int = field(default_factory=lambda: min(32, (os.cpu_count() or 2) + 4))
    startup_timeout: float = 30.0  # seconds from accept to ReadyForQuery

    @classmethod
    def from_env(cls, environ=os.environ, *, demo: bool = False, **overrides) -> PgConfig:
        """PHLOEM_PG_USERS / PHLOEM_PG_USERS_FILE (users), PHLOEM_PG_TRUST (none|loopback|all; default none,
        except loopback for the built-in demo (`demo`) when no users are set), PHLOEM_PG_SSL_CERT /
        PHLOEM_PG_SSL_KEY, PHLOEM_PG_SSL_REQUIRE=1, PHLOEM_PG_MAX_CONNECTIONS."""
        loaded = load_users(environ)
        users, identities = loaded if loaded is not None else (None, {})
        trust = environ.get("PHLOEM_PG_TRUST") or ("loopback" if demo and users is None else "none")
        if trust not in ("none", "loopback", "all"):
            raise ValueError(f"PHLOEM_PG_TRUST must be none, loopback or all, not {trust!r}")
        values = dict(users=users, identities=identities, trust=trust, ssl_cert=environ.get("PHLOEM_PG_SSL_CERT") or None,
                      ssl_key=environ.get("PHLOEM_PG_SSL_KEY") or None,
                      require_tls=environ.get("PHLOEM_PG_SSL_REQUIRE", "") in ("1", "true", "on", "yes"))
        if environ.get("PHLOEM_PG_MAX_CONNECTIONS"):
            values["max_connections"] = int(environ["PHLOEM_PG_MAX_CONNECTIONS"])
        values.update(overrides)
        return cls(**values)

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.ssl_cert:
            return None
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.ssl_cert, self.ssl_key)
        return ctx


class PgError(Exception):
    """An error answered with ErrorResponse (`fatal`: then the connection closes)."""

    def __init__(self, sqlstate: str, message: str, hint: str = "", detail: str = "", fatal: bool = False):
        super().__init__(message)
        self.sqlstate, self.message, self.hint, self.detail, self.fatal = sqlstate, message, hint, detail, fatal


class PgServer:
    def __init__(self, runtime, config: PgConfig | None = None, frontend=None):
        if frontend is None:
            from server.pgwire.frontend import Frontend

            frontend = Frontend(runtime)
        self.runtime = runtime
        self.frontend = frontend
        observability.install()  # the query metrics and the audit log, when no HTTP app did it
        self.config = config or PgConfig.from_env()
        self.pool = ThreadPoolExecutor(self.config.workers, thread_name_prefix="pgwire")
        self.ssl = self.config.ssl_context()
        self.connections: dict[int, Connection] = {}  # by process id (BackendKeyData)
        self.sockets = 0
        self.secret = secrets.token_bytes(32)  # salts made-up SCRAM exchanges for unknown users
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.config.host, self.config.port,
                                                  limit=2**16)

    @property
    def port(self) -> int:
        return self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening, cancel running statements, close every connection, free the pool."""
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections.values()):
            if conn.running:
                with contextlib.suppress(Exception):
                    self.frontend.cancel(conn.session)
            conn.close()
        pending = set(self._tasks)
        if pending:
            _, pending = await asyncio.wait(pending, timeout=2)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=2)
        self.pool.shutdown(wait=False, cancel_futures=True)

    async def serve_forever(self) -> None:
        await self.start()
        async with self._server:
            await self._server.serve_forever()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        self.sockets += 1
        PG_CONNECTIONS.inc()
        try:
            if self.sockets > 2 * self.config.max_connections + 16:  # far past the limit: not even a reply
                return
            await Connection(self, reader, writer).run()
        except asyncio.CancelledError:
            pass  # the server is stopping; ending quietly keeps Python 3.11's stream callback from logging it
        finally:
            self.sockets -= 1
            PG_CONNECTIONS.dec()
            self._tasks.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    def new_pid(self) -> int:
        while True:
            pid = secrets.randbelow(2**31 - 2) + 1
            if pid not in self.connections:
                return pid

    async def run(self, fn, *args):
        """Run blocking work (a query, an encoding) in the worker pool."""
        # in the caller's context: the statement's query id, door and security context reach the library's events
        call = functools.partial(contextvars.copy_context().run, fn, *args)
        return await asyncio.get_running_loop().run_in_executor(self.pool, call)

    async def cancel(self, pid: int, secret: int) -> None:
        conn = self.connections.get(pid)
        if conn is None or not secrets.compare_digest(struct.pack("!i", conn.secret), struct.pack("!i", secret)):
            return
        await conn.cancel()


class Connection:
    def __init__(self, server: PgServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.server = server
        self.frontend = server.frontend
        self.reader = reader
        self.writer = writer
        self.out = bytearray()
        self.pid = 0
        self.secret = 0
        self.session = None
        self.security_context: SecurityContext | None = None  # who authenticated (also on the session)
        self.tls = False
        self.statements: dict[str, Statement] = {}
        self.portals: dict[str, Portal] = {}
        self.ignore_till_sync = False
        self.reported: dict[str, str] = {}
        self.running = False  # a query is in a worker thread (cancel reaches it)
        self.streaming = False  # a large result is being sent (cancel stops it)
        self.canceled = False  # a CancelRequest arrived for the running statement
        self.sent = ByIdentity(SENT)  # bytes of the small answers and row descriptions just sent, by the answer
        self.pump: Pump | None = None  # reads the socket once ready for queries
        self._answer_now = getattr(self.frontend, "answer_now", None)  # a frontend may answer only by execute
        self.cycle_done = True  # the next message starts a statement: a new query id (see `receive`)
        peer = writer.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else "local"

    # ------------------------------------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        try:
            async with asyncio.timeout(self.server.config.startup_timeout):
                if not await self.startup():
                    return
            await self.serve()
        except ProtocolViolation as e:
            await self.fatal(PgError("08P01", str(e), fatal=True))
        except PgError as e:
            await self.fatal(e)
        except TimeoutError:
            await self.fatal(PgError("08P01", "canceling authentication due to timeout", fatal=True))
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, EOFError):
            pass
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("pgwire connection failed")
            await self.fatal(PgError("XX000", "internal error", fatal=True))
        finally:
            if self.server.connections.get(self.pid) is self:
                del self.server.connections[self.pid]
            self.close_session()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()

    def close_session(self) -> None:
        close = getattr(self.session, "close", None)
        if close is not None:
            with contextlib.suppress(Exception):
                close()
        self.portals.clear()
        self.statements.clear()

    async def fatal(self, e: PgError) -> None:
        with contextlib.suppress(Exception):
            self.writer.write(bytes(self.out) + m.error_response("FATAL", e.sqlstate, e.message, e.detail, e.hint))
            self.out.clear()
            await asyncio.wait_for(self.drain(), 5)

    def flush_now(self):
        """Write what is pending; a coroutine to await only when the client is slow to read it."""
        if self.out:
            self.writer.write(bytes(self.out))
            self.out.clear()
        return self.drain() if self.writer.transport.get_write_buffer_size() else None  # else the kernel took it

    async def flush(self) -> None:
        waiting = self.flush_now()
        if waiting is not None:
            await waiting

    # ----------------------------------------------------------------------------------------------- startup

    async def read_startup(self) -> Body:
        (length,) = struct.unpack("!i", await self.reader.readexactly(4))
        if not 8 <= length <= STARTUP_LIMIT:
            raise ProtocolViolation("invalid length of startup packet")
        return Body(await self.reader.readexactly(length - 4))

    async def startup(self) -> bool:
        """SSL/GSS negotiation, CancelRequest or StartupMessage, authentication; True when ready for queries."""
        while True:
            body = await self.read_startup()
            code = body.int32()
            if code == m.SSL_REQUEST:
                body.end()
                if self.tls:
                    raise ProtocolViolation("SSL negotiation already done")
                if self.server.ssl is None:
                    self.writer.write(b"N")
                    await self.writer.drain()
                    continue
                if getattr(self.reader, "_buffer", b""):  # bytes sent before the handshake could be injected
                    raise ProtocolViolation("received unencrypted data after SSL request")
                self.writer.write(b"S")
                await self.writer.drain()
                await self.writer.start_tls(self.server.ssl)
                self.tls = True
                continue
            if code == m.GSSENC_REQUEST:
                body.end()
                self.writer.write(b"N")
                await self.writer.drain()
                continue
            if code == m.CANCEL_REQUEST:
                pid, secret = body.int32(), body.int32()
                body.end()
                await self.server.cancel(pid, secret)
                return False
            if code >> 16 != 3:
                raise PgError("0A000", f"unsupported frontend protocol {code >> 16}.{code & 0xFFFF}: server "
                                       "supports 3.0", fatal=True)
            params = self.startup_parameters(body)
            unsupported = [k for k in params if k.startswith("_pq_.")]
            if code & 0xFFFF or unsupported:
                self.out += m.negotiate_protocol_version(m.PROTOCOL_3_0, unsupported)
            return await self.authenticate({k: v for k, v in params.items() if not k.startswith("_pq_.")})

    @staticmethod
    def startup_parameters(body: Body) -> dict[str, str]:
        params: dict[str, str] = {}
        while True:
            try:
                key = body.cstring()
                if key == "":
                    break
                params[key] = body.cstring()
            except InvalidEncoding:
                raise ProtocolViolation("invalid byte sequence in startup packet") from None
        body.end()
        return params

    def trusted(self) -> bool:
        trust = self.server.config.trust
        if trust == "all":
            return True
        if trust != "loopback":
            return False
        try:
            address = ipaddress.ip_address(self.peer.split("%")[0])
        except ValueError:
            return self.peer == "local"
        mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1 on a dual-stack socket
        return (mapped or address).is_loopback

    async def authenticate(self, params: dict[str, str]) -> bool:
        config = self.server.config
        user = params.pop("user", "")
        if not user:
            raise PgError("28000", "no PostgreSQL user name specified in startup packet", fatal=True)
        database = params.pop("database", "") or user
        if params.get("replication", "false").lower() not in ("false", "off", "no", "0"):
            raise PgError("0A000", "replication connections are not supported", fatal=True)
        if config.require_tls and not self.tls:
            raise PgError("28000", f'connection for user "{user}" requires TLS (sslmode=require)', fatal=True)
        if len(self.server.connections) >= config.max_connections:
            raise PgError("53300", "sorry, too many clients already", fatal=True)
        if self.trusted():  # trust says who they are: a configured user's identity, else the unrestricted demo's
            known = config.users is not None and user in config.users
            self.security_context = self.identity(user) if known else SecurityContext.anonymous()
        elif config.users is not None:
            await self.scram(user, config.users.get(user))
            self.security_context = self.identity(user)
        else:
            raise PgError("28000", f'no password is configured for user "{user}" from host "{self.peer}"',
                          hint=NO_USERS_HINT, fatal=True)
        self.out += m.AUTH_OK
        options = self.options(params)
        try:
            self.session = await self.server.run(self.frontend.session, user, database, options,
                                                 self.security_context)
        except Exception as e:
            err = error_of(e, False)
            err.fatal = True
            raise err from None
        self.pid, self.secret = self.server.new_pid(), secrets.randbits(32) - 2**31
        self.server.connections[self.pid] = self
        asked = {_REPORTED_LOWER[k.lower()]: v for k, v in options.items() if k.lower() in _REPORTED_LOWER}
        current = self.session_parameters()
        for name, default in REPORTED.items():
            value = FIXED.get(name) or current.get(name, asked.get(name, default))
            self.reported[name] = value
            self.out += m.parameter_status(name, value)
        self.out += m.backend_key_data(self.pid, self.secret)
        self.out += m.ready_for_query(self.status())
        await self.flush()
        return True

    def identity(self, user: str) -> SecurityContext:
        return self.server.config.identities.get(user) or SecurityContext(user)

    @staticmethod
    def options(params: dict[str, str]) -> dict[str, str]:
        """Startup parameters, with `options` ('-c search_path=x --DateStyle=ISO') spread into settings."""
        options = {k: v for k, v in params.items() if k != "options"}
        words, word, escaped = [], [], False
        for ch in params.get("options", ""):
            if escaped:
                word.append(ch)
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch.isspace():
                if word:
                    words.append("".join(word))
                word = []
            else:
                word.append(ch)
        if word:
            words.append("".join(word))
        i = 0
        while i < len(words):
            item = words[i]
            if item == "-c" and i + 1 < len(words):
                item, i = words[i + 1], i + 1
            elif item.startswith("--"):
                item = item[2:]
            elif item.startswith("-c"):
                item = item[2:]
            key, sep, value = item.partition("=")
            if sep:
                options[key.replace("-", "_")] = value
            i += 1
        return options

    async def scram(self, user: str, verifier: Verifier | None) -> None:
        exchange = ScramExchange(user, verifier, self.server.secret)
        self.out += m.authentication(m.AUTH_SASL, m.cstr("SCRAM-SHA-256") + b"\0")
        await self.flush()
        try:
            body = await self.read_password_message()
            mechanism = body.cstring()
            length = body.int32()
            data = body.raw(length) if length >= 0 else b""
            body.end()
            if mechanism != "SCRAM-SHA-256":
                raise PgError("28000", f"SASL authentication mechanism {mechanism} is not supported", fatal=True)
            self.out += m.authentication(m.AUTH_SASL_CONTINUE, exchange.first(data))
            await self.flush()
            body = await self.read_password_message()
            final = exchange.final(body.rest())
        except AuthFailed as e:
            raise PgError(e.sqlstate, str(e), fatal=True) from None
        except InvalidEncoding:
            raise ProtocolViolation("malformed SASL message") from None
        self.out += m.authentication(m.AUTH_SASL_FINAL, final)

    async def read_password_message(self) -> Body:
        kind, body = await self.read_message(AUTH_LIMIT)
        if kind != b"p":
            raise ProtocolViolation(f"expected SASL response, got message type {kind!r}")
        return body

    # --------------------------------------------------------------------------------------------- messages

    async def read_message(self, limit: int | None = None) -> tuple[bytes, Body]:
        header = await self.reader.readexactly(5)
        kind = header[:1]
        (length,) = struct.unpack("!i", header[1:])
        if length < 4 or length > (limit or self.server.config.max_message_size):
            raise ProtocolViolation(f"invalid message length {length}")
        return kind, Body(await self.reader.readexactly(length - 4))

    async def serve(self) -> None:
        """Hand the socket to a Pump, which answers messages as they arrive (see pump.py), until it ends."""
        reader = self.reader
        buffered = bytes(getattr(reader, "_buffer", b""))  # StreamReader keeps what it read ahead privately
        getattr(reader, "_buffer", bytearray()).clear()
        self.pump = Pump(self, self.server.config.max_message_size)
        self.pump.take_over(self.writer.transport, buffered, reader.at_eof())
        await self.pump.closed

    def receive(self, kind: bytes, body: Body):
        """Answer one message as far as it can be answered now: None when done, False for Terminate, else a
        coroutine that finishes it (a statement in a worker thread, a large result, a slow reader), which the
        pump runs before the next message. Replies are flushed at ReadyForQuery, at Flush, and when the buffer
        fills. Why not a coroutine per message: most messages need no waiting, and each coroutine layer costs."""
        if kind == b"X":
            return False
        if kind == b"Q" or (self.cycle_done and kind != b"S"):  # a simple query, or an extended cycle's start
            self.begin_statement()
            self.cycle_done = kind == b"Q"
        if self.ignore_till_sync and kind != b"S":
            return None
        handler = self.handlers.get(kind)
        if handler is None:
            if kind in (b"d", b"c", b"f"):  # copy messages outside COPY: ignored, as PostgreSQL does
                return None
            if kind == b"F":  # a cycle of its own: ErrorResponse, then ReadyForQuery
                return self.report(PgError("0A000", "function call messages are not supported"))
            raise ProtocolViolation(f"invalid frontend message type {kind[0]}")
        try:
            waiting = handler(body)
        except Exception as e:
            return self.failed(e, kind)
        if waiting is not None:
            return self.guarded(waiting, kind)
        if len(self.out) > 1 << 16:
            return self.flush()
        return None

    def failed(self, e: Exception, kind: bytes):
        """A statement's error reported (a coroutine when it must be flushed: the simple protocol)."""
        if isinstance(e, ProtocolViolation | ConnectionError | asyncio.IncompleteReadError):
            raise e
        if isinstance(e, PgError):
            if e.fatal:
                raise e
        else:
            e = error_of(e, self.canceled)
        if kind != b"Q":
            self.report_extended(e)
            return None
        return self.report(e)

    async def guarded(self, waiting, kind: bytes) -> None:
        try:
            await waiting
        except Exception as e:
            reported = self.failed(e, kind)
            if reported is not None:
                await reported
        if len(self.out) > 1 << 16:
            await self.flush()

    @cached_property
    def handlers(self) -> dict:
        return {b"Q": self.on_query, b"P": self.on_parse, b"B": self.on_bind, b"D": self.on_describe,
                b"E": self.on_execute, b"C": self.on_close, b"H": self.on_flush, b"S": self.on_sync}

    async def drain(self) -> None:
        if self.pump is not None:
            await self.pump.drain()
        else:
            await self.writer.drain()

    def report_extended(self, e: PgError) -> None:
        """An error in the extended protocol: said now, the rest ignored until Sync."""
        self.report_error(e)
        self.ignore_till_sync = True

    async def report(self, e: PgError) -> None:
        """An error in the simple protocol: said, and the cycle ends (ReadyForQuery)."""
        self.report_error(e)
        self.out += _READY[self.status()]
        await self.flush()

    def report_error(self, e: PgError) -> None:
        self.out += m.error_response("ERROR", e.sqlstate, e.message, e.detail, e.hint)
        self.fail_transaction()

    # ---------------------------------------------------------------------------------------- session state

    def status(self) -> str:
        session = self.session
        value = getattr(session, "status", None)
        if value == "I" or value == "T" or value == "E":  # the frontend's Session: one attribute read per message
            return value
        for name in ("transaction_status", "status", "tx_status"):
            value = getattr(session, name, None)
            if isinstance(value, str) and value in ("I", "T", "E"):
                return value
        return "I"

    def fail_transaction(self) -> None:
        """An error inside an explicit transaction block leaves it failed ('E') until ROLLBACK."""
        session = self.session
        if self.status() == "T":
            for name in ("transaction_status", "status", "tx_status"):
                if isinstance(getattr(session, name, None), str):
                    with contextlib.suppress(Exception):
                        setattr(session, name, "E")
                    return

    def session_parameters(self) -> dict[str, str]:
        """The session's values of the reported settings (Session.parameter_status(), else its settings)."""
        report = getattr(self.session, "parameter_status", None)
        if callable(report):
            return {k: str(v) for k, v in report().items() if v is not None}
        settings = getattr(self.session, "settings", None)
        if not isinstance(settings, dict):
            return {}
        lower = {str(k).lower(): v for k, v in settings.items() if v is not None}
        return {name: str(lower[name.lower()]) for name in REPORTED if name.lower() in lower}

    def report_parameters(self) -> None:
        """ParameterStatus for every reported setting a statement changed (SET application_name ...)."""
        current = self.session_parameters()
        for name, sent in self.reported.items():
            value = current.get(name, sent)
            if name not in FIXED and value != sent:
                self.reported[name] = value
                self.out += m.parameter_status(name, value)

    def transaction_may_have_ended(self, before: str, keep: Portal | None = None) -> None:
        if before != "I" and self.status() == "I":
            for name, portal in list(self.portals.items()):
                if not portal.holdable and portal is not keep:
                    del self.portals[name]

    def after_commands(self, results, keep: Portal | None = None) -> None:
        """DISCARD ALL reaches this layer's prepared statements and portals too."""
        for result in results:
            tag = result.tag
            if tag == "DISCARD ALL":
                self.statements = {k: v for k, v in self.statements.items() if k == ""}
                self.portals = {k: v for k, v in self.portals.items() if v is keep}

    async def cancel(self) -> None:
        """A CancelRequest for this connection: interrupts the running statement (no-op when idle)."""
        if self.streaming:
            self.canceled = True
        if not self.running:
            return
        self.canceled = True
        await asyncio.get_running_loop().run_in_executor(None, self.frontend.cancel, self.session)

    def begin_statement(self) -> None:
        """A new query id for the statement starting, with this door and user, for logs and the library's events
        (set in the pump's context: the worker threads and tasks of the statement copy it)."""
        events.query_id.set(events.new_query_id())
        events.door.set("pg")
        events.current_context.set(self.security_context or events.ANONYMOUS)

    def answer_now(self, sql: str, params, oids):
        """The frontend's answer without a worker thread when it has one at hand (a repeat), else None."""
        answer_now = self._answer_now
        return answer_now(self.session, sql, params, oids) if answer_now is not None else None

    async def work(self, fn, *args):
        """Run a statement's blocking work in the pool, reachable by CancelRequest."""
        self.running = True
        try:
            return await self.server.run(fn, *args)
        finally:
            self.running = False

    # ----------------------------------------------------------------------------------------- simple query

    def on_query(self, body: Body):
        sql = body.cstring()
        body.end()
        self.canceled = False
        self.statements.pop("", None)
        self.portals.pop("", None)
        results = self.answer_now(sql, None, ())  # a repeat (never a cursor command: those have no plans)
        if results is None:
            return self.query_later(sql)
        for result in results:
            streaming = self.result_now(result)
            if streaming is not None:
                return self.ready_after(streaming)
        self.out += _READY[self.status()]
        return self.flush_now()

    async def ready_after(self, streaming) -> None:
        await streaming
        self.out += _READY[self.status()]
        await self.flush()

    async def query_later(self, sql: str) -> None:
        before = self.status()
        try:
            if is_empty(sql):
                self.out += m.EMPTY_QUERY
            else:
                command = parse_cursor_command(sql)
                if command is not None:
                    results = [await self.cursor_command(command, [], sql)]
                else:
                    try:
                        results = self.answer_now(sql, None, ())
                        if results is None:
                            results = await self.work(self.frontend.execute, self.session, sql, None)
                    except Exception as e:  # the statements before the failing one still answer
                        for result in getattr(e, "results", None) or []:
                            await self.send_result(result)
                        raise
                    self.after_commands(results)
                if not results:
                    self.out += m.EMPTY_QUERY
                for result in results:
                    formats = None
                    if isinstance(command, Fetch) and result.columns is not None:
                        cursor = self.portals.get(command.name)
                        formats = [1 if cursor is not None and cursor.formats == [1] else 0] * len(result.columns)
                    await self.send_result(result, formats)
        finally:
            self.report_parameters()
            self.transaction_may_have_ended(before)
        self.out += m.ready_for_query(self.status())
        await self.flush()

    def result_now(self, result, formats: list[int] | None = None):
        """RowDescription, DataRows and CommandComplete of a whole result (simple protocol), written now; a
        coroutine to await when its rows are many (they are streamed)."""
        notices = getattr(result, "notices", None)
        if notices:
            for notice in notices:
                self.out += notice_message(notice)
        columns = result.columns
        if columns is None:
            self.out += m.command_complete(result.tag)
            return None
        formats = formats or [0] * len(columns)
        self.out += self.row_description(columns, formats)
        count = _row_count(result)
        tail = _complete(result.tag, count)
        if count and not self.rows_now(result, columns, formats, 0, count):
            return self.stream_rows(result, columns, formats, 0, count, tail)
        self.out += tail
        return None

    async def send_result(self, result, formats: list[int] | None = None) -> None:
        streaming = self.result_now(result, formats)
        if streaming is not None:
            await streaming

    def row_description(self, columns, formats) -> bytes:
        key = ("T", *formats)
        encoded = self.sent.get(columns, key)
        if encoded is None:
            encoded = self.sent.put(columns, key, m.row_description(described(columns), formats))
        return encoded

    def rows_now(self, result, columns, formats, start: int, stop: int) -> bool:
        """DataRows of rows start..stop of a result, if few: encoded here (and kept, see server/memo.py); False for
        many (then `stream_rows`)."""
        rows = getattr(result, "rows", None)
        if rows is not None:
            self.out += encode_values(rows[start:stop], [c.type_oid for c in columns], formats)
            return True
        if (stop - start) * len(columns) > SMALL_RESULT:
            return False
        table = result.table
        key = ("D", id(columns), start, stop, *formats)  # the columns say the types: held with the bytes
        kept = self.sent.get(table, key)
        if kept is None or kept[0] is not columns:
            oids = [c.type_oid for c in columns]
            kept = self.sent.put(table, key, (columns, bytes(encode_rows(table.slice(start, stop - start), oids,
                                                                         formats))))
        self.out += kept[1]
        return True

    async def stream_rows(self, result, columns, formats, start: int, stop: int, tail: bytes = b"") -> None:
        """Many rows: encoded batch by batch in worker threads while the previous batch is being sent; then
        `tail` (CommandComplete)."""
        oids = [c.type_oid for c in columns]
        table = result.table
        await self.flush()
        loop = asyncio.get_running_loop()
        pool = self.server.pool

        def encode(offset: int):
            return loop.run_in_executor(pool, encode_rows, table.slice(offset, min(BATCH_ROWS, stop - offset)),
                                        oids, formats)

        pending = encode(start)
        offset = start
        self.streaming = True
        try:
            while pending is not None:
                chunk = await pending
                offset += BATCH_ROWS
                pending = encode(offset) if offset < stop else None  # the next chunk is encoded while this one is sent
                if self.canceled:
                    if pending is not None:
                        await pending
                    raise PgError("57014", "canceling statement due to user request")
                self.writer.write(chunk)
                await self.drain()
        finally:
            self.streaming = False
        self.out += tail

    # ------------------------------------------------------------------------------------- extended protocol

    def on_parse(self, body: Body) -> None:
        name, sql = body.cstring(), body.cstring()
        count = body.int16()
        if count < 0:
            raise ProtocolViolation("invalid parameter count")
        oids = [body.uint32() for _ in range(count)]
        body.end()
        if name and name in self.statements:
            raise PgError("42P05", f'prepared statement "{name}" already exists')
        self.statements[name] = Statement(sql, oids, parse_cursor_command(sql))
        self.out += m.PARSE_COMPLETE

    def on_bind(self, body: Body) -> None:
        portal_name = body.skip_empty() if body.data[:1] == b"\0" else body.cstring()
        statement_name = body.cstring()
        formats, values, result_formats = bind_lists(body)
        n_formats, n_params = len(formats), len(values)
        if (formats or result_formats) and not {*formats, *result_formats} <= {0, 1}:
            raise PgError("08P01", "unsupported format code")
        statement = self.statements.get(statement_name)
        if statement is None:
            raise PgError("26000", f'prepared statement "{statement_name}" does not exist')
        if portal_name and portal_name in self.portals:
            raise PgError("42P03", f'cursor "{portal_name}" already exists')
        if n_formats not in (0, 1, n_params):
            raise PgError("08P01", f"bind message has {n_formats} parameter formats but {n_params} parameters")
        if statement.described is not None and len(statement.described[0]) != n_params:
            raise PgError("08P01", f'bind message supplies {n_params} parameters, but prepared statement '
                                   f'"{statement_name}" requires {len(statement.described[0])}')
        raw = None
        if n_params:
            oids = statement.parameter_oids(n_params)
            fmts = formats * n_params if n_formats == 1 else (formats or [0] * n_params)
            if 1 in fmts and 0 in oids and any(f == 1 and oid == 0 for oid, f in zip(oids, fmts, strict=True)):
                raw = (values, fmts)  # binary of a type the statement decides: read once it is described
            else:
                values = [decode_param(v, oid, f) for v, oid, f in zip(values, oids, fmts, strict=True)]
        self.portals[portal_name] = Portal(statement, values, result_formats, raw=raw)
        self.out += m.BIND_COMPLETE

    def on_describe(self, body: Body):
        kind = body.byte()
        name = body.skip_empty() if body.data[1:2] == b"\0" else body.cstring()
        body.end()
        if kind == ord("S"):
            statement = self.statements.get(name)
            if statement is None:
                raise PgError("26000", f'prepared statement "{name}" does not exist')
            if statement.described is None or isinstance(statement.command, Fetch):
                return self.describe_later(statement)
            self.describe_now(*statement.described)
        elif kind == ord("P"):
            portal = self.portal(name)
            if not self.portal_ready(portal):
                return self.describe_portal_later(portal)
            self.describe_portal_now(portal)
        else:
            raise ProtocolViolation(f"invalid DESCRIBE message subtype {kind}")
        return None

    def describe_now(self, oids: list[int], columns: list | None) -> None:
        self.out += m.parameter_description(oids)
        self.out += m.NO_DATA if columns is None else self.row_description(columns, [0] * len(columns))

    async def describe_later(self, statement: Statement) -> None:
        self.describe_now(*await self.describe_statement(statement))

    def describe_portal_now(self, portal: Portal) -> None:
        if portal.columns is None:
            self.out += m.NO_DATA
        else:
            self.out += self.row_description(portal.columns, portal.column_formats(len(portal.columns)))

    async def describe_portal_later(self, portal: Portal) -> None:
        await self.run_portal(portal)
        self.describe_portal_now(portal)

    async def describe_statement(self, statement: Statement) -> tuple[list[int], list | None]:
        if statement.described is not None:
            return statement.described
        command = statement.command
        if statement.empty or isinstance(command, CloseCursor | Deallocate):
            statement.described = (list(statement.param_oids), None)
        elif isinstance(command, Declare):
            oids, _ = await self.work(self.frontend.describe, self.session, command.query, statement.param_oids)
            statement.described = (list(oids), None)
        elif isinstance(command, Fetch):
            cursor = self.portals.get(command.name)
            if cursor is None:  # perhaps the frontend's (see delegate)
                oids, columns = await self.work(self.frontend.describe, self.session, statement.sql,
                                                statement.param_oids)
                return list(oids), columns
            return list(statement.param_oids), None if command.move else cursor.columns  # not kept: follows the cursor
        else:
            oids, columns = await self.work(self.frontend.describe, self.session, statement.sql,
                                            statement.param_oids)
            statement.described = (list(oids), columns)
        return statement.described

    def portal(self, name: str) -> Portal:
        portal = self.portals.get(name)
        if portal is None:
            raise PgError("34000", f'portal "{name}" does not exist')
        return portal

    def portal_ready(self, portal: Portal) -> bool:
        """True when the portal has its answer: run before, empty, or answered now from the frontend's caches
        (a repeat: no thread, no SET to report). Else `run_portal` must run it."""
        if portal.result is not None:
            return True
        if portal.raw is not None:
            return False
        statement = portal.statement
        if statement.empty:
            portal.result = LocalResult("")
            return True
        if statement.command is not None:
            return False
        self.canceled = False
        results = self.answer_now(statement.sql, portal.params, statement.parameter_oids(len(portal.params)))
        if results is None:
            return False
        self.keep_result(portal, results)
        return True

    async def run_portal(self, portal: Portal) -> None:
        """Run the portal's statement once (at its first Describe or Execute), keeping the whole answer."""
        if portal.raw is not None:  # binary parameters without a type: the statement's types read them
            values, fmts = portal.raw
            oids, _ = await self.describe_statement(portal.statement)
            if len(oids) != len(values):
                raise PgError("08P01", f"bind message supplies {len(values)} parameters, but the statement "
                                       f"requires {len(oids)}")
            portal.params = [decode_param(v, oid, f) for v, oid, f in zip(values, oids, fmts, strict=True)]
            portal.raw = None
        if self.portal_ready(portal):
            return
        statement = portal.statement
        self.canceled = False
        before = self.status()
        try:
            if statement.command is not None:
                results = [await self.cursor_command(statement.command, portal.params, statement.sql)]
            else:
                results = await self.work(self.frontend.execute, self.session, statement.sql, portal.params,
                                          statement.parameter_oids(len(portal.params)))
                self.after_commands(results, keep=portal)
        finally:
            self.report_parameters()
            self.transaction_may_have_ended(before, keep=portal)
        self.keep_result(portal, results)

    def keep_result(self, portal: Portal, results: list) -> None:
        if len(results) > 1:
            raise PgError("42601", "cannot insert multiple commands into a prepared statement")
        result = results[0] if results else LocalResult("")
        statement = portal.statement
        portal.result = result
        portal.columns = result.columns
        if result.columns is not None and statement.described and statement.described[1] is not None:
            if len(statement.described[1]) == len(result.columns):  # the client decodes what Describe said
                portal.columns = statement.described[1]
        if portal.columns is not None:
            portal.column_formats(len(portal.columns))  # a wrong count of result formats fails here

    def on_execute(self, body: Body):
        name = body.skip_empty() if body.data[:1] == b"\0" else body.cstring()
        max_rows = body.int32()
        body.end()
        portal = self.portal(name)
        if portal.statement.empty:
            self.out += m.EMPTY_QUERY
            return None
        if not self.portal_ready(portal):
            return self.execute_later(portal, max_rows)
        return self.execute_now(portal, max_rows)

    async def execute_later(self, portal: Portal, max_rows: int) -> None:
        await self.run_portal(portal)
        streaming = self.execute_now(portal, max_rows)
        if streaming is not None:
            await streaming

    def execute_now(self, portal: Portal, max_rows: int):
        """The portal's next rows and CommandComplete or PortalSuspended; a coroutine when the rows are many."""
        result = portal.result
        notices = getattr(result, "notices", None)
        if notices:
            for notice in notices:
                self.out += notice_message(notice)
        if portal.columns is None:
            self.out += m.command_complete(result.tag)
            portal.done = True
            return None
        start, stop, _ = portal.fetch("forward", max_rows if max_rows > 0 else None)
        count = stop - start
        tail = m.PORTAL_SUSPENDED if 0 < max_rows == count else _complete(result.tag, count)
        if count > 0:
            formats = portal.column_formats(len(portal.columns))
            if not self.rows_now(result, portal.columns, formats, start, stop):
                return self.stream_rows(result, portal.columns, formats, start, stop, tail)
        self.out += tail
        return None

    def on_close(self, body: Body) -> None:
        kind, name = body.byte(), body.cstring()
        body.end()
        if kind == ord("S"):
            statement = self.statements.pop(name, None)
            if statement is not None:  # closing a statement closes the portals made from it
                for pname, portal in list(self.portals.items()):
                    if portal.statement is statement:
                        del self.portals[pname]
        elif kind == ord("P"):
            self.portals.pop(name, None)
        else:
            raise ProtocolViolation(f"invalid CLOSE message subtype {kind}")
        self.out += m.CLOSE_COMPLETE

    def on_flush(self, body: Body):
        body.end()
        return self.flush_now()

    def on_sync(self, body: Body):
        body.end()
        self.cycle_done = True
        self.ignore_till_sync = False
        status = self.status()
        if status == "I" and self.portals:  # the implicit transaction ended: its portals go
            for name, portal in list(self.portals.items()):
                if not portal.holdable:
                    del self.portals[name]
        self.out += _READY[status]
        return self.flush_now()

    # --------------------------------------------------------------------------------------------- cursors

    async def delegate(self, sql: str, params: list):
        """A cursor statement about a cursor this layer does not hold: the frontend's own (declared inside a
        multi-statement query string) or none, which the frontend reports."""
        results = await self.work(self.frontend.execute, self.session, sql, params or None)
        return results[0] if results else LocalResult("")

    async def cursor_command(self, command, params: list, sql: str):
        """DECLARE / FETCH / MOVE / CLOSE over this connection's portals, DEALLOCATE over its statements."""
        if self.status() == "E":
            raise PgError("25P02", "current transaction is aborted, commands ignored until end of transaction block")
        if isinstance(command, Declare):
            if not command.hold and self.status() == "I":
                raise PgError("25P01", "DECLARE CURSOR can only be used in transaction blocks")
            if command.name in self.portals:
                raise PgError("42P03", f'cursor "{command.name}" already exists')
            results = await self.work(self.frontend.execute, self.session, command.query, params or None)
            if len(results) != 1 or results[0].columns is None:
                raise PgError("42601", "DECLARE CURSOR must be followed by a single SELECT")
            result = results[0]
            cursor = Portal(Statement(command.query, []), [], [1] if command.binary else [], result=result,
                            columns=result.columns, holdable=command.hold, is_cursor=True)
            self.portals[command.name] = cursor
            return LocalResult("DECLARE CURSOR")
        if isinstance(command, Fetch):
            cursor = self.portals.get(command.name)
            if cursor is None:
                return await self.delegate(sql, params)
            if cursor.result is None:
                await self.run_portal(cursor)
            start, stop, step = cursor.fetch(command.direction, command.count)
            count = len(range(start, stop, step))
            if command.move or cursor.columns is None:
                return LocalResult(f"MOVE {count}" if command.move else f"FETCH {count}")
            return LocalResult(f"FETCH {count}", cursor.columns, fetch_rows(cursor.result.table, start, stop, step))
        if isinstance(command, Deallocate):
            if command.name is None:
                self.statements = {k: v for k, v in self.statements.items() if k == ""}
                return LocalResult("DEALLOCATE ALL")
            if self.statements.pop(command.name, None) is None:
                raise PgError("26000", f'prepared statement "{command.name}" does not exist')
            return LocalResult("DEALLOCATE")
        if command.name is None:
            for name, portal in list(self.portals.items()):
                if portal.is_cursor:
                    del self.portals[name]
            return await self.delegate(sql, params)  # the frontend's cursors go too
        if self.portals.pop(command.name, None) is None:
            return await self.delegate(sql, params)
        return LocalResult("CLOSE CURSOR")


# ------------------------------------------------------------------------------------------------- helpers

def described(columns) -> list:
    """Columns with PostgreSQL's type size where the frontend left the default."""
    out = []
    for c in columns:
        if c.type_size == -1 and type_size(c.type_oid) != -1:
            c = _SizedColumn(c.name, c.type_oid, type_size(c.type_oid), c.type_modifier)
        out.append(c)
    return out


@dataclass(frozen=True)
class _SizedColumn:
    name: str
    type_oid: int
    type_size: int
    type_modifier: int


@functools.lru_cache(maxsize=64)
def _int16s(n: int) -> struct.Struct:
    return struct.Struct(f"!{n}h")


def bind_lists(body: Body) -> tuple[list[int], list[bytes | None], list[int]]:
    """Bind's parameter formats, parameter values and result formats, read with struct (Bind is in every
    extended-protocol round trip)."""
    data, pos = body.data, body.pos
    try:
        (n,) = _I16.unpack_from(data, pos)
        formats = list(_int16s(n).unpack_from(data, pos + 2)) if n > 0 else []
        pos += 2 + 2 * max(n, 0)
        (count,) = _I16.unpack_from(data, pos)
        pos += 2
        if n < 0 or count < 0:
            raise ProtocolViolation("invalid count in bind message")
        values: list[bytes | None] = []
        for _ in range(count):
            (length,) = _I32.unpack_from(data, pos)
            pos += 4
            if length == -1:
                values.append(None)
                continue
            if length < 0 or pos + length > len(data):
                raise ProtocolViolation("insufficient data left in message")
            values.append(data[pos:pos + length])
            pos += length
        (n,) = _I16.unpack_from(data, pos)
        if n < 0:
            raise ProtocolViolation("invalid count in bind message")
        results = list(_int16s(n).unpack_from(data, pos + 2)) if n else []
        pos += 2 + 2 * n
    except struct.error:
        raise ProtocolViolation("insufficient data left in message") from None
    body.pos = pos
    body.end()
    return formats, values, results


@functools.lru_cache(maxsize=1024)
def _complete(tag: str, count: int) -> bytes:
    """CommandComplete for `count` rows of a statement tagged `tag` (kept: the same few are sent again and again)."""
    return m.command_complete(row_tag(tag, count))


def _row_count(result) -> int:
    rows = getattr(result, "rows", None)
    if rows is not None:
        return len(rows)
    table = result.table
    return table.num_rows if table is not None else 0


def row_tag(tag: str, count: int) -> str:
    """The CommandComplete tag for `count` rows of a row-returning statement ('SELECT 3', 'FETCH 3', 'SHOW')."""
    words = tag.split()
    if len(words) >= 2 and words[-1].isdigit():
        return " ".join([*words[:-1], str(count)])
    return tag


_WARNINGS = {"there is already a transaction in progress": "25001", "there is no transaction in progress": "25P01"}


def notice_message(notice) -> bytes:
    """A Result's notice: (severity, sqlstate, text) or a text, sent as a WARNING as PostgreSQL does."""
    if isinstance(notice, tuple):
        severity, sqlstate, text = notice
        return m.notice_response(sqlstate, text, severity)
    text = str(notice)
    return m.notice_response(_WARNINGS.get(text, "01000"), text, "WARNING")


def error_of(e: BaseException, canceled: bool) -> PgError:
    """Any error a statement raised, as the ErrorResponse fields PostgreSQL would send (no stack traces)."""
    import duckdb

    from semantic.errors import PhloemError, QueryError, QueryTimeout, WarehouseError
    from server.errors import error_id, warehouse_refusal

    if isinstance(e, PgError):
        return e
    sqlstate = getattr(e, "sqlstate", None)
    sqlstate = sqlstate if isinstance(sqlstate, str) and len(sqlstate) == 5 else None
    if isinstance(e, WireValueError | InvalidEncoding):
        return PgError(e.sqlstate, str(e))
    if isinstance(e, QueryTimeout) or type(e).__name__ in ("InterruptException", "QueryCanceled"):
        if canceled:
            return PgError("57014", "canceling statement due to user request")
        return PgError("57014", "canceling statement due to statement timeout",
                       hint="narrow the time range or filters, or ask for a coarser grain")
    if isinstance(e, QueryError):
        return PgError(sqlstate or "42000", e.message, hint=e.suggestion)
    if isinstance(e, WarehouseError | duckdb.Error) and not isinstance(e, duckdb.ProgrammingError | duckdb.DataError):
        ref = error_id()  # the warehouse's own text stays in the log, under an id the client can quote
        log.error("warehouse error [%s]: %s", ref, e)
        return PgError(sqlstate or "58000", f"the warehouse failed (error id {ref})",
                       hint="retry, or check that the warehouse is up; the server log has the details")
    if isinstance(e, duckdb.ProgrammingError | duckdb.DataError):  # refused what the client asked: in our words
        return PgError("22P02" if isinstance(e, duckdb.DataError) else "42804", warehouse_refusal(e),
                       hint="check the types of values against the columns")
    if isinstance(e, PhloemError):
        return PgError(sqlstate or "42000", str(e).splitlines()[0] if str(e) else type(e).__name__)
    if sqlstate is not None and isinstance(getattr(e, "message", None), str):
        return PgError(sqlstate, e.message)
    log.exception("unexpected error in a pgwire statement", exc_info=e)
    return PgError("XX000", "internal error", hint="the server log has the details")


# ----------------------------------------------------------------------------------------- in a thread

class ServerThread:
    """A PgServer on its own event loop in a background thread (tests, benchmarks, embedding)."""

    def __init__(self, server: PgServer):
        self.server = server
        self.loop = new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="pgwire", daemon=True)

    @property
    def port(self) -> int:
        return self.server.port

    def __enter__(self) -> ServerThread:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(30)
        return self

    def __exit__(self, *exc) -> None:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
