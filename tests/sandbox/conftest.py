"""One small demo shop served for real on loopback: HTTP (uvicorn: REST, explorer, GraphQL, SQL) and the
PostgreSQL wire door, both over one Runtime. A secret is put in the environment first, so a test can tell
whether anything the server answered came from the environment."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
import secret  # noqa: F401  (sets the secret in the environment before any DuckDB opens)
import uvicorn
from psycopg.conninfo import make_conninfo

from semantic.demo import create


@pytest.fixture(scope="session")
def shop(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sandbox") / "shop"
    create(root, scale=300)
    return root


@pytest.fixture(scope="session")
def runtime(shop):
    from server.runtime import Runtime

    runtime = Runtime(shop, timeout=20.0)
    runtime.project.build()
    yield runtime
    runtime.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def http(runtime) -> httpx.Client:
    from server.app import create_app

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(runtime), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    deadline = time.monotonic() + 30
    while True:
        try:
            if client.get("/healthz").status_code == 200:
                break
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    yield client
    client.close()
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="session")
def wire_dsn(runtime) -> str:
    from server.pgwire import PgConfig, PgServer, ServerThread

    handle = ServerThread(PgServer(runtime, PgConfig(port=0, users=None, trust="loopback"))).__enter__()
    yield make_conninfo(host="127.0.0.1", port=handle.port, user="phloem", dbname="shop", connect_timeout=10)
    handle.__exit__(None, None, None)
