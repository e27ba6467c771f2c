"""PostgreSQL users mapped to who they are: a YAML users file gives each SCRAM user roles, a tenant and attributes,
and the connection's session carries that SecurityContext (real psycopg against a live PgServer)."""

# ruff: noqa: F811  (fixtures are imported from wire_server and named as arguments)

from __future__ import annotations

import asyncio

import asyncpg
import psycopg
import pytest
from wire_server import pg, wire_runtime  # noqa: F401  (fixtures)

from server.pgwire import PgConfig, PgServer, ServerThread
from server.pgwire.auth import Verifier

USERS = """
alice:
  password: "wonder land"
  roles: [analyst, viewer]
  tenant: acme
  attributes: {country: DE, regions: [eu]}
carol:
  verifier: "{verifier}"
  roles: "admin"
"""


@pytest.fixture(scope="module")
def mapped(wire_runtime, tmp_path_factory):
    path = tmp_path_factory.mktemp("pgusers") / "users.yml"
    path.write_text(USERS.replace("{verifier}", str(Verifier.from_password("c4rol"))))
    env = {"PHLOEM_PG_USERS_FILE": str(path), "PHLOEM_PG_USERS": "bob:hunter2"}  # the line format, beside it
    with ServerThread(PgServer(wire_runtime, PgConfig.from_env(env, port=0))) as handle:
        yield handle


def connect(port: int, user: str, password: str) -> psycopg.Connection:
    return psycopg.connect(host="127.0.0.1", port=port, user=user, password=password, dbname="shop",
                           connect_timeout=10, sslmode="disable")


def context_of(handle, conn: psycopg.Connection):
    connection = handle.server.connections[conn.info.backend_pid]
    assert connection.session.security_context is connection.security_context
    return connection.security_context


WRONG = (("alice", "wrong"), ("carol", "wonder land"), ("nobody", "x"))


def test_a_wrong_password_is_refused(mapped):
    for user, password in WRONG:
        with pytest.raises(psycopg.OperationalError) as failed:
            connect(mapped.port, user, password)
        assert f'password authentication failed for user "{user}"' in str(failed.value)


def test_a_wrong_password_is_sqlstate_28p01(mapped):
    async def attempt(user: str, password: str) -> str:  # asyncpg reports the SQLSTATE of a refused login
        try:
            await asyncpg.connect(host="127.0.0.1", port=mapped.port, user=user, password=password,
                                  database="shop", ssl=False, timeout=10)
        except asyncpg.PostgresError as e:
            return e.sqlstate
        return "connected"

    assert [asyncio.run(attempt(u, p)) for u, p in WRONG] == ["28P01"] * 3


def test_the_right_password_gives_the_users_roles_tenant_and_attributes(mapped):
    with connect(mapped.port, "alice", "wonder land") as conn:
        assert conn.execute("select 1").fetchone() == (1,)
        context = context_of(mapped, conn)
        assert context.user == "alice" and context.roles == {"analyst", "viewer"} and context.tenant == "acme"
        assert context.attributes == {"country": "DE", "regions": ["eu"]} and not context.unrestricted
    with connect(mapped.port, "carol", "c4rol") as conn:
        assert context_of(mapped, conn).roles == {"admin"}


def test_a_user_of_the_line_format_is_known_and_has_no_roles(mapped):
    with connect(mapped.port, "bob", "hunter2") as conn:
        context = context_of(mapped, conn)
        assert (context.user, context.roles, context.tenant, context.unrestricted) == ("bob", frozenset(), None, False)


def test_trusted_loopback_without_users_is_the_unrestricted_demo(pg):
    with psycopg.connect(pg.dsn()) as conn:
        context = context_of(pg, conn)
        assert context.unrestricted and context.user == "anonymous"


@pytest.mark.parametrize("text", ["alice: {roles: [a]}", "- alice", "alice: {password: x, attributes: [1]}"])
def test_a_malformed_users_file_is_refused_at_start(tmp_path, text):
    path = tmp_path / "users.yaml"
    path.write_text(text)
    with pytest.raises(ValueError):
        PgConfig.from_env({"PHLOEM_PG_USERS_FILE": str(path)})
