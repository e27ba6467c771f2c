"""Many threads asking at once (as the doors do): no cache corruption, every answer its own."""

from __future__ import annotations

import shutil
import sys
import threading
from pathlib import Path

from cachetools import LRUCache, TTLCache

from semantic import Project

STARTER = Path(__file__).resolve().parents[2] / "semantic" / "demo" / "starter"


def test_threads_share_caches_safely(tmp_path):
    shutil.copytree(STARTER, tmp_path / "p")
    p = Project.load(tmp_path / "p")
    # tiny caches so that eviction races happen constantly
    p.compiler.cache = LRUCache(8)
    p.results = TTLCache(maxsize=2048, ttl=300, getsizeof=lambda t: t.nbytes or 1)
    truth = {c: p.query(metrics=["revenue"], filters=[f"channel = '{c}'"]).column(0)[0].as_py()
             for c in ("web", "app")}
    errors, wrong = [], []

    def work(n: int) -> None:
        for i in range(150):
            channel = ("web", "app")[(n + i) % 2]
            try:
                # a distinct limit per request defeats both caches, so every call compiles, evicts and runs
                table = p.query(metrics=["revenue"], filters=[f"channel = '{channel}'"], limit=10_000 + n * 1000 + i)
            except Exception as e:  # noqa: BLE001 - any failure is the finding
                errors.append(repr(e))
                continue
            if table.column(0)[0].as_py() != truth[channel]:
                wrong.append((channel, table.column(0)[0].as_py()))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often, so races in shared state surface
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    p.close()
    assert errors == [] and wrong == []
