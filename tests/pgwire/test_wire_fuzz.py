"""Hostile bytes against a live server: random, truncated, mutated and oversized messages, before and after
startup. Each may close its own connection; none may take the server down or leak a connection, and a real
client works afterwards."""

# ruff: noqa: F811  (fixtures are imported from wire_server and named as arguments)

from __future__ import annotations

import logging
import random
import socket
import struct
import time

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wire_server import Raw, pg, wire_runtime  # noqa: F401  (fixtures)

TYPES = b"QPBDECHSXFpdcf"


class Unexpected(logging.Handler):
    """Collects what the server logs as unexpected (an exception a packet provoked that is not a protocol error)."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


UNEXPECTED = Unexpected()


@pytest.fixture(scope="module", autouse=True)
def _unexpected_during_this_module():
    """Only what this module's packets provoke counts (other modules log deliberate failures)."""
    log = logging.getLogger("phloem.pgwire")
    UNEXPECTED.records.clear()
    log.addHandler(UNEXPECTED)
    yield
    log.removeHandler(UNEXPECTED)


def startup_packet(user: str = "phloem", database: str = "shop") -> bytes:
    body = struct.pack("!i", 196608) + b"user\0" + user.encode() + b"\0database\0" + database.encode() + b"\0\0"
    return struct.pack("!i", len(body) + 4) + body


def message(kind: bytes, payload: bytes) -> bytes:
    return kind + struct.pack("!i", len(payload) + 4) + payload


def cstr(s: bytes) -> bytes:
    return s + b"\0"


def valid_session() -> bytes:
    """A well-formed extended-protocol exchange, the seed that mutations start from."""
    return b"".join([
        message(b"P", cstr(b"s1") + cstr(b"SELECT $1::int AS n") + struct.pack("!hI", 1, 23)),
        message(b"B", cstr(b"") + cstr(b"s1") + struct.pack("!hh", 1, 1) + struct.pack("!hi", 1, 4)
                + struct.pack("!i", 7) + struct.pack("!hh", 1, 1)),
        message(b"D", b"P" + cstr(b"")),
        message(b"E", cstr(b"") + struct.pack("!i", 0)),
        message(b"C", b"S" + cstr(b"s1")),
        message(b"Q", cstr(b"SELECT 1; SELECT 'x'")),
        message(b"S", b""),
    ])


def exchange(port: int, data: bytes, after_startup: bool) -> None:
    """Send `data` (after a real startup, or instead of one) and read whatever comes back until the server
    closes or goes quiet."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        if after_startup:
            s.sendall(startup_packet())
        try:
            s.sendall(data)
            s.settimeout(0.05)
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline and s.recv(65536):
                pass
        except (TimeoutError, ConnectionError):
            pass


def assert_healthy(port: int) -> None:
    with psycopg.connect(host="127.0.0.1", port=port, user="phloem", dbname="shop", connect_timeout=10) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)


def wait_for_no_connections(server, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while server.connections and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not server.connections, f"{len(server.connections)} connections left open"


random_message = st.builds(
    lambda kind, payload, lie, delta: kind + struct.pack("!i", (len(payload) + 4 + delta) if lie else len(payload) + 4)
    + payload,
    st.sampled_from([bytes([t]) for t in TYPES] + [b"\x00", b"Z", b"\xff"]),
    st.binary(max_size=64),
    st.booleans(),
    st.integers(min_value=-8, max_value=8),
)


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(random_message, max_size=6), st.booleans())
def test_random_messages_after_startup(pg, messages, with_sync):
    exchange(pg.port, b"".join(messages) + (message(b"S", b"") if with_sync else b""), after_startup=True)


@settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=200))
def test_random_bytes_instead_of_a_startup(pg, data):
    exchange(pg.port, data, after_startup=False)


@settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_truncated_and_mutated_sessions(pg, data):
    seed = valid_session()
    cut = data.draw(st.integers(min_value=0, max_value=len(seed)))
    mutated = bytearray(seed[:cut])
    for _ in range(data.draw(st.integers(min_value=0, max_value=4))):
        if mutated:
            i = data.draw(st.integers(min_value=0, max_value=len(mutated) - 1))
            mutated[i] = data.draw(st.integers(min_value=0, max_value=255))
    exchange(pg.port, bytes(mutated), after_startup=True)


def test_oversized_and_absurd_lengths(pg):
    for header in (b"Q" + struct.pack("!i", 64 * 2**20 + 5), b"Q" + struct.pack("!i", 2**31 - 1),
                   b"Q" + struct.pack("!i", -1), b"B" + struct.pack("!i", 3), b"P" + struct.pack("!i", 0)):
        exchange(pg.port, header + b"x" * 100, after_startup=True)
    # a big but legal message (8 MiB of SQL) is read and answered, not a crash
    with Raw(pg.port) as c:
        c.startup()
        messages = c.query("SELECT 1 -- " + "x" * (8 * 2**20))
        assert messages[-1] == (b"Z", b"I")


def test_a_bounded_random_loop_then_real_clients_still_work(pg):
    rng = random.Random(20240105)
    seed = valid_session()
    for _ in range(200):
        choice = rng.random()
        if choice < 0.3:
            data = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 300)))
        elif choice < 0.7:
            data = bytearray(seed[:rng.randint(0, len(seed))])
            for _ in range(rng.randint(0, 6)):
                if data:
                    data[rng.randrange(len(data))] = rng.getrandbits(8)
            data = bytes(data)
        else:
            kind = bytes([rng.choice(TYPES)])
            payload = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 40)))
            data = message(kind, payload) * rng.randint(1, 3)
        exchange(pg.port, data, after_startup=rng.random() < 0.8)
    assert_healthy(pg.port)
    wait_for_no_connections(pg.server)


def test_server_survives_everything_above(pg):
    assert_healthy(pg.port)
    wait_for_no_connections(pg.server)
    assert [r.getMessage() for r in UNEXPECTED.records] == []
