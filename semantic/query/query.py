"""The query every door accepts (MODEL.md §6): metrics by dimensions, filtered, over a time range."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

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
        """`2024-12-31` is a date (a whole day), not midnight."""
        if isinstance(v, str) and len(v.strip()) == 10:
            return dt.date.fromisoformat(v.strip())
        return v


class Query(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    metrics: tuple[str, ...] = Field(min_length=1)
    dimensions: tuple[str, ...] = ()
    filters: tuple[Filter | str, ...] = ()
    time_range: TimeRange | None = None
    order_by: tuple[str, ...] = ()
    limit: int | None = Field(None, ge=0)
    offset: int | None = Field(None, ge=0)

    @field_validator("metrics", "dimensions", "order_by", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        """`"profit, margin"` is the same as `["profit", "margin"]` (CLI and URL friendly)."""
        if isinstance(v, str):
            return [x.strip() for x in v.split(",") if x.strip()]
        return v

    @field_validator("filters", mode="before")
    @classmethod
    def _filters(cls, v: Any) -> Any:
        return [v] if isinstance(v, str | dict) else v

    def key(self) -> str:
        """A normalized text of the query, for caches."""
        return self.model_dump_json()


def make_query(**fields: Any) -> Query:
    """Build a Query, turning validation errors into one readable QueryError."""
    fields = {k: v for k, v in fields.items() if v is not None}
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
