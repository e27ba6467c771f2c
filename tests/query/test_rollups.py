"""Rollups: which one answers each leaf and why the others do not, and that every answer is the view's own.

The project is the demo shop (1,500 orders) with its own set of rollups (below) instead of the shipped ones,
plus an `avg` measure. Tests that change the model or the data work on a copy of the built folder.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import duckdb
import pytest

import semantic
from semantic.demo.generate import generate
from semantic.errors import BuildError
from tests.query.conftest import DEMO_PROJECT, assert_rows

ROLLUPS = """
rollups:
  - name: b_daily            # declared first, and larger than a_monthly_by_channel
    view: orders
    measures: [gross_revenue, discounts, orders, avg_order_value]
    dimensions: [channel, country]
    grain: day
  - name: a_monthly_by_channel
    view: orders
    measures: [gross_revenue, discounts, orders, avg_order_value, buyers]
    dimensions: [channel]
    grain: month
  - name: weekly
    view: orders
    measures: [gross_revenue, orders, buyers]
    grain: week
  - name: hourly
    view: orders
    measures: [gross_revenue]
    grain: hour
  - name: by_signup_month
    view: orders
    measures: [gross_revenue]
    dimensions: [customers.signed_up_at__month]
    grain: year
  - name: new_york
    view: orders
    measures: [gross_revenue]
    grain: month
    timezone: America/New_York
"""
METRICS = """
metrics:
  - {name: avg_order_value, measure: orders.avg_order_value}
  - {name: web_revenue, measure: orders.gross_revenue, filter: "channel = 'web'"}
  - {name: avg_order_value_7d, cumulative: {metric: avg_order_value, window: 7 days}}
  - {name: buyers_7d, cumulative: {metric: buyers, window: 7 days}}
"""
AVG = "      - {name: avg_order_value, agg: avg, expr: gross_revenue}\n"


def make(root: Path, rollups: str = ROLLUPS) -> Path:
    shutil.copytree(DEMO_PROJECT, root)
    (root / "models" / "rollups.yml").write_text(rollups)
    (root / "models" / "more_metrics.yml").write_text(METRICS)
    views = root / "models" / "views.yml"
    text = views.read_text()
    anchor = "      - {name: median_order_value, agg: median, expr: gross_revenue}\n"
    views.write_text(text.replace(anchor, anchor + AVG))
    (root / "data").mkdir()
    con = duckdb.connect(str(root / "data" / "shop.duckdb"))
    try:
        generate(con, scale=1500, seed=11)
    finally:
        con.close()
    return root


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    root = make(tmp_path_factory.mktemp("rollups") / "shop")
    p = semantic.Project.load(root)
    p.build()
    p.close()
    return root


@pytest.fixture(scope="module")
def shop(built) -> semantic.Project:
    p = semantic.Project.load(built)
    yield p
    p.close()


@pytest.fixture()
def copy(built, tmp_path):
    """A private copy of the built project (its DuckDB file included), opened; closed after the test."""
    opened = []

    def make_copy(rollups: str | None = None) -> semantic.Project:
        root = tmp_path / f"copy{len(opened)}"
        shutil.copytree(built, root)
        if rollups is not None:
            (root / "models" / "rollups.yml").write_text(rollups)
        p = semantic.Project.load(root)
        opened.append(p)
        return p

    yield make_copy
    for p in opened:
        p.close()


def verdicts(project, **query) -> dict[str, str]:
    """{rollup: "chosen" | why not} for a one-leaf query."""
    (leaf,) = project.compile(**query).plan.leaves
    return {c.rollup: c.reason or "chosen" for c in leaf.candidates}


def chosen(project, **query) -> list[str | None]:
    return [leaf.rollup.spec.name if leaf.rollup else None for leaf in project.compile(**query).plan.leaves]


def same(project, **query) -> None:
    """The answer with rollups is the answer without them."""
    assert_rows(project.query(**query), project.query(use_rollups=False, **query))


# ------------------------------------------------------------------ choosing


def test_the_cheapest_rollup_wins_not_the_first_declared(shop, copy):
    q = dict(metrics=["revenue", "orders"], dimensions=["metric_time__month", "channel"])
    v = verdicts(shop, **q)
    small, large = (shop.compiler.catalog.states[n].rows for n in ("a_monthly_by_channel", "b_daily"))
    assert small < large
    assert v["a_monthly_by_channel"] == "chosen"
    assert v["b_daily"] == f"larger: {large:,} rows vs {small:,}"
    same(shop, **q)
    swapped = "rollups:\n" + "".join(f"  - {block.rstrip()}\n" for block in reversed(ROLLUPS.split("\n  - ")[1:]))
    p = copy(swapped)
    assert [r for r in p.model.rollups][0] == "new_york"  # now declared in the opposite order
    assert not p.builder.stale()  # the same tables: nothing to rebuild
    assert verdicts(p, **q)["a_monthly_by_channel"] == "chosen"


def test_explain_names_the_table_and_every_other_candidate(shop):
    text = shop.explain(metrics=["revenue"], dimensions=["metric_time__month", "channel"])
    assert "table: phloem.a_monthly_by_channel (rollup a_monthly_by_channel" in text
    assert "not used: b_daily — larger:" in text
    assert "not used: weekly — lacks dimension channel" in text
    tables = shop.compile(metrics=["revenue"], dimensions=["metric_time__month", "channel"]).plan.tables()
    assert tables[0]["table"] == "phloem.a_monthly_by_channel" and tables[0]["rollup"] == "a_monthly_by_channel"
    assert {"rollup": "weekly", "reason": "lacks dimension channel"} in tables[0]["rejected"]
    raw = shop.compile(metrics=["revenue"], dimensions=["metric_time__month"], use_rollups=False).plan.tables()
    assert raw[0]["table"] == "phloem.orders" and raw[0]["rollup"] is None


# ------------------------------------------------------------------ every reason a rollup is not used


def test_reason_lacks_measure_dimension_and_filter_dimension(shop):
    v = verdicts(shop, metrics=["refunds"])
    assert {v[k] for k in v if k != "new_york"} == {"lacks measure refunded"}
    v = verdicts(shop, metrics=["revenue"], dimensions=["acquisition_channel"])
    assert v["a_monthly_by_channel"] == "lacks dimension acquisition_channel"
    v = verdicts(shop, metrics=["revenue"], dimensions=["channel"], filters=["country = 'US'"])
    assert v["a_monthly_by_channel"] == "lacks filter dimension country" and v["b_daily"] == "chosen"
    same(shop, metrics=["revenue"], dimensions=["channel"], filters=["country = 'US'"])


def test_reason_grain_and_stored_time_dimension(shop):
    v = verdicts(shop, metrics=["revenue"], dimensions=["metric_time__month"])
    assert v["weekly"] == "grain week cannot serve month"
    v = verdicts(shop, metrics=["revenue"], dimensions=["customers.signed_up_at__week"])
    assert v["by_signup_month"] == "stores signed_up_at by month, which cannot serve week"
    v = verdicts(shop, metrics=["revenue"], dimensions=["customers.signed_up_at__quarter"])
    assert v["by_signup_month"] == "chosen"
    same(shop, metrics=["revenue"], dimensions=["customers.signed_up_at__quarter", "metric_time__year"])


def test_reason_time_range_cuts_a_bucket(shop):
    v = verdicts(shop, metrics=["revenue"], time_range={"start": "2024-01-05T12:00:00", "end": "2024-03-31"})
    assert v["b_daily"] == "time range starts at 2024-01-05 12:00:00, inside a day bucket"
    assert v["hourly"] == "chosen"
    v = verdicts(shop, metrics=["revenue"], time_range={"start": "2024-01-01", "end": "2024-03-15"})
    assert v["a_monthly_by_channel"] == "time range ends at 2024-03-15, inside a month bucket"
    assert v["b_daily"] == "chosen"
    v = verdicts(shop, metrics=["revenue"], time_range={"start": "2024-01-01", "end": "2024-03-31"})
    assert v["a_monthly_by_channel"] == "chosen"
    for tr in ({"start": "2024-01-05T12:00:00", "end": "2024-03-31"}, {"start": "2024-01-01", "end": "2024-03-15"},
               {"start": "2024-01-01", "end": "2024-03-31"}, {"end": "2024-06-30T17:00:00"}):
        same(shop, metrics=["revenue", "orders"], dimensions=["metric_time__month"], time_range=tr)


def test_reason_time_zone(shop):
    v = verdicts(shop, metrics=["revenue"], dimensions=["metric_time__year"])
    assert v["new_york"] == "buckets in time zone America/New_York, the project's is UTC"


def test_reason_metric_filter_on_a_column_not_stored(shop):
    v = verdicts(shop, metrics=["web_revenue"], dimensions=["metric_time__week"])
    assert v["weekly"] == "metric web_revenue filters on channel, which the rollup does not store"
    assert v["b_daily"] == "chosen"
    same(shop, metrics=["web_revenue", "revenue"], dimensions=["metric_time__week"])


def test_reason_not_built_and_older_definition(copy):
    p = copy(ROLLUPS + "  - {name: fresh_one, view: orders, measures: [gross_revenue], grain: quarter}\n"
             + ROLLUPS.split("  - name: b_daily")[0].strip().replace("rollups:", ""))
    assert verdicts(p, metrics=["revenue"])["fresh_one"] == "not built yet (run `phloem build`)"
    p = copy(ROLLUPS.replace("dimensions: [channel]\n", "dimensions: [channel, country]\n", 1))
    v = verdicts(p, metrics=["revenue"], dimensions=["metric_time__month", "channel"])
    assert v["a_monthly_by_channel"] == "built from an older definition (run `phloem build`)"
    p.build()  # rebuilt, and the answer follows
    assert verdicts(p, metrics=["revenue"], dimensions=["metric_time__month", "channel"])[
        "a_monthly_by_channel"] == "chosen"


# ------------------------------------------------------------------ the lattice


@pytest.mark.parametrize("grain, rollup", [("day", "b_daily"), ("week", "weekly"), ("month", "a_monthly_by_channel"),
                                           ("quarter", "a_monthly_by_channel"), ("year", "by_signup_month")])
def test_time_lattice(shop, grain, rollup):
    q = dict(metrics=["revenue"], dimensions=[f"metric_time__{grain}"])
    assert chosen(shop, **q) == [rollup]
    same(shop, **q)


def test_weeks_never_make_months_and_hours_make_days(shop):
    v = verdicts(shop, metrics=["revenue"], dimensions=["metric_time__quarter"])
    assert v["weekly"] == "grain week cannot serve quarter"
    v = verdicts(shop, metrics=["revenue"], dimensions=["metric_time__day"])
    assert v["hourly"].startswith("larger:") and v["b_daily"] == "chosen"
    v = verdicts(shop, metrics=["revenue"], dimensions=["metric_time__hour"])
    assert v == {"hourly": "chosen", **{k: v[k] for k in v if k != "hourly"}}
    assert v["b_daily"] == "grain day cannot serve hour"
    same(shop, metrics=["revenue"], dimensions=["metric_time__hour"], time_range={"start": "2024-05-01",
                                                                                  "end": "2024-05-03"})


# ------------------------------------------------------------------ measures


def test_avg_from_stored_sum_and_count(shop):
    q = dict(metrics=["avg_order_value", "orders"], dimensions=["metric_time__quarter", "channel"])
    assert chosen(shop, **q) == ["a_monthly_by_channel"]
    same(shop, **q)
    same(shop, metrics=["avg_order_value"], filters=["channel = 'app'"], time_range={"start": "2024-02-01"})
    v = verdicts(shop, metrics=["avg_order_value_7d"], dimensions=["metric_time__month"])
    assert set(v.values()) >= {"avg cannot accumulate from stored sums and counts"}


def test_count_distinct_only_at_its_exact_grain_and_dimensions(shop):
    exact = dict(metrics=["buyers"], dimensions=["metric_time__month", "channel"])
    assert chosen(shop, **exact) == ["a_monthly_by_channel"]
    same(shop, **exact)
    same(shop, **exact, filters=["channel in ('web', 'app')"], time_range={"start": "2024-01-01", "end": "2024-12-31"})
    coarser = verdicts(shop, metrics=["buyers"], dimensions=["metric_time__quarter", "channel"])
    assert coarser["a_monthly_by_channel"] == "count_distinct buyers is exact only at its grain month by orders.channel"
    fewer = verdicts(shop, metrics=["buyers"], dimensions=["metric_time__month"])
    assert fewer["a_monthly_by_channel"].startswith("count_distinct buyers is exact only")
    assert chosen(shop, metrics=["buyers"], dimensions=["metric_time__week"]) == ["weekly"]
    v = verdicts(shop, metrics=["buyers_7d"], dimensions=["metric_time__week"])
    assert v["weekly"] == "count_distinct buyers cannot accumulate from stored counts"
    same(shop, metrics=["buyers", "revenue"], dimensions=["metric_time__quarter"])


def test_derived_ratio_cumulative_and_offset_metrics_read_their_leaves_from_rollups(shop):
    q = dict(metrics=["aov", "net_revenue", "revenue_mtd", "revenue_mom"], dimensions=["metric_time__month"],
             time_range={"start": "2024-03-01", "end": "2025-02-28"})
    plan = shop.compile(**q).plan
    assert all(leaf.rollup is not None for leaf in plan.leaves if leaf.view == "orders" and
               all(m.measure.name != "refunded" for m in leaf.metrics))
    same(shop, **q)
    same(shop, metrics=["revenue_7d"], dimensions=["metric_time__day"], time_range={"start": "2024-01-01",
                                                                                   "end": "2024-02-29"})
    v = verdicts(shop, metrics=["revenue_7d"], dimensions=["metric_time__month"])
    assert v["a_monthly_by_channel"] == "window 7 days does not start on a month boundary"


def test_a_leaf_no_rollup_holds_whole_is_split(shop):
    q = dict(metrics=["revenue", "buyers"], dimensions=["metric_time__week"])
    plan = shop.compile(**q).plan
    assert sorted(leaf.rollup.spec.name for leaf in plan.leaves) == ["b_daily", "weekly"] or \
        sorted(leaf.rollup.spec.name for leaf in plan.leaves) == ["weekly"]
    q = dict(metrics=["revenue", "refunds"], dimensions=["metric_time__month"])
    names = {leaf.name: (leaf.rollup.spec.name if leaf.rollup else None) for leaf in shop.compile(**q).plan.leaves}
    assert set(names.values()) == {"a_monthly_by_channel", None}
    same(shop, **q)


# ------------------------------------------------------------------ freshness


def add_orders(project, month: str, copies: int = 40) -> None:
    """New orders (copies of existing ones) in `month` (YYYY-MM), written to the raw table."""
    project.engine.execute(f"""
        insert into raw.orders
        select order_id + 10000000 + i, customer_id, timestamp '{month}-01' + to_days(i % 27) + to_hours(i % 23),
               channel, country, total, discount
        from (select *, row_number() over (order by order_id) as i from raw.orders) where i <= {copies}""")


FRESHNESS = """
rollups:
  - {name: monthly_union, view: orders, measures: [gross_revenue, orders], grain: month, freshness: union}
  - {name: monthly_dataset, view: orders, measures: [gross_revenue, orders], grain: quarter, freshness: dataset}
"""


def test_freshness_union_vs_dataset(copy):
    p = copy(FRESHNESS)
    p.build()
    add_orders(p, "2026-01")
    p.build(force=True, rollups=False)  # the dataset moves on; the rollups stay behind
    state = p.compiler.catalog.states["monthly_union"]
    assert state.behind and state.fresh_before == dt.datetime(2025, 12, 1)
    q = dict(metrics=["revenue", "orders"], dimensions=["metric_time__month"])
    v = verdicts(p, **q)
    assert v["monthly_union"] == "chosen"
    assert v["monthly_dataset"] == "grain quarter cannot serve month"
    (leaf,) = p.compile(**q).plan.leaves
    assert leaf.rollup.tail == dt.datetime(2025, 12, 1)
    assert "rows from 2025-12-01 00:00 on read from phloem.orders" in p.explain(**q)
    same(p, **q)
    got = p.query(**q).to_pylist()
    assert got[-1]["metric_time__month"] == dt.date(2026, 1, 1) and got[-1]["orders"] == 40
    v = verdicts(p, metrics=["revenue"], dimensions=["metric_time__year"])
    assert v["monthly_dataset"] == "behind its dataset from 2025-10-01 00:00 (freshness: dataset)"
    assert v["monthly_union"] == "chosen"
    same(p, metrics=["revenue"], dimensions=["metric_time__year"])
    # a range that ends before the stale part reads either rollup alone
    early = dict(metrics=["revenue"], time_range={"start": "2024-01-01", "end": "2024-12-31"})
    assert verdicts(p, **early) == {"monthly_dataset": "chosen", "monthly_union": verdicts(p, **early)["monthly_union"]}
    assert p.compile(**early).plan.leaves[0].rollup.tail is None
    same(p, **early)
    p.build()  # caught up: no tail any more
    assert not p.compiler.catalog.states["monthly_union"].behind
    assert p.compile(**q).plan.leaves[0].rollup.tail is None
    same(p, **q)


INCREMENTAL = """
rollups:
  - {name: daily, view: orders, measures: [gross_revenue, orders], dimensions: [channel], grain: day,
     partition: month, incremental: 1 month}
"""


def test_incremental_refresh_rebuilds_only_the_window_and_missing_partitions(copy):
    p = copy(INCREMENTAL)
    p.build()
    parts = dict(p.engine.rows("select part, built_at from phloem._phloem_rollup_partitions where rollup = 'daily'"))
    assert len(parts) == 36 and min(parts) == dt.datetime(2023, 1, 1) and max(parts) == dt.datetime(2025, 12, 1)
    before = {r["metric_time__month"]: r["revenue"]
              for r in p.query(metrics=["revenue"], dimensions=["metric_time__month"]).to_pylist()}
    # change history far back (outside the window), the last month (inside) and add a month before all data
    p.engine.execute("update raw.orders set total = total + 1 where ordered_at < '2023-03-01'")
    p.engine.execute("update raw.orders set total = total + 1 where ordered_at >= '2025-12-01'")
    add_orders(p, "2022-06", copies=5)
    report = p.build(force=True)
    job = report.rollups["daily"]
    assert job.incremental
    assert job.rebuilt == [dt.datetime(2022, 6, 1), dt.datetime(2025, 11, 1), dt.datetime(2025, 12, 1)]
    after = dict(p.engine.rows("select part, built_at from phloem._phloem_rollup_partitions where rollup = 'daily'"))
    assert set(after) == set(parts) | {dt.datetime(2022, 6, 1)}
    assert all(after[k] == parts[k] for k in parts if k < dt.datetime(2025, 11, 1))  # untouched
    assert all(after[k] > parts[k] for k in (dt.datetime(2025, 11, 1), dt.datetime(2025, 12, 1)))
    rollup = {r["metric_time__month"]: r["revenue"] for r in p.query(
        metrics=["revenue"], dimensions=["metric_time__month"]).to_pylist()}
    raw = {r["metric_time__month"]: r["revenue"] for r in p.query(
        metrics=["revenue"], dimensions=["metric_time__month"], use_rollups=False).to_pylist()}
    assert rollup[dt.date(2023, 1, 1)] == before[dt.date(2023, 1, 1)] != raw[dt.date(2023, 1, 1)]  # kept as built
    assert rollup[dt.date(2025, 12, 1)] == raw[dt.date(2025, 12, 1)] != before[dt.date(2025, 12, 1)]  # refreshed
    assert rollup[dt.date(2022, 6, 1)] == raw[dt.date(2022, 6, 1)]  # the missing partition was built
    assert p.compiler.catalog.states["daily"].fresh_before == dt.datetime(2025, 11, 1)


def test_a_failed_rollup_build_leaves_the_previous_table(copy):
    p = copy(INCREMENTAL)
    p.build()
    rows = p.engine.rows("select count(*), sum(gross_revenue__sum) from phloem.daily")
    state = p.engine.rows("select fingerprint, rows from phloem._phloem_rollups")
    root = p.model.root
    p.close()
    views = root / "models" / "views.yml"
    views.write_text(views.read_text().replace(
        "      - acquisition_channel\n", "      - acquisition_channel\n      - {name: broken, expr: \"cast(channel as integer)\"}\n", 1))
    (root / "models" / "rollups.yml").write_text(INCREMENTAL.replace("dimensions: [channel]",
                                                                     "dimensions: [channel, broken]"))
    p = semantic.Project.load(root)
    try:
        with pytest.raises(BuildError, match="daily"):
            p.build()
        assert p.engine.rows("select count(*), sum(gross_revenue__sum) from phloem.daily") == rows
        assert p.engine.rows("select fingerprint, rows from phloem._phloem_rollups") == state
        assert not p.engine.tables("phloem", "__stage_")
        v = verdicts(p, metrics=["revenue"], dimensions=["metric_time__month"])
        assert v["daily"] == "built from an older definition (run `phloem build`)"
        assert p.query(metrics=["orders"]).column("orders")[0].as_py() == 1500  # queries still answer
        assert "daily" in p.broken_rollups  # and stop retrying the broken rollup until the next explicit build
    finally:
        p.close()


def test_build_reports_rollups_with_progress(copy):
    p = copy(INCREMENTAL)
    seen = []
    report = p.build(force=True, progress=lambda name, done, total: seen.append((name, done, total)))
    assert "daily" in report.built and seen[-1][0] == "done"
    names = [name for name, _, _ in seen]
    assert names.index("daily") > names.index("orders")  # after the datasets


def test_a_project_time_zone_buckets_rollups_in_local_time(copy):
    root = copy().model.root
    settings = root / "phloem.yml"
    settings.write_text(settings.read_text() + "timezone: America/New_York\n")
    p = semantic.Project.load(root)
    try:
        p.build()  # every rollup's buckets move to local time: rebuilt
        assert all(s.timezone == "America/New_York" and s.current for s in p.compiler.catalog.states.values())
        q = dict(metrics=["revenue", "orders"], dimensions=["metric_time__month", "channel"])
        assert chosen(p, **q) == ["a_monthly_by_channel"]
        same(p, **q)
        same(p, metrics=["revenue"], dimensions=["metric_time__year"])
        # dates are UTC midnights, which cut local days
        v = verdicts(p, metrics=["revenue"], time_range={"start": "2024-01-01", "end": "2024-01-31"})
        assert v["b_daily"] == "time range starts at 2024-01-01, inside a day bucket" and v["hourly"] == "chosen"
        local_month = {"start": "2024-01-01T05:00:00", "end": "2024-02-01T04:59:59.999999"}
        assert chosen(p, metrics=["revenue"], time_range=local_month) == ["new_york"]  # monthly, and the smallest
        same(p, metrics=["revenue", "orders"], dimensions=["metric_time__day"], time_range=local_month)
        v = verdicts(p, metrics=["revenue_7d"], dimensions=["metric_time__day"])
        assert v["b_daily"] == "cumulative windows are in UTC, the rollup's buckets are local"
    finally:
        p.close()
