"""The demo shop built and queried on PostgreSQL answers exactly as on DuckDB, and as hand-written SQL.

The data is generated once in DuckDB (scale 2000, seed 7) and copied to PostgreSQL's `raw` schema, so both
engines read the same rows. Expected answers are hand-written SQL over the DuckDB `raw.*` tables only.
"""

from __future__ import annotations

import math
import shutil
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
import yaml
from typer.testing import CliRunner

from semantic import BuildError, Project
from semantic.demo.generate import generate
from server.cli import app

DEMO = Path(__file__).resolve().parents[2] / "semantic" / "demo" / "project"
MONTH = "cast(date_trunc('month', {}) as date)"

PROFIT_SQL = f"""
with per_order as (
    select o.channel, {MONTH.format("o.ordered_at")} as month, o.total, o.discount,
           coalesce((select sum(amount) from raw.refunds r where r.order_id = o.order_id), 0) as refunded,
           coalesce((select sum(shipping_cost) from raw.shipments s where s.order_id = o.order_id), 0) as shipping,
           coalesce((select sum(fee) from raw.payments p where p.order_id = o.order_id), 0) as fees
    from raw.orders o
), by_month as (
    select channel, month, sum(total) as revenue, sum(total) - sum(discount) - sum(refunded) as net,
           sum(shipping) + sum(fees) as order_costs
    from per_order group by 1, 2
), cogs as (
    select o.channel, {MONTH.format("l.ordered_at")} as month, sum(l.quantity * l.unit_cost) as cogs
    from raw.order_lines l join raw.orders o using (order_id) group by 1, 2
)
select b.channel, b.month as metric_time__month, b.revenue, b.net - (c.cogs + b.order_costs) as profit,
       (b.net - (c.cogs + b.order_costs)) / nullif(b.net, 0) as margin
from by_month b join cogs c using (channel, month)
"""
REVENUE_MTD_SQL = """
with daily as (select cast(ordered_at as date) as day, sum(total) as revenue from raw.orders group by 1)
select day as metric_time__day, sum(revenue) over (partition by date_trunc('month', day) order by day) as revenue_mtd
from daily
"""
REVENUE_MOM_SQL = f"""
with monthly as (select {MONTH.format("ordered_at")} as month, sum(total) as revenue from raw.orders group by 1)
select m.month as metric_time__month, m.revenue - p.revenue as revenue_mom
from monthly m left join monthly p on p.month = m.month - interval 1 month
"""
SIGNUP_TO_ORDER_SQL = f"""
select {MONTH.format("c.signed_up_at")} as metric_time__month,
       avg(case when exists (select 1 from raw.orders o where o.customer_id = c.customer_id
                             and o.ordered_at > c.signed_up_at and o.ordered_at <= c.signed_up_at + interval 7 day)
           then 1.0 else 0.0 end)::double as signup_to_order
from raw.customers c group by 1
"""
THREE_VIEWS_SQL = f"""
with revenue as (select {MONTH.format("ordered_at")} as month, sum(total) as revenue from raw.orders group by 1),
cogs as (select {MONTH.format("ordered_at")} as month, sum(quantity * unit_cost) as cogs from raw.order_lines group by 1),
signups as (select {MONTH.format("signed_up_at")} as month, count(*) as signups from raw.customers group by 1),
months as (select month from revenue union select month from cogs union select month from signups)
select month as metric_time__month, revenue, cogs, signups
from months left join revenue using (month) left join cogs using (month) left join signups using (month)
"""
QUERIES = {  # name -> (query, hand-written answer)
    "profit_tree": ({"metrics": ["revenue", "profit", "margin"], "dimensions": ["channel", "metric_time__month"]},
                    PROFIT_SQL),
    "cumulative": ({"metrics": ["revenue_mtd"], "dimensions": ["metric_time__day"]}, REVENUE_MTD_SQL),
    "offset": ({"metrics": ["revenue_mom"], "dimensions": ["metric_time__month"]}, REVENUE_MOM_SQL),
    "conversion": ({"metrics": ["signup_to_order"], "dimensions": ["metric_time__month"]}, SIGNUP_TO_ORDER_SQL),
    # three views merged by UNION ALL: a bare NULL placeholder would be typed text on PostgreSQL
    "three_views": ({"metrics": ["revenue", "cogs", "signups"], "dimensions": ["metric_time__month"]},
                    THREE_VIEWS_SQL),
}


def copy_demo(root: Path, warehouse: dict) -> Path:
    shutil.copytree(DEMO, root)
    settings = yaml.safe_load((root / "phloem.yml").read_text())
    (root / "phloem.yml").write_text(yaml.safe_dump({**settings, "warehouse": warehouse}))
    return root


@pytest.fixture(scope="module")
def shops(tmp_path_factory, postgres_project):
    """(DuckDB project, PostgreSQL project) over the same generated data, both built."""
    base = tmp_path_factory.mktemp("demo_pg")
    duck_root = copy_demo(base / "duckdb", {"engine": "duckdb", "database": "data/shop.duckdb"})
    (duck_root / "data").mkdir()
    con = duckdb.connect(str(duck_root / "data" / "shop.duckdb"))
    generate(con, scale=2000)
    con.close()
    pg_root = postgres_project(shutil.copytree(duck_root, base / "postgres"))
    duck, pg = Project.load(duck_root), Project.load(pg_root)
    duck.build()
    pg.build()
    yield duck, pg
    duck.close()
    pg.close()


def same(a, b) -> bool:
    """Decimals, integers, dates and text exactly; a float (either side) to 1e-9 relative."""
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return type(a) is type(b) and a == b if isinstance(a, Decimal) else a == b


def assert_same_rows(got: list[tuple], want: list[tuple]) -> None:
    assert len(got) == len(want)
    for g, w in zip(sorted(got, key=repr), sorted(want, key=repr), strict=True):
        assert all(same(x, y) for x, y in zip(g, w, strict=True)), f"{g} != {w}"


def test_both_engines_built_the_same_tables(shops):
    duck, pg = shops
    names = sorted([*(t.name for t in duck.builder.targets()), *duck.model.rollups])
    assert pg.engine.tables("phloem", "") == sorted([*names, "_phloem_builds", "_phloem_rollup_partitions",
                                                     "_phloem_rollups", "customer_stream"])
    for name in names:
        query = f'select count(*) from phloem."{name}"'
        assert pg.engine.rows(query) == duck.engine.rows(query), name
    assert pg.builder.stale() == []


@pytest.mark.parametrize("name", QUERIES)
def test_query_matches_duckdb_and_hand_written_sql(shops, name):
    duck, pg = shops
    query, sql = QUERIES[name]
    on_duck, on_pg = duck.query(**query), pg.query(**query)
    assert on_pg.schema == on_duck.schema  # same Arrow types, not just equal values
    rows = lambda t: [tuple(r.values()) for r in t.to_pylist()]  # noqa: E731
    assert on_pg.num_rows > 10
    assert_same_rows(rows(on_pg), rows(on_duck))
    hand = duck.engine.rows(sql)
    assert_same_rows(rows(on_duck), hand)
    assert_same_rows(rows(on_pg), hand)


def test_datasets_match_row_for_row(shops):
    duck, pg = shops
    for name in ("orders", "customers", "visits"):
        columns = duck.model.datasets[name].output_columns()
        on_duck, on_pg = duck.dataset(name), pg.dataset(name)
        assert on_pg.column_names == on_duck.column_names == list(columns)
        order = [(columns[0], "ascending")]
        assert_same_rows([tuple(r.values()) for r in on_pg.sort_by(order).to_pylist()],
                         [tuple(r.values()) for r in on_duck.sort_by(order).to_pylist()])


def test_cli_on_postgres(shops):
    _, pg = shops
    result = CliRunner().invoke(app, ["query", "-m", "revenue,orders", "-b", "channel", "-f", "csv",
                                      "-p", str(pg.model.root)])
    assert result.exit_code == 0, result.output
    header, *lines = result.stdout.splitlines()
    assert header == '"channel","revenue","orders"'
    assert len(lines) == pg.query(metrics=["revenue"], dimensions=["channel"]).num_rows


def test_phloem_demo_on_postgres(tmp_path, monkeypatch, fresh_database):
    # the demo project with its warehouse switched to PostgreSQL: `phloem demo` generates, copies and builds there
    root = copy_demo(tmp_path / "shop", {"engine": "postgres", "dsn": "${PHLOEM_TEST_DEMO_DSN}"})
    monkeypatch.delenv("PHLOEM_TEST_DEMO_DSN", raising=False)
    result = CliRunner().invoke(app, ["demo", "--dir", str(root), "--scale", "300"])
    assert result.exit_code == 1
    assert "environment variable `PHLOEM_TEST_DEMO_DSN` is not set" in result.stderr
    assert "Traceback" not in result.output

    monkeypatch.setenv("PHLOEM_TEST_DEMO_DSN", fresh_database("cli_demo"))
    result = CliRunner().invoke(app, ["demo", "--dir", str(root), "--scale", "300"])
    assert result.exit_code == 0, result.output
    assert "orders (first 10 of 300)" in result.stdout
    p = Project.load(root)
    assert p.engine.rows("select count(*) from raw.orders") == [(300,)]
    assert p.dataset("orders").num_rows == 300
    p.close()


def test_a_failed_build_changes_nothing(shops, tmp_path):
    _, pg = shops
    root = shutil.copytree(pg.model.root, tmp_path / "shop")
    settings = yaml.safe_load((root / "phloem.yml").read_text())
    (root / "phloem.yml").write_text(yaml.safe_dump({**settings, "materialization": {"schema": "rebuilt"}}))
    first = Project.load(root)
    first.build()
    before = first.engine.arrow('select * from rebuilt."orders" order by order_id')
    first.close()
    streams = root / "models" / "streams.yml"
    streams.write_text(streams.read_text().replace("from raw.refunds", "from raw.no_such_table"))
    broken = Project.load(root)
    with pytest.raises(BuildError, match=r'building "rebuilt"\."__stage_customer_stream__refunded_order" '
                                         r'failed: relation "raw.no_such_table" does not exist'):
        broken.build()
    assert broken.engine.tables("rebuilt", "__stage_") == []
    assert broken.engine.arrow('select * from rebuilt."orders" order by order_id').equals(before)
    assert "customer_stream__refunded_order" in broken.builder.stale()
    broken.close()
