"""REST for the metric-tree explorer under /api/v1: tree, tree/series, drill, whatif (`semantic.metrics.explore`)
and periods (`semantic.metrics.periods`, which the explorer page asks instead of computing dates itself).

Parse the parameters, let the library answer, encode: decimals are exact JSON numbers, dates ISO strings.
Every endpoint rejects a parameter it does not declare (422 naming it): a misspelt `comparison` must not
silently answer another question.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request
from fastapi import Query as Param
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from semantic.limits import Cancel
from semantic.metrics import explore
from semantic.metrics.decompose import METHODS
from semantic.metrics.drill import T_EEP, T_EP, K
from semantic.metrics.explore import SERIES_GRAINS
from semantic.metrics.periods import COMPARISONS, bucket_period, compare, shift
from server.encode import dumps
from server.identity import context_of, project_of
from server.rest import ERRORS, watched

Method = Literal[METHODS]  # type: ignore[valid-type]
Grain = Literal[SERIES_GRAINS]  # type: ignore[valid-type]
Rule = Literal[COMPARISONS]  # type: ignore[valid-type]
RULE_DOC = ("The comparison period: `previous` (the period just before: a whole calendar month → the month before, "
            "whole quarters/years/months → as many months before, a whole ISO week → the week before, any other "
            "span → as many days just before), `year_ago` (the same calendar span a year earlier; Feb 29 → "
            "Feb 28) or `custom` (compare_start and compare_end). Default: `custom` when compare dates are given, "
            "else `previous`; `previous` or `year_ago` with compare dates is a 422.")
Comparison = Annotated[Rule | None, Param(description=RULE_DOC, examples=["previous"])]
Where = Annotated[list[str] | None, Param(description="A SQL boolean over dimension names; repeat for more "
                                                      "(all must hold).", examples=["country in ('US', 'CA')"])]
Start = Annotated[dt.date, Param(description="First day of the period.", examples=["2025-11-01"])]
End = Annotated[dt.date, Param(description="Last day of the period (included).", examples=["2025-11-30"])]
CompareStart = Annotated[dt.date | None, Param(description="First day of a custom comparison period.")]
CompareEnd = Annotated[dt.date | None, Param(description="Last day of a custom comparison period (included).")]


def _not_a_number(value):
    if isinstance(value, int | float):  # pydantic would read 0 as 1970-01-01
        raise ValueError("a date (YYYY-MM-DD) is expected")
    return value


Day = Annotated[dt.date, BeforeValidator(_not_a_number)]


class WhatIfRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    root: str = Field(examples=["profit"])
    start: Day = Field(examples=["2025-11-01"])
    end: Day = Field(examples=["2025-11-30"])
    where: list[str] = Field(default_factory=list, description="SQL booleans over dimension names.")
    changes: dict[str, float] = Field(min_length=1, examples=[{"cogs": -5.0}],
                                      description="Metric → change in percent (-5.0 = 5 % less).")
    comparison: Rule | None = Field(None, description="Also value every node over a comparison period, by the "
                                                      "rule of GET /tree (`previous`, `year_ago`, `custom`). "
                                                      "Default: `custom` when compare dates are given, else "
                                                      "no comparison.")
    compare_start: Day | None = Field(None, description="First day of a custom comparison period.")
    compare_end: Day | None = Field(None, description="Last day of a custom comparison period (included).")


async def known_parameters(request: Request) -> None:
    """A 422 naming any query parameter the endpoint does not declare (FastAPI would ignore it)."""
    route = request.scope.get("route")
    if route is None:
        return
    known = _query_names(route.dependant)
    unknown = [k for k in dict.fromkeys(request.query_params.keys()) if k not in known]
    if unknown:
        raise RequestValidationError([
            {"loc": ("query", k), "msg": f"unknown parameter; this endpoint takes: {', '.join(sorted(known)) or 'none'}",
             "type": "extra_forbidden"} for k in unknown])


def router() -> APIRouter:
    api = APIRouter(prefix="/api/v1", responses=ERRORS, tags=["metric tree explorer"],
                    dependencies=[Depends(known_parameters)])

    @api.get("/tree", summary="A metric tree over two periods, with each node's contribution to the root's change",
             description="The answer states both periods it used (`period`, `comparison`) and the "
                         "`comparison_rule`. " + RULE_DOC)
    async def tree(request: Request, root: str, start: Start, end: End, comparison: Comparison = None,
                   compare_start: CompareStart = None, compare_end: CompareEnd = None, method: Method = "shapley",
                   where: Where = None) -> Response:
        runtime = request.app.state.runtime
        period = _period(start, end)
        rule, before = _comparison(comparison, compare_start, compare_end)
        out = await _answer(request, lambda project: explore.tree_values(project, root, period, before, where or [],
                                                                         method, runtime.timeout, rule=rule))
        return _json(out)

    @api.get("/periods", summary="A period and its comparison period, and the periods before and after it",
             description="The explorer page's dates, by the same rule the tree and drill use. Give `start` and "
                         "`end`, or `grain` and `day` for the whole bucket holding `day` (the one before when it "
                         "runs past `last_day`, the last day with data: `day=last_day` gives the last full one). "
                         "`earlier` and `later` step by the same rule as `previous`. " + RULE_DOC)
    async def period_of(start: Annotated[dt.date | None, Param(description="First day of the period.")] = None,
                        end: Annotated[dt.date | None, Param(description="Last day of the period (included).")]
                        = None, grain: Grain | None = None,
                        day: Annotated[dt.date | None, Param(description="A day in the wanted bucket.")] = None,
                        last_day: Annotated[dt.date | None, Param(description="The last day with data.")] = None,
                        comparison: Comparison = None, compare_start: CompareStart = None,
                        compare_end: CompareEnd = None) -> Response:
        if start is not None or end is not None:
            if start is None or end is None:
                raise _invalid("end" if end is None else "start", "give both start and end")
            if grain is not None or day is not None:
                raise _invalid("grain" if grain is not None else "day", "give start and end, or grain and day")
            period = _period(start, end)
        elif grain is None or day is None:
            raise _invalid("grain" if grain is None else "day", "give start and end, or grain and day")
        else:
            period = bucket_period(day, grain, last_day)
        rule, before = compare(period, *_comparison(comparison, compare_start, compare_end))
        return _json({"period": period.as_dict(), "comparison": before.as_dict(), "comparison_rule": rule,
                      "earlier": shift(period, -1).as_dict(), "later": shift(period, 1).as_dict()})

    @api.get("/tree/series", summary="Every metric of a tree per time bucket, for sparklines (one query)")
    async def series(request: Request, root: str, grain: Grain = "month",
                     periods: Annotated[int, Param(ge=1, le=1000)] = 12,
                     end: Annotated[dt.date | None, Param(description="A day in the last bucket (default today).")]
                     = None, where: Where = None) -> Response:
        runtime = request.app.state.runtime
        out = await _answer(request, lambda project: explore.series(project, root, grain, periods, end, where or [],
                                                                    runtime.timeout))
        return _json(out)

    @api.get("/drill", summary="Which values of which dimensions drove a metric's change (Adtributor)",
             description="Over `start`–`end` against the comparison period, stated in the answer with its "
                         "`comparison_rule`. " + RULE_DOC)
    async def drill(request: Request, metric: str, start: Start, end: End, comparison: Comparison = None,
                    compare_start: CompareStart = None, compare_end: CompareEnd = None,
                    dimensions: Annotated[str | None, Param(description="Comma-separated; default: every "
                                                                        "dimension the metric reaches.")] = None,
                    where: Where = None, t_eep: Annotated[float, Param(ge=0)] = T_EEP,
                    t_ep: Annotated[float, Param(ge=0)] = T_EP,
                    k: Annotated[int, Param(ge=1)] = K) -> Response:
        runtime = request.app.state.runtime
        dims = [d.strip() for d in (dimensions or "").split(",") if d.strip()] or None
        period = _period(start, end)
        rule, before = _comparison(comparison, compare_start, compare_end)
        out = await _answer(request, lambda project: explore.drill(project, metric, period, before, dims, where or [],
                                                                   t_eep, t_ep, k, runtime.timeout, rule=rule))
        return _json(out)

    @api.post("/whatif", summary="Every metric of a tree after changing some metrics by a percentage")
    async def whatif(request: Request, body: WhatIfRequest) -> Response:
        runtime = request.app.state.runtime
        period = _period(body.start, body.end, ("body", "start", "end"))
        rule = before = None
        if body.comparison is not None or body.compare_start is not None or body.compare_end is not None:
            rule, before = _comparison(body.comparison, body.compare_start, body.compare_end, "body")
        out = await _answer(request, lambda project: explore.what_if(project, body.root, period, body.changes,
                                                                     body.where, runtime.timeout, comparison=before,
                                                                     rule=rule))
        return _json(out)

    return api


class _Cancellable:
    """The project as one request sees it: each metric query runs with the request's `cancel`, and none starts
    after the client went away (a tree or drill runs several)."""

    def __init__(self, project, cancel: Cancel, ticket):
        self._project, self._cancel, self._ticket = project, cancel, ticket

    def __getattr__(self, name: str):
        return getattr(self._project, name)

    def run(self, query, *args, **kwargs):
        self._cancel.check()
        kwargs.update(timeout=self._ticket.timeout, limits=self._ticket.limits)  # the caller's roles' limits
        return self._project.run(query, *args, cancel=self._cancel, **kwargs)


async def _answer(request: Request, answer):
    """`answer(project)` in a worker thread, on the project as the caller may see it; a client that disconnects
    cancels its warehouse queries. The whole request takes one of the caller's slots (429 when none is free)."""
    cancel = Cancel()
    with request.app.state.runtime.admit(context_of(request)) as ticket:
        return await watched(request, cancel, answer, _Cancellable(project_of(request), cancel, ticket))


def _query_names(dependant) -> set[str]:
    """The query parameters an endpoint and its dependencies declare."""
    return {p.alias for p in dependant.query_params}.union(*(_query_names(d) for d in dependant.dependencies))


def _invalid(field: str, message: str, where: str = "query") -> RequestValidationError:
    return RequestValidationError([{"loc": (where, field), "msg": message, "type": "value_error"}])


def _period(start: dt.date, end: dt.date, names: tuple[str, str, str] = ("query", "start", "end")) -> explore.Period:
    if start > end:
        raise _invalid(names[2], f"the period ends ({end}) before it starts ({start})", names[0])
    return explore.Period(start, end)


def _comparison(rule: str | None, start: dt.date | None, end: dt.date | None,
                where: str = "query") -> tuple[str | None, explore.Period | None]:
    """The comparison rule and custom dates, checked: their mistakes are 422s naming the parameter."""
    if (start is None) != (end is None):
        raise _invalid("compare_end" if end is None else "compare_start", "give both compare_start and compare_end",
                       where)
    if rule == "custom" and start is None:
        raise _invalid("compare_start", "the custom comparison needs compare_start and compare_end", where)
    if rule in ("previous", "year_ago") and start is not None:
        raise _invalid("compare_start", f"the `{rule}` comparison computes its own dates: drop compare_start and "
                                        "compare_end, or ask for comparison=custom", where)
    return rule, None if start is None else _period(start, end, (where, "compare_start", "compare_end"))


def _json(content) -> Response:
    return Response(dumps(content), media_type="application/json")
