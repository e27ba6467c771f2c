"""REST under /api/v1: meta, query, explain, sql. Parse into a Query, let the library answer, encode."""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Header, Request
from fastapi import Query as QueryParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field

from semantic.limits import Cancel, Reading
from semantic.meta import describe
from semantic.query.query import Query
from server import errors
from server.auth.http import require_admin
from server.encode import ARROW, CSV, JSON, chunks, encode, negotiate
from server.errors import json_response
from server.identity import context_of, project_of
from server.memo import ByIdentity

QUERY_EXAMPLE = {
    "metrics": ["profit", "margin"],
    "dimensions": ["channel", "metric_time__month"],
    "filters": ["country in ('US', 'CA')"],
    "time_range": {"start": "2024-01-01", "end": "2024-12-31"},
    "order_by": ["-profit"],
    "limit": 10,
}
ANSWER = {
    "description": "Typed columns and rows (JSON), or CSV / Arrow IPC stream by the Accept header. "
                   "Header `X-Phloem-Cache` says `hit` or `miss`.",
    "content": {JSON: {"example": {"columns": [{"name": "channel", "type": "string"},
                                               {"name": "profit", "type": "decimal(38,2)"}],
                                   "rows": [["web", 1234.5]], "cached": False}},
                CSV: {"example": "channel,profit\nweb,1234.50\n"}, ARROW: {}},
}


Decimals = Annotated[Literal["number", "string"], QueryParam(
    description="How JSON writes decimal columns (money): `number` (default) writes the exact digits as a JSON "
                "number, e.g. 1234567890123456.78; `string` writes them as a JSON string, \"1234567890123456.78\", "
                "for JSON parsers that read every number as a double.")]


class SqlRequest(BaseModel):
    sql: str = Field(min_length=1, examples=["SELECT channel, MEASURE(gross_revenue) FROM orders GROUP BY 1"])
    params: list[Any] = Field(default_factory=list, description="Values for $1, $2, … in the SQL.")


DATASET_ROWS = 100_000  # rows /api/v1/datasets/{name} returns at most

ERRORS = {
    400: {"description": "The model cannot answer this query: message and suggestion (did you mean …)."},
    422: {"description": "Malformed request: the field and what is wrong with it."},
    503: {"description": "The warehouse failed."},
    504: {"description": "The query ran past the time limit and was cancelled."},
}


def router() -> APIRouter:
    api = APIRouter(prefix="/api/v1", responses=ERRORS)

    @api.get("/meta", summary="Views, dimensions, measures, metrics, the metric tree and the rollups")
    def meta(request: Request) -> Response:
        project = project_of(request)  # only what the caller may see
        project.ensure_catalog()
        return json_response(describe(project.compiler))

    @api.post("/query", summary="Answer a metric query", responses={200: ANSWER})
    async def query(request: Request, q: Annotated[Query, Body(examples=[QUERY_EXAMPLE])],
                    accept: Annotated[str | None, Header()] = None, decimals: Decimals = "number") -> Response:
        runtime, context = request.app.state.runtime, context_of(request)
        project = runtime.project_for(context).scoped(context)  # its tenant's project, as its policies allow
        ticket = runtime.admit(context)  # its roles' limits: at once, per minute, time, rows and bytes
        try:
            answer = project.cached_answer(q, limits=ticket.limits)  # a repeat: no thread hop (~100 µs)
            if answer is None:
                cancel = Cancel()
                answer = await watched(request, cancel, partial(project.open, q, None, True, ticket.timeout, True,
                                                                cancel, HOLD, limits=ticket.limits))
            return answered(answer.table, answer.cached, accept, answer.reading, decimals=decimals,
                            done=ticket.release)
        except BaseException:
            ticket.release()
            raise

    @api.post("/explain", summary="The plan, the tables it reads (rollups and why others were not used) and the SQL")
    def explain(request: Request, q: Annotated[Query, Body(examples=[QUERY_EXAMPLE])]) -> Response:
        compiled = project_of(request).compile(q)
        return json_response({"plan": compiled.plan.describe(), "sql": compiled.sql, "tables": compiled.plan.tables()})

    @api.post("/sql", summary="Semantic SQL over views and the `metrics` table", responses={200: ANSWER})
    async def sql(request: Request, body: SqlRequest, accept: Annotated[str | None, Header()] = None,
                  decimals: Decimals = "number") -> Response:
        runtime, context = request.app.state.runtime, context_of(request)
        door = runtime.sql(context)
        ticket = runtime.admit(context)  # the same per-role limits as /query
        try:
            answer = door.cached_run(body.sql, body.params or None, limits=ticket.limits)
            if answer is None:
                cancel = Cancel()
                answer = await watched(request, cancel, partial(door.open, body.sql, body.params or None, cancel, HOLD,
                                                                timeout=ticket.timeout, limits=ticket.limits))
            return answered(answer.table, answer.cached, accept, answer.reading, decimals=decimals,
                            done=ticket.release)
        except BaseException:
            ticket.release()
            raise

    @api.get("/datasets/{name}", summary="A dataset's rows (built first if needed), at most 100,000",
             responses={200: ANSWER})
    async def dataset(request: Request, name: str,
                      limit: Annotated[int, QueryParam(ge=0, le=DATASET_ROWS)] = 100,
                      accept: Annotated[str | None, Header()] = None, decimals: Decimals = "number") -> Response:
        table = await run_in_threadpool(project_of(request).dataset, name, limit)  # Forbidden when restricted
        return answered(table, False, accept, decimals=decimals)

    @api.post("/reload", summary="Re-read the model files (a broken model keeps the running version)")
    def reload(request: Request) -> Response:
        if request.app.state.auth.enabled:  # the loopback demo without auth reloads for anyone, as before
            require_admin(request)
        runtime = request.app.state.runtime
        changed = runtime.reload()
        return json_response({"reloaded": changed, "version": runtime.version})

    return api


HOLD = 32 * 2**20  # bytes of an answer read before its response starts: up to here, one over the limits is a 4xx
STREAM_ROWS = 65_536  # answers with more rows are encoded batch by batch in worker threads, not in one go
DISCONNECT_POLL = 0.1  # seconds between checks that the client is still there while its query runs


async def watched(request: Request, cancel: Cancel, fn, *args):
    """`fn(*args)` in a worker thread; a client that disconnects meanwhile cancels its warehouse query (every door
    over HTTP — REST, the explorer API, GraphQL — runs its queries this way, passing `cancel` down to them)."""
    work = asyncio.ensure_future(run_in_threadpool(fn, *args))
    while True:
        done, _ = await asyncio.wait({work}, timeout=DISCONNECT_POLL)
        if done:
            return work.result()
        if await request.is_disconnected():
            cancel()
            return await work  # QueryCancelled, or the answer if it was done: either way nobody reads it


def answered(table, cached: bool, accept: str | None, reading: Reading | None = None,
             decimals: str = "number", done=None) -> Response:
    """The answer's response; `done()` is called once its last byte is made (a query's admission ends there)."""
    kind = negotiate(accept)
    headers = {"X-Phloem-Cache": "hit" if cached else "miss"}
    if reading is None and table.num_rows <= STREAM_ROWS:
        response = Response(_encoded(table, kind, cached, decimals), media_type=kind, headers=headers)
        if done is not None:
            done()
        return response
    if reading is not None:
        schema, batches = reading.schema, reading.batches()
    else:
        schema, batches = table.schema, iter(table.to_batches(max_chunksize=STREAM_ROWS))
    body = chunks(schema, batches, kind, failed=lambda e: errors.status_of(e)[1], decimals=decimals, cached=cached)
    return _Streamed(_off_loop(body, reading, done), media_type=kind, headers=headers)


async def _off_loop(body, reading: Reading | None, done=None):
    """The body's pieces, each made in a worker thread (the event loop keeps answering /healthz); a client that
    goes away mid-stream stops the warehouse query."""
    try:
        while (chunk := await run_in_threadpool(next, body, None)) is not None:
            yield chunk
    finally:  # no thread is inside `body` now (a worker's batch is awaited even when cancelled)
        if reading is not None:
            reading.interrupt()
        body.close()  # closes the warehouse cursor
        if done is not None:
            done()


class _Streamed(StreamingResponse):
    """A StreamingResponse that closes its body when the client leaves (Starlette only stops iterating it)."""

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()


_ENCODED = ByIdentity()  # bodies of the answers being repeated (a cache hit is the same table again)


def _encoded(table, kind: str, cached: bool, decimals: str) -> bytes:
    body = _ENCODED.get(table, (kind, cached, decimals))
    if body is None:
        body = _ENCODED.put(table, (kind, cached, decimals), encode(table, kind, decimals, cached=cached))
    return body
