"""Shared fixtures of the metric-query correctness suite.

`demo`: the shipped demo project (semantic/demo/project) copied to a temporary folder, with demo data
at scale 3000 (seed 7), a few extra test-only metrics, an `avg` measure and more rollups, built once per
session.
`saas`: an independent subscription business (tests/query/subscription_project) whose raw tables are
written here by plain deterministic SQL.

Expected answers in the tests are hand-written SQL over the raw.* tables only; `check` runs both and
compares column names and rows (sorted unless told otherwise): Decimals exactly, floats to 1e-9.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

import semantic
from semantic.demo import create

HERE = Path(__file__).parent
DEMO_PROJECT = HERE.parents[1] / "semantic" / "demo" / "project"
SAAS_PROJECT = HERE / "subscription_project"

# Metrics the demo does not declare but the suite needs (a median, a metric filter, a division that
# can hit zero, a time spine, cumulative count_distinct and derived, a weekly offset, a conversion count). They go
# into the temporary copy only.
DEMO_TEST_METRICS = """
metrics:
  - {name: median_order_value, measure: orders.median_order_value}
  - {name: new_buyers, measure: orders.new_buyers}
  - {name: units, measure: order_lines.units}
  - {name: line_revenue, measure: order_lines.line_revenue}
  - {name: lifetime_revenue, measure: customers.lifetime_revenue}
  - {name: visits, measure: visits.visits}
  - {name: web_revenue, measure: orders.gross_revenue, filter: "channel = 'web'"}
  - {name: refunds_per_discount, expr: refunds / discounts}
  - {name: revenue_every_day, measure: orders.gross_revenue, join_to_timespine: true, fill_nulls_with: 0}
  - {name: buyers_7d, cumulative: {metric: buyers, window: 7 days}}
  - {name: net_revenue_mtd, cumulative: {metric: net_revenue, grain_to_date: month}}
  - {name: revenue_ytd, cumulative: {metric: revenue, grain_to_date: year}}
  - name: revenue_wow
    expr: revenue - revenue_prev
    inputs: {revenue_prev: {metric: revenue, offset: 1 week}}
  - name: signup_conversions
    conversion: {stream: customer_stream, base: signed_up, conversion: placed_order, window: 7 days,
                 calculation: count}
  - {name: avg_order_value, measure: orders.avg_order_value}
"""

# Rollups beside the demo's own (models/rollups.yml), so that most queries of the suite have several
# candidates at several grains; every test of the suite then checks rollup answers too.
DEMO_TEST_ROLLUPS = """
rollups:
  - name: test_orders_hourly
    view: orders
    measures: [gross_revenue, orders, refunded, discounts, avg_order_value]
    grain: hour
  - name: test_orders_weekly_segments
    view: orders
    measures: [gross_revenue, discounts, refunded, shipping_cost, payment_fees, orders, buyers, new_buyers,
               avg_order_value]
    dimensions: [is_first_order, acquisition_channel, channel]
    grain: week
  - name: test_orders_by_signup_year
    view: orders
    measures: [gross_revenue, discounts, refunded, shipping_cost, payment_fees, orders, avg_order_value]
    dimensions: [customers.signed_up_at__year, country, is_first_order, acquisition_channel]
    grain: month
  - name: test_lines_daily
    view: order_lines
    measures: [cogs, units, line_revenue]
    dimensions: [category, channel, country, acquisition_channel, is_first_order, customers.signed_up_at__month]
    grain: day
    partition: quarter
    incremental: 2 months
  - name: test_visits_daily
    view: visits
    measures: [visits, converted_visits]
    dimensions: [landing_page, referrer, converted]
    grain: day
"""
AVG_MEASURE = "      - {name: avg_order_value, agg: avg, expr: gross_revenue}\n"

# The SaaS business: 400 accounts signing up through 2024; 4 in 5 start a trial (every 17th on the
# sign-up instant, every 11th a second one 60 days later); 2 in 3 subscribe, after their first trial
# if any, with edge cases exactly at the trial instant (23rd), exactly 14 days after (29th) and
# 14 days + 1 second after (31st); every 6th and 7th churn 60..110 days later and every 7th comes back
# 45 days after churning; every 4th first subscription and every 14th second one is upgraded.
SAAS_RAW_SQL = """
CREATE SCHEMA IF NOT EXISTS raw;

CREATE OR REPLACE TABLE raw.accounts AS
SELECT
    i AS account_id,
    TIMESTAMP '2024-01-01 00:00:00' + to_hours(i * 21 + (i * 37) % 24) + to_minutes((i * 53) % 60)
        AS signed_up_at,
    ['emea', 'amer', 'apac'][i % 3 + 1] AS region,
    CASE WHEN (i * 7) % 10 < 6 THEN 'smb' WHEN (i * 7) % 10 < 9 THEN 'mid' ELSE 'ent' END AS segment,
    ['organic', 'ads', 'partner', 'referral'][(i * 3) % 4 + 1] AS source
FROM range(1, 401) r(i);

CREATE OR REPLACE TABLE raw.trials AS
WITH t AS (
    SELECT
        a.account_id,
        k,
        a.signed_up_at
            + CASE WHEN a.account_id % 17 = 0 AND k = 0 THEN INTERVAL 0 HOUR
                   ELSE to_hours((a.account_id * 13) % 72 + 1) END
            + to_days(60 * k) AS started_at,
        ['starter', 'pro', 'enterprise'][(a.account_id + k) % 3 + 1] AS plan
    FROM raw.accounts a JOIN range(2) r(k) ON k = 0 OR a.account_id % 11 = 0
    WHERE a.account_id % 5 <> 0
)
SELECT row_number() OVER (ORDER BY started_at, account_id)::INTEGER AS trial_id, account_id, started_at, plan
FROM t;

CREATE OR REPLACE TEMP TABLE first_subs AS
WITH ft AS (SELECT account_id, min(started_at) AS trial_at FROM raw.trials GROUP BY 1)
SELECT
    a.account_id,
    CASE
        WHEN ft.trial_at IS NULL THEN a.signed_up_at + to_days(a.account_id % 10) + to_hours(5)
        WHEN a.account_id % 23 = 0 THEN ft.trial_at
        WHEN a.account_id % 29 = 0 THEN ft.trial_at + INTERVAL 14 DAY
        WHEN a.account_id % 31 = 0 THEN ft.trial_at + INTERVAL 14 DAY + INTERVAL 1 SECOND
        ELSE ft.trial_at + to_days((a.account_id * 17) % 20) + to_hours(a.account_id % 24)
    END AS started_at,
    ['starter', 'pro', 'enterprise'][(a.account_id * 5) % 3 + 1] AS plan
FROM raw.accounts a LEFT JOIN ft USING (account_id)
WHERE a.account_id % 3 <> 1 OR a.account_id % 23 = 0 OR a.account_id % 29 = 0 OR a.account_id % 31 = 0;

CREATE OR REPLACE TEMP TABLE first_churns AS
SELECT account_id, started_at + to_days(60 + account_id % 50) + to_hours(3) AS churned_at
FROM first_subs
WHERE account_id % 6 = 0 OR account_id % 7 = 0;

CREATE OR REPLACE TABLE raw.subscriptions AS
WITH s AS (
    SELECT account_id, 1 AS n, started_at, plan FROM first_subs
    UNION ALL
    SELECT account_id, 2, churned_at + INTERVAL 45 DAY, 'pro' FROM first_churns WHERE account_id % 7 = 0
)
SELECT
    row_number() OVER (ORDER BY started_at, account_id)::INTEGER AS subscription_id,
    account_id,
    n AS subscription_no,
    started_at,
    plan,
    (CASE plan WHEN 'starter' THEN 29 WHEN 'pro' THEN 99 ELSE 499 END + (account_id % 5) * 10.5)::DECIMAL(10, 2)
        AS mrr
FROM s;

CREATE OR REPLACE TABLE raw.upgrades AS
WITH u AS (
    SELECT
        subscription_id,
        account_id,
        started_at + to_days(CASE subscription_no WHEN 1 THEN 20 + account_id % 25 ELSE 10 END) AS upgraded_at,
        CASE plan WHEN 'starter' THEN 'pro' ELSE 'enterprise' END AS to_plan,
        (70 + (account_id % 3) * 25.5)::DECIMAL(10, 2) AS mrr_delta
    FROM raw.subscriptions
    WHERE (subscription_no = 1 AND account_id % 4 = 0) OR (subscription_no = 2 AND account_id % 14 = 0)
)
SELECT row_number() OVER (ORDER BY upgraded_at, subscription_id)::INTEGER AS upgrade_id, * FROM u;

CREATE OR REPLACE TABLE raw.churns AS
SELECT
    row_number() OVER (ORDER BY c.churned_at, s.subscription_id)::INTEGER AS churn_id,
    s.subscription_id,
    s.account_id,
    c.churned_at,
    ['price', 'product', 'support'][s.account_id % 3 + 1] AS reason,
    s.mrr AS lost_mrr
FROM first_churns c
JOIN raw.subscriptions s ON s.account_id = c.account_id AND s.subscription_no = 1;
"""


ENGINES = ["duckdb", "postgres"]


def on_engine(request, root: Path) -> semantic.Project:
    """The project at `root` on the requested engine; on PostgreSQL it keeps its DuckDB twin as `reference`,
    where the hand-written SQL (DuckDB syntax, over the same raw tables) runs."""
    if request.param == "duckdb":
        project = semantic.Project.load(root)
        project.reference = project
    else:
        pg_root = root.parent / f"{root.name}_pg"
        shutil.copytree(root, pg_root)
        request.getfixturevalue("postgres_project")(pg_root)
        project = semantic.Project.load(pg_root)
        project.reference = semantic.Project.load(root)
    project.build()
    return project


def close(project: semantic.Project) -> None:
    if project.reference is not project:
        project.reference.close()
    project.close()


@pytest.fixture(scope="session", params=ENGINES)
def demo(request, tmp_path_factory) -> semantic.Project:
    root = tmp_path_factory.mktemp("demo") / "project"
    shutil.copytree(DEMO_PROJECT, root)
    (root / "models" / "query_tests.yml").write_text(DEMO_TEST_METRICS)
    (root / "models" / "rollup_tests.yml").write_text(DEMO_TEST_ROLLUPS)
    views = root / "models" / "views.yml"
    anchor = "      - {name: median_order_value, agg: median, expr: gross_revenue}\n"
    views.write_text(views.read_text().replace(anchor, anchor + AVG_MEASURE))
    create(root, scale=3000)
    project = on_engine(request, root)
    yield project
    close(project)


def _saas_project(request, tmp_path_factory, name: str, settings: str = "") -> semantic.Project:
    root = tmp_path_factory.mktemp(name) / "project"
    shutil.copytree(SAAS_PROJECT, root)
    if settings:
        with (root / "phloem.yml").open("a") as f:
            f.write(settings)
    (root / "data").mkdir(exist_ok=True)
    con = duckdb.connect(str(root / "data" / "saas.duckdb"))
    try:
        con.execute(SAAS_RAW_SQL)
    finally:
        con.close()
    return on_engine(request, root)


@pytest.fixture(scope="session", params=ENGINES)
def saas(request, tmp_path_factory) -> semantic.Project:
    project = _saas_project(request, tmp_path_factory, "saas")
    yield project
    close(project)


@pytest.fixture(scope="session", params=ENGINES)
def saas_new_york(request, tmp_path_factory) -> semantic.Project:
    """The same SaaS project with `timezone: America/New_York` (timestamps are UTC, buckets local)."""
    project = _saas_project(request, tmp_path_factory, "saas_ny", "timezone: America/New_York\n")
    yield project
    close(project)


# ------------------------------------------------------------------ comparing answers


def same_value(actual, expected) -> bool:
    """Decimals and integers exactly; as soon as one side is a float, to a relative 1e-9."""
    if actual is None or expected is None:
        return actual is None and expected is None
    if isinstance(actual, float) or isinstance(expected, float):
        if isinstance(actual, bool) or isinstance(expected, bool):
            return False
        try:
            a, e = float(actual), float(expected)
        except (TypeError, ValueError):
            return False
        if math.isnan(a) or math.isnan(e) or math.isinf(a) or math.isinf(e):
            return False  # the contract never returns NaN or infinity
        return math.isclose(a, e, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(actual, Decimal) or isinstance(expected, Decimal):
        if isinstance(actual, bool) or isinstance(expected, bool):
            return False
        return Decimal(actual) == Decimal(expected)
    return type(actual) is type(expected) and actual == expected


def _sort_key(row: tuple) -> tuple:
    return tuple((v is not None, v if v is not None else 0) for v in row)


def assert_rows(table: pa.Table, expected: pa.Table | list[tuple], columns: list[str] | None = None,
                ordered: bool = False) -> list[tuple]:
    """The answer has exactly these column names and these rows (as sorted lists unless `ordered`)."""
    if isinstance(expected, pa.Table):
        columns = expected.column_names if columns is None else columns
        expected = [tuple(r.values()) for r in expected.to_pylist()]
    assert table.column_names == columns, f"columns {table.column_names} != expected {columns}"
    got = [tuple(r.values()) for r in table.to_pylist()]
    if not ordered:
        got, expected = sorted(got, key=_sort_key), sorted(expected, key=_sort_key)
    assert len(got) == len(expected), (
        f"{len(got)} rows != expected {len(expected)}; only in answer: "
        f"{[r for r in got if r not in expected][:5]}; only expected: {[r for r in expected if r not in got][:5]}")
    bad = [(i, g, e) for i, (g, e) in enumerate(zip(got, expected, strict=True))
           if len(g) != len(e) or not all(same_value(a, b) for a, b in zip(g, e, strict=True))]
    assert not bad, f"{len(bad)} of {len(got)} rows differ, e.g. (row, got, expected): {bad[:3]}"
    return got


@pytest.fixture(scope="session")
def check() -> Callable[..., list[tuple]]:
    """check(project, sql, ordered=False, **query): run the query and the hand-written SQL, compare them."""

    def run(project: semantic.Project, sql: str, ordered: bool = False, **query) -> list[tuple]:
        got = project.query(**query)
        expected = project.reference.engine.arrow(sql)
        return assert_rows(got, expected, ordered=ordered)

    return run


@pytest.fixture(name="same_value", scope="session")
def same_value_fixture() -> Callable[[object, object], bool]:
    return same_value


@pytest.fixture(scope="session")
def raw_rows() -> Callable[[semantic.Project, str], list[tuple]]:
    def rows(project: semantic.Project, sql: str) -> list[tuple]:
        return project.reference.engine.rows(sql)

    return rows
