"""REST through a real HTTP server: every endpoint, every encoding, every error status."""

from __future__ import annotations

import decimal
import io
import time

import httpx
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from semantic.query.query import make_query

QUERY = {"metrics": ["profit", "margin", "orders"], "dimensions": ["channel", "metric_time__year"],
         "filters": ["country in ('US', 'CA')"], "order_by": ["channel", "metric_time__year"]}


@pytest.fixture(scope="module")
def client(live):
    with httpx.Client(base_url=live.url, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def project(live):
    return live.app.state.runtime.project


def expected(project, **fields) -> list[dict]:
    return project.run(make_query(**fields), use_cache=False).table.to_pylist()


def test_health_and_readiness(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


def test_query_json_equals_the_python_api(client, project):
    r = client.post("/api/v1/query", json=QUERY)
    assert r.status_code == 200
    body = r.json(parse_float=decimal.Decimal)
    assert [c["name"] for c in body["columns"]] == ["channel", "metric_time__year", "profit", "margin", "orders"]
    assert [c["type"] for c in body["columns"]] == ["string", "date", "decimal(38,2)", "float", "integer"]
    want = expected(project, **QUERY)
    got = [dict(zip([c["name"] for c in body["columns"]], row, strict=True)) for row in body["rows"]]
    assert len(got) == len(want) > 0
    for g, w in zip(got, want, strict=True):
        assert g["channel"] == w["channel"] and g["metric_time__year"] == w["metric_time__year"].isoformat()
        assert g["profit"] == w["profit"]  # exact: decimals travel as JSON numbers written from the Decimal
        assert float(g["margin"]) == pytest.approx(w["margin"], rel=1e-12)
        assert g["orders"] == w["orders"]


def test_cache_status_header(client):
    q = {"metrics": ["revenue"], "dimensions": ["metric_time__quarter"], "filters": ["channel = 'app'"]}
    first, second = client.post("/api/v1/query", json=q), client.post("/api/v1/query", json=q)
    assert (first.headers["x-phloem-cache"], second.headers["x-phloem-cache"]) == ("miss", "hit")
    assert first.json()["rows"] == second.json()["rows"] and second.json()["cached"] is True


def test_csv_and_arrow_by_accept_header(client, project):
    want = expected(project, **QUERY)
    csv = client.post("/api/v1/query", json=QUERY, headers={"accept": "text/csv"})
    assert csv.headers["content-type"].startswith("text/csv")
    table = pacsv.read_csv(io.BytesIO(csv.content))
    assert table.column_names == list(want[0]) and len(table) == len(want)
    arrow = client.post("/api/v1/query", json=QUERY, headers={"accept": "application/vnd.apache.arrow.stream"})
    got = pa.ipc.open_stream(arrow.content).read_all()
    assert got.to_pylist() == want


def test_explain_and_meta(client):
    explain = client.post("/api/v1/explain", json=QUERY).json()
    assert "leaf_0" in explain["plan"] and explain["sql"].startswith("WITH")
    meta = client.get("/api/v1/meta").json()
    assert {v["name"] for v in meta["views"]} >= {"orders", "order_lines", "customers"}
    profit = next(m for m in meta["metrics"] if m["name"] == "profit")
    assert profit["formula"] == "net_revenue - costs"
    assert {(c["metric"], c["sign"]) for c in profit["children"]} == {("net_revenue", 1), ("costs", -1)}
    orders = next(v for v in meta["views"] if v["name"] == "orders")
    assert next(d for d in orders["dimensions"] if d["name"] == "ordered_at")["grains"][:2] == ["hour", "day"]


@pytest.mark.parametrize(("payload", "status", "message", "suggestion"), [
    ({"metrics": ["profti"]}, 400, "unknown metric `profti`", "did you mean `profit`?"),
    ({"metrics": ["revenue"], "dimensions": ["chanel"]}, 400, "unknown dimension `chanel`", "did you mean `channel`?"),
    ({"metrics": ["revenue"], "dimensions": ["metric_time__mnth"]}, 400, "unknown time grain `mnth`", "month"),
    ({"metrics": ["revenue"], "filters": ["channel = 5"]}, 400, "the warehouse rejected the query", "types"),
    ({"metrics": []}, 422, "invalid field `metrics`", "/docs"),
    ({"metrics": ["revenue"], "limit": -1}, 422, "invalid field `limit`", "/docs"),
    ({"metrics": ["revenue"], "nonsense": 1}, 422, "invalid field `nonsense`", "/docs"),
])
def test_errors_are_clear(client, payload, status, message, suggestion):
    r = client.post("/api/v1/query", json=payload)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert message in error["message"] and suggestion in error["suggestion"]
    assert "Traceback" not in r.text


def test_malformed_json_is_422(client):
    r = client.post("/api/v1/query", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "Traceback" not in r.text


def test_slow_query_is_cancelled_with_504(client):
    started = time.monotonic()
    r = client.post("/api/v1/query", json={"metrics": ["slow_distinct_buckets"]})
    assert r.status_code == 504 and r.json()["error"]["type"] == "timeout"
    assert time.monotonic() - started < 15  # the server's limit is 5 s
    assert client.post("/api/v1/query", json={"metrics": ["orders"]}).status_code == 200  # still serving


def test_reload_swaps_the_model_and_keeps_a_broken_one_out(live, client, demo_dir):
    metrics = demo_dir / "models" / "metrics.yml"
    original = metrics.read_text()
    try:
        metrics.write_text(original + "  - {name: gross_per_order, expr: revenue / orders}\n")
        assert client.post("/api/v1/reload").json()["reloaded"] is True
        r = client.post("/api/v1/query", json={"metrics": ["gross_per_order"]})
        assert r.status_code == 200 and r.json()["rows"][0][0] > 0
        metrics.write_text(original + "  - {name: broken, expr: revnue}\n")
        bad = client.post("/api/v1/reload")
        assert bad.status_code == 500 and "did you mean `revenue`" in str(bad.json()["error"]["problems"])
        assert client.post("/api/v1/query", json={"metrics": ["gross_per_order"]}).status_code == 200
    finally:
        metrics.write_text(original)
        client.post("/api/v1/reload")


def test_sql_endpoint_equals_the_python_api(client, project):
    sql = ("SELECT channel, DATE_TRUNC('year', metric_time) AS year, MEASURE(profit) AS profit "
           "FROM metrics WHERE country IN ('US', 'CA') GROUP BY 1, 2 ORDER BY 1, 2")
    r = client.post("/api/v1/sql", json={"sql": sql})
    assert r.status_code == 200, r.text
    body = r.json(parse_float=decimal.Decimal)
    assert [c["name"] for c in body["columns"]] == ["channel", "year", "profit"]
    want = expected(project, metrics=["profit"], dimensions=["channel", "metric_time__year"],
                    filters=["country in ('US', 'CA')"], order_by=["channel", "metric_time__year"])
    assert [(row[0], row[2]) for row in body["rows"]] == [(w["channel"], w["profit"]) for w in want]
    params = client.post("/api/v1/sql", json={"sql": "SELECT MEASURE(orders) FROM metrics WHERE channel = $1",
                                              "params": ["app"]})
    assert params.json()["rows"][0][0] == expected(project, metrics=["orders"], filters=["channel = 'app'"])[0]["orders"]
    bad = client.post("/api/v1/sql", json={"sql": "SELECT MEASURE(proft) FROM metrics"})
    assert bad.status_code == 400 and "profit" in bad.json()["error"]["suggestion"] + bad.json()["error"]["message"]
    assert client.post("/api/v1/sql", json={"sql": "DROP TABLE orders"}).status_code == 400


def test_explain_shows_the_rollup_each_leaf_read_and_why_not_the_others(client):
    body = client.post("/api/v1/explain", json={"metrics": ["profit"], "dimensions": ["metric_time__month",
                                                                                       "country"]}).json()
    assert "table: phloem.orders_monthly (rollup orders_monthly" in body["plan"]
    assert "not used: orders_daily — larger:" in body["plan"]
    assert [t["rollup"] for t in body["tables"]] == ["orders_monthly", "order_lines_monthly"]
    assert '"phloem"."orders_monthly"' in body["sql"]
    meta = client.get("/api/v1/meta").json()
    daily = next(r for r in meta["rollups"] if r["name"] == "orders_daily")
    assert (daily["grain"], daily["partition"], daily["refresh"], daily["incremental"]) == ("day", "month", "1 hour",
                                                                                             "1 month")
    assert daily["built"]["rows"] > 0 and daily["built"]["current"] and not daily["built"]["behind"]


def test_a_repeat_is_a_cache_hit_and_a_rebuild_is_not_served_stale(tmp_path):
    """Hits are answered from the result cache (and the body kept for the same answer); a build with new data
    empties the cache, so the next repeat has the new numbers — checked against SQL over the raw table."""
    from semantic.demo import create
    from server.app import create_app
    from tests.server.conftest import LiveServer

    create(tmp_path / "shop", scale=500)
    app = create_app(tmp_path / "shop")
    project = app.state.runtime.project
    project.build()
    by_channel = {"metrics": ["orders"], "dimensions": ["channel"], "order_by": ["channel"]}
    sql = {"sql": "SELECT channel, MEASURE(orders) AS orders FROM metrics GROUP BY 1 ORDER BY 1"}

    def hand() -> list[list]:
        return [list(r) for r in project.engine.rows("SELECT channel, count(*) FROM raw.orders GROUP BY 1 ORDER BY 1")]

    with LiveServer(app) as live, httpx.Client(base_url=live.url, timeout=30) as client:
        for path, body in (("/api/v1/query", by_channel), ("/api/v1/sql", sql)):
            first, again = client.post(path, json=body), client.post(path, json=body)
            assert again.headers["X-Phloem-Cache"] == "hit" and again.json()["rows"] == first.json()["rows"] == hand()
        project.engine.execute("DELETE FROM raw.orders WHERE channel = 'web' AND order_id % 3 = 0")
        project.build(force=True)
        after = [client.post(path, json=body) for path, body in (("/api/v1/query", by_channel), ("/api/v1/sql", sql))]
        assert after[0].headers["X-Phloem-Cache"] == "miss"  # (the SQL door's query is then the same: a hit)
        assert after[0].json()["rows"] == after[1].json()["rows"] == hand() != first.json()["rows"]
