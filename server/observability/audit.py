"""The audit log: who queried what. One JSON line per metric query to the logger `phloem.audit`, and to the
file PHLOEM_AUDIT_LOG when it is set (appended, flushed every line, rotated past PHLOEM_AUDIT_LOG_MAX_BYTES).

A line says who (user, roles, tenant), through which door and request (query_id), what (metrics, dimensions,
filters, time range), and the outcome (status, error type, rows, seconds, cached, rollups). Never a token or a
password: the security context carries neither, and only its user, roles and tenant are written.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Mapping
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Any

import orjson

from semantic.events import Event, QueryEvent

log = logging.getLogger("phloem.audit")
MAX_BYTES = 100 * 2**20
BACKUPS = 5


def line_of(event: QueryEvent) -> dict[str, Any]:
    return {
        "time": dt.datetime.fromtimestamp(event.time, dt.UTC).isoformat(timespec="milliseconds"),
        "user": event.user, "roles": list(event.roles), "tenant": event.tenant, "door": event.door,
        "query_id": event.query_id, "metrics": list(event.metrics), "dimensions": list(event.dimensions),
        "filters": list(event.filters), "time_range": event.time_range, "rows": event.rows,
        "status": event.status, "error": event.error, "seconds": round(event.seconds, 6), "cached": event.cached,
        "rollups": list(event.rollups)}


def record(event: Event) -> None:
    """The event subscriber: a line per QueryEvent (skipped cheaply when nothing listens at INFO)."""
    if isinstance(event, QueryEvent) and log.isEnabledFor(logging.INFO):
        fields = line_of(event)
        log.info("query %s by %s: %s", event.status, event.user, ", ".join(event.metrics), extra={"fields": fields})


class AuditFileFormatter(logging.Formatter):
    """Just the audit fields, as one JSON object a line."""

    def format(self, record: logging.LogRecord) -> str:
        return orjson.dumps(getattr(record, "fields", {}), default=str).decode()


_file: RotatingFileHandler | None = None


def to_file(path: str | Path | None, max_bytes: int = MAX_BYTES, backups: int = BACKUPS) -> None:
    """Write the audit lines to `path` too (None: stop); one file at a time."""
    global _file
    if _file is not None:
        if path is not None and Path(_file.baseFilename) == Path(path).resolve() and _file.maxBytes == max_bytes:
            return
        log.removeHandler(_file)
        _file.close()
        _file = None
    if path is None:
        log.setLevel(logging.NOTSET)
        return
    # RotatingFileHandler appends, flushes each line, and rolls over to path.1 … path.N past max_bytes
    _file = RotatingFileHandler(path, mode="a", maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
    _file.setFormatter(AuditFileFormatter())
    log.addHandler(_file)
    log.setLevel(logging.INFO)  # the file gets every line, whatever level the console logs at


_seen: tuple | None = None  # the settings from_env last applied


def from_env(environ: Mapping[str, str] = os.environ) -> None:
    """PHLOEM_AUDIT_LOG=/path turns the file on; PHLOEM_AUDIT_LOG_MAX_BYTES (default 100 MiB) rotates it.
    Unchanged settings change nothing (every app and pg server of a process calls this)."""
    global _seen
    path = environ.get("PHLOEM_AUDIT_LOG") or None
    size = environ.get("PHLOEM_AUDIT_LOG_MAX_BYTES")
    if (path, size) == _seen:
        return
    _seen = (path, size)
    try:
        max_bytes = int(size) if size else MAX_BYTES
    except ValueError:
        raise ValueError(f"PHLOEM_AUDIT_LOG_MAX_BYTES must be a number of bytes, not {size!r}") from None
    to_file(path, max_bytes)
