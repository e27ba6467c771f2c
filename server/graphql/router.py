"""GraphQL over HTTP: GraphiQL on GET, operations on POST (and GET with `?query=`), always on the current schema.

GraphiQL's scripts and styles are served under `<path>/assets/` from the installed graphene-django-graphiql-static
package (its static files only; it needs no Django), so the page loads with no CDN, offline or behind a firewall.

The schema is rebuilt whenever the runtime reloads a changed model and swapped in one assignment, so a
request runs entirely on one model version. Operations execute in the thread pool (`execute_sync`), so a
long warehouse query never blocks the event loop, and a client that disconnects cancels it.
"""

from __future__ import annotations

import functools
import logging
import threading
from pathlib import Path
from typing import Any

import graphene_django_graphiql_static
import orjson
import strawberry
from cachetools import LRUCache
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from strawberry.exceptions import MissingQueryError
from strawberry.http import process_result
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.types.graphql import OperationType

from semantic import Project
from semantic.access.context import SecurityContext
from semantic.limits import Cancel
from server.graphql.schema import build_schema
from server.identity import context_of
from server.rest import watched
from server.runtime import Runtime

log = logging.getLogger("phloem.graphql")

GRAPHIQL_ASSETS = Path(graphene_django_graphiql_static.__file__).parent / "static" / "graphene_django_graphiql_static"
GRAPHIQL_PAGE = (Path(__file__).parent / "graphiql.html").read_text()


class LiveSchema:
    """The schema of the runtime's current project; `runtime.reload()` swaps in a new one.

    A restricted caller gets the schema of what its access may see (built once per access key and model
    version), so a hidden member is not in its introspection at all.
    """

    def __init__(self, runtime: Runtime):
        self.runtime = runtime
        self.project = runtime.project
        self.schema: strawberry.Schema = build_schema(self.project, runtime.timeout)
        self._scoped: LRUCache = LRUCache(maxsize=256)  # access key → schema of self.project as it sees it
        self._lock = threading.Lock()
        runtime.on_reload(self.rebuild)

    def rebuild(self, project: Project) -> None:
        try:
            schema = build_schema(project, self.runtime.timeout)
        except Exception:  # the old schema keeps answering (on the old model version) rather than none at all
            log.exception("the GraphQL schema of model version %s could not be built", project.model.version)
            return
        with self._lock:
            self.project, self.schema, self._scoped = project, schema, LRUCache(maxsize=256)

    async def schema_for(self, context: SecurityContext) -> strawberry.Schema:
        project, schema, built = self.project, self.schema, self._scoped  # one model version throughout
        scoped = project.scoped(context)
        if scoped is project:
            return schema
        with self._lock:
            hit = built.get(scoped.access.key)
        if hit is None:  # built in a worker thread: a new role's first request must not stall the event loop
            hit = await run_in_threadpool(build_schema, scoped, self.runtime.timeout)
            with self._lock:
                built[scoped.access.key] = hit
        return hit


def graphql_router(runtime: Runtime, path: str = "") -> APIRouter:
    """Routes for the GraphQL door; include with `app.include_router(graphql_router(runtime), prefix="/graphql")`.

    The router's `live` attribute is its `LiveSchema` (the current `schema`, and the `project` it was built from).
    """
    live = LiveSchema(runtime)
    router = APIRouter(tags=["graphql"])
    router.live = live  # type: ignore[attr-defined]
    router.mount(path + "/assets", StaticFiles(directory=GRAPHIQL_ASSETS), name="graphiql-assets")

    @router.get(path, summary="GraphiQL (or a query operation in `?query=`)", response_class=HTMLResponse)
    async def graphiql(request: Request) -> Response:
        params = request.query_params
        if "query" not in params:
            return HTMLResponse(GRAPHIQL_PAGE.replace("__ASSETS__", request.url.path.rstrip("/") + "/assets"))
        try:
            variables = orjson.loads(params["variables"]) if params.get("variables") else None
        except orjson.JSONDecodeError:
            return _refused("`variables` is not JSON")
        return await _execute(request, runtime, await live.schema_for(context_of(request)), params["query"], variables,
                              params.get("operationName"))

    @router.post(path, summary="Run a GraphQL operation: {query, variables?, operationName?}")
    async def graphql(request: Request) -> Response:
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return _refused("the request body is not JSON")
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            return _refused("the request body needs a `query` string (and may have `variables`, `operationName`)")
        variables = body.get("variables")
        if variables is not None and not isinstance(variables, dict):
            return _refused("`variables` must be a JSON object")
        return await _execute(request, runtime, await live.schema_for(context_of(request)), body["query"], variables,
                              body.get("operationName"))

    return router


async def _execute(request: Request, runtime: Runtime, schema: strawberry.Schema, query: str,
                   variables: dict | None, operation: str | None) -> Response:
    cancel = Cancel()  # a client that disconnects cancels the operation's warehouse queries
    ticket = runtime.admit(context_of(request))  # one operation: one of its roles' slots (429)
    run = functools.partial(schema.execute_sync, query, variable_values=variables, operation_name=operation,
                            context_value={"cancel": cancel, "ticket": ticket},
                            allowed_operation_types={OperationType.QUERY})
    try:
        result = await watched(request, cancel, run)
    except (MissingQueryError, CannotGetOperationTypeError, InvalidOperationTypeError) as e:
        return _refused(str(e) or type(e).__name__)
    finally:
        ticket.release()
    return _json(process_result(result))


def _refused(message: str) -> Response:
    return _json({"errors": [{"message": message, "extensions": {"code": "BAD_REQUEST"}}]}, 400)


def _json(content: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type="application/json")
