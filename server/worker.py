"""`phloem worker`: rebuild what is stale and what its `refresh` schedule says is due, one pass per tick.

Every pass takes the warehouse's build lock without waiting (semantic/engines: a PostgreSQL advisory lock, or a
file beside a DuckDB database): with several workers, one builds and the others skip the tick. Builds stage every
table and publish them in one transaction, so servers keep answering from the previous tables meanwhile, and a
worker killed mid-build leaves them as they were.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from semantic import PhloemError, Project
from semantic.errors import BuildError
from semantic.materialize.schedule import Due, due

log = logging.getLogger("phloem.worker")


@dataclass
class Pass:
    """What one pass did: built tables (name → seconds), failures (name → message), or `busy` (another held the lock)."""

    built: dict[str, float] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    due: Due = Due()
    busy: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed


class Worker:
    def __init__(self, project: Project):
        self.project = project

    def kind(self, name: str) -> str:
        model = self.project.model
        return "rollup" if name in model.rollups else "dataset" if name in model.datasets else "activity table"

    def run_once(self) -> Pass:
        """One pass: build under the lock; a rollup that fails is logged and the pass goes on without it."""
        result, start = Pass(), time.perf_counter()
        skip: set[str] = set()
        while True:
            try:
                report = self.project.build(refresh=lambda: self._locked(result), wait=False,
                                            skip=frozenset(skip), progress=self._published)
            except BuildError as e:
                name = e.rollup or "build"
                result.failed[name] = str(e)
                log.error("failed %s %s after %.2fs: %s", self.kind(name) if e.rollup else "the", name,
                          time.perf_counter() - start, e, extra={"table": name, "ok": False})
                if e.rollup is None or e.rollup in skip:
                    break
                skip.add(e.rollup)  # the others are still built: a broken rollup must not hold them back
                continue
            except PhloemError as e:  # the warehouse is down, or the model no longer matches the data
                result.failed["build"] = str(e)
                log.error("pass failed after %.2fs: %s", time.perf_counter() - start, e, extra={"ok": False})
                break
            if report is None:
                result.busy = True
                log.info("another process holds the build lock: skipped this tick (servers keep the present tables)")
                break
            for name in report.built:
                result.built[name] = report.seconds.get(name, 0.0)
                log.info("built %s %s in %.2fs ok", self.kind(name), name, report.seconds.get(name, 0.0),
                         extra={"table": name, "seconds": report.seconds.get(name, 0.0), "ok": True})
            break
        result.seconds = time.perf_counter() - start
        if result.built or result.failed:
            log.info("pass: %d built, %d failed in %.2fs", len(result.built), len(result.failed), result.seconds)
        return result

    def _locked(self, result: Pass) -> frozenset[str]:
        """Asked once the lock is held: what is due now (another worker may have refreshed it a moment ago)."""
        result.due = due(self.project.builder)
        if result.due.names:
            log.info("lock held: refreshing %s", ", ".join(sorted(result.due.names)))
        return result.due.names

    def _published(self, name: str, done: int, total: int) -> None:
        # both still under the lock: the first table staged, and after the publish
        if done == 0 and name != "done":
            log.info("building %d tables", total, extra={"tables": total})
        elif name == "done" and total:
            log.info("published %d tables", total, extra={"tables": total})

    def run(self, interval: float, stop: threading.Event) -> None:
        """Passes every `interval` seconds until `stop` is set."""
        run_all([self], interval, stop)


def for_tenants(tenants) -> list[Worker]:
    """A worker per tenant (each builds its own schema under its own lock), or one for the model as written."""
    return [Worker(p) for _, p in tenants.projects()] if tenants.configured else [Worker(tenants.default)]


def run_all(workers: list[Worker], interval: float, stop: threading.Event) -> None:
    """Every worker's pass, every `interval` seconds, until `stop` is set."""
    names = ", ".join(w.project.model.settings.name for w in workers)
    log.info("worker started: %s every %gs", names, interval)
    while not stop.is_set():
        for w in workers:
            if stop.is_set():
                break
            w.run_once()
        stop.wait(interval)
    log.info("worker stopped")
