"""Each HTTP request: its query id (the client's X-Request-Id when sane, else a new one, echoed back) and door
set for the library's events, counted by route template and status, and logged once (`Observed`, outermost);
its security context handed to the events once auth has made it (`Identified`, inside auth)."""

from __future__ import annotations

import logging
import time

from semantic import events
from server.observability.metrics import HTTP_REQUESTS, HTTP_SECONDS

log = logging.getLogger("phloem.http")
HEADER = b"x-request-id"
UNMATCHED = "(unmatched)"  # the route label of requests no route took (404s, auth's 401s): never the raw path
EXPLORE = ("/api/v1/tree", "/api/v1/periods", "/api/v1/drill", "/api/v1/whatif")


def door_of(path: str) -> str:
    if path.startswith("/graphql"):
        return "graphql"
    if path.startswith("/api/v1/sql"):
        return "sql"
    if path.startswith(EXPLORE):
        return "explore"
    if path.startswith("/api/v1/admin"):
        return "admin"
    return "rest"


def request_id(scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == HEADER:
            given = events.sane_request_id(value.decode("latin-1"))
            if given is not None:
                return given
            break
    return events.new_query_id()


def route_template(scope, path: str, root: str) -> str:
    """The matched route's template (`/api/v1/datasets/{name}`): the path with its parameters' values put back
    as their names, which holds however the framework nests routers; a mounted app (static files) is
    `<mount>/{path}`; UNMATCHED when no route took it. Never a path a client made up: labels stay few."""
    if scope.get("route") is None:
        if scope.get("endpoint") is None:
            return UNMATCHED
        mounted = scope.get("root_path", "")
        if mounted != root and mounted.startswith(root):  # a Mount moved its prefix into root_path
            return mounted[len(root):] + "/{path}"
    for name, value in (scope.get("path_params") or {}).items():
        value = str(value)
        if value and path.endswith("/" + value):  # the last segment, or a {path:path} tail
            path = path[:-len(value)] + "{" + name + "}"
        elif value:
            head, sep, tail = path.rpartition("/" + value + "/")
            path = f"{head}/{{{name}}}/{tail}" if sep else path
    return path


class Observed:
    """ASGI middleware (pure ASGI, so a streamed answer passes through untouched)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        rid = request_id(scope)
        path, root = scope["path"], scope.get("root_path", "")
        state = scope.setdefault("state", {})  # Request.state: the auth middleware inside puts the context here
        tokens = events.query_id.set(rid), events.door.set(door_of(path))
        status = 500  # unless a response starts
        started = time.perf_counter()

        async def sending(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (HEADER, rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            seconds = time.perf_counter() - started
            template = route_template(scope, path, root)
            HTTP_REQUESTS.labels(template, str(status)).inc()
            HTTP_SECONDS.labels(template).observe(seconds)
            if log.isEnabledFor(logging.INFO):
                who = state.get("context")
                log.info("%s %s %s", scope["method"], path, status, extra={
                    "route": template, "status": status, "seconds": round(seconds, 6),
                    "user": getattr(who, "user", None)})
            events.query_id.reset(tokens[0])
            events.door.reset(tokens[1])


class Identified:
    """ASGI middleware placed inside the auth middleware: the request's security context (`request.state.context`,
    which auth set) becomes `semantic.events.current_context`, so the library's events say who asked."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        context = scope.get("state", {}).get("context") if scope["type"] == "http" else None
        if context is None:
            return await self.app(scope, receive, send)
        token = events.current_context.set(context)
        try:
            await self.app(scope, receive, send)
        finally:
            events.current_context.reset(token)
