"""Admin endpoints for the CLI beside a running server: build and suggest on the server's warehouse connection.

DuckDB lets one process write a database file, so while `phloem serve` holds it, `phloem build` and
`phloem rollups suggest` ask the server to do the work. Only a caller with the admin role may: the local CLI
(it holds the token of the server record, `.phloem/server.json`, mode 0600), or, when auth is on, a key or token
with the role PHLOEM_ADMIN_ROLE (default `admin`).
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict

import orjson
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field

from semantic.errors import ModelError, PhloemError
from server.auth.http import require_admin
from server.errors import body, json_response, status_of

NDJSON = "application/x-ndjson"


class BuildRequest(BaseModel):
    force: bool = Field(False, description="Rebuild even what is up to date.")
    tenant: str | None = Field(None, description="Only this tenant's tables (default: every tenant's).")
    tenants: bool = Field(False, description="Answer reports by tenant (`phloem build` beside the server).")


class SuggestRequest(BaseModel):
    limit: int = Field(5, ge=1, le=100)


def _failure(e: BaseException) -> tuple[int, dict]:
    """The status, and the error as the local command would print it: the CLI's user owns the project, so the
    whole message (translated once: a second `status_of` would log the error again under another id)."""
    status, content = status_of(e)
    return status, body("build", str(e)) if isinstance(e, PhloemError) else content


def router() -> APIRouter:
    api = APIRouter(prefix="/api/v1/admin", tags=["admin"], include_in_schema=False)

    @api.post("/build", summary="Re-read the model files and build what is stale; progress as NDJSON lines")
    async def build(request: Request, req: BuildRequest) -> Response:
        require_admin(request)
        runtime = request.app.state.runtime
        loop = asyncio.get_running_loop()
        lines: asyncio.Queue[bytes | None] = asyncio.Queue()

        def send(item: dict) -> None:
            loop.call_soon_threadsafe(lines.put_nowait, orjson.dumps(item) + b"\n")

        def work() -> None:
            try:
                reloaded = runtime.reload()  # a build builds what the files say now
                if req.tenants or req.tenant:
                    reports = runtime.tenants.build(req.tenant, req.force, progress=lambda who, n, d, t: send(
                        {"progress": [who, n, d, t]}))
                    send({"reports": {who: {"built": r.built, "fresh": r.fresh, "seconds": r.seconds}
                                      for who, r in reports.items()}, "reloaded": reloaded})
                    return
                report = runtime.project.build(force=req.force, progress=lambda n, d, t: send(
                    {"progress": [n, d, t]}))
                send({"report": {"built": report.built, "fresh": report.fresh, "seconds": report.seconds,
                                 "reloaded": reloaded}})
            except Exception as e:  # the answer has started (200): the error travels as the last line
                send({"error": _failure(e)[1]["error"]})
            finally:
                loop.call_soon_threadsafe(lines.put_nowait, None)

        async def stream():
            task = asyncio.ensure_future(run_in_threadpool(work))
            while (line := await lines.get()) is not None:
                yield line
            await task

        return StreamingResponse(stream(), media_type=NDJSON)

    @api.post("/rollups/suggest", summary="Rollups the query log asks for, estimated in the warehouse")
    async def suggest(request: Request, req: SuggestRequest) -> Response:
        from semantic.materialize import suggest as suggesting

        require_admin(request)
        runtime = request.app.state.runtime
        try:
            found = await run_in_threadpool(suggesting.suggest, runtime.project, None, req.limit)
        except Exception as e:
            status, content = _failure(e)
            return json_response(content, status)
        return json_response([{"rollup": s.as_yaml(), "queries": s.queries, "rows": s.rows,
                               "source_rows": s.source_rows} for s in found])

    @api.post("/validate", summary="The model files as they are now, compiled against the server's warehouse")
    async def validate(request: Request) -> Response:
        from semantic.project.load import load_project
        from semantic.project.verify import warehouse_problems

        require_admin(request)
        runtime = request.app.state.runtime

        def check() -> list:
            try:  # the files, not the served version: validate answers for what a build would read
                return warehouse_problems(load_project(runtime.root), runtime.project.engine)
            except ModelError as e:
                return e.problems

        try:
            problems = await run_in_threadpool(check)
        except Exception as e:
            status, content = _failure(e)
            return json_response(content, status)
        return json_response({"problems": [asdict(p) for p in problems]})

    return api
