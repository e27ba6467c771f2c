"""Fixtures of the real-client tests: the demo shop (scale 2000) served by live PgServers on loopback.

Every server asks for a SCRAM-SHA-256 password (users configured as `phloem serve` reads them, through
`PgConfig.from_env`); `tls_server` also requires TLS (a self-signed certificate made with the openssl CLI).
`keys_server` serves a variant of the demo whose views expose their keys as dimensions (as
tests/pgwire/conftest.py's keys variant), so primary and foreign keys can be reflected.

The clients themselves (SQLAlchemy, pgjdbc, Evidence's connector) are installed by .ci/run: a missing one fails
its tests with the install command, it is never skipped.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from semantic.demo import create
from server.pgwire import PgConfig, PgServer, ServerThread
from server.runtime import Runtime

USER = "analyst"
PASSWORD = "c1ient pässword"  # a space and non-ASCII on purpose: every client SASLpreps it

# the demo's views.yml with keys exposed as dimensions (entities renamed so the names stay unique), as in
# tests/pgwire/conftest.py
KEYS = {
    "      - {name: customer, column: customer}\n    dimensions:\n      - channel\n":
        "      - {name: buyer, column: customer}\n    dimensions:\n      - order_id\n      - customer\n"
        "      - channel\n",
    "    entities:\n      - {name: customer, column: customer}\n    dimensions: [country,":
        "    entities:\n      - {name: buyer, column: customer}\n    dimensions: [customer, country,",
}


def demo_project(root: Path, keys: bool = False) -> Path:
    create(root, scale=2000)
    if keys:
        views = root / "models" / "views.yml"
        text = views.read_text()
        for old, new in KEYS.items():
            assert old in text, old
            text = text.replace(old, new)
        views.write_text(text)
    return root


@dataclass(frozen=True)
class Live:
    """A running server and how each client reaches it."""

    port: int
    runtime: Runtime
    tls: bool = False
    host: str = "127.0.0.1"
    user: str = USER
    password: str = PASSWORD
    database: str = "shop"

    @property
    def project(self):
        return self.runtime.project

    def sqlalchemy_url(self):
        from sqlalchemy import URL

        return URL.create("postgresql+psycopg", username=self.user, password=self.password, host=self.host,
                          port=self.port, database=self.database)

    def jdbc_url(self) -> str:
        return f"jdbc:postgresql://{self.host}:{self.port}/{self.database}" + ("?sslmode=require" if self.tls else "")

    def credentials(self) -> dict:
        """Evidence's connection options (its `options` schema: host, port, database, user, password, ssl)."""
        out = {"host": self.host, "port": self.port, "database": self.database, "user": self.user,
               "password": self.password}
        if self.tls:  # what Evidence's "Enable SSL" settings give: sslmode and rejectUnauthorized
            out["ssl"] = {"sslmode": "require", "rejectUnauthorized": False}
        return out


def _runtime(root: Path) -> Runtime:
    runtime = Runtime(root, timeout=30.0)
    runtime.project.build()
    return runtime


def _serve(runtime: Runtime, environ: dict[str, str], tls: bool) -> Iterator[Live]:
    config = PgConfig.from_env(environ, host="127.0.0.1", port=0)
    assert config.trust == "none" and config.users and USER in config.users
    with ServerThread(PgServer(runtime, config)) as handle:
        yield Live(handle.port, runtime, tls=tls)


@pytest.fixture(scope="session")
def demo_runtime(tmp_path_factory) -> Iterator[Runtime]:
    runtime = _runtime(demo_project(tmp_path_factory.mktemp("clients") / "shop"))
    yield runtime
    runtime.close()


@pytest.fixture(scope="session")
def keys_runtime(tmp_path_factory) -> Iterator[Runtime]:
    runtime = _runtime(demo_project(tmp_path_factory.mktemp("clients_keys") / "shop", keys=True))
    yield runtime
    runtime.close()


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("clients_tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", "/CN=127.0.0.1"], check=True, capture_output=True)
    return cert, key


USERS = {"PHLOEM_PG_USERS": f"{USER}:{PASSWORD}"}  # PHLOEM_PG_TRUST defaults to none when users are set


@pytest.fixture(scope="session")
def server(demo_runtime) -> Iterator[Live]:
    """SCRAM for everyone, no TLS."""
    yield from _serve(demo_runtime, USERS, tls=False)


@pytest.fixture(scope="session")
def tls_server(demo_runtime, tls_files) -> Iterator[Live]:
    """SCRAM for everyone, TLS required (PHLOEM_PG_SSL_REQUIRE=1)."""
    cert, key = tls_files
    environ = {**USERS, "PHLOEM_PG_SSL_CERT": str(cert), "PHLOEM_PG_SSL_KEY": str(key),
               "PHLOEM_PG_SSL_REQUIRE": "1"}
    yield from _serve(demo_runtime, environ, tls=True)


@pytest.fixture(scope="session")
def keys_server(keys_runtime) -> Iterator[Live]:
    """The keys variant of the demo, SCRAM, no TLS."""
    yield from _serve(keys_runtime, USERS, tls=False)

