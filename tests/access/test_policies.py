"""Access policies in the library: which rows and members each identity sees, checked against hand SQL over
the raw tables with the policy's condition applied (tests/access/hand.py)."""

from __future__ import annotations

import shutil

import pytest

import semantic
from semantic.access.context import SecurityContext
from semantic.errors import Forbidden, ModelError, QueryError
from semantic.query.query import make_query
from tests.access.conftest import IDENTITIES
from tests.access.hand import answer, raw_tables, same

ORDERS = "raw.orders o"


@pytest.fixture(scope="module")
def shop(shop_dir):
    raw = raw_tables(shop_dir)
    project = semantic.Project.load(shop_dir)
    project.build()
    yield project, raw
    project.close()


def ask(shop, who: str, use_rollups: bool = True, **fields):
    project, _ = shop
    return project.scoped(IDENTITIES[who]).run(make_query(**fields), use_rollups=use_rollups)


def check(shop, who: str, sql: str, metrics: list[str], dims: list[str] = (), **fields):
    got = ask(shop, who, metrics=metrics, dimensions=list(dims), **fields).table.to_pylist()
    want = answer(shop[1], sql)
    assert want, "the hand answer has rows: the test would prove nothing otherwise"
    problem = same(got, want, list(dims), metrics)
    assert problem is None, problem


def test_scalar_claim_filters_rows(shop):
    check(shop, "us_manager", f"select channel, sum(total) as revenue from {ORDERS} where country = 'US' group by 1",
          ["revenue"], ["channel"])
    check(shop, "de_manager", f"select channel, count(*) as orders from {ORDERS} where country = 'DE' group by 1",
          ["orders"], ["channel"])


def test_list_claim_filters_rows(shop):
    check(shop, "app_partner", f"select country, sum(total) as revenue from {ORDERS} "
          "where channel in ('app', 'marketplace') group by 1", ["revenue"], ["country"])


def test_a_claim_is_a_literal_not_sql(shop):
    """`US' OR 1=1 --` is a country no order has: nothing, not everything."""
    got = ask(shop, "injector", metrics=["revenue", "orders"], dimensions=["country"]).table
    assert got.num_rows == 0
    total = ask(shop, "injector", metrics=["revenue"]).table.to_pylist()
    assert all(r["revenue"] is None for r in total)


def test_a_missing_claim_grants_no_rows(shop):
    assert ask(shop, "claimless_manager", metrics=["revenue"], dimensions=["channel"]).table.num_rows == 0
    assert all(r["orders"] in (None, 0) for r in ask(shop, "claimless_manager", metrics=["orders"]).table.to_pylist())


def test_two_applying_policies_are_or_ed(shop):
    """partner + manager (FR, channels [app]): orders of France or of the app channel."""
    check(shop, "partner_manager", f"select country, channel, sum(total) as revenue from {ORDERS} "
          "where country = 'FR' or channel in ('app') group by 1, 2", ["revenue"], ["country", "channel"])


def test_a_view_no_policy_governs_is_not_filtered(shop):
    check(shop, "us_manager", "select count(*) as \"visits.visits\" from raw.visits", ["visits.visits"])


def test_views_limit_which_views_a_policy_filters(shop):
    """The managers' policy governs customers too (its own country column), so signups are the US's."""
    check(shop, "us_manager", "select count(*) as signups from raw.customers where country = 'US'", ["signups"])
    check(shop, "us_manager", "select l.category, sum(l.quantity * l.unit_cost) as cogs from raw.order_lines l "
          "join raw.orders o using (order_id) where o.country = 'US' group by 1", ["cogs"], ["category"])


@pytest.mark.parametrize("fields, unknown", [
    ({"metrics": ["profit"]}, "unknown metric `profit`"),
    ({"metrics": ["revenue"], "dimensions": ["category"]}, "unknown dimension `category`"),
    ({"metrics": ["revenue"], "filters": ["category = 'toys'"]}, "unknown dimension `category`"),
    ({"metrics": ["order_lines.cogs"]}, "unknown measure `order_lines.cogs`"),
    ({"metrics": ["customers.signups"]}, "unknown measure `customers.signups`"),
])
def test_members_outside_include_are_unknown(shop, fields, unknown):
    with pytest.raises(QueryError) as e:
        ask(shop, "web_partner", **fields)
    assert unknown in str(e.value)
    assert "profit" not in e.value.suggestion and "cogs" not in e.value.suggestion


def test_excluded_members_are_unknown(shop):
    with pytest.raises(QueryError, match="unknown metric `cogs`"):
        ask(shop, "analyst", metrics=["cogs"])
    with pytest.raises(QueryError, match="unknown measure `order_lines.cogs`"):
        ask(shop, "analyst", metrics=["order_lines.cogs"])
    with pytest.raises(QueryError, match="unknown dimension `orders.acquisition_channel`"):
        ask(shop, "us_manager", metrics=["revenue"], dimensions=["orders.acquisition_channel"])
    with pytest.raises(QueryError, match="unknown dimension `orders.acquisition_channel`"):
        ask(shop, "us_manager", metrics=["revenue"], filters=["orders.acquisition_channel = 'ads'"])
    with pytest.raises(QueryError) as e:  # a typo suggests nothing hidden
        ask(shop, "analyst", metrics=["cogz"])
    assert "cogs" not in str(e.value)


def test_the_scoped_model_lists_only_visible_members(shop):
    project, _ = shop
    partner = project.scoped(IDENTITIES["web_partner"])
    assert set(partner.model.views) == {"orders"}
    assert "profit" not in partner.model.metrics and "revenue" in partner.model.metrics
    assert "profit" not in partner.compiler.tree.nodes
    assert set(partner.compiler.graph.views) == {"orders"}
    manager = project.scoped(IDENTITIES["us_manager"])
    assert "acquisition_channel" not in [d.name for d in manager.model.views["orders"].dimensions]
    analyst = project.scoped(IDENTITIES["analyst"])
    assert "cogs" not in [m.name for m in analyst.model.views["order_lines"].measures]
    assert not {"cogs", "costs", "profit", "margin"} & set(analyst.model.metrics)


def test_a_metric_made_of_hidden_ones_is_a_leaf_in_the_visible_tree(shop):
    project, _ = shop
    tree = project.scoped(IDENTITIES["web_partner"]).compiler.tree
    assert "net_revenue" not in tree.nodes  # not included
    assert tree.children("revenue_share") and tree.children("aov")  # made only of visible metrics: split
    analyst = project.scoped(IDENTITIES["analyst"]).compiler.tree
    assert "costs" not in analyst.nodes and all(e.child != "cogs" for e in analyst.edges)


def test_a_public_metric_is_over_every_row_in_a_filtered_query(shop):
    sql = ("select channel, sum(total) filter (where country = 'US') as revenue, sum(total) as revenue_benchmark, "
           "sum(total) filter (where country = 'US') / sum(total) as revenue_share from raw.orders group by 1")
    check(shop, "us_manager", sql, ["revenue", "revenue_benchmark", "revenue_share"], ["channel"])
    check(shop, "us_manager", sql, ["revenue", "revenue_benchmark", "revenue_share"], ["channel"], )
    got = ask(shop, "us_manager", use_rollups=False, metrics=["revenue_share", "revenue"],
              dimensions=["channel"]).table.to_pylist()
    problem = same(got, answer(shop[1], sql), ["channel"], ["revenue_share", "revenue"])
    assert problem is None, problem


def test_no_applying_policy_is_forbidden(shop):
    with pytest.raises(Forbidden):
        ask(shop, "nobody", metrics=["revenue"])
    with pytest.raises(Forbidden):
        ask(shop, "nobody", metrics=["revenue"], dimensions=["country"])
    project, _ = shop
    assert not project.scoped(IDENTITIES["nobody"]).model.metrics


def test_rollups_answer_only_when_they_store_the_policy_dimensions(shop):
    project, raw = shop
    q = make_query(metrics=["revenue"], dimensions=["channel", "metric_time__month"])
    manager = project.scoped(IDENTITIES["us_manager"])
    assert [t["rollup"] for t in manager.compile(q).plan.tables()] == ["orders_monthly"]  # it stores country
    acquired = project.scoped(IDENTITIES["acquired_search"])
    tables = acquired.compile(q).plan.tables()
    assert tables and all(t["rollup"] is None for t in tables), tables  # no rollup stores acquisition_channel
    assert all(any("acquisition_channel" in r["reason"] for r in t["rejected"]) for t in tables), tables
    sql = ("select o.channel, date_trunc('month', o.ordered_at) as metric_time__month, sum(o.total) as revenue "
           "from raw.orders o join raw.customers c using (customer_id) where c.acquisition_channel = 'paid_search' "
           "group by 1, 2")
    for use_rollups in (True, False):
        got = acquired.run(q, use_rollups=use_rollups).table.to_pylist()
        assert same(got, answer(raw, sql), ["channel", "metric_time__month"], ["revenue"]) is None
    sql = ("select channel, date_trunc('month', ordered_at) as metric_time__month, sum(total) as revenue "
           "from raw.orders where country = 'US' group by 1, 2")
    for use_rollups in (True, False):
        got = manager.run(q, use_rollups=use_rollups).table.to_pylist()
        assert same(got, answer(raw, sql), ["channel", "metric_time__month"], ["revenue"]) is None
    assert "access policy" in manager.explain(q)


def test_the_result_cache_never_crosses_identities(shop):
    project, raw = shop
    q = make_query(metrics=["revenue", "orders"], dimensions=["channel"], filters=["channel <> 'x'"])
    us, de = project.scoped(IDENTITIES["us_manager"]), project.scoped(IDENTITIES["de_manager"])
    first = us.run(q)
    second = de.run(q)
    assert not second.cached
    again = us.run(q)
    assert again.cached
    for scoped, country in ((us, "US"), (de, "DE")):
        sql = (f"select channel, sum(total) as revenue, count(*) as orders from raw.orders "
               f"where country = '{country}' group by 1")
        got = scoped.run(q).table.to_pylist()
        assert same(got, answer(raw, sql), ["channel"], ["revenue", "orders"]) is None
    assert first.table.to_pylist() != second.table.to_pylist()
    assert project.cached_answer(q) is None  # the unrestricted caller has not asked: nothing to reuse
    assert de.cached_answer(q) is not None and de.cached_answer(q).table.to_pylist() == second.table.to_pylist()


def test_an_unrestricted_context_gets_the_project_itself(shop):
    project, _ = shop
    assert project.scoped(SecurityContext.anonymous()) is project
    assert project.scoped(None) is project


BAD = [
    ("rows: \"colour = {{ user.colour }}\"", "rows", "colour"),
    ("rows: \"category = {{ user.category }}\"\n    views: [customers]", "access_policies.bad", "cannot reach"),
    ("include:\n      metrics: [profitt]", "include.metrics", "profitt"),
    ("exclude:\n      dimensions: [orders.colour]", "exclude.dimensions", "orders.colour"),
    ("views: [ordrs]", "views", "ordrs"),
]


@pytest.mark.parametrize("body, key, word", BAD)
def test_a_bad_policy_is_a_model_error_naming_file_line_and_key(tmp_path, shop_dir, body, key, word):
    root = tmp_path / "shop"
    shutil.copytree(shop_dir, root, ignore=shutil.ignore_patterns("data", ".phloem"))
    (root / "models" / "access.yml").write_text(
        "access_policies:\n  - name: fine\n    role: a\n  - name: bad\n    role: b\n    " + body + "\n")
    with pytest.raises(ModelError) as e:
        semantic.Project.load(root)
    problems = [p for p in e.value.problems if word in p.message]
    assert problems, str(e.value)
    p = problems[0]
    assert p.file.endswith("access.yml") and p.line is not None and p.line >= 4, str(p)
    assert key in p.key, str(p)
