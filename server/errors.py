"""Library errors to HTTP, translated once: 400 bad query, 422 malformed input, 503 warehouse, 504 timeout."""

from __future__ import annotations

import logging

import duckdb
import orjson
import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response

from semantic.errors import BuildError, ModelError, PhloemError, QueryError, QueryTimeout, WarehouseError
from semantic.limits import ResultTooLarge

log = logging.getLogger("phloem.server")


def body(kind: str, message: str, suggestion: str = "", **extra) -> dict:
    return {"error": {"type": kind, "message": message, "suggestion": suggestion, **extra}}


def status_of(e: BaseException) -> tuple[int, dict]:
    """The HTTP status and body for any error a request can raise; never a stack trace."""
    if isinstance(e, ResultTooLarge):
        return 400, body("limit", e.message, e.suggestion, limit=e.limit)
    if isinstance(e, QueryError):
        return 400, body("query", e.message, e.suggestion)
    if isinstance(e, QueryTimeout):
        return 504, body("timeout", str(e), "narrow the time range or filters, or ask for a coarser grain")
    if isinstance(e, ModelError):
        return 500, body("model", "the model has problems", "", problems=[str(p) for p in e.problems])
    if isinstance(e, duckdb.ProgrammingError | duckdb.DataError | psycopg.ProgrammingError | psycopg.DataError):
        # the warehouse understood and refused this query (a type mismatch in a filter, say): the client's to fix
        return 400, body("query", f"the warehouse rejected the query: {str(e).splitlines()[0]}",
                         "check the types of filter values against the dimensions in /api/v1/meta")
    if isinstance(e, WarehouseError | BuildError | duckdb.Error | psycopg.Error):
        return 503, body("warehouse", str(e).splitlines()[0] if str(e) else type(e).__name__,
                         "the warehouse failed; retry, or check that it is up and the project is built")
    if isinstance(e, PhloemError):
        return 400, body("query", str(e))
    log.exception("unexpected error")
    return 500, body("internal", "internal error", "the server log has the details")


def json_response(content, status_code: int = 200, headers: dict | None = None) -> Response:
    return Response(orjson.dumps(content, default=str), status_code=status_code, media_type="application/json",
                    headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def malformed(_: Request, e: RequestValidationError) -> Response:
        fields = []
        for err in e.errors():
            loc = [str(x) for x in err["loc"] if x != "body"]
            fields.append({"field": ".".join(loc), "message": err["msg"]})
        first = fields[0] if fields else {"field": "", "message": "malformed request"}
        return json_response(body("validation", f"invalid field `{first['field']}`: {first['message']}",
                                  "see /docs for the request schema", fields=fields), 422)

    async def translate(_: Request, e: Exception) -> Response:
        status, content = status_of(e)
        return json_response(content, status)

    # the errors a request can cause are answered here; anything else is logged once and answered 500
    for kind in (PhloemError, duckdb.Error, psycopg.Error, Exception):
        app.add_exception_handler(kind, translate)
