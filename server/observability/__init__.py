"""Observability: Prometheus metrics (/metrics), JSON or text logs with query ids, and the audit log.

`install()` subscribes the metrics and the audit log to the library's events (once per process); for an HTTP
app, `identify(app)` goes before the auth middleware is added (so it runs inside it) and `mount(app)` after
(so it runs outside: even a 401 gets its request id and is counted).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from fastapi import FastAPI
from fastapi.responses import Response

from semantic import events
from server.observability import audit, metrics
from server.observability.http import Identified, Observed


def install(environ: Mapping[str, str] = os.environ) -> None:
    events.subscribe(metrics.count)
    events.subscribe(audit.record)
    audit.from_env(environ)


def identify(app: FastAPI) -> None:
    app.add_middleware(Identified)


def mount(app: FastAPI) -> None:
    install()
    app.add_middleware(Observed)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:  # on the event loop: a scrape takes about a millisecond
        body, kind = metrics.exposition()
        return Response(body, media_type=kind)
