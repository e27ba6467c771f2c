"""Fixtures of the PostgreSQL-wire door's SQL tests: the demo shop (built once per run) and a Frontend over it.

`keys_frontend` serves a variant of the demo whose views expose their keys as dimensions (`orders.order_id`,
`orders.customer`, `customers.customer`), so the catalog has primary and foreign keys to reflect.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from semantic.demo import create
from server.runtime import Runtime


def _demo(root: Path) -> Path:
    create(root, scale=2000)
    return root


def _runtime(root: Path, timeout: float | None = 30.0) -> Runtime:
    runtime = Runtime(root, timeout=timeout)
    runtime.project.build()
    return runtime


@pytest.fixture(scope="session")
def make_demo():
    """`make_demo(root)` writes a fresh demo project (data generated, not built) at `root`."""
    return _demo


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    return _demo(tmp_path_factory.mktemp("pgwire_sql") / "shop")


@pytest.fixture(scope="session")
def runtime(demo_root):
    runtime = _runtime(demo_root)
    yield runtime
    runtime.close()


@pytest.fixture(scope="session")
def frontend(runtime):
    from server.pgwire.frontend import Frontend

    return Frontend(runtime)


@pytest.fixture
def session(frontend):
    return frontend.session("postgres", "shop", {"application_name": "pytest"})


KEYS = {  # the demo's views.yml, with keys exposed as dimensions (entities renamed so the names stay unique)
    "      - {name: customer, column: customer}\n    dimensions:\n      - channel\n":
        "      - {name: buyer, column: customer}\n    dimensions:\n      - order_id\n      - customer\n"
        "      - channel\n",
    "    entities:\n      - {name: customer, column: customer}\n    dimensions: [country,":
        "    entities:\n      - {name: buyer, column: customer}\n    dimensions: [customer, country,",
}


@pytest.fixture(scope="session")
def keys_runtime(tmp_path_factory):
    root = _demo(tmp_path_factory.mktemp("pgwire_keys") / "shop")
    views = root / "models" / "views.yml"
    text = views.read_text()
    for old, new in KEYS.items():
        assert old in text, old
        text = text.replace(old, new)
    views.write_text(text)
    runtime = _runtime(root)
    yield runtime
    runtime.close()


@pytest.fixture(scope="session")
def keys_frontend(keys_runtime):
    from server.pgwire.frontend import Frontend

    return Frontend(keys_runtime)


@pytest.fixture
def cancel_after():
    """`cancel_after(frontend, session, sql, seconds)`: run `sql`, cancel it after `seconds`; returns
    (the error it raised or None, seconds from the cancel to the statement's end)."""

    def run(frontend, session, sql: str, seconds: float):
        outcome: dict = {}

        def work():
            try:
                frontend.execute(session, sql)
            except Exception as e:  # the test looks at it
                outcome["error"] = e

        worker = threading.Thread(target=work)
        worker.start()
        time.sleep(seconds)
        cancelled = time.monotonic()
        frontend.cancel(session)
        worker.join(30)
        assert not worker.is_alive(), "the statement went on after the cancel"
        return outcome.get("error"), time.monotonic() - cancelled

    return run
