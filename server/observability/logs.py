"""Log lines as JSON (PHLOEM_LOG_FORMAT=json) or as text (the default, for the local demo).

Every line carries the current query id and door (semantic.events' context variables), so one request can be
followed through the HTTP or PostgreSQL door, the library and the warehouse.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import sys
from collections.abc import Mapping
from typing import Any

import orjson

from semantic import events

# what every LogRecord has; anything else on a record came from `extra=` and is written as a field
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}
FORMATS = ("text", "json")


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}
    fields.update(fields.pop("fields", None) or {})  # a whole record of fields (the audit log's)
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC, ISO 8601), level, logger, message, query_id, door, then extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "message": record.getMessage(),
            "query_id": events.query_id.get(), "door": events.door.get()}
        data.update(_fields(record))
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(data, default=str).decode()


class TextFormatter(logging.Formatter):
    """`time level logger [query id]: message {fields}` for a person at a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(query)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        qid = events.query_id.get()
        record.query = f" [{qid}]" if qid else ""
        line = super().format(record)
        del record.query
        fields = _fields(record)
        return f"{line} {orjson.dumps(fields, default=str).decode()}" if fields else line


def log_format(environ: Mapping[str, str] = os.environ) -> str:
    value = (environ.get("PHLOEM_LOG_FORMAT") or "text").strip().lower()
    if value not in FORMATS:
        raise ValueError(f"PHLOEM_LOG_FORMAT must be text or json, not {value!r}")
    return value


def configure(environ: Mapping[str, str] = os.environ, stream=None) -> str:
    """Send the process's logs to stderr in PHLOEM_LOG_FORMAT, at PHLOEM_LOG_LEVEL (json: INFO, text: WARNING,
    so the demo stays quiet); returns the format. uvicorn's own logs join them when it is given log_config=None."""
    kind = log_format(environ)
    level = (environ.get("PHLOEM_LOG_LEVEL") or ("INFO" if kind == "json" else "WARNING")).strip().upper()
    if level not in logging.getLevelNamesMapping():
        raise ValueError(f"PHLOEM_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, not {level!r}")
    if kind == "text" and not environ.get("PHLOEM_LOG_LEVEL"):
        # the demo as it always was: warnings through Python's last-resort handler. (A root handler made the
        # first large query of a served process hold the event loop ~200 ms in tests/server/test_limits.py.)
        return kind
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if kind == "json" else TextFormatter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "phloem", False)]:
        root.removeHandler(old)
    handler.phloem = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    return kind
