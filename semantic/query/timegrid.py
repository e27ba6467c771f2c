"""Calendar arithmetic in Python, the same as the SQL the renderer writes: buckets, offsets, time zones.

The planner uses it to decide, before any SQL exists, whether a time range cuts a rollup's buckets.
Instants are naive: UTC in the warehouse, local wall time once converted with `to_local`.
"""

from __future__ import annotations

import calendar
import datetime as dt
from functools import lru_cache
from zoneinfo import ZoneInfo

MICRO = dt.timedelta(microseconds=1)


def instant(value: dt.date | dt.datetime) -> dt.datetime:
    return value if isinstance(value, dt.datetime) else dt.datetime.combine(value, dt.time())


def truncate(t: dt.datetime, grain: str) -> dt.datetime:
    """DATE_TRUNC: the first instant of the bucket (weeks start on Monday)."""
    if grain == "second":
        return t.replace(microsecond=0)
    if grain == "minute":
        return t.replace(second=0, microsecond=0)
    if grain == "hour":
        return t.replace(minute=0, second=0, microsecond=0)
    day = t.replace(hour=0, minute=0, second=0, microsecond=0)
    if grain == "day":
        return day
    if grain == "week":
        return day - dt.timedelta(days=day.weekday())
    if grain == "month":
        return day.replace(day=1)
    if grain == "quarter":
        return day.replace(month=(day.month - 1) // 3 * 3 + 1, day=1)
    return day.replace(month=1, day=1)


def shift(t: dt.datetime, n: int, unit: str) -> dt.datetime:
    """t + n units, calendar-wise: months clamp to the month's last day (31 March − 1 month = 29 February)."""
    if unit in ("month", "quarter", "year"):
        months = n * {"month": 1, "quarter": 3, "year": 12}[unit]
        index = t.year * 12 + (t.month - 1) + months
        year, month = divmod(index, 12)
        day = min(t.day, calendar.monthrange(year, month + 1)[1])
        return t.replace(year=year, month=month + 1, day=day)
    return t + n * dt.timedelta(**{f"{unit}s": 1})


def next_bucket(t: dt.datetime, grain: str) -> dt.datetime:
    return shift(t, 1, grain)


def is_boundary(t: dt.datetime, grain: str) -> bool:
    return truncate(t, grain) == t


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def to_local(t: dt.datetime, tz: str | None) -> dt.datetime | None:
    """A naive UTC instant as naive wall time in `tz`; None when that wall time is ambiguous (DST fold)."""
    if not tz:
        return t
    zone = _zone(tz)
    local = t.replace(tzinfo=dt.UTC).astimezone(zone).replace(tzinfo=None)
    if to_utc(local, tz) != t:
        return None
    return local


def to_utc(local: dt.datetime, tz: str | None) -> dt.datetime | None:
    """Naive wall time in `tz` as a naive UTC instant; None if it does not exist or is ambiguous."""
    if not tz:
        return local
    zone = _zone(tz)
    first = local.replace(tzinfo=zone, fold=0).astimezone(dt.UTC).replace(tzinfo=None)
    second = local.replace(tzinfo=zone, fold=1).astimezone(dt.UTC).replace(tzinfo=None)
    if first != second:
        return None
    back = first.replace(tzinfo=dt.UTC).astimezone(zone).replace(tzinfo=None)
    return first if back == local else None


def valid_zone(name: str) -> bool:
    try:
        _zone(name)
    except (KeyError, ValueError, OSError):
        return False
    return True
