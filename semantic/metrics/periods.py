"""Periods and their comparison periods: the one rule every door and the explorer page use.

A period is whole days, both ends included. Its comparison is one of:

- `previous`: the period just before. A span of whole calendar months (a month, a quarter, a year, or any
  run of months) is compared with as many whole months just before (Mar 1–31 → Feb 1–28/29, Q2 → Q1,
  2025 → 2024); any other span with the same number of days just before (a whole ISO week → the week
  before, Mar 1–15 → Feb 14–28).
- `year_ago`: the same calendar span one year earlier; whole months stay whole months (Feb 2025 →
  Feb 1–29 2024), otherwise each end moves back a year and Feb 29 becomes Feb 28.
- `custom`: explicit dates.

Pure functions over `datetime.date`; no queries.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from semantic.errors import QueryError

COMPARISONS = ("previous", "year_ago", "custom")
GRAINS = ("day", "week", "month", "quarter", "year")
_MONTHS = {"month": 1, "quarter": 3, "year": 12}
_DAY = dt.timedelta(days=1)
F = TypeVar("F", bound=Callable[..., Any])


def _in_calendar(fn: F) -> F:
    """Dates past year 1 or 9999 are the client's mistake (a QueryError), not a crash."""
    @functools.wraps(fn)
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (OverflowError, ValueError) as e:
            raise QueryError("the period or its comparison falls outside the calendar (years 1 to 9999)",
                             "pick dates further from the calendar's ends") from e
    return run  # type: ignore[return-value]


@dataclass(frozen=True)
class Period:
    """Whole days, both ends included."""

    start: dt.date
    end: dt.date

    @classmethod
    def of(cls, value: Any) -> Period:
        if isinstance(value, Period):
            return value
        start, end = (value["start"], value["end"]) if isinstance(value, Mapping) else value
        p = cls(as_date(start), as_date(end))
        if p.start > p.end:
            raise QueryError(f"the period starts ({p.start}) after it ends ({p.end})", "swap start and end")
        return p

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def previous(self) -> Period:
        """The period just before (see the module's rule)."""
        return shift(self, -1)

    def as_dict(self) -> dict:
        return {"start": self.start, "end": self.end}


def as_date(value: Any) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))


# ---------------------------------------------------------------- calendar arithmetic


def add_months(first: dt.date, n: int) -> dt.date:
    """The first day of the month `n` months from `first`'s month."""
    months = first.year * 12 + first.month - 1 + n
    return dt.date(months // 12, months % 12 + 1, 1)


def month_end(day: dt.date) -> dt.date:
    return add_months(day.replace(day=1), 1) - _DAY


def whole_months(period: Period) -> int | None:
    """How many calendar months the period spans when it is exactly whole months, else None."""
    if period.start.day != 1 or period.end != month_end(period.end):
        return None
    return (period.end.year - period.start.year) * 12 + period.end.month - period.start.month + 1


@_in_calendar
def shift(period: Period, steps: int) -> Period:
    """The period `steps` periods later (negative: earlier), stepping by whole months when it is whole months."""
    months = whole_months(period)
    if months is not None:
        start = add_months(period.start, steps * months)
        return Period(start, add_months(start, months) - _DAY)
    delta = dt.timedelta(days=steps * period.days)
    return Period(period.start + delta, period.end + delta)


def previous(period: Period) -> Period:
    return shift(period, -1)


def _year_before(day: dt.date) -> dt.date:
    return day.replace(year=day.year - 1, day=28) if (day.month, day.day) == (2, 29) else day.replace(year=day.year - 1)


@_in_calendar
def year_ago(period: Period) -> Period:
    """The same calendar span one year earlier."""
    if whole_months(period) is not None:
        return Period(add_months(period.start, -12), month_end(add_months(period.end.replace(day=1), -12)))
    return Period(_year_before(period.start), _year_before(period.end))


@_in_calendar
def compare(period: Any, rule: str | None = None, custom: Any = None) -> tuple[str, Period]:
    """The comparison rule used and the comparison period of `period`. No rule: `custom` when dates are given,
    else `previous`; `previous` and `year_ago` take no dates, `custom` needs them."""
    now = Period.of(period)
    rule = rule or ("custom" if custom is not None else "previous")
    if rule not in COMPARISONS:
        raise QueryError(f"unknown comparison `{rule}`", f"one of: {', '.join(COMPARISONS)}")
    if rule == "custom":
        if custom is None:
            raise QueryError("a custom comparison needs its dates", "give compare_start and compare_end")
        return rule, Period.of(custom)
    if custom is not None:
        raise QueryError(f"the `{rule}` comparison computes its own dates",
                         "drop the comparison dates, or ask for the `custom` comparison")
    return rule, previous(now) if rule == "previous" else year_ago(now)


# ---------------------------------------------------------------- buckets of a grain


def bucket(day: dt.date, grain: str) -> dt.date:
    """The first day of the `grain` bucket holding `day` (ISO weeks: Monday to Sunday)."""
    if grain == "day":
        return day
    if grain == "week":
        return day - dt.timedelta(days=day.weekday())
    months = _MONTHS[grain]
    return dt.date(day.year, (day.month - 1) // months * months + 1, 1)


def add_buckets(first: dt.date, grain: str, n: int) -> dt.date:
    """The first day of the bucket `n` buckets from the one starting on `first`."""
    if grain in ("day", "week"):
        return first + dt.timedelta(days=n * (7 if grain == "week" else 1))
    return add_months(first, n * _MONTHS[grain])


@_in_calendar
def bucket_period(day: dt.date, grain: str, last_day: dt.date | None = None) -> Period:
    """The whole `grain` bucket holding `day`; the one before when it runs past `last_day` (the last day with
    data), so `bucket_period(last_day, grain, last_day)` is the last full bucket."""
    if grain not in GRAINS:
        raise QueryError(f"unknown grain `{grain}`", f"one of: {', '.join(GRAINS)}")
    first = bucket(day, grain)
    p = Period(first, add_buckets(first, grain, 1) - _DAY)
    if last_day is not None and p.end > last_day:
        first = add_buckets(first, grain, -1)
        p = Period(first, add_buckets(first, grain, 1) - _DAY)
    return p
