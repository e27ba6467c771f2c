"""The query every door accepts (MODEL.md §6): metrics by dimensions, filtered, over a time range."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError, field_validator

from semantic.errors import QueryError

Op = Literal["=", "!=", "<>", ">", ">=", "<", "<=", "in", "not in", "between", "like", "is null", "is not null"]


class Filter(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    dimension: str
    op: Op = "="
    values: tuple[Any, ...] = ()

    @field_validator("values", mode="before")
    @classmethod
    def _values(cls, v: Any) -> Any:
        return v if isinstance(v, list | tuple) else [v]


class TimeRange(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    start: dt.datetime | dt.date | None = None
    end: dt.datetime | dt.date | None = None

    @field_validator("start", "end", mode="before")
    @classmethod
    def _date(cls, v: Any) -> Any:
        """`2024-12-31` is a date (a whole day), not midnight; numbers are not dates."""
        if isinstance(v, str) and len(v.strip()) == 10:
            return dt.date.fromisoformat(v.strip())
        if v is not None and not isinstance(v, str | dt.date):
            raise ValueError("a date (YYYY-MM-DD) or timestamp (YYYY-MM-DDTHH:MM:SS) is expected")
        return v

    @field_validator("start", "end")
    @classmethod
    def _naive_utc(cls, v: Any) -> Any:
        """Warehouse timestamps are naive UTC, so a zoned timestamp is converted to that."""
        if isinstance(v, dt.datetime) and v.tzinfo is not None:
            return v.astimezone(dt.UTC).replace(tzinfo=None)
        return v


class Query(BaseModel):
    """Strict as JSON Schema says (doors validate against it); `make_query` is the lenient Python/CLI way in."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    metrics: tuple[StrictStr, ...] = Field(min_length=1, description="Metric names, or `view.measure`.")
    dimensions: tuple[StrictStr, ...] = Field((), description="`dim`, `view.dim`, `metric_time__month` …")
    filters: tuple[Filter | StrictStr, ...] = Field((), description="SQL booleans over dimension names, or "
                                                    "{dimension, op, values}; all must hold.")
    time_range: TimeRange | None = None
    order_by: tuple[StrictStr, ...] = Field((), description="`-profit` or `profit:desc` sorts descending.")
    limit: StrictInt | None = Field(None, ge=0)
    offset: StrictInt | None = Field(None, ge=0)

    def key(self) -> str:
        """A normalized text of the query, for caches."""
        return self.model_dump_json()


def make_query(**fields: Any) -> Query:
    """Build a Query, turning validation errors into one readable QueryError."""
    fields = {k: v for k, v in fields.items() if v is not None}
    for name in ("metrics", "dimensions", "order_by"):  # "profit, margin" is ["profit", "margin"]
        if isinstance(fields.get(name), str):
            fields[name] = [x.strip() for x in fields[name].split(",") if x.strip()]
    if isinstance(fields.get("filters"), str | dict):
        fields["filters"] = [fields["filters"]]
    try:
        return Query.model_validate(fields)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise QueryError(f"invalid query field `{where}`: {first['msg']}",
                         "a query needs `metrics` and may have dimensions, filters, time_range, order_by, "
                         "limit, offset") from None


def parse_order(item: str) -> tuple[str, bool]:
    """`-profit` and `profit:desc` both sort descending; returns (name, descending)."""
    item = item.strip()
    if item.startswith("-"):
        return item[1:], True
    name, _, direction = item.partition(":")
    direction = direction.strip().lower()
    if direction not in ("", "asc", "desc"):
        raise QueryError(f"unknown sort direction `{direction}` in `{item}`", "write `name:asc`, `name:desc` or `-name`")
    return name.strip(), direction == "desc"
