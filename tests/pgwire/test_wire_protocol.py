"""The protocol byte by byte, through a raw socket: what drivers rely on but rarely show."""

# ruff: noqa: F811  (fixtures are imported from wire_server and named as arguments)

from __future__ import annotations

import socket
import ssl
import struct
import subprocess
import sys
import time

import pytest
from wire_server import (  # noqa: F401  (fixtures)
    Raw,
    data_rows,
    fields,
    kinds,
    parameter_statuses,
    pg,
    pg_secure,
    tls_files,
    wire_runtime,
)

from server.pgwire import PgConfig, PgServer, ServerThread

MONTHS = "SELECT metric_time__month, MEASURE(orders) FROM metrics GROUP BY 1 ORDER BY 1"


def errors(messages) -> list[dict[str, str]]:
    return [fields(p) for k, p in messages if k == b"E"]


def test_startup_reports_what_clients_check(pg):
    with Raw(pg.port) as c:
        messages = c.startup(application_name="wire-test")
        status = parameter_statuses(messages)
        assert status["server_version"].startswith("15.")
        assert status["server_encoding"] == status["client_encoding"] == "UTF8"
        assert status["DateStyle"] == "ISO, MDY"
        assert status["TimeZone"] == "UTC"
        assert status["integer_datetimes"] == status["standard_conforming_strings"] == "on"
        assert status["IntervalStyle"] == "postgres"
        assert status["application_name"] == "wire-test"
        assert kinds(messages)[0:1] == b"R" and messages[0][1] == struct.pack("!i", 0)  # AuthenticationOk
        assert b"K" in kinds(messages) and messages[-1] == (b"Z", b"I")
        pid, secret = struct.unpack("!ii", next(p for k, p in messages if k == b"K"))
        assert pid > 0


def test_ssl_and_gssenc_requests_are_declined_without_tls(pg):
    with Raw(pg.port) as c:
        c.send_raw(struct.pack("!ii", 8, 80877104))  # GSSENCRequest
        assert c.read_byte() == b"N"
        c.send_raw(struct.pack("!ii", 8, 80877103))  # SSLRequest
        assert c.read_byte() == b"N"
        assert c.startup()[-1] == (b"Z", b"I")
        assert data_rows(c.query("SELECT 1")) == [[b"1"]]


def test_a_newer_minor_version_is_negotiated_down(pg):
    with Raw(pg.port) as c:
        messages = c.startup(version=(3 << 16) | 2, **{"_pq_.something": "x"})
        negotiate = next(p for k, p in messages if k == b"v")
        newest, count = struct.unpack_from("!ii", negotiate)
        assert (newest, count) == (196608, 1) and b"_pq_.something" in negotiate
        assert messages[-1] == (b"Z", b"I")


def test_an_unknown_major_version_is_refused(pg):
    with Raw(pg.port) as c:
        messages = c.startup(version=4 << 16)
        assert errors(messages)[0]["C"] == "0A000" and errors(messages)[0]["S"] == "FATAL"
        assert c.closed()


def test_simple_query_several_statements_and_empty(pg):
    with Raw(pg.port) as c:
        c.startup()
        messages = c.query("SELECT 1; SELECT 2")
        assert data_rows(messages) == [[b"1"], [b"2"]]
        assert kinds(messages) == b"TDCTDCZ"
        assert kinds(c.query("")) == b"IZ"
        assert kinds(c.query("  ;  -- nothing\n")) == b"IZ"


def test_errors_carry_severity_sqlstate_and_message_and_the_connection_lives_on(pg):
    with Raw(pg.port) as c:
        c.startup()
        messages = c.query("SELECT MEASURE(no_such_metric) FROM metrics")
        err = errors(messages)[0]
        assert err["S"] == err["V"] == "ERROR"
        assert len(err["C"]) == 5 and err["C"] != "XX000"
        assert "no_such_metric" in err["M"]
        assert messages[-1] == (b"Z", b"I")
        assert data_rows(c.query("SELECT 1")) == [[b"1"]]


def test_extended_protocol_row_limits_suspend_and_resume_the_portal(pg):
    with Raw(pg.port) as c:
        c.startup()
        expected = data_rows(c.query(MONTHS))
        assert len(expected) == 36
        c.parse(MONTHS)
        c.bind()
        c.describe(b"P")
        c.execute(max_rows=10)
        c.execute(max_rows=10)
        c.execute(max_rows=16)  # exactly the rest: PostgreSQL still suspends
        c.execute(max_rows=10)
        messages = c.sync()
        assert kinds(messages) == b"12T" + b"D" * 10 + b"s" + b"D" * 10 + b"s" + b"D" * 16 + b"s" + b"CZ"
        assert data_rows(messages) == expected
        assert messages[-2] == (b"C", b"SELECT 0\0")


def test_named_statements_and_portals_live_until_closed(pg):
    with Raw(pg.port) as c:
        c.startup()
        c.parse("SELECT 1 AS one", name="s1")
        c.describe(b"S", "s1")
        messages = c.sync()
        assert kinds(messages) == b"1tTZ"
        c.parse("SELECT 1", name="s1")  # the name is taken
        messages = c.sync()
        assert errors(messages)[0]["C"] == "42P05"
        for _ in range(3):
            c.bind("p1", "s1")
            c.execute("p1")
            c.close_(b"P", "p1")
            messages = c.sync()
            assert kinds(messages) == b"2DC3Z" and data_rows(messages) == [[b"1"]]
        c.close_(b"S", "s1")
        c.bind("p1", "s1")
        messages = c.sync()
        assert kinds(messages) == b"3EZ" and errors(messages)[0]["C"] == "26000"
        c.execute("nope")
        assert errors(c.sync())[0]["C"] == "34000"


def test_after_an_error_everything_until_sync_is_skipped(pg):
    with Raw(pg.port) as c:
        c.startup()
        c.parse("SELECT MEASURE(nope) FROM metrics")
        c.bind()
        c.execute()  # fails here
        c.parse("SELECT 1")  # skipped
        c.bind()
        c.execute()
        messages = c.sync()
        assert kinds(messages) == b"12EZ"
        c.parse("SELECT 2")
        c.bind()
        c.execute()
        assert data_rows(c.sync()) == [[b"2"]]


def test_flush_sends_what_is_pending_without_sync(pg):
    with Raw(pg.port) as c:
        c.startup()
        c.parse("SELECT 1")
        c.send(b"H")
        assert c.read() == (b"1", b"")
        c.bind()
        c.execute()
        messages = c.sync()
        assert kinds(messages) == b"2DCZ"


def test_empty_statement_in_the_extended_protocol(pg):
    with Raw(pg.port) as c:
        c.startup()
        c.parse("")
        c.bind()
        c.describe(b"P")
        c.execute()
        assert kinds(c.sync()) == b"12nIZ"


def test_binary_parameters_and_results_by_hand(pg):
    with Raw(pg.port) as c:
        c.startup()
        c.parse("SELECT $1::bigint + 1 AS n", oids=(20,))
        c.bind(params=(struct.pack("!q", 41),), formats=(1,), result_formats=(1,))
        c.describe(b"P")
        c.execute()
        messages = c.sync()
        assert data_rows(messages) == [[struct.pack("!q", 42)]]
        row_description = next(p for k, p in messages if k == b"T")
        assert struct.unpack("!h", row_description[-2:]) == (1,)  # the column's format code: binary


@pytest.mark.parametrize("sql, value, want", [
    ("SELECT $1::int + 1 AS n", struct.pack("!i", 41), struct.pack("!i", 42)),
    ("SELECT $1::float8 * 2 AS x", struct.pack("!d", 1.25), struct.pack("!d", 2.5)),
    ("SELECT MEASURE(orders) > $1::bigint AS many FROM orders", struct.pack("!q", 1), b"\x01"),
])
def test_binary_parameters_without_a_type_are_read_as_the_statement_types_them(pg, sql, value, want):
    """libpq's PQexecParams with paramTypes NULL: PostgreSQL infers the type, then reads the binary value."""
    with Raw(pg.port) as c:
        c.startup()
        c.parse(sql, oids=(0,))
        c.bind(params=(value,), formats=(1,), result_formats=(1,))
        c.execute()
        messages = c.sync()
        assert kinds(messages) == b"12DCZ", messages
        assert data_rows(messages) == [[want]]


def test_bind_errors_are_statement_errors(pg):
    with Raw(pg.port) as c:
        c.startup()
        c.parse("SELECT $1::int AS n", oids=(23,))
        c.bind(params=(b"abc",))
        messages = c.sync()
        assert errors(messages)[0]["C"] == "22P02"
        c.bind(params=(b"\x00\x01",), formats=(1,))  # 2 bytes for an int4
        assert errors(c.sync())[0]["C"] == "22P03"
        c.bind(params=(b"1", b"2"), formats=(0, 0, 0))
        assert errors(c.sync())[0]["C"] == "08P01"
        assert data_rows(c.query("SELECT 1")) == [[b"1"]]


def test_function_call_is_refused_and_copy_messages_are_ignored(pg):
    with Raw(pg.port) as c:
        c.startup()
        c.send(b"d", b"stray copy data")
        c.send(b"F", struct.pack("!i", 1234))
        messages = c.until_ready()
        assert kinds(messages) == b"EZ" and errors(messages)[0]["C"] == "0A000"
        assert data_rows(c.query("SELECT 1")) == [[b"1"]]


def test_terminate_closes(pg):
    with Raw(pg.port) as c:
        c.startup()
        c.send(b"X")
        assert c.read() is None


def test_garbage_closes_only_that_connection(pg):
    with Raw(pg.port) as bystander:
        bystander.startup()
        with Raw(pg.port) as c:
            c.startup()
            c.send(b"\x01", b"what is this")
            messages = c.until(b"E")
            assert errors(messages)[0]["C"] == "08P01" and errors(messages)[0]["S"] == "FATAL"
            assert c.closed()
        with Raw(pg.port) as c:
            c.startup()
            c.send_raw(b"Q" + struct.pack("!i", 2**30))  # 1 GiB announced: over the limit
            assert errors(c.until(b"E"))[0]["C"] == "08P01"
            assert c.closed()
        with Raw(pg.port) as c:
            c.startup()
            c.send(b"P", b"no terminator")
            assert errors(c.until(b"E"))[0]["C"] == "08P01"
        assert data_rows(bystander.query("SELECT 1")) == [[b"1"]]


def test_oversized_or_short_startup_packets_are_refused(pg):
    for packet in (struct.pack("!i", 100_000), struct.pack("!ii", 4, 0), struct.pack("!i", -5)):
        with Raw(pg.port) as c:
            c.send_raw(packet)
            assert c.closed()


def test_missing_user_is_fatal(pg):
    with Raw(pg.port) as c:
        body = struct.pack("!i", 196608) + b"database\0shop\0\0"
        c.send_raw(struct.pack("!i", len(body) + 4) + body)
        err = errors(c.until(b"E"))[0]
        assert (err["S"], err["C"]) == ("FATAL", "28000")


def test_cancel_request_with_a_wrong_key_does_nothing(pg):
    with Raw(pg.port) as c:
        messages = c.startup()
        pid, secret = struct.unpack("!ii", next(p for k, p in messages if k == b"K"))
        with Raw(pg.port) as other:
            other.send_raw(struct.pack("!iiii", 16, 80877102, pid, secret ^ 1))
            assert other.closed()
        assert data_rows(c.query("SELECT 1")) == [[b"1"]]


def test_tls_handshake_then_scram_over_raw_socket(pg_secure, tls_files):
    ctx = ssl.create_default_context(cafile=str(tls_files[0]))
    ctx.check_hostname = False
    with socket.create_connection(("127.0.0.1", pg_secure.port), timeout=10) as s:
        s.sendall(struct.pack("!ii", 8, 80877103))
        assert s.recv(1) == b"S"
        with ctx.wrap_socket(s) as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")


def test_plaintext_sent_after_ssl_request_is_refused(pg_secure):
    with Raw(pg_secure.port) as c:
        c.send_raw(struct.pack("!ii", 8, 80877103) + b"injected bytes")
        reply = c.read_byte()
        assert reply in (b"E", b"")  # refused before any TLS
        assert c.closed()


def test_scram_server_offers_scram_sha_256_only(pg_secure):
    with Raw(pg_secure.port) as c:
        c.send_startup(user="alice")
        kind, payload = c.read()
        assert kind == b"R" and payload == struct.pack("!i", 10) + b"SCRAM-SHA-256\0\0"
        c.send(b"p", b"SCRAM-SHA-256\0" + struct.pack("!i", 5) + b"n,,n=")  # no nonce
        err = errors(c.until(b"E"))[0]
        assert (err["S"], err["C"]) == ("FATAL", "08P01")


def test_limits_connections_and_startup_time(wire_runtime):
    config = PgConfig(port=0, trust="loopback", max_connections=2, startup_timeout=0.5)
    with ServerThread(PgServer(wire_runtime, config)) as handle:
        held = [Raw(handle.port), Raw(handle.port)]
        for c in held:
            assert c.startup()[-1] == (b"Z", b"I")
        with Raw(handle.port) as c:
            err = errors(c.startup())[0]
            assert (err["S"], err["C"]) == ("FATAL", "53300")
        # a cancel still gets through at the limit (it takes no slot)
        with Raw(handle.port) as c:
            c.send_raw(struct.pack("!iiii", 16, 80877102, 1, 1))
            assert c.closed()
        for c in held:
            c.close()
        with Raw(handle.port) as idle:  # says nothing: dropped after the startup timeout
            started = time.monotonic()
            assert idle.closed()
            assert time.monotonic() - started < 5
        deadline = time.monotonic() + 5
        while len(handle.server.connections) and time.monotonic() < deadline:
            time.sleep(0.05)
        with Raw(handle.port) as c:
            assert c.startup()[-1] == (b"Z", b"I")


def test_cursors_in_any_direction_and_deallocate(pg):
    with Raw(pg.port) as c:
        c.startup()
        assert kinds(c.query("BEGIN")) == b"CZ"
        c.query("DECLARE c SCROLL CURSOR FOR SELECT * FROM generate_series(1, 10) AS g")
        assert data_rows(c.query("FETCH 3 FROM c")) == [[b"1"], [b"2"], [b"3"]]
        assert data_rows(c.query("FETCH BACKWARD 2 FROM c")) == [[b"2"], [b"1"]]
        assert data_rows(c.query("FETCH ABSOLUTE -1 FROM c")) == [[b"10"]]
        messages = c.query("MOVE ABSOLUTE 4 IN c")
        assert (b"C", b"MOVE 1\0") in messages
        assert data_rows(c.query("FETCH ALL c")) == [[str(i).encode()] for i in range(5, 11)]
        assert (b"C", b"FETCH 0\0") in c.query("FETCH NEXT FROM c")
        c.parse("FETCH PRIOR FROM c")  # a cursor reached through the extended protocol
        c.bind(result_formats=(1,))
        c.describe(b"P")
        c.execute()
        assert data_rows(c.sync()) == [[b"\0\0\0\x0a"]]  # int4 10, binary
        assert (b"C", b"CLOSE CURSOR\0") in c.query("CLOSE c")
        assert errors(c.query("FETCH 1 FROM c"))[0]["C"] == "34000"
        c.query("ROLLBACK")
        assert errors(c.query("DECLARE d CURSOR FOR SELECT 1"))[0]["C"] == "25P01"  # outside a transaction
        c.parse("SELECT 1", name="kept")
        c.sync()
        assert (b"C", b"DEALLOCATE\0") in c.query("DEALLOCATE kept")
        c.bind(statement="kept")
        assert errors(c.sync())[0]["C"] == "26000"


def test_a_cursor_declared_inside_a_multi_statement_query(pg):
    with Raw(pg.port) as c:
        c.startup()
        messages = c.query("BEGIN; DECLARE m CURSOR FOR SELECT * FROM generate_series(1, 5) AS g; FETCH 2 FROM m")
        assert data_rows(messages) == [[b"1"], [b"2"]] and messages[-1] == (b"Z", b"T")
        assert data_rows(c.query("FETCH 2 FROM m")) == [[b"3"], [b"4"]]
        assert (b"C", b"CLOSE CURSOR\0") in c.query("CLOSE m")
        assert c.query("COMMIT")[-1] == (b"Z", b"I")


def test_discard_all_forgets_statements_and_portals(pg):
    with Raw(pg.port) as c:
        c.startup()
        c.parse("SELECT 1", name="s")
        c.sync()
        assert (b"C", b"DISCARD ALL\0") in c.query("DISCARD ALL")
        c.bind(statement="s")
        assert errors(c.sync())[0]["C"] == "26000"


def test_users_and_trust_from_the_environment(tmp_path):
    from server.pgwire.auth import Verifier

    stored = str(Verifier.from_password("b-secret"))
    listed = tmp_path / "users"
    listed.write_text("# one a line\ncarol:c-secret\n")
    config = PgConfig.from_env({"PHLOEM_PG_USERS": f"alice:a-secret,bob:{stored}", "PHLOEM_PG_USERS_FILE": str(listed)})
    assert set(config.users) == {"alice", "bob", "carol"} and config.trust == "none"
    assert all(str(v).startswith("SCRAM-SHA-256$4096:") for v in config.users.values())  # no plain text kept
    assert str(config.users["bob"]) == stored
    default = PgConfig.from_env({})
    assert default.users is None and default.trust == "none" and default.ssl_context() is None
    assert PgConfig().trust == "none"
    assert PgConfig.from_env({}, demo=True).trust == "loopback"  # only the built-in demo trusts loopback
    assert PgConfig.from_env({"PHLOEM_PG_USERS": "alice:a-secret"}, demo=True).trust == "none"
    assert PgConfig.from_env({"PHLOEM_PG_TRUST": "loopback"}).trust == "loopback"  # the override
    assert PgConfig.from_env({"PHLOEM_PG_TRUST": "none"}, demo=True).trust == "none"
    with pytest.raises(ValueError):
        PgConfig.from_env({"PHLOEM_PG_TRUST": "maybe"})
    printed = subprocess.run([sys.executable, "-m", "server.pgwire.auth", "dave", "pw"], capture_output=True,
                             text=True, check=True).stdout.strip()
    user, _, verifier = printed.partition(":")
    assert user == "dave" and Verifier.parse(verifier).iterations == 4096


def test_without_users_or_trust_nobody_gets_in(wire_runtime):
    with ServerThread(PgServer(wire_runtime, PgConfig(port=0, users=None, trust="none"))) as handle:
        with Raw(handle.port) as c:
            err = errors(c.startup())[0]
            assert (err["S"], err["C"]) == ("FATAL", "28000") and "PHLOEM_PG_USERS=user:password" in err["H"]
            assert "PHLOEM_PG_TRUST=loopback" in err["H"]
