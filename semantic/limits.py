"""Bounds on one answer: how many rows and bytes it may hold, read from the warehouse batch by batch.

A server sets `Limits` on its project (PHLOEM_MAX_ROWS, PHLOEM_MAX_BYTES); the library alone has none. An answer
is read as Arrow record batches and counted as it comes, so one past the limit is refused after reading at most
the limit (never the whole answer), and the warehouse query is closed there. A `Reading` is one such answer in
flight: its query can be interrupted (time limit, a client that went away) and its batches streamed.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pyarrow as pa

from semantic.errors import QueryError, QueryTimeout

DEFAULT_ROWS = 1_000_000
DEFAULT_BYTES = 256 * 2**20
BATCH_ROWS = 8192  # rows per record batch read from the warehouse: DuckDB holds the GIL while it makes one
_UNITS = {"": 1, "b": 1, "kb": 2**10, "k": 2**10, "mb": 2**20, "m": 2**20, "gb": 2**30, "g": 2**30}


class ResultTooLarge(QueryError):
    """An answer over the row or byte limit (a 4xx; SQLSTATE 54000 program_limit_exceeded on the pg wire)."""

    sqlstate = "54000"

    def __init__(self, message: str, suggestion: str, limit: str):
        super().__init__(message, suggestion)
        self.limit = limit  # which setting: PHLOEM_MAX_ROWS or PHLOEM_MAX_BYTES


class QueryCancelled(QueryTimeout):
    """The query was interrupted because its client went away."""


def size(text: str | int) -> int:
    """Bytes from `268435456`, `256MB`, `1GB` (binary units)."""
    m = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"not a size: {text!r} (write bytes, or a number with KB, MB or GB)")
    return int(m.group(1)) * _UNITS[m.group(2).lower()]


@dataclass(frozen=True)
class Limits:
    """The most rows and bytes (Arrow, in memory) one answer may have; None: no bound."""

    rows: int | None = DEFAULT_ROWS
    bytes: int | None = DEFAULT_BYTES

    @classmethod
    def from_env(cls, environ=os.environ, rows: int | None = None, bytes: int | str | None = None) -> Limits:
        """PHLOEM_MAX_ROWS / PHLOEM_MAX_BYTES (0: no bound), unless given; else the defaults."""
        if rows is None:
            text = environ.get("PHLOEM_MAX_ROWS") or str(DEFAULT_ROWS)
            if not text.strip().isdigit():
                raise ValueError(f"PHLOEM_MAX_ROWS must be a whole number of rows (0: no limit), not {text!r}")
            rows = int(text)
        if bytes is None:
            bytes = environ.get("PHLOEM_MAX_BYTES") or DEFAULT_BYTES
        nbytes = size(bytes)
        if rows < 0:
            raise ValueError("the row limit cannot be negative (0: no limit)")
        return cls(rows or None, nbytes or None)

    def check(self, rows: int, nbytes: int) -> None:
        if self.rows is not None and rows > self.rows:
            raise ResultTooLarge(
                f"the answer has more than {self.rows:,} rows, the server's row limit",
                "add a LIMIT or filters, or ask for a coarser grain (a rollup answers it); the operator can raise "
                "the limit with PHLOEM_MAX_ROWS or `phloem serve --max-rows` (0: no limit)", "PHLOEM_MAX_ROWS")
        if self.bytes is not None and nbytes > self.bytes:
            raise ResultTooLarge(
                f"the answer is larger than {_mb(self.bytes)}, the server's result size limit",
                "ask for fewer columns or rows (LIMIT, filters, a coarser grain); the operator can raise the limit "
                "with PHLOEM_MAX_BYTES or `phloem serve --max-bytes` (0: no limit)", "PHLOEM_MAX_BYTES")


NO_LIMITS = Limits(None, None)


def _mb(n: int) -> str:
    return f"{n / 2**20:g} MB" if n >= 2**20 else f"{n:,} bytes"


def collect(reader: pa.RecordBatchReader, limits: Limits | None) -> pa.Table:
    """Every batch of `reader` as one table, refused (ResultTooLarge) as soon as it passes `limits`."""
    if limits is None or limits == NO_LIMITS:
        return reader.read_all()
    batches, rows, nbytes = [], 0, 0
    for batch in reader:
        rows, nbytes = rows + batch.num_rows, nbytes + batch.nbytes
        limits.check(rows, nbytes)
        batches.append(batch)
    return pa.Table.from_batches(batches, reader.schema)


class Cancel:
    """A request's off switch: whatever query it is bound to is interrupted when it is called (the client left)."""

    def __init__(self):
        self.cancelled = False
        self._lock = threading.Lock()
        self._hooks: list[Callable[[], None]] = []

    def bind(self, interrupt: Callable[[], None]) -> Callable[[], None]:
        """Call `interrupt` on cancel (now, if already cancelled); returns the unbinding."""
        with self._lock:
            if not self.cancelled:
                self._hooks.append(interrupt)
                return lambda: self._unbind(interrupt)
        interrupt()
        return lambda: None

    def check(self) -> None:
        """QueryCancelled if the client already went away: the next query of a multi-query request is not started."""
        if self.cancelled:
            raise QueryCancelled("the client went away; its query was cancelled")

    def _unbind(self, interrupt) -> None:
        with self._lock:
            if interrupt in self._hooks:
                self._hooks.remove(interrupt)

    def __call__(self) -> None:
        with self._lock:
            self.cancelled, hooks, self._hooks = True, self._hooks, []
        for hook in hooks:
            hook()


class Watchdog:
    """One thread for every query's time limit, at every door: `schedule(seconds, callback)` calls `callback` then unless
    `cancel`led first. (A threading.Timer per statement started a thread per query, ~15% of a `SELECT 1`.)"""

    def __init__(self):
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int]] = []  # (deadline, key); cancelled keys are dropped lazily
        self._live: dict[int, Callable[[], None]] = {}
        self._keys = itertools.count()
        self._thread: threading.Thread | None = None

    def schedule(self, seconds: float, callback: Callable[[], None]) -> int:
        with self._cond:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="phloem-watchdog", daemon=True)
                self._thread.start()
            key = next(self._keys)
            self._live[key] = callback
            heapq.heappush(self._heap, (time.monotonic() + seconds, key))
            if len(self._heap) > 2 * len(self._live) + 64:  # mostly cancelled entries: compact
                self._heap = [entry for entry in self._heap if entry[1] in self._live]
                heapq.heapify(self._heap)
            if self._heap[0][1] == key:  # the earliest deadline now: wake the thread to wait less
                self._cond.notify()
            return key

    def cancel(self, key: int) -> None:
        with self._cond:
            self._live.pop(key, None)

    def _run(self) -> None:
        with self._cond:
            while True:
                while self._heap and self._heap[0][1] not in self._live:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                deadline, key = self._heap[0]
                delay = deadline - time.monotonic()
                if delay > 0:
                    self._cond.wait(delay)
                    continue
                heapq.heappop(self._heap)
                callback = self._live.pop(key)
                self._cond.release()
                try:
                    callback()
                except Exception:  # an interrupt of a connection that just closed
                    logging.getLogger("phloem").debug("time limit callback failed", exc_info=True)
                finally:
                    self._cond.acquire()


WATCHDOG = Watchdog()


class Reading:
    """One answer being read: batches counted against `limits`, interrupted after `timeout` s or by `cancel`.

    `head(hold)` reads until the answer ends (a Table) or `hold` bytes are read (then the Reading itself, whose
    `batches()` yields what was read and then the rest, and closes the query at the end or when abandoned).
    """

    def __init__(self, start: Callable[[], pa.RecordBatchReader], interrupt: Callable[[], None],
                 close: Callable[[], None], limits: Limits | None = None, timeout: float | None = None,
                 cancel: Cancel | None = None, interrupted: tuple[type[BaseException], ...] = (),
                 on_cancelled: Callable[[], None] | None = None):
        """`start()` runs the query and gives its reader (it may block until the first batch: the time limit and
        `cancel` already apply); `interrupt` stops it from another thread; `close` releases it."""
        self.limits, self.timeout, self.cancel = limits or NO_LIMITS, timeout, cancel
        self.rows = self.nbytes = 0
        self._interrupt, self._close, self._interrupted, self._on_cancelled = interrupt, close, interrupted, on_cancelled
        self._held: list[pa.RecordBatch] = []
        self._closed = False
        self._timer = WATCHDOG.schedule(timeout, interrupt) if timeout else None
        self._unbind = cancel.bind(interrupt) if cancel is not None else None
        try:
            if cancel is not None:
                cancel.check()  # interrupting a query not yet started would not stop it
            self.reader = self._guarded(start)
        except BaseException:
            self.close()
            raise
        self.schema = self.reader.schema

    def _guarded(self, step):
        try:
            return step()
        except self._interrupted:
            if self.cancel is not None and self.cancel.cancelled:
                if self._on_cancelled:
                    self._on_cancelled()
                raise QueryCancelled("the client went away; its query was cancelled") from None
            after = f" than {self.timeout:g} s" if self.timeout else ""
            raise QueryTimeout(f"the query ran longer{after} and was cancelled") from None

    def _next(self) -> pa.RecordBatch | None:
        try:
            batch = self._guarded(self.reader.read_next_batch)
        except StopIteration:
            return None
        self.rows, self.nbytes = self.rows + batch.num_rows, self.nbytes + batch.nbytes
        self.limits.check(self.rows, self.nbytes)
        return batch

    def head(self, hold: int | None = None) -> pa.Table | Reading:
        try:
            while hold is None or self.nbytes <= hold:
                batch = self._next()
                if batch is None:
                    self.close()
                    return pa.Table.from_batches(self._held, self.schema)
                self._held.append(batch)
        except BaseException:
            self.close()
            raise
        return self

    def table(self) -> pa.Table:
        return self.head(None)

    def batches(self) -> Iterator[pa.RecordBatch]:
        try:
            held, self._held = self._held, []
            yield from held
            while (batch := self._next()) is not None:
                yield batch
        finally:
            self.close()

    def interrupt(self) -> None:
        """Stop the query from another thread (its reader was abandoned: the client went away mid-stream)."""
        if not self._closed:
            if self._on_cancelled:
                self._on_cancelled()
            self._interrupt()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            WATCHDOG.cancel(self._timer)
        if self._unbind:
            self._unbind()
        self._close()
