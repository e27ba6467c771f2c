"""What the library did, told to whoever listens: a `QueryEvent` per answered query, a `BuildEvent` per build.

The server's /metrics, logs and audit log subscribe (`subscribe(fn)`); the library only emits. A door sets the
context variables once per request (`door`, `query_id`, `current_context`) and every event made while it is
handled carries them, in worker threads too (the doors copy their context into the threads they use).
A subscriber that raises is logged and skipped: listening must never fail a query.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import logging
import re
import secrets
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal

from semantic.access.context import SecurityContext

log = logging.getLogger("phloem.events")

ANONYMOUS = SecurityContext.anonymous()
REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")  # a client's X-Request-Id is used only when it is this sane

door: ContextVar[str] = ContextVar("phloem_door", default="library")  # rest | graphql | sql | explore | pg | …
query_id: ContextVar[str | None] = ContextVar("phloem_query_id", default=None)  # None: each event gets its own
current_context: ContextVar[SecurityContext] = ContextVar("phloem_context", default=ANONYMOUS)


_PROCESS = secrets.token_hex(4)  # ids are this process's random prefix and a counter: unique, and no syscall each
_counter = itertools.count(secrets.randbelow(2**32))


def new_query_id() -> str:
    """16 hex digits."""
    return f"{_PROCESS}{next(_counter) & 0xFFFFFFFF:08x}"


def sane_request_id(value: str | None) -> str | None:
    """`value` when it is a token safe to log and echo (≤64 of [A-Za-z0-9._-]), else None."""
    return value if value is not None and REQUEST_ID.fullmatch(value) else None


@dataclass(slots=True)  # read-only by convention: a frozen dataclass's __init__ costs 3× on a cache hit's path
class QueryEvent:
    door: str
    query_id: str
    user: str
    roles: tuple[str, ...]
    tenant: str | None
    metrics: tuple[str, ...]
    dimensions: tuple[str, ...]
    filters: tuple[str, ...]  # as the client wrote them (structured filters as `dim op values`)
    time_range: str | None
    rows: int | None  # None: streamed (the count is not known when the answer starts) or failed
    seconds: float  # until the answer was ready (for a streamed answer: until its first batch)
    cached: bool  # from the result cache
    rollups: tuple[str, ...]  # the rollups that answered some of its leaf measures
    leaves: int  # leaf measures in the plan (0 when it failed before planning)
    rollup_leaves: int  # of those, how many a rollup answered
    status: Literal["ok", "error"]
    error: str | None  # the error's type, e.g. QueryError
    time: float  # when it finished, seconds since the epoch


@dataclass(slots=True)
class BuildEvent:
    door: str
    query_id: str
    built: tuple[str, ...]  # tables (re)built; empty when everything was fresh or it failed
    seconds: float
    status: Literal["ok", "error"]
    error: str | None  # the error's type, e.g. BuildError
    message: str | None  # the error's message (for the operator's log)
    time: float


Event = QueryEvent | BuildEvent
_subscribers: list[Callable[[Event], Any]] = []


def subscribe(fn: Callable[[Event], Any]) -> Callable[[Event], Any]:
    """Call `fn(event)` for every event from now on (once, however often it is subscribed)."""
    if fn not in _subscribers:
        _subscribers.append(fn)
    return fn


def unsubscribe(fn: Callable[[Event], Any]) -> None:
    if fn in _subscribers:
        _subscribers.remove(fn)


def listening() -> bool:
    return bool(_subscribers)


def emit(event: Event) -> None:
    for fn in tuple(_subscribers):
        try:
            fn(event)
        except Exception:  # a broken listener is the operator's problem, never the query's
            log.exception("event subscriber %r failed", getattr(fn, "__qualname__", fn))


def context_now(context: SecurityContext | None = None) -> SecurityContext:
    """The security context of what is happening now: the one passed in, else the door's."""
    return context if context is not None else current_context.get()


def _filter_text(f: Any) -> str:
    if isinstance(f, str):
        return f
    values = f.values
    if f.op in ("in", "not in"):
        return f"{f.dimension} {f.op} ({', '.join(map(repr, values))})"
    if f.op == "between" and len(values) == 2:
        return f"{f.dimension} between {values[0]!r} and {values[1]!r}"
    if not values:
        return f"{f.dimension} {f.op}"
    return f"{f.dimension} {f.op} {values[0]!r}"


def query_event(query: Any, answer: Any, seconds: float, error: BaseException | None = None,
                context: SecurityContext | None = None) -> QueryEvent:
    """The event of `query` answered by `answer` (a Project's Answer) or failed with `error`."""
    ctx = context_now(context)
    leaves = answer.compiled.plan.leaves if answer is not None else ()
    used = [leaf.rollup.spec.name for leaf in leaves if leaf.rollup is not None]
    table = getattr(answer, "table", None)
    tr = getattr(query, "time_range", None)
    return QueryEvent(
        door=door.get(), query_id=query_id.get() or new_query_id(), user=ctx.user, roles=tuple(sorted(ctx.roles)),
        tenant=ctx.tenant, metrics=tuple(getattr(query, "metrics", ())),
        dimensions=tuple(getattr(query, "dimensions", ())),
        filters=tuple(_filter_text(f) for f in getattr(query, "filters", ())),
        time_range=f"{tr.start or '…'} → {tr.end or '…'}" if tr is not None else None,
        rows=table.num_rows if table is not None else None, seconds=seconds,
        cached=bool(answer is not None and answer.cached), rollups=tuple(dict.fromkeys(used)),
        leaves=len(leaves), rollup_leaves=len(used), status="ok" if error is None else "error",
        error=type(error).__name__ if error is not None else None, time=time.time())


def build_event(report: Any, seconds: float, error: BaseException | None = None) -> BuildEvent:
    return BuildEvent(door=door.get(), query_id=query_id.get() or new_query_id(),
                      built=tuple(getattr(report, "built", ()) or ()), seconds=seconds,
                      status="ok" if error is None else "error",
                      error=type(error).__name__ if error is not None else None,
                      message=str(error)[:1000] if error is not None else None, time=time.time())


def observed_query(fn: Callable) -> Callable:
    """Emit a QueryEvent for each call of `fn(self, query, …)` that returns an answer or raises (a None result,
    "not at hand", is no query). Its `context` argument, when it has one, is the event's security context."""
    params = list(inspect.signature(fn).parameters)
    at = params.index("context") if "context" in params else None

    @functools.wraps(fn)
    def observed(self, query, *args, **kwargs):
        if not _subscribers:
            return fn(self, query, *args, **kwargs)
        started = time.perf_counter()
        try:
            answer = fn(self, query, *args, **kwargs)
        except Exception as e:
            emit(query_event(query, None, time.perf_counter() - started, e, _context_arg(at, args, kwargs)))
            raise
        if answer is not None:
            emit(query_event(query, answer, time.perf_counter() - started, None, _context_arg(at, args, kwargs)))
        return answer

    return observed


def _context_arg(at: int | None, args: tuple, kwargs: dict) -> SecurityContext | None:
    if at is None:
        return None
    if "context" in kwargs:
        return kwargs["context"]
    return args[at - 2] if len(args) > at - 2 else None  # `at` counts self and query


def observed_build(fn: Callable) -> Callable:
    """Emit a BuildEvent for each call of `fn` (a Project's build): what it built, how long, or how it failed."""

    @functools.wraps(fn)
    def observed(*args, **kwargs):
        started = time.perf_counter()
        try:
            report = fn(*args, **kwargs)
        except Exception as e:
            emit(build_event(None, time.perf_counter() - started, e))
            raise
        emit(build_event(report, time.perf_counter() - started))
        return report

    return observed
