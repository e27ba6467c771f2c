"""REST for the metric-tree explorer under /api/v1: tree, tree/series, drill, whatif (`semantic.metrics.explore`).

Parse the parameters, let the library answer, encode: decimals are exact JSON numbers, dates ISO strings.
"""

from __future__ import annotations

import datetime as dt
import decimal
from typing import Annotated, Literal

import orjson
from fastapi import APIRouter, Request
from fastapi import Query as Param
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from semantic.metrics import explore
from semantic.metrics.decompose import METHODS
from semantic.metrics.drill import T_EEP, T_EP, K
from semantic.metrics.explore import SERIES_GRAINS
from server.rest import ERRORS

Method = Literal[METHODS]  # type: ignore[valid-type]
Grain = Literal[SERIES_GRAINS]  # type: ignore[valid-type]
Where = Annotated[list[str] | None, Param(description="A SQL boolean over dimension names; repeat for more "
                                                      "(all must hold).", examples=["country in ('US', 'CA')"])]
Start = Annotated[dt.date, Param(description="First day of the period.", examples=["2025-11-01"])]
End = Annotated[dt.date, Param(description="Last day of the period (included).", examples=["2025-11-30"])]
CompareStart = Annotated[dt.date | None, Param(description="First day of the comparison period (default: the "
                                                           "period of the same length just before).")]
CompareEnd = Annotated[dt.date | None, Param(description="Last day of the comparison period.")]


class WhatIfRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    root: str = Field(examples=["profit"])
    start: dt.date = Field(examples=["2025-11-01"])
    end: dt.date = Field(examples=["2025-11-30"])
    where: list[str] = Field(default_factory=list, description="SQL booleans over dimension names.")
    changes: dict[str, float] = Field(min_length=1, examples=[{"cogs": -5.0}],
                                      description="Metric → change in percent (-5.0 = 5 % less).")


def router() -> APIRouter:
    api = APIRouter(prefix="/api/v1", responses=ERRORS, tags=["metric tree explorer"])

    @api.get("/tree", summary="A metric tree over two periods, with each node's contribution to the root's change")
    async def tree(request: Request, root: str, start: Start, end: End, compare_start: CompareStart = None,
                   compare_end: CompareEnd = None, method: Method = "shapley", where: Where = None) -> Response:
        runtime = request.app.state.runtime
        period, comparison = _period(start, end), _comparison(compare_start, compare_end)
        out = await run_in_threadpool(explore.tree_values, runtime.project, root, period, comparison, where or [],
                                      method, runtime.timeout)
        return _json(out)

    @api.get("/tree/series", summary="Every metric of a tree per time bucket, for sparklines (one query)")
    async def series(request: Request, root: str, grain: Grain = "month",
                     periods: Annotated[int, Param(ge=1, le=1000)] = 12,
                     end: Annotated[dt.date | None, Param(description="A day in the last bucket (default today).")]
                     = None, where: Where = None) -> Response:
        runtime = request.app.state.runtime
        out = await run_in_threadpool(explore.series, runtime.project, root, grain, periods, end, where or [],
                                      runtime.timeout)
        return _json(out)

    @api.get("/drill", summary="Which values of which dimensions drove a metric's change (Adtributor)")
    async def drill(request: Request, metric: str, start: Start, end: End, compare_start: CompareStart = None,
                    compare_end: CompareEnd = None,
                    dimensions: Annotated[str | None, Param(description="Comma-separated; default: every "
                                                                        "dimension the metric reaches.")] = None,
                    where: Where = None, t_eep: Annotated[float, Param(ge=0)] = T_EEP,
                    t_ep: Annotated[float, Param(ge=0)] = T_EP,
                    k: Annotated[int, Param(ge=1)] = K) -> Response:
        runtime = request.app.state.runtime
        dims = [d.strip() for d in (dimensions or "").split(",") if d.strip()] or None
        out = await run_in_threadpool(
            lambda: explore.drill(runtime.project, metric, _period(start, end), _comparison(compare_start, compare_end),
                                  dims, where or [], t_eep, t_ep, k, runtime.timeout))
        return _json(out)

    @api.post("/whatif", summary="Every metric of a tree after changing some metrics by a percentage")
    async def whatif(request: Request, body: WhatIfRequest) -> Response:
        runtime = request.app.state.runtime
        out = await run_in_threadpool(explore.what_if, runtime.project, body.root, _period(body.start, body.end),
                                      body.changes, body.where, runtime.timeout)
        return _json(out)

    return api


def _invalid(field: str, message: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ("query", field), "msg": message, "type": "value_error"}])


def _period(start: dt.date, end: dt.date, names: tuple[str, str] = ("start", "end")) -> explore.Period:
    if start > end:
        raise _invalid(names[1], f"the period ends ({end}) before it starts ({start})")
    return explore.Period(start, end)


def _comparison(start: dt.date | None, end: dt.date | None) -> explore.Period | None:
    if (start is None) != (end is None):
        raise _invalid("compare_end" if end is None else "compare_start", "give both compare_start and compare_end")
    return None if start is None else _period(start, end, ("compare_start", "compare_end"))


def _default(value):
    if isinstance(value, decimal.Decimal):
        return orjson.Fragment(str(value))  # exact: decimals are JSON numbers, not floats or strings
    raise TypeError(f"cannot encode {type(value).__name__}")


def _json(content) -> Response:
    return Response(orjson.dumps(content, default=_default), media_type="application/json")
