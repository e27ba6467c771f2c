"""Observability through the real doors: /metrics (Prometheus text), JSON logs and the audit log, with one query id
following each request. A uvicorn server and a PostgreSQL-wire server over one demo shop; psycopg as the client."""

from __future__ import annotations

import io
import logging
import os
import re
import time

import duckdb
import httpx
import orjson
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from semantic import Project, events
from semantic.demo import create
from server.app import create_app
from server.observability import audit, logs
from server.pgwire import PgConfig, PgServer, ServerThread
from server.pgwire.auth import parse_users_yaml
from tests.server.conftest import LiveServer

PG_SQL = "SELECT channel, MEASURE(revenue) AS revenue FROM metrics GROUP BY channel ORDER BY channel"
HEX_ID = re.compile(r"[0-9a-f]{16}")
PG_PASSWORD = "pg-secret-password"  # must never reach a log or audit line
SECRET = "a-shared-secret-of-at-least-32-bytes!!"


class Observed:
    def __init__(self, http: LiveServer, wire: ServerThread, logged: io.StringIO, audit_path, project):
        self.http, self.wire, self.logged, self.audit_path, self.project = http, wire, logged, audit_path, project
        self.client = httpx.Client(base_url=http.url, timeout=30)

    def pg(self) -> psycopg.Connection:
        return psycopg.connect(host="127.0.0.1", port=self.wire.port, user="analyst", password=PG_PASSWORD,
                               dbname="shop", connect_timeout=10, autocommit=True)

    def scrape(self) -> dict[tuple[str, frozenset], float]:
        """Every sample of /metrics by (sample name, labels); parsing it is itself the format check."""
        r = self.client.get("/metrics")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        return {(s.name, frozenset(s.labels.items())): s.value
                for family in text_string_to_metric_families(r.text) for s in family.samples}

    def log_lines(self) -> list[dict]:
        return [orjson.loads(line) for line in self.logged.getvalue().splitlines() if line.strip()]

    def audit_lines(self) -> list[dict]:
        return [orjson.loads(line) for line in self.audit_path.read_text().splitlines()]


@pytest.fixture(scope="module")
def observed(tmp_path_factory):
    root = tmp_path_factory.mktemp("observed") / "shop"
    create(root, scale=2000)
    audit_path = root.parent / "audit.log"
    saved_env = os.environ.get("PHLOEM_AUDIT_LOG")
    os.environ["PHLOEM_AUDIT_LOG"] = str(audit_path)
    root_logger = logging.getLogger()
    saved = root_logger.level, list(root_logger.handlers)
    logged = io.StringIO()
    assert logs.configure({"PHLOEM_LOG_FORMAT": "json"}, stream=logged) == "json"
    try:
        app = create_app(root, timeout=20.0)
        runtime = app.state.runtime
        runtime.project.build()
        users, identities = parse_users_yaml(f"analyst: {{password: {PG_PASSWORD}, roles: [analyst], tenant: acme}}")
        pg = PgServer(runtime, PgConfig(host="127.0.0.1", port=0, users=users, identities=identities, trust="none"))
        with LiveServer(app) as http, ServerThread(pg) as wire:
            observed = Observed(http, wire, logged, audit_path, runtime.project)
            observed.project_runtime = runtime
            yield observed
    finally:
        root_logger.handlers[:] = saved[1]
        root_logger.setLevel(saved[0])
        if saved_env is None:
            os.environ.pop("PHLOEM_AUDIT_LOG", None)
        else:
            os.environ["PHLOEM_AUDIT_LOG"] = saved_env
        audit.to_file(None)


def moved(before: dict, after: dict, name: str, **labels) -> float:
    key = (name, frozenset(labels.items()))
    return after.get(key, 0.0) - before.get(key, 0.0)


def rest_query(o: Observed, rid: str | None = None, **query) -> httpx.Response:
    headers = {"X-Request-Id": rid} if rid else {}
    r = o.client.post("/api/v1/query", json=query, headers=headers)
    assert r.status_code == 200, r.text
    return r


def test_metrics_parse_and_queries_count_by_door(observed):
    before = observed.scrape()
    rest_query(observed, metrics=["orders"], dimensions=["country"])
    r = observed.client.post("/graphql", json={"query": "{ query { channel orders } }"})
    assert r.status_code == 200 and "errors" not in r.json(), r.text
    r = observed.client.post("/api/v1/sql", json={"sql": "SELECT country, MEASURE(revenue) FROM metrics GROUP BY 1"})
    assert r.status_code == 200, r.text
    with observed.pg() as conn:
        assert len(conn.execute(PG_SQL).fetchall()) > 1
    after = observed.scrape()
    for door in ("rest", "graphql", "sql", "pg"):
        assert moved(before, after, "phloem_queries_total", door=door, status="ok") >= 1, door
        assert moved(before, after, "phloem_query_seconds_count", door=door) >= 1, door
    assert moved(before, after, "phloem_http_requests_total", route="/api/v1/query", status="200") == 1
    assert moved(before, after, "phloem_http_requests_total", route="/graphql", status="200") == 1


def test_failed_queries_count_as_errors_and_are_audited(observed):
    before = observed.scrape()
    r = observed.client.post("/api/v1/query", json={"metrics": ["no_such_metric"]}, headers={"X-Request-Id": "bad-1"})
    assert r.status_code == 400
    after = observed.scrape()
    assert moved(before, after, "phloem_queries_total", door="rest", status="error") == 1
    assert moved(before, after, "phloem_http_requests_total", route="/api/v1/query", status="400") == 1
    line = next(a for a in observed.audit_lines() if a["query_id"] == "bad-1")
    assert line["status"] == "error" and line["error"] == "QueryError" and line["rows"] is None


def test_a_repeated_query_is_a_cache_hit(observed):
    query = {"metrics": ["revenue"], "dimensions": ["channel"], "limit": 3}
    before = observed.scrape()
    assert rest_query(observed, **query).headers["X-Phloem-Cache"] == "miss"
    middle = observed.scrape()
    assert rest_query(observed, **query).headers["X-Phloem-Cache"] == "hit"
    after = observed.scrape()
    assert moved(before, middle, "phloem_result_cache_misses_total", door="rest") == 1
    assert moved(before, middle, "phloem_result_cache_hits_total", door="rest") == 0
    assert moved(middle, after, "phloem_result_cache_hits_total", door="rest") == 1
    assert moved(middle, after, "phloem_result_cache_misses_total", door="rest") == 0


def test_rollup_hits_and_misses(observed):
    by_rollup = {"metrics": ["profit"], "dimensions": ["channel"], "limit": 4}
    explained = observed.client.post("/api/v1/explain", json=by_rollup).json()
    used = {t["rollup"] for t in explained["tables"]} - {None}
    assert used, explained["tables"]  # the demo's rollups answer profit by channel
    before = observed.scrape()
    rest_query(observed, "rollup-hit", **by_rollup)
    middle = observed.scrape()
    # no rollup carries is_first_order: the view's own table answers
    rest_query(observed, "rollup-miss", metrics=["profit"], dimensions=["is_first_order"], limit=2)
    after = observed.scrape()
    assert moved(before, middle, "phloem_rollup_hits_total", door="rest") >= 1
    assert moved(before, middle, "phloem_rollup_misses_total", door="rest") == 0
    assert moved(middle, after, "phloem_rollup_misses_total", door="rest") >= 1
    assert moved(middle, after, "phloem_rollup_hits_total", door="rest") == 0
    lines = {a["query_id"]: a for a in observed.audit_lines()}
    assert set(lines["rollup-hit"]["rollups"]) == used and lines["rollup-miss"]["rollups"] == []


def test_builds_are_timed_and_failures_counted(observed, tmp_path):
    before = observed.scrape()
    observed.project.build(force=True)
    middle = observed.scrape()
    assert moved(before, middle, "phloem_build_seconds_count") == 1
    assert moved(before, middle, "phloem_build_seconds_sum") > 0
    assert moved(before, middle, "phloem_build_failures_total") == 0
    broken = tmp_path / "shop"  # a shop whose payments table is gone: its build fails in the warehouse
    create(broken, scale=50)
    with duckdb.connect(str(broken / "data" / "shop.duckdb")) as con:
        con.execute("drop table raw.payments")
    project = Project.load(broken)
    try:
        with pytest.raises(Exception):  # noqa: B017 - whichever error the warehouse gives, the build failed
            project.build()
    finally:
        project.close()
    after = observed.scrape()
    assert moved(middle, after, "phloem_build_failures_total") == 1
    assert moved(middle, after, "phloem_build_seconds_count") == 1


def test_pg_connections_gauge_follows_open_connections(observed):
    def gauge() -> float:
        return observed.scrape()[("phloem_pg_connections", frozenset())]

    before = gauge()
    conn = observed.pg()
    try:
        assert gauge() == before + 1
        second = observed.pg()
        assert gauge() == before + 2
        second.close()
    finally:
        conn.close()
    deadline = time.monotonic() + 10
    while gauge() != before:  # the server sees the close a moment later
        assert time.monotonic() < deadline, "the gauge did not come back down"
        time.sleep(0.05)


def test_request_id_is_echoed_logged_and_audited(observed):
    rid = "dash-42.refresh_A"
    r = rest_query(observed, rid, metrics=["orders", "revenue"], dimensions=["channel"], filters=["country = 'US'"])
    assert r.headers["X-Request-Id"] == rid
    rows = len(r.json()["rows"])
    mine = [line for line in observed.log_lines() if line.get("query_id") == rid]
    http_line = next(line for line in mine if line["logger"] == "phloem.http")
    assert http_line["door"] == "rest" and http_line["status"] == 200 and http_line["route"] == "/api/v1/query"
    assert {"time", "level", "message"} <= set(http_line) and http_line["level"] == "INFO"
    logged_audit = next(line for line in mine if line["logger"] == "phloem.audit")
    filed = next(a for a in observed.audit_lines() if a["query_id"] == rid)
    for line in (logged_audit, filed):
        assert line["user"] == "anonymous" and line["door"] == "rest" and line["roles"] == []
        assert line["metrics"] == ["orders", "revenue"] and line["dimensions"] == ["channel"]
        assert line["filters"] == ["country = 'US'"] and line["rows"] == rows and line["status"] == "ok"
        assert line["seconds"] >= 0 and line["time"].endswith("+00:00")


def test_an_insane_request_id_is_replaced(observed):
    for given in ["has spaces", "x" * 65, "semi;colon", "new\u00e9line"]:
        r = observed.client.get("/healthz", headers={"X-Request-Id": given.encode("utf-8")})
        echoed = r.headers["X-Request-Id"]
        assert echoed != given and HEX_ID.fullmatch(echoed), given
    assert observed.client.get("/healthz").headers["X-Request-Id"] != observed.client.get("/healthz").headers[
        "X-Request-Id"]


def test_every_http_door_carries_its_request_id_into_the_audit(observed):
    observed.client.post("/graphql", json={"query": "{ query { country orders } }"}, headers={"X-Request-Id": "gql-1"})
    observed.client.post("/api/v1/sql", json={"sql": "SELECT MEASURE(orders) FROM metrics"},
                         headers={"X-Request-Id": "sql-1"})
    lines = {a["query_id"]: a for a in observed.audit_lines()}
    assert lines["gql-1"]["door"] == "graphql" and lines["gql-1"]["metrics"] == ["orders"]
    assert lines["gql-1"]["dimensions"] == ["country"] and lines["gql-1"]["rows"] > 1
    assert lines["sql-1"]["door"] == "sql" and lines["sql-1"]["rows"] == 1


def test_pg_statements_get_their_own_query_ids(observed):
    count = len(observed.audit_lines())
    with observed.pg() as conn:
        conn.execute(PG_SQL).fetchall()
        conn.execute("SELECT MEASURE(orders) AS n FROM metrics WHERE channel = %s", ["web"]).fetchall()
    mine = [a for a in observed.audit_lines()[count:] if a["door"] == "pg"]
    assert len(mine) == 2 and all((a["user"], a["roles"], a["tenant"]) == ("analyst", ["analyst"], "acme")
                                  for a in mine)
    assert len({a["query_id"] for a in mine}) == 2 and all(HEX_ID.fullmatch(a["query_id"]) for a in mine)
    assert mine[1]["filters"] and mine[1]["rows"] == 1
    logged = {line["query_id"] for line in observed.log_lines() if line["logger"] == "phloem.audit"}
    assert {a["query_id"] for a in mine} <= logged  # the same ids in the JSON log


def test_a_failing_subscriber_never_fails_a_query(observed):
    def broken(event):
        raise RuntimeError("listener bug")

    events.subscribe(broken)
    try:
        r = rest_query(observed, "after-broken", metrics=["orders"], dimensions=["country"], limit=5)
        with observed.pg() as conn:
            assert conn.execute(PG_SQL).fetchall()
    finally:
        events.unsubscribe(broken)
    assert len(r.json()["rows"]) == 5
    assert any(a["query_id"] == "after-broken" for a in observed.audit_lines())  # the others still heard it
    failed = [line for line in observed.log_lines() if line["logger"] == "phloem.events"]
    assert failed and "listener bug" in failed[-1]["exception"]


def test_metrics_carry_no_data_values_or_user_names(observed):
    rest_query(observed, metrics=["orders"], filters=["country = 'ZZ-secret-value'"])
    observed.client.get("/api/v1/unknown/secret-path-segment")
    observed.client.get("/docs/assets/secret-asset.js")
    with observed.pg() as conn:
        conn.execute(PG_SQL).fetchall()
    text = observed.client.get("/metrics").text
    assert "secret" not in text and "analyst" not in text and "anonymous" not in text
    labels = {name for family in text_string_to_metric_families(text) if family.name.startswith("phloem_")
              for s in family.samples for name in s.labels}
    assert labels <= {"door", "status", "route", "le"}
    assert 'route="(unmatched)"' in text and 'route="/docs/assets/{path}"' in text


def test_phloem_serve_logs_json_lines_and_writes_the_audit_file(tmp_path):
    """The CLI wiring: PHLOEM_LOG_FORMAT=json makes stderr JSON lines, PHLOEM_AUDIT_LOG the audit file."""
    import signal
    import subprocess
    import sys

    from tests.server.conftest import free_port

    root = tmp_path / "shop"
    create(root, scale=300)
    audit_path = tmp_path / "audit" / "queries.log"
    audit_path.parent.mkdir()
    port = free_port()
    env = {**os.environ, "PHLOEM_LOG_FORMAT": "json", "PHLOEM_AUDIT_LOG": str(audit_path)}
    proc = subprocess.Popen([sys.executable, "-m", "server.cli", "serve", str(root), "--port", str(port),
                             "--pg-port", "0"], cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, proc.communicate()
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the server did not become ready"
            time.sleep(0.2)
        r = httpx.post(url + "/api/v1/query", json={"metrics": ["orders"], "dimensions": ["channel"]},
                       headers={"X-Request-Id": "cli-req-7"}, timeout=30)
        assert r.status_code == 200 and r.headers["X-Request-Id"] == "cli-req-7"
        rows = len(r.json()["rows"])
    finally:
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    lines = [orjson.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    mine = [line for line in lines if line.get("query_id") == "cli-req-7"]
    assert {line["logger"] for line in mine} >= {"phloem.http", "phloem.audit"}, stderr
    assert all(line["door"] == "rest" and line["level"] == "INFO" for line in mine)
    filed = [orjson.loads(line) for line in audit_path.read_text().splitlines()]
    assert [(a["query_id"], a["user"], a["rows"]) for a in filed if a["query_id"] == "cli-req-7"] == [
        ("cli-req-7", "anonymous", rows)]


def test_the_authenticated_user_is_audited_and_no_secret_is_logged(observed):
    """With auth on, the context auth made (request.state.context) is who the audit line names; a 401 still gets
    its request id and is counted; neither the token nor a password appears in any log or audit line."""
    import jwt

    from server.auth import Authenticator

    now = int(time.time())
    token = jwt.encode({"sub": "ada", "iat": now, "exp": now + 600, "roles": ["analyst", "finance"],
                        "tenant": "acme"}, SECRET, algorithm="HS256")
    app = create_app(observed.project_runtime, auth=Authenticator.from_env({"PHLOEM_JWT_SECRET": SECRET}))
    with LiveServer(app) as secured, httpx.Client(base_url=secured.url, timeout=30) as client:
        before = observed.scrape()
        refused = client.post("/api/v1/query", json={"metrics": ["orders"]}, headers={"X-Request-Id": "no-token"})
        assert refused.status_code == 401 and refused.headers["X-Request-Id"] == "no-token"
        r = client.post("/api/v1/query", json={"metrics": ["orders"], "dimensions": ["channel"]},
                        headers={"X-Request-Id": "ada-1", "Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        after = observed.scrape()
    # auth answers before any route is chosen: the request is counted, its route unnamed
    assert moved(before, after, "phloem_http_requests_total", route="(unmatched)", status="401") >= 1
    line = next(a for a in observed.audit_lines() if a["query_id"] == "ada-1")
    assert (line["user"], line["roles"], line["tenant"]) == ("ada", ["analyst", "finance"], "acme")
    http_line = next(x for x in observed.log_lines() if x.get("query_id") == "ada-1" and x["logger"] == "phloem.http")
    assert http_line["user"] == "ada"
    everything = observed.logged.getvalue() + observed.audit_path.read_text()
    assert token not in everything and SECRET not in everything and PG_PASSWORD not in everything
