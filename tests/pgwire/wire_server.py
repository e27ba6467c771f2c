"""Fixtures of the wire-protocol tests: the demo shop served by a live PgServer on loopback, and a raw client.

The test modules import the fixtures from here (`from wire_server import ...`); the project and the servers are
made once per process however many modules import them, and stopped at exit.
"""

from __future__ import annotations

import atexit
import datetime as dt
import socket
import struct
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
from psycopg.conninfo import make_conninfo

from semantic.demo import create
from server.pgwire import PgConfig, PgServer, ServerThread
from server.runtime import Runtime

PASSWORD = "s3cret pässword"  # non-ASCII on purpose: SASLprep

# a real, deliberately slow view (20 billion rows): a query long enough to cancel
SLOW = """
views:
  - name: slow_numbers
    sql: "select hash(i) % 1000003 as bucket from range(20000000000) t(i)"
    dimensions: [bucket]
    measures: [{name: distinct_buckets, agg: count_distinct, expr: bucket}]
metrics:
  - {name: slow_distinct_buckets, measure: slow_numbers.distinct_buckets}
"""

_lock = threading.RLock()
_made: dict[str, object] = {}


def _once(key: str, make):
    with _lock:
        if key not in _made:
            _made[key] = make()
        return _made[key]


def _project_dir(tmp_path_factory) -> Path:
    def make() -> Path:
        root = tmp_path_factory.mktemp("wire") / "shop"
        create(root, scale=2000)
        (root / "models" / "slow.yml").write_text(SLOW)
        return root

    return _once("project", make)


def _runtime(tmp_path_factory) -> Runtime:
    def make() -> Runtime:
        runtime = Runtime(_project_dir(tmp_path_factory), timeout=20.0)
        runtime.project.build()
        atexit.register(runtime.close)
        return runtime

    return _once("runtime", make)


@dataclass
class Live:
    """A running server: where it listens and how to reach it."""

    port: int
    server: PgServer
    user: str = "phloem"
    database: str = "shop"

    def dsn(self, **extra) -> str:
        params = {"host": "127.0.0.1", "port": self.port, "user": self.user, "dbname": self.database,
                  "connect_timeout": 10, **extra}
        return make_conninfo(**params)


def _start(key: str, runtime: Runtime, config: PgConfig) -> Live:
    def make() -> Live:
        handle = ServerThread(PgServer(runtime, config)).__enter__()
        atexit.register(handle.__exit__, None, None, None)
        return Live(handle.port, handle.server)

    return _once(key, make)


@pytest.fixture(scope="session")
def wire_runtime(tmp_path_factory) -> Runtime:
    return _runtime(tmp_path_factory)


@pytest.fixture(scope="session")
def pg(tmp_path_factory) -> Live:
    """Trust on loopback, no TLS: the demo's default."""
    return _start("trust", _runtime(tmp_path_factory), PgConfig(port=0, users=None, trust="loopback"))


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate and key for 127.0.0.1 (openssl CLI)."""

    def make():
        folder = tmp_path_factory.mktemp("tls")
        cert, key = folder / "cert.pem", folder / "key.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                        "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1"],
                       check=True, capture_output=True)
        return cert, key

    return _once("tls", make)


@pytest.fixture(scope="session")
def pg_secure(tmp_path_factory, tls_files) -> Live:
    """SCRAM-SHA-256 for everyone (users alice and bob), TLS offered."""
    from server.pgwire.auth import Verifier, parse_users

    users = parse_users(f"alice:{PASSWORD}")
    users["bob"] = Verifier.parse(str(Verifier.from_password("hunter2")))  # configured as a stored verifier
    cert, key = tls_files
    config = PgConfig(port=0, users=users, trust="none", ssl_cert=str(cert), ssl_key=str(key))
    live = _start("secure", _runtime(tmp_path_factory), config)
    return Live(live.port, live.server, user="alice")


# ------------------------------------------------------------------------------------------ a raw client

class Raw:
    """A client that speaks protocol bytes directly, for what real drivers never send."""

    def __init__(self, port: int, timeout: float = 10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buffer = b""

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Raw:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, kind: bytes, payload: bytes = b"") -> None:
        self.sock.sendall(kind + struct.pack("!i", len(payload) + 4) + payload)

    def send_startup(self, user: str = "phloem", database: str = "shop", version: int = 196608, **params) -> None:
        body = struct.pack("!i", version)
        for k, v in {"user": user, "database": database, **params}.items():
            body += k.encode() + b"\0" + v.encode() + b"\0"
        body += b"\0"
        self.send_raw(struct.pack("!i", len(body) + 4) + body)

    def startup(self, user: str = "phloem", database: str = "shop", version: int = 196608, **params) -> list:
        self.send_startup(user, database, version, **params)
        return self.until_ready()

    def _fill(self, n: int) -> bool:
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                return False
            self.buffer += chunk
        return True

    def read_byte(self) -> bytes:
        if not self._fill(1):
            return b""
        b, self.buffer = self.buffer[:1], self.buffer[1:]
        return b

    def read(self) -> tuple[bytes, bytes] | None:
        """The next message (type, payload), or None when the server closed the connection."""
        if not self._fill(5):
            return None
        kind = self.buffer[:1]
        (length,) = struct.unpack("!i", self.buffer[1:5])
        if not self._fill(1 + length):
            return None
        payload = self.buffer[5:1 + length]
        self.buffer = self.buffer[1 + length:]
        return kind, payload

    def until(self, *kinds: bytes) -> list[tuple[bytes, bytes]]:
        out = []
        while True:
            msg = self.read()
            if msg is None:
                return out
            out.append(msg)
            if msg[0] in kinds:
                return out

    def until_ready(self) -> list[tuple[bytes, bytes]]:
        return self.until(b"Z")

    def closed(self) -> bool:
        """True once the server has closed the connection (reads everything left first)."""
        try:
            while self.read() is not None:
                pass
        except (ConnectionError, TimeoutError):
            return True
        return True

    # -------------------------------------------------------------------------------- message builders

    @staticmethod
    def cstr(s: str) -> bytes:
        return s.encode() + b"\0"

    def query(self, sql: str) -> list[tuple[bytes, bytes]]:
        self.send(b"Q", self.cstr(sql))
        return self.until_ready()

    def parse(self, sql: str, name: str = "", oids: tuple[int, ...] = ()) -> None:
        self.send(b"P", self.cstr(name) + self.cstr(sql) + struct.pack("!h", len(oids))
                  + b"".join(struct.pack("!I", o) for o in oids))

    def bind(self, portal: str = "", statement: str = "", params: tuple = (), formats: tuple[int, ...] = (),
             result_formats: tuple[int, ...] = ()) -> None:
        body = self.cstr(portal) + self.cstr(statement) + struct.pack("!h", len(formats))
        body += b"".join(struct.pack("!h", f) for f in formats) + struct.pack("!h", len(params))
        for p in params:
            body += struct.pack("!i", -1) if p is None else struct.pack("!i", len(p)) + p
        body += struct.pack("!h", len(result_formats)) + b"".join(struct.pack("!h", f) for f in result_formats)
        self.send(b"B", body)

    def describe(self, kind: bytes, name: str = "") -> None:
        self.send(b"D", kind + self.cstr(name))

    def execute(self, portal: str = "", max_rows: int = 0) -> None:
        self.send(b"E", self.cstr(portal) + struct.pack("!i", max_rows))

    def close_(self, kind: bytes, name: str = "") -> None:
        self.send(b"C", kind + self.cstr(name))

    def sync(self) -> list[tuple[bytes, bytes]]:
        self.send(b"S")
        return self.until_ready()


def fields(payload: bytes) -> dict[str, str]:
    """The fields of an ErrorResponse or NoticeResponse, by code letter."""
    out = {}
    for part in payload.rstrip(b"\0").split(b"\0"):
        if part:
            out[chr(part[0])] = part[1:].decode()
    return out


def data_rows(messages) -> list[list[bytes | None]]:
    rows = []
    for kind, payload in messages:
        if kind != b"D":
            continue
        (count,) = struct.unpack_from("!h", payload)
        pos, row = 2, []
        for _ in range(count):
            (n,) = struct.unpack_from("!i", payload, pos)
            pos += 4
            row.append(None if n < 0 else payload[pos:pos + n])
            pos += max(n, 0)
        rows.append(row)
    return rows


def kinds(messages) -> bytes:
    return b"".join(k for k, _ in messages)


def parameter_statuses(messages) -> dict[str, str]:
    out = {}
    for kind, payload in messages:
        if kind == b"S":
            name, value, _ = payload.split(b"\0")
            out[name.decode()] = value.decode()
    return out


def pg_epoch_micros(value: dt.datetime) -> int:
    delta = value - dt.datetime(2000, 1, 1)
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds
