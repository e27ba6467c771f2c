"""Library errors to HTTP, translated once: 400 bad query, 422 malformed input, 503 warehouse, 504 timeout.

What a client reads is the library's message and suggestion, or for a warehouse error a message in our words:
never the SQL we generated, a file path, a Python or driver class name, or a traceback. Failures that are not
the client's (503, 500) carry an error id; the server log has the detail under that id.
"""

from __future__ import annotations

import logging
import math
import re
import secrets

import duckdb
import orjson
import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException

from semantic.errors import (
    BuildError,
    Forbidden,
    LimitExceeded,
    ModelError,
    PhloemError,
    QueryError,
    QueryTimeout,
    Unauthenticated,
    WarehouseError,
)
from semantic.limits import ResultTooLarge

log = logging.getLogger("phloem.server")

TYPES_HINT = "check the types of filter values against the dimensions in /api/v1/meta"
# DuckDB and PostgreSQL refusals, said in our words ({0}, {1}: the groups); anything else gets a generic sentence
WAREHOUSE_SAYS = [
    (re.compile(r"Cannot compare values of type (\w+) and type (\w+)"), "cannot compare {0} values with {1} values"),
    (re.compile(r"Could not convert string '(.{0,60})' to (\w+)"), "`{0}` is not a valid {1}"),
    (re.compile(r"Could not convert (?:string )?(.{0,60}) to (\w+)"), "{0} is not a valid {1}"),
    (re.compile(r"invalid input syntax for type ([\w ]+): \"(.{0,60})\""), "`{1}` is not a valid {0}"),
    (re.compile(r"No function matches the given name and argument types '([^'(]+)\("),
     "`{0}` does not take arguments of these types"),
    (re.compile(r"(?:Scalar |Table |Aggregate )?Function with name \"?(\w+)\"? does not exist"), "unknown function `{0}`"),
    (re.compile(r"function (\w+)\([^)]*\) does not exist"), "no function `{0}` takes arguments of these types"),
    (re.compile(r"operator does not exist: ([\w ]+?) (\S+) ([\w ]+)"), "cannot apply `{1}` to a {0} and a {2}"),
    (re.compile(r"argument of (\w+) must be type boolean"), "the {0} condition is not a true/false expression"),
    (re.compile(r"Cannot mix values of type (\w+) and (\w+)"), "cannot mix {0} and {1} values"),
    (re.compile(r"Overflow in .{0,40}|out of range|Out of Range", re.I), "a number is out of range"),
    (re.compile(r"[Dd]ivision by zero"), "division by zero"),
]
OPERATORS = {"~~": "LIKE", "!~~": "NOT LIKE", "~~*": "ILIKE", "!~~*": "NOT ILIKE"}


def body(kind: str, message: str, suggestion: str = "", **extra) -> dict:
    return {"error": {"type": kind, "message": message, "suggestion": suggestion, **extra}}


def error_id() -> str:
    return secrets.token_hex(6)


def warehouse_refusal(e: BaseException) -> str:
    """What the warehouse refused in this query, in our words: its types and function names, not its text."""
    text = str(getattr(getattr(e, "diag", None), "message_primary", None) or e)
    for pattern, sentence in WAREHOUSE_SAYS:
        found = pattern.search(text)
        if found:
            parts = [OPERATORS.get(g, g).replace("_LITERAL", "").lower() if g else "" for g in found.groups()]
            return "the warehouse rejected the query: " + sentence.format(*parts)
    return "the warehouse rejected the query"


def status_of(e: BaseException) -> tuple[int, dict]:
    """The HTTP status and body for any error a request can raise; never a stack trace."""
    if isinstance(e, Unauthenticated):
        return 401, body("auth", e.message, e.suggestion or "send `Authorization: Bearer <API key or JWT>`")
    if isinstance(e, Forbidden):
        return 403, body("forbidden", e.message, e.suggestion)
    if isinstance(e, LimitExceeded):
        return 429, body("limit", e.message, e.suggestion, retry_after=e.retry_after)
    if isinstance(e, ResultTooLarge):
        return 400, body("limit", e.message, e.suggestion, limit=e.limit)
    if isinstance(e, QueryError):
        return 400, body("query", e.message, e.suggestion or "see /api/v1/meta for the model's names")
    if isinstance(e, QueryTimeout):
        return 504, body("timeout", str(e), "narrow the time range or filters, or ask for a coarser grain")
    if isinstance(e, ModelError):
        return 500, body("model", "the model has problems", "fix the model files and reload",
                         problems=[str(p) for p in e.problems])
    if isinstance(e, RecursionError):  # only a deeply nested request recurses this far
        return 400, body("query", "the request is nested too deeply", "write it with fewer nested parentheses")
    if isinstance(e, OverflowError):  # a client's date or number past what Python or the warehouse can hold
        return 400, body("query", "a date or number in the request is out of range",
                         "use dates from 0001-01-01 to 9999-12-31 (with room for a comparison period) and "
                         "numbers of ordinary size")
    if isinstance(e, duckdb.ProgrammingError | duckdb.DataError | psycopg.ProgrammingError | psycopg.DataError):
        # the warehouse understood and refused this query (a type mismatch in a filter, say): the client's to fix
        ref = error_id()
        log.info("warehouse refused a query [%s]: %s", ref, e)
        return 400, body("query", warehouse_refusal(e), TYPES_HINT, id=ref)
    if isinstance(e, WarehouseError | BuildError | duckdb.Error | psycopg.Error):
        ref = error_id()
        log.error("warehouse error [%s]: %s: %s", ref, type(e).__name__, e)
        return 503, body("warehouse", f"the warehouse failed (error id {ref})",
                         "retry, or check that the warehouse is up and the project is built; the server log "
                         "has the details under this id", id=ref)
    if isinstance(e, PhloemError):
        return 400, body("query", str(e), "see /api/v1/meta for the model's names")
    ref = error_id()
    log.error("unexpected error [%s]", ref, exc_info=e)
    return 500, body("internal", f"internal error (error id {ref})", "the server log has the details under this id",
                     id=ref)


def retry_after(e: BaseException) -> dict | None:
    """`Retry-After` (whole seconds, at least 1) for a limit that says when to come back."""
    wait = getattr(e, "retry_after", None) if isinstance(e, LimitExceeded) else None
    return {"Retry-After": str(max(1, math.ceil(wait)))} if wait is not None else None


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

    @app.exception_handler(HTTPException)
    async def refused(_: Request, e: HTTPException) -> Response:  # 404, 405 …: the same error shape as the rest
        hint = "see /docs for the endpoints and their methods" if e.status_code in (404, 405) else "see /docs"
        return json_response(body("http", str(e.detail), hint), e.status_code, getattr(e, "headers", None))

    async def translate(_: Request, e: Exception) -> Response:
        status, content = status_of(e)
        return json_response(content, status, headers=retry_after(e))

    # the errors a request can cause are answered here; anything else is logged once and answered 500
    for kind in (PhloemError, duckdb.Error, psycopg.Error, OverflowError, RecursionError, Exception):
        app.add_exception_handler(kind, translate)
