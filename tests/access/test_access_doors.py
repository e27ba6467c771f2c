"""Each door shows a person only what the policies let them see: catalogs (REST meta, GraphQL introspection,
pg_attribute / information_schema), the explorer's tree, drill and what-if, datasets; and refuses those no
policy grants anything. Identities are real credentials: a JWT for HTTP, a SCRAM user with roles for pg."""

from __future__ import annotations

import secrets
import time

import httpx
import jwt
import psycopg
import pytest
import yaml

from server.app import create_app
from server.auth import Authenticator
from server.auth.tokens import Tokens, TokenSettings
from server.pgwire import PgConfig, PgServer, ServerThread
from server.pgwire.auth import parse_users_yaml
from server.runtime import Runtime
from tests.access.conftest import IDENTITIES
from tests.access.hand import answer, raw_tables
from tests.server.conftest import LiveServer

SECRET = secrets.token_urlsafe(48)
PERIOD = {"start": "2024-01-01", "end": "2024-12-31"}


def bearer(who: str) -> dict:
    ctx = IDENTITIES[who]
    claims = {"sub": ctx.user, "roles": sorted(ctx.roles), **ctx.attributes, "exp": int(time.time()) + 600}
    return {"Authorization": "Bearer " + jwt.encode(claims, SECRET, algorithm="HS256")}


@pytest.fixture(scope="module")
def served(shop_dir):
    raw = raw_tables(shop_dir)
    users, contexts = parse_users_yaml(yaml.safe_dump({
        who: {"password": "pw-" + who, "roles": sorted(c.roles), "attributes": c.attributes}
        for who, c in IDENTITIES.items()}))
    runtime = Runtime(shop_dir, timeout=30)
    runtime.project.build()
    auth = Authenticator(tokens=Tokens(TokenSettings.from_env({"PHLOEM_JWT_SECRET": SECRET})))
    with LiveServer(create_app(runtime, auth=auth)) as http, \
            ServerThread(PgServer(runtime, PgConfig(port=0, users=users, identities=contexts))) as pg:
        with httpx.Client(base_url=http.url, timeout=60) as client:
            yield client, pg.port, raw


def pg_rows(port: int, who: str, sql: str) -> list[tuple]:
    with psycopg.connect(host="127.0.0.1", port=port, user=who, password="pw-" + who, dbname="shop",
                         autocommit=True) as con:
        return con.execute(sql).fetchall()


def test_without_credentials_nothing_answers(served):
    client, _, _ = served
    assert client.get("/api/v1/meta").status_code == 401
    assert client.post("/api/v1/query", json={"metrics": ["revenue"]}).status_code == 401


def test_meta_lists_only_visible_members(served):
    client, _, _ = served
    meta = client.get("/api/v1/meta", headers=bearer("web_partner")).json()
    assert [v["name"] for v in meta["views"]] == ["orders"]
    names = {m["name"] for m in meta["metrics"]}
    assert "revenue" in names and not {"profit", "cogs", "signups", "net_revenue"} & names
    assert all(e["child"] in names and e["parent"] in names for e in meta["tree"]["edges"])
    analyst = client.get("/api/v1/meta", headers=bearer("analyst")).json()
    lines = next(v for v in analyst["views"] if v["name"] == "order_lines")
    assert "cogs" not in [m["name"] for m in lines["measures"]]
    assert "cogs" not in str(analyst["rollups"])  # a rollup storing a hidden measure is not listed
    manager = client.get("/api/v1/meta", headers=bearer("us_manager")).json()
    orders = next(v for v in manager["views"] if v["name"] == "orders")
    assert "acquisition_channel" not in [d["name"] for d in orders["dimensions"]]


def test_rest_answers_only_the_policy_rows(served):
    client, _, raw = served
    r = client.post("/api/v1/query", json={"metrics": ["revenue"], "dimensions": ["country"]},
                    headers=bearer("de_manager"))
    assert r.status_code == 200 and [row[0] for row in r.json()["rows"]] == ["DE"]
    want = answer(raw, "select sum(total) as r from raw.orders where country = 'DE'")[0]["r"]
    assert float(r.json()["rows"][0][1]) == float(want)
    hidden = client.post("/api/v1/query", json={"metrics": ["profit"]}, headers=bearer("web_partner"))
    assert hidden.status_code == 400 and "unknown metric `profit`" in hidden.json()["error"]["message"]
    explain = client.post("/api/v1/explain", json={"metrics": ["revenue"]}, headers=bearer("de_manager")).json()
    assert "'DE'" in explain["plan"] and "access policy" in explain["plan"]


def test_no_applying_policy_is_403_and_42501(served):
    client, port, _ = served
    r = client.post("/api/v1/query", json={"metrics": ["revenue"]}, headers=bearer("nobody"))
    assert r.status_code == 403, r.text
    r = client.post("/api/v1/sql", json={"sql": "SELECT MEASURE(revenue) FROM metrics"}, headers=bearer("nobody"))
    assert r.status_code in (400, 403), r.text  # the metrics table has no columns for them at all
    with pytest.raises(psycopg.Error) as e:
        pg_rows(port, "nobody", "SELECT MEASURE(revenue) FROM metrics")
    assert e.value.sqlstate in ("42501", "42703", "42P01"), e.value.sqlstate


def test_datasets_are_for_unrestricted_callers_only(served):
    client, _, _ = served
    r = client.get("/api/v1/datasets/orders", headers=bearer("auditor"))
    assert r.status_code == 403 and "datasets" in r.json()["error"]["message"]


def test_graphql_introspection_hides_what_the_role_may_not_see(served):
    client, _, _ = served
    query = '{ __type(name: "Row") { fields { name } } }'
    partner = client.post("/graphql", json={"query": query}, headers=bearer("web_partner")).json()
    fields = {f["name"] for f in partner["data"]["__type"]["fields"]}
    assert "revenue" in fields and not {"profit", "cogs", "signups", "category"} & fields
    auditor = client.post("/graphql", json={"query": query}, headers=bearer("auditor")).json()
    assert {"profit", "cogs", "signups", "category"} <= {f["name"] for f in auditor["data"]["__type"]["fields"]}
    asked = client.post("/graphql", json={"query": "{ query { profit } }"}, headers=bearer("web_partner")).json()
    assert asked["errors"] and "profit" in asked["errors"][0]["message"] and not asked.get("data")
    rows = client.post("/graphql", json={"query": "{ query { revenue country } }"},
                       headers=bearer("us_manager")).json()["data"]["query"]
    assert [r["country"] for r in rows] == ["US"]


def test_the_pg_catalog_hides_what_the_user_may_not_see(served):
    _, port, _ = served
    tables = {r[0] for r in pg_rows(port, "web_partner", "SELECT table_name FROM information_schema.tables "
                                                          "WHERE table_schema = 'public'")}
    assert tables == {"orders", "metrics"}, tables
    columns = {r[0] for r in pg_rows(port, "web_partner", "SELECT a.attname FROM pg_attribute a WHERE "
                                                           "a.attrelid = 'metrics'::regclass AND a.attnum > 0")}
    assert "revenue" in columns and not {"profit", "cogs", "signups"} & columns
    manager = {r[0] for r in pg_rows(port, "us_manager", "SELECT column_name FROM information_schema.columns "
                                                          "WHERE table_name = 'orders'")}
    assert "channel" in manager and "acquisition_channel" not in manager
    auditor = {r[0] for r in pg_rows(port, "auditor", "SELECT table_name FROM information_schema.tables "
                                                       "WHERE table_schema = 'public'")}
    assert {"orders", "order_lines", "customers", "visits", "metrics"} <= auditor
    assert pg_rows(port, "us_manager", "SELECT country, MEASURE(orders) FROM metrics GROUP BY 1")[0][0] == "US"


def test_the_tree_omits_hidden_nodes_and_values_only_visible_ones(served):
    """Omitted, not refused: a visible metric made partly of hidden ones is a leaf (valued, not split)."""
    client, _, raw = served
    params = {"root": "revenue_share", **PERIOD}
    tree = client.get("/api/v1/tree", params=params, headers=bearer("us_manager")).json()
    names = [n["name"] for n in tree["nodes"]]
    assert names == ["revenue_share", "revenue", "revenue_benchmark"]
    value = {n["name"]: n["value"] for n in tree["nodes"]}
    us, everyone = (answer(raw, f"select sum(total) as r from raw.orders where {c} and ordered_at >= '2024-01-01' "
                                f"and ordered_at < '2025-01-01'")[0]["r"] for c in ("country = 'US'", "true"))
    assert float(value["revenue"]) == float(us) and float(value["revenue_benchmark"]) == float(everyone)
    analyst = client.get("/api/v1/tree", params={"root": "profit", **PERIOD}, headers=bearer("analyst"))
    assert analyst.status_code == 400 and "unknown metric `profit`" in analyst.text
    partner = client.get("/api/v1/tree", params={"root": "aov", **PERIOD}, headers=bearer("web_partner")).json()
    assert [n["name"] for n in partner["nodes"]] == ["aov", "revenue", "orders"]
    series = client.get("/api/v1/tree/series", params={"root": "aov", "grain": "year", "periods": 2,
                                                       "end": "2024-12-31"}, headers=bearer("web_partner")).json()
    assert set(series["series"]) == {"aov", "revenue", "orders"}
    web = answer(raw, "select sum(total) as r from raw.orders where channel = 'web' and ordered_at >= '2024-01-01' "
                      "and ordered_at < '2025-01-01'")[0]["r"]
    assert float(series["series"]["revenue"][1]) == float(web)


def test_a_tree_with_hidden_children_is_cut_there(shop_dir, tmp_path):
    """net_revenue visible, refunds hidden: net_revenue is a leaf of the analyst-like role's profit tree."""
    from semantic import Project
    from semantic.access.context import SecurityContext
    from semantic.metrics import explore

    root = tmp_path / "shop"
    import shutil

    shutil.copytree(shop_dir, root, ignore=shutil.ignore_patterns(".phloem"))
    (root / "models" / "access.yml").write_text((shop_dir / "models" / "access.yml").read_text() + """
  - name: no_refunds
    role: no_refunds
    exclude:
      metrics: [refunds]
""")
    project = Project.load(root)
    scoped = project.scoped(SecurityContext("r", frozenset({"no_refunds"})))
    tree = explore.tree_values(scoped, "profit", explore.Period.of(PERIOD))
    names = [n["name"] for n in tree["nodes"]]
    assert "refunds" not in names and "net_revenue" in names and "revenue" not in names  # cut at net_revenue
    assert all(e["child"] != "refunds" for e in tree["edges"])
    whatif = explore.what_if(scoped, "profit", explore.Period.of(PERIOD), {"net_revenue": 10})
    assert "refunds" not in [n["name"] for n in whatif["nodes"]]
    with pytest.raises(Exception, match="refunds"):
        explore.what_if(scoped, "profit", explore.Period.of(PERIOD), {"refunds": 10})


def test_drill_and_whatif_run_under_the_policy(served):
    client, _, raw = served
    drill = client.get("/api/v1/drill", params={"metric": "revenue", "start": "2024-11-01", "end": "2024-11-30",
                                                "dimensions": "country,channel"}, headers=bearer("us_manager"))
    assert drill.status_code == 200, drill.text
    countries = {e["value"] for e in drill.json()["items"] if e["dimension"] == "country"}
    assert countries == {"US"}, countries
    us = answer(raw, "select sum(total) as r from raw.orders where country = 'US' and ordered_at >= '2024-11-01' "
                     "and ordered_at < '2024-12-01'")[0]["r"]
    assert float(drill.json()["value1"]) == float(us)
    body = {"root": "aov", **PERIOD, "changes": {"orders": 10}}
    whatif = client.post("/api/v1/whatif", json=body, headers=bearer("web_partner")).json()
    before = {n["name"]: n["value"] for n in whatif["nodes"]}
    web = answer(raw, "select count(*) as n from raw.orders where channel = 'web' and ordered_at >= '2024-01-01' "
                      "and ordered_at < '2025-01-01'")[0]["n"]
    assert before["orders"] == web
    refused = client.post("/api/v1/whatif", json={**body, "root": "profit"}, headers=bearer("web_partner"))
    assert refused.status_code == 400 and "profit" in refused.text
