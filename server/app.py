"""The FastAPI app factory: REST, GraphQL and semantic SQL over one Runtime."""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from semantic.limits import Limits
from server import admin, errors, explore, explorer, rest
from server.errors import json_response
from server.runtime import Runtime


def create_app(project: Path | str | Runtime, timeout: float | None = 30.0, limits: Limits | None = None) -> FastAPI:
    runtime = project if isinstance(project, Runtime) else Runtime(project, timeout=timeout, limits=limits)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        runtime.close()

    app = FastAPI(title="Phloem", version="0.1.0", lifespan=lifespan,
                  description="A semantic layer on activity streams: metrics by any dimensions, over REST, "
                              "GraphQL (/graphql), semantic SQL and the PostgreSQL wire protocol.")
    app.state.runtime = runtime
    errors.install(app)
    app.include_router(rest.router())
    app.include_router(explore.router())
    app.include_router(admin.router())
    _mount_graphql(app, runtime)
    app.include_router(explorer.router())

    @app.get("/healthz", summary="The process is up")
    async def healthz() -> Response:  # on the event loop: no worker thread, so busy workers cannot delay it
        return json_response({"status": "ok"})

    @app.get("/readyz", summary="The warehouse answers and the project is built")
    async def readyz(request: Request) -> Response:
        try:
            await run_in_threadpool(runtime.project.ensure_built)
            await run_in_threadpool(runtime.project.engine.rows, "select 1")
        except Exception as e:  # not ready is an answer, not an error
            status, content = errors.status_of(e)
            return json_response(status_code=503, content={"status": "not ready", **content})
        return json_response({"status": "ready", "version": runtime.version})

    return app


def _mount_graphql(app: FastAPI, runtime: Runtime) -> None:
    try:
        from server.graphql import graphql_router
    except ImportError:  # the GraphQL door is optional while it is being built
        return
    router = graphql_router(runtime)
    if hasattr(router, "routes"):
        app.include_router(router, prefix="/graphql")
    else:
        app.mount("/graphql", router)
