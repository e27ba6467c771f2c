"""A built demo project, and a real uvicorn server on a loopback port serving it."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn

from semantic.demo import create

# a real, deliberately slow view (20 billion rows): proves queries past the time limit are cancelled
SLOW = """
views:
  - name: slow_numbers
    sql: "select hash(i) % 1000003 as bucket from range(20000000000) t(i)"
    dimensions: [bucket]
    measures: [{name: distinct_buckets, agg: count_distinct, expr: bucket}]
metrics:
  - {name: slow_distinct_buckets, measure: slow_numbers.distinct_buckets}
"""


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("served") / "shop"
    create(root, scale=2000)
    (root / "models" / "slow.yml").write_text(SLOW)
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """uvicorn in a background thread; stopped at the end of the session."""

    def __init__(self, app):
        self.app = app
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError("the server did not start")

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="session")
def live(demo_dir):
    from server.app import create_app

    app = create_app(demo_dir, timeout=5.0)
    app.state.runtime.project.build()
    with LiveServer(app) as server:
        yield server
