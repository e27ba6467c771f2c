"""The comparison-period rule (semantic.metrics.periods): calendar months, weeks, quarters, years, leap days."""

from __future__ import annotations

import datetime as dt

import pytest

from semantic.errors import QueryError
from semantic.metrics.periods import Period, bucket_period, compare, previous, shift, whole_months, year_ago


def P(a: str, b: str) -> Period:
    return Period(dt.date.fromisoformat(a), dt.date.fromisoformat(b))


@pytest.mark.parametrize(("period", "before"), [
    # a calendar month: the calendar month before, however long each is
    (("2025-03-01", "2025-03-31"), ("2025-02-01", "2025-02-28")),
    (("2024-03-01", "2024-03-31"), ("2024-02-01", "2024-02-29")),  # leap year
    (("2024-02-01", "2024-02-29"), ("2024-01-01", "2024-01-31")),
    (("2025-01-01", "2025-01-31"), ("2024-12-01", "2024-12-31")),  # over a year end
    (("2025-05-01", "2025-05-31"), ("2025-04-01", "2025-04-30")),
    # runs of whole months: quarters, years, any count
    (("2025-04-01", "2025-06-30"), ("2025-01-01", "2025-03-31")),
    (("2025-01-01", "2025-03-31"), ("2024-10-01", "2024-12-31")),
    (("2025-01-01", "2025-12-31"), ("2024-01-01", "2024-12-31")),
    (("2025-03-01", "2025-04-30"), ("2025-01-01", "2025-02-28")),
    # a whole ISO week (Monday to Sunday): the week before
    (("2025-03-03", "2025-03-09"), ("2025-02-24", "2025-03-02")),
    (("2024-12-30", "2025-01-05"), ("2024-12-23", "2024-12-29")),
    # anything else: as many days just before
    (("2025-03-01", "2025-03-15"), ("2025-02-14", "2025-02-28")),  # a partial month
    (("2025-03-02", "2025-03-31"), ("2025-01-31", "2025-03-01")),  # not from the 1st
    (("2025-01-31", "2025-02-28"), ("2025-01-02", "2025-01-30")),  # month end to month end is not whole months
    (("2024-03-01", "2024-03-01"), ("2024-02-29", "2024-02-29")),  # one day
])
def test_previous(period, before):
    assert previous(P(*period)) == P(*before)
    assert P(*period).previous() == P(*before)


def test_shift_forward_undoes_back():
    for p in (P("2024-02-01", "2024-02-29"), P("2025-03-03", "2025-03-09"), P("2025-03-01", "2025-03-15"),
              P("2025-10-01", "2025-12-31")):
        assert shift(shift(p, -1), 1) == p
    assert shift(P("2025-01-01", "2025-01-31"), 1) == P("2025-02-01", "2025-02-28")
    assert shift(P("2025-11-01", "2025-11-30"), 2) == P("2026-01-01", "2026-01-31")


def test_whole_months():
    assert whole_months(P("2025-01-01", "2025-12-31")) == 12
    assert whole_months(P("2024-02-01", "2024-02-29")) == 1
    assert whole_months(P("2024-02-01", "2024-02-28")) is None
    assert whole_months(P("2025-02-02", "2025-02-28")) is None


@pytest.mark.parametrize(("period", "then"), [
    (("2025-02-01", "2025-02-28"), ("2024-02-01", "2024-02-29")),  # whole months stay whole
    (("2024-02-01", "2024-02-29"), ("2023-02-01", "2023-02-28")),
    (("2025-10-01", "2025-12-31"), ("2024-10-01", "2024-12-31")),
    (("2024-02-29", "2024-02-29"), ("2023-02-28", "2023-02-28")),  # the leap day itself
    (("2024-02-15", "2024-03-10"), ("2023-02-15", "2023-03-10")),
    (("2025-03-03", "2025-03-09"), ("2024-03-03", "2024-03-09")),  # dates, not weekdays
])
def test_year_ago(period, then):
    assert year_ago(P(*period)) == P(*then)


def test_compare_rules_and_their_errors():
    mar = P("2025-03-01", "2025-03-31")
    assert compare(mar) == ("previous", P("2025-02-01", "2025-02-28"))
    assert compare(mar, "year_ago") == ("year_ago", P("2024-03-01", "2024-03-31"))
    custom = P("2025-01-01", "2025-01-10")
    assert compare(mar, "custom", custom) == ("custom", custom)
    assert compare(mar, None, {"start": "2025-01-01", "end": "2025-01-10"}) == ("custom", custom)  # dates imply it
    with pytest.raises(QueryError, match="needs its dates"):
        compare(mar, "custom")
    with pytest.raises(QueryError, match="computes its own dates"):
        compare(mar, "previous", custom)
    with pytest.raises(QueryError, match="unknown comparison"):
        compare(mar, "yoy")
    with pytest.raises(QueryError, match="after it ends"):
        compare({"start": "2025-03-02", "end": "2025-03-01"})


@pytest.mark.parametrize(("day", "grain", "last", "period"), [
    ("2025-12-17", "month", "2025-12-17", ("2025-11-01", "2025-11-30")),  # the last full month
    ("2025-11-30", "month", "2025-11-30", ("2025-11-01", "2025-11-30")),  # the last day ends it
    ("2025-12-17", "quarter", "2025-12-17", ("2025-07-01", "2025-09-30")),
    ("2025-11-15", "month", None, ("2025-11-01", "2025-11-30")),
    ("2025-12-17", "week", "2025-12-17", ("2025-12-08", "2025-12-14")),  # a Wednesday: the week before
    ("2024-02-10", "year", None, ("2024-01-01", "2024-12-31")),
    ("2024-02-29", "day", "2024-02-29", ("2024-02-29", "2024-02-29")),
])
def test_bucket_period(day, grain, last, period):
    last_day = dt.date.fromisoformat(last) if last else None
    assert bucket_period(dt.date.fromisoformat(day), grain, last_day) == P(*period)


def test_bucket_period_unknown_grain():
    with pytest.raises(QueryError, match="unknown grain"):
        bucket_period(dt.date(2025, 1, 1), "fortnight")


def test_the_calendar_ends_are_query_errors():
    with pytest.raises(QueryError, match="outside the calendar"):
        previous(P("0001-01-01", "0001-01-31"))
    with pytest.raises(QueryError, match="outside the calendar"):
        shift(P("9999-12-01", "9999-12-31"), 1)
    with pytest.raises(QueryError, match="outside the calendar"):
        compare(P("0001-03-01", "0001-03-05"), "year_ago")
    with pytest.raises(QueryError, match="outside the calendar"):
        bucket_period(dt.date(1, 1, 5), "month", dt.date(1, 1, 5))
