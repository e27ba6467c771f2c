"""Whatever the query, the answer from rollups is the answer from the views (on DuckDB and PostgreSQL).

Random metric queries over the demo (its shipped rollups plus the suite's, see conftest) are answered twice,
with rollups and with `use_rollups=False`; the rows must be the same: integers and decimals exactly, floats
to a relative 1e-9.
"""

from __future__ import annotations

import datetime as dt

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from semantic.errors import QueryError
from tests.query.conftest import assert_rows

SETTINGS = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

METRICS = ["revenue", "orders", "cogs", "profit", "margin", "aov", "buyers", "avg_order_value", "web_revenue",
           "refunds", "units", "net_revenue", "costs", "new_buyers", "revenue_mtd", "revenue_7d", "revenue_ytd",
           "revenue_mom", "revenue_wow", "line_revenue", "visits"]
DIMENSIONS = ["channel", "country", "acquisition_channel", "is_first_order", "category", "customers.signed_up_at__year",
              "customers.signed_up_at__month", "metric_time__hour", "metric_time__day", "metric_time__week",
              "metric_time__month", "metric_time__quarter", "metric_time__year", "landing_page"]
FILTERS = ["channel = 'web'", "country in ('US', 'CA', 'GB')", "not is_first_order",
           {"dimension": "acquisition_channel", "op": "!=", "values": ["ads"]},
           "metric_time__month >= '2024-03-01'", "metric_time__year = '2025-01-01'",
           "customers.signed_up_at__year < '2025-01-01'", "category is not null"]


@st.composite
def time_ranges(draw):
    kind = draw(st.sampled_from(["none", "months", "days", "timestamps", "open"]))
    if kind == "none":
        return None
    first = dt.date(2023, 1, 1) + dt.timedelta(days=draw(st.integers(0, 1000)))
    if kind == "months":
        start = first.replace(day=1)
        months = draw(st.integers(1, 14))
        end_month = dt.date(start.year + (start.month - 1 + months) // 12, (start.month - 1 + months) % 12 + 1, 1)
        return {"start": str(start), "end": str(end_month - dt.timedelta(days=1))}
    last = first + dt.timedelta(days=draw(st.integers(0, 300)))
    if kind == "days":
        return {"start": str(first), "end": str(last)}
    if kind == "timestamps":
        return {"start": f"{first}T{draw(st.integers(0, 23)):02d}:00:00", "end": f"{last}T{draw(st.sampled_from([0, 12])):02d}:30:00"}
    return draw(st.sampled_from([{"start": str(first)}, {"end": str(last)}]))


def answer(project, use_rollups: bool, **query):
    try:
        return project.query(use_rollups=use_rollups, **query), None
    except QueryError as e:
        return None, str(e)


@SETTINGS
@given(metrics=st.lists(st.sampled_from(METRICS), min_size=1, max_size=3, unique=True),
       dims=st.lists(st.sampled_from(DIMENSIONS), min_size=0, max_size=3, unique=True),
       filters=st.lists(st.sampled_from(FILTERS), max_size=2), time_range=time_ranges())
def test_rollups_give_the_views_answer(demo, metrics, dims, filters, time_range):
    query = dict(metrics=metrics, dimensions=dims, filters=filters, time_range=time_range)
    raw, raw_error = answer(demo, False, **query)
    got, error = answer(demo, True, **query)
    assert error == raw_error, query
    if raw is None:
        event("query error (same with and without rollups)")
        return
    leaves = demo.compile(**query).plan.leaves
    event(f"{sum(leaf.rollup is not None for leaf in leaves)} of {len(leaves)} leaves from rollups")
    assert_rows(got, raw)


SERVED = [
    dict(metrics=["profit", "margin"], dimensions=["metric_time__month", "channel", "country"]),
    dict(metrics=["revenue", "avg_order_value"], dimensions=["metric_time__quarter", "is_first_order"]),
    dict(metrics=["buyers"], dimensions=["metric_time__week"]),
    dict(metrics=["cogs", "units"], dimensions=["category"], time_range={"start": "2024-02-10", "end": "2024-05-20"}),
    dict(metrics=["revenue_7d", "revenue_mtd"], dimensions=["metric_time__day"],
         time_range={"start": "2024-01-01", "end": "2024-03-31"}),
    dict(metrics=["revenue_mom"], dimensions=["metric_time__month", "country"]),
    dict(metrics=["visits"], dimensions=["landing_page", "metric_time__week"], filters=["converted"]),
    dict(metrics=["revenue"], time_range={"start": "2024-03-03T05:00:00", "end": "2024-03-09T17:59:59.999999"}),
]


def test_the_suite_queries_are_served_by_rollups_with_the_same_numbers(demo):
    for query in SERVED:
        leaves = demo.compile(**query).plan.leaves
        assert all(leaf.rollup is not None for leaf in leaves), (query, demo.explain(**query))
        assert_rows(demo.query(**query), demo.query(use_rollups=False, **query))


def test_a_forced_refresh_recomputes_only_the_incremental_window(demo):
    partitions = "select part, built_at from phloem._phloem_rollup_partitions where rollup = 'orders_daily'"
    before = dict(demo.engine.rows(partitions))
    job = demo.build(force=True).rollups["orders_daily"]
    assert job.incremental and job.rebuilt == [dt.datetime(2025, 11, 1), dt.datetime(2025, 12, 1)]
    after = dict(demo.engine.rows(partitions))
    assert set(after) == set(before) and {k for k in after if after[k] != before[k]} == set(job.rebuilt)
    for query in SERVED:
        assert_rows(demo.query(**query), demo.query(use_rollups=False, **query))
