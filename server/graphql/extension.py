"""Request-scoped bookkeeping and error translation for the GraphQL door.

Every answer the library gives during one operation is recorded, and the response carries
`extensions.phloem = {cached}`; an operation marked `@explain` also gets `sql` and `tables` (per metric query,
the SQL it sent or would send, and the table each leaf read — a rollup or the view's own — and why every other
candidate rollup was not used). Library errors become GraphQL errors once, here, with `extensions.code`
(BAD_QUERY, TIMEOUT, WAREHOUSE_ERROR, MODEL_ERROR, INTERNAL_SERVER_ERROR) and never a stack trace.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import strawberry
from graphql import DirectiveLocation, GraphQLDirective, GraphQLError, OperationDefinitionNode
from strawberry.extensions import SchemaExtension

from semantic.project.project import Answer
from server.errors import status_of

log = logging.getLogger("phloem.graphql")

CODES = {"query": "BAD_QUERY", "validation": "BAD_QUERY", "timeout": "TIMEOUT", "warehouse": "WAREHOUSE_ERROR",
         "model": "MODEL_ERROR", "limit": "RESULT_TOO_LARGE"}


@dataclass
class Trace:
    answers: list[Answer] = field(default_factory=list)


_TRACE: ContextVar[Trace | None] = ContextVar("phloem_graphql_trace", default=None)


def record(answer: Answer) -> None:
    trace = _TRACE.get()
    if trace is not None:
        trace.answers.append(answer)


# declared in graphql-core, not as a strawberry directive: strawberry's directive runner would take over every
# resolver and clash with arguments named `root` (metricTree's)
EXPLAIN = GraphQLDirective(
    "explain", locations=[DirectiveLocation.QUERY],
    description="Add the SQL each metric query sent (or would send) to the warehouse, and the tables it read, "
                "to `extensions.phloem`: `query @explain { … }`.")


def with_explain(schema: strawberry.Schema) -> strawberry.Schema:
    """`schema` accepting `query @explain { … }`."""
    schema._schema.directives = (*schema._schema.directives, EXPLAIN)
    return schema


def explained(document, operation_name: str | None) -> bool:
    """Whether the operation being run carries `@explain`."""
    operations = [d for d in getattr(document, "definitions", ()) if isinstance(d, OperationDefinitionNode)]
    chosen = [o for o in operations if operation_name is None or (o.name and o.name.value == operation_name)]
    return any(d.name.value == "explain" for o in chosen[:1] for d in o.directives or ())


class PhloemExtension(SchemaExtension):
    """Adds `extensions.phloem` when the operation ran metric queries (with SQL under `@explain`); gives every
    error a `code`."""

    def on_operation(self) -> Iterator[None]:
        self.trace = Trace()
        token = _TRACE.set(self.trace)
        try:
            yield
        finally:
            _TRACE.reset(token)
        result = self.execution_context.result
        for error in getattr(result, "errors", None) or ():
            if not (error.extensions or {}).get("code"):
                code = "GRAPHQL_PARSE_FAILED" if type(error).__name__ == "GraphQLSyntaxError" else (
                    "GRAPHQL_VALIDATION_FAILED" if error.path is None else "INTERNAL_SERVER_ERROR")
                error.extensions = {**(error.extensions or {}), "code": code}
            original = error.original_error
            if original is not None and not isinstance(original, GraphQLError):
                # raised outside `translated` (a field's value, say): its text is not for the client
                _, body = status_of(original)
                error.message = body["error"]["message"]
                error.extensions = {**error.extensions, "suggestion": body["error"]["suggestion"]}

    def get_results(self) -> dict[str, Any]:
        answers = self.trace.answers
        if not answers:
            return {}
        out = {"cached": all(a.cached for a in answers)}
        context = self.execution_context
        if explained(context.graphql_document, context.operation_name):  # SQL only when asked for
            out |= {"sql": [a.compiled.sql for a in answers], "tables": [a.compiled.plan.tables() for a in answers]}
        return {"phloem": out}


def translated(resolver: Callable) -> Callable:
    """Run a resolver; a library (or warehouse) error leaves it as a GraphQL error with a code and a suggestion."""

    @functools.wraps(resolver)
    def run(*args, **kwargs):
        try:
            return resolver(*args, **kwargs)
        except GraphQLError:
            raise
        except Exception as e:  # noqa: BLE001 - every error a request can cause is translated here, once
            status, body = status_of(e)  # logs anything unexpected with its traceback, server-side only
            error = body["error"]
            message = error["message"] + (f" — {error['suggestion']}" if error.get("suggestion") else "")
            extensions = {"code": CODES.get(error["type"], "INTERNAL_SERVER_ERROR")}
            if error.get("suggestion"):
                extensions["suggestion"] = error["suggestion"]
            if error.get("problems"):
                extensions["problems"] = error["problems"]
            raise GraphQLError(message, extensions=extensions) from None

    return run


def log_errors(errors: list[GraphQLError]) -> None:
    """Errors are the client's answer; the server log gets one line each (unexpected ones were logged in full)."""
    for error in errors:
        log.info("graphql error: %s", error.message)
