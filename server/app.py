"""The FastAPI app factory: REST, GraphQL and semantic SQL over one Runtime."""

from __future__ import annotations

from contextlib import asynccontextmanager
from importlib import metadata
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles

from semantic.limits import Limits
from server import admin, errors, explore, explorer, observability, rest
from server.auth import Authenticator
from server.auth.http import Authenticate
from server.errors import json_response
from server.graphql import graphql_router
from server.runtime import Runtime


def create_app(project: Path | str | Runtime, timeout: float | None = 30.0, limits: Limits | None = None,
               auth: Authenticator | None = None) -> FastAPI:
    """`auth`: who may ask (default: from PHLOEM_API_KEYS_FILE, PHLOEM_JWT_* and PHLOEM_JWKS; none set: anyone)."""
    runtime = project if isinstance(project, Runtime) else Runtime(project, timeout=timeout, limits=limits)
    auth = auth if auth is not None else Authenticator.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        runtime.close()

    # /docs is served below from installed assets; ReDoc is off, as FastAPI's only loads from a CDN
    app = FastAPI(title="Phloem", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="A semantic layer on activity streams: metrics by any dimensions, over REST, "
                              "GraphQL (/graphql), semantic SQL and the PostgreSQL wire protocol.")
    app.state.runtime = runtime
    app.state.auth = auth
    observability.identify(app)  # inside auth: who asked reaches the library's events
    app.add_middleware(Authenticate, auth=auth)  # every request but the probes and static pages: see auth.http.OPEN
    observability.mount(app)  # outside auth: /metrics, request ids, HTTP counts (docs/observability.md)
    errors.install(app)
    _mount_docs(app)
    app.include_router(rest.router())
    app.include_router(explore.router())
    app.include_router(admin.router())
    app.include_router(graphql_router(runtime), prefix="/graphql")
    app.include_router(explorer.router())

    @app.get("/healthz", summary="The process is up")
    async def healthz() -> Response:  # on the event loop: no worker thread, so busy workers cannot delay it
        return json_response({"status": "ok"})

    @app.get("/readyz", summary="The warehouse answers and the project is built")
    async def readyz(request: Request) -> Response:
        try:
            await run_in_threadpool(runtime.ensure_built)  # every tenant's, when there are tenants
            await run_in_threadpool(runtime.project.engine.rows, "select 1")
        except Exception as e:  # not ready is an answer, not an error
            status, content = errors.status_of(e)
            return json_response(status_code=503, content={"status": "not ready", **content})
        return json_response({"status": "ready", "version": runtime.version})

    return app


def _mount_docs(app: FastAPI) -> None:
    """Swagger UI at /docs, every asset from the installed swagger-ui-bundle-v2: no CDN, so it works offline."""
    app.mount("/docs/assets", StaticFiles(directory=swagger_ui_assets()), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs(request: Request) -> Response:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(
            openapi_url=root + app.openapi_url, title=f"{app.title} — API",
            swagger_js_url=f"{root}/docs/assets/swagger-ui-bundle.js",
            swagger_css_url=f"{root}/docs/assets/swagger-ui.css",
            swagger_favicon_url=f"{root}/docs/assets/favicon-32x32.png",
            swagger_ui_parameters={"validatorUrl": None})  # the default badge asks validator.swagger.io


def swagger_ui_assets() -> Path:
    """Swagger UI's folder, found through the declared distribution: its module `swagger_ui_bundle` has the name
    of the older swagger-ui-bundle (Swagger UI 4, no OpenAPI 3.1), so importing it by name could find that one."""
    package = Path(metadata.distribution("swagger-ui-bundle-v2").locate_file("swagger_ui_bundle"))
    return max((package / "vendor").glob("swagger-ui-*"))
