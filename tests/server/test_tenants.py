"""Tenants: one server, each tenant's own source schemas or database, its own builds, rollups and caches.

The demo's `raw` tables are copied into `acme_raw` (as they are) and `globex_raw` (a third of the orders, totals
tripled) of one DuckDB file, and into `raw` of another file (initech: half of the orders); then `raw` is dropped
from the first file, so an answer can only come from a tenant's own tables. Every answer is compared with hand
SQL over that tenant's tables.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import duckdb
import httpx
import pytest
import yaml

from semantic.access.context import SecurityContext
from semantic.demo import create
from semantic.errors import Forbidden, ModelError
from semantic.project.load import load_project
from semantic.project.tenants import Tenants, renamed, tenant_model
from server.runtime import Runtime
from tests.server.conftest import LiveServer
from tests.server.identities import authenticator, identity

TENANTS = {"acme": {"schemas": {"raw": "acme_raw"}},
           "globex": {"schemas": {"raw": "globex_raw"}},
           "initech": {"database": "data/initech.duckdb"}}
ORDERS = {"acme": ("acme_raw", "true", 1), "globex": ("globex_raw", "hash(order_id) % 3 = 0", 3),
          "initech": ("ini.raw", "hash(order_id) % 2 = 0", 1)}
QUERY = {"metrics": ["orders", "revenue"], "dimensions": ["channel"], "order_by": ["channel"]}


def copy_raw(con: duckdb.DuckDBPyConnection, target: str, where: str, factor: int) -> None:
    con.execute(f"create schema {target}")
    for (table,) in con.execute("select table_name from information_schema.tables where table_schema = 'raw' "
                                "and table_catalog = 'shop'").fetchall():
        if table == "orders":
            con.execute(f"create table {target}.orders as select * replace (total * {factor} as total) "
                        f"from shop.raw.orders where {where}")
        else:
            con.execute(f"create table {target}.{table} as select * from shop.raw.{table}")


def tenant_project(root: Path, tenants: dict = TENANTS, **settings) -> Path:
    create(root, scale=1500)
    con = duckdb.connect(str(root / "data" / "shop.duckdb"))
    con.execute(f"attach '{root / 'data' / 'initech.duckdb'}' as ini")
    for schema, where, factor in ORDERS.values():
        copy_raw(con, schema, where, factor)
    con.execute("detach ini")
    con.execute("drop schema raw cascade")  # only the tenants' copies remain
    con.close()
    doc = yaml.safe_load((root / "phloem.yml").read_text())
    doc.update(tenants=tenants, **settings)
    (root / "phloem.yml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return root


def hand(root: Path, tenant: str) -> list[list]:
    """orders and revenue by channel, straight from the tenant's own raw orders."""
    schema, _, _ = ORDERS[tenant]
    file, schema = ("initech.duckdb", "raw") if tenant == "initech" else ("shop.duckdb", schema)
    con = duckdb.connect(str(root / "data" / file), read_only=True)
    try:
        rows = con.execute(f"select channel, count(*), sum(total) from {schema}.orders group by 1 order by 1")
        return [[c, n, round(float(r), 2)] for c, n, r in rows.fetchall()]
    finally:
        con.close()


def rounded(rows) -> list[list]:
    return [[c, n, round(float(r), 2)] for c, n, r in rows]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tenant_project(tmp_path_factory.mktemp("tenants") / "shop")


@pytest.fixture(scope="module")
def expected(root) -> dict[str, list]:
    out = {t: hand(root, t) for t in TENANTS}
    assert out["acme"] != out["globex"] != out["initech"]  # the tenants' data really differ
    return out


@pytest.fixture(scope="module")
def tenants(root, expected) -> Tenants:
    t = Tenants(load_project(root))
    reports = t.build()
    assert set(reports) == set(TENANTS) and all(r.built for r in reports.values())
    yield t
    t.close()


# ------------------------------------------------------------------------------------------------ the mapping

def test_source_schemas_are_renamed_in_the_sql_tree_not_the_text():
    sql = "select o.raw_total, 'raw.orders' as note from raw.orders o join raw.customers using (customer_id)"
    assert renamed(sql, {"raw": "acme_raw"}, "duckdb") == (
        "SELECT o.raw_total, 'raw.orders' AS note FROM acme_raw.orders AS o JOIN acme_raw.customers "
        "USING (customer_id)")
    # a CTE of the same name, a table function and another schema stay as written
    assert renamed("with orders as (select 1) select * from orders, other.x, read_csv('raw.csv')",
                   {"main": "acme", "raw": "acme_raw"}, "duckdb") == \
        "with orders as (select 1) select * from orders, other.x, read_csv('raw.csv')"
    assert renamed("select * from customers", {"public": "acme"}, "postgres") == "SELECT * FROM acme.customers"


def test_a_tenant_model_reads_its_schemas_and_builds_into_its_own(root):
    model = load_project(root)
    acme = tenant_model(model, "acme")
    assert acme.settings.materialization.schema_ == "phloem_acme"
    assert all("acme_raw." in a.sql and "from raw." not in a.sql.lower()
               for s in acme.streams.values() for a in s.activities)
    initech = tenant_model(model, "initech")
    assert initech.database_path == str((root / "data" / "initech.duckdb").resolve())
    assert initech.streams == model.streams  # its own database: the sources are named as written
    assert model.settings.materialization.schema_ == "phloem"  # the model as written is untouched


def test_each_tenant_is_built_into_its_own_schema_with_its_own_rollups(root, tenants):
    engine = tenants.project("acme").engine
    assert engine is tenants.project("globex").engine is tenants.default.engine  # one warehouse, one engine
    assert tenants.project("initech").engine is not engine
    for name in ("acme", "globex"):
        schema = f"phloem_{name}"
        assert engine.table_exists(schema, "orders") and engine.table_exists(schema, "orders_monthly")
    assert not engine.table_exists("phloem", "orders")  # the model as written was not built
    assert tenants.project("initech").engine.table_exists("phloem_initech", "orders_monthly")


def test_answers_come_from_each_tenants_data(tenants, expected):
    for name in TENANTS:
        project = tenants.project(name)
        for use_rollups in (True, False):
            table = project.run(project_query(), use_rollups=use_rollups, use_cache=False).table
            assert columns(table) == expected[name]
        assert "phloem_" + name in project.compile(project_query()).sql


def columns(table) -> list[list]:
    return rounded(zip(*[table.column(c).to_pylist() for c in ("channel", "orders", "revenue")], strict=True))


def project_query():
    from semantic.query.query import make_query

    return make_query(**QUERY)


def test_one_query_with_the_cache_on_never_crosses_tenants(tenants, expected):
    answers = {}
    for _ in range(2):  # the second round is answered from each tenant's cache
        for name in TENANTS:
            answer = tenants.project(name).run(project_query())
            answers.setdefault(name, []).append(answer)
    for name in TENANTS:
        first, second = answers[name]
        assert second.cached and second.table is first.table
        assert columns(second.table) == expected[name]
    assert answers["acme"][0].compiled.sql != answers["globex"][0].compiled.sql


def test_a_context_picks_its_tenant(tenants):
    ctx = SecurityContext("ann", frozenset({"analyst"}), "globex")
    assert tenants.for_context(ctx) is tenants.project("globex")
    assert tenants.for_context(SecurityContext.anonymous()) is tenants.default  # the CLI, the loopback demo
    with pytest.raises(Forbidden, match="tenant `hooli` is not served"):
        tenants.for_context(SecurityContext("bob", frozenset(), "hooli"))
    with pytest.raises(Forbidden, match="belongs to no tenant"):
        tenants.for_context(SecurityContext("bob", frozenset({"analyst"})))


def test_without_tenants_every_context_gets_the_model_as_written(tmp_path):
    root = tmp_path / "shop"
    create(root, scale=200)
    t = Tenants(load_project(root))
    try:
        assert t.for_context(SecurityContext("bob", frozenset(), "acme")) is t.default
        assert list(t.build()) == [""]
    finally:
        t.close()


@pytest.mark.parametrize("tenants, message", [
    ({"acme": {"dsn": "postgresql://x"}}, "`dsn` is a PostgreSQL database"),
    ({"a": {"materialization": {"schema": "shared"}}, "b": {"materialization": {"schema": "shared"}}},
     "would build into schema `shared`"),
    ({"acme": {"materialization": {"schema": "phloem"}}}, "as the project does"),
    ({"acme": {"schemas": {"raw": "phloem_acme"}}}, "one of its source schemas"),
    ({"Acme": {}}, "not a valid tenant name"),
])
def test_tenant_settings_are_checked(tmp_path, tenants, message):
    root = tmp_path / "p"
    shutil.copytree(Path(__file__).parents[2] / "semantic" / "demo" / "project", root)
    doc = yaml.safe_load((root / "phloem.yml").read_text())
    doc["tenants"] = tenants
    (root / "phloem.yml").write_text(yaml.safe_dump(doc))
    with pytest.raises(ModelError, match=message) as e:
        load_project(root)
    assert "phloem.yml:" in str(e.value)


# ------------------------------------------------------------------------------------------------ the server

@pytest.fixture(scope="module")
def served(root, tenants):
    from server.app import create_app

    runtime = Runtime(root, timeout=10)
    app = create_app(runtime, auth=authenticator())
    with LiveServer(app) as server:
        yield server, runtime


def test_rest_answers_each_tenant_from_its_own_tables_and_caches(served, expected):
    server, runtime = served
    url = server.url + "/api/v1/query"
    for round_ in ("miss", "hit"):
        for name in TENANTS:
            r = httpx.post(url, json=QUERY, headers=identity("ann", "analyst", name), timeout=60)
            assert r.status_code == 200, r.text
            assert r.headers["x-phloem-cache"] == round_
            assert rounded(r.json()["rows"]) == expected[name]
    assert set(runtime.tenants._projects) == set(TENANTS)


def test_rest_refuses_an_unknown_tenant_and_a_context_without_one(served):
    server, _ = served
    url = server.url + "/api/v1/query"
    r = httpx.post(url, json=QUERY, headers=identity("eve", "analyst", "hooli"), timeout=10)
    assert r.status_code == 403 and r.json()["error"]["type"] == "forbidden"
    assert "hooli" in r.json()["error"]["message"] and "acme" not in r.text
    r = httpx.post(url, json=QUERY, headers=identity("eve", "analyst"), timeout=10)
    assert r.status_code == 403 and "no tenant" in r.json()["error"]["message"]


def test_a_reload_swaps_every_tenants_project(served, root, expected):
    server, runtime = served
    before = {name: runtime.project_for(SecurityContext("a", frozenset(), name)) for name in TENANTS}
    extra = root / "models" / "extra.yml"
    extra.write_text("metrics:\n  - {name: orders_again, measure: orders.orders}\n")
    try:
        assert runtime.reload()
        for name in TENANTS:
            after = runtime.project_for(SecurityContext("a", frozenset(), name))
            assert after is not before[name] and after.engine is before[name].engine
            assert after.model.settings.materialization.schema_ == f"phloem_{name}"
        r = httpx.post(server.url + "/api/v1/query", json={**QUERY, "metrics": ["orders_again", "revenue"]},
                       headers=identity("ann", "analyst", "globex"), timeout=60)
        assert r.status_code == 200 and r.headers["x-phloem-cache"] == "miss"
        assert rounded(r.json()["rows"]) == expected["globex"]
    finally:
        extra.unlink()
        runtime.reload()


def test_phloem_build_builds_every_tenant_or_one(tmp_path):
    import subprocess
    import sys

    root = tenant_project(tmp_path / "shop", {"acme": TENANTS["acme"], "globex": TENANTS["globex"]})
    cli = [sys.executable, "-m", "server.cli", "build", "--project", str(root)]
    start = time.monotonic()
    one = subprocess.run([*cli, "--tenant", "globex"], capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr
    assert "globex: built orders" in one.stdout and "acme:" not in one.stdout
    both = subprocess.run(cli, capture_output=True, text=True, timeout=300)
    assert both.returncode == 0, both.stderr
    assert "acme: built orders" in both.stdout and "globex: 0 built" in both.stdout
    wrong = subprocess.run([*cli, "--tenant", "globx"], capture_output=True, text=True, timeout=60)
    assert wrong.returncode == 1 and "did you mean `globex`" in wrong.stdout + wrong.stderr
    assert time.monotonic() - start < 300


def test_phloem_worker_builds_each_tenants_own_tables(tmp_path):
    import subprocess
    import sys

    root = tenant_project(tmp_path / "shop", {"acme": TENANTS["acme"], "globex": TENANTS["globex"]})
    run = subprocess.run([sys.executable, "-m", "server.cli", "worker", str(root), "--once"], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    con = duckdb.connect(str(root / "data" / "shop.duckdb"), read_only=True)
    try:
        for tenant in ("acme", "globex"):  # each tenant's dataset and rollups, from its own raw orders
            schema = ORDERS[tenant][0]
            built = con.execute(f"select count(*), sum(gross_revenue) from phloem_{tenant}.orders").fetchone()
            raw = con.execute(f"select count(*), sum(total) from {schema}.orders").fetchone()
            assert built == raw, tenant
            rollup = con.execute(f"select sum(orders__count) from phloem_{tenant}.orders_monthly").fetchone()
            assert rollup[0] == raw[0], tenant
    finally:
        con.close()


def test_pg_wire_statements_read_the_sessions_tenant(served, expected):
    """The pg door's frontend, as a session authenticated with a tenant runs it (SCRAM users map to tenants)."""
    from server.pgwire.frontend import Frontend

    _, runtime = served
    frontend = Frontend(runtime)
    sql = "SELECT channel, MEASURE(orders) AS orders, MEASURE(gross_revenue) AS revenue FROM orders GROUP BY 1 " \
          "ORDER BY 1"
    for _ in range(2):  # the second time from each tenant's cache
        for name in TENANTS:
            session = frontend.session("ann", "shop", context=SecurityContext("ann", frozenset({"analyst"}), name))
            (result,) = frontend.execute(session, sql)
            assert columns(result.table) == expected[name]
    stranger = frontend.session("eve", "shop", context=SecurityContext("eve", frozenset({"analyst"}), "hooli"))
    with pytest.raises(Forbidden, match="hooli"):
        frontend.execute(stranger, sql)
