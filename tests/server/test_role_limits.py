"""Limits per role: time (cancelled in the warehouse), rows, queries at once and requests per minute, over real
HTTP (504, 400, 429 + Retry-After) and the PostgreSQL wire (57014, 54000, 53300 through psycopg)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import psycopg
import pytest
import yaml

from semantic.access.context import SecurityContext
from semantic.access.quota import Quotas
from semantic.demo import create
from semantic.errors import LimitExceeded
from semantic.project.model import RoleLimits
from server.runtime import Runtime
from tests.server.conftest import SLOW, LiveServer
from tests.server.identities import authenticator, identity

LIMITS = {
    "default": {"timeout": "20s", "rows": 100_000},
    "hasty": {"timeout": "1s"},
    "tiny": {"rows": 3},
    "pair": {"concurrent": 2, "timeout": "4s"},
    "burst": {"per_minute": 3},
    "wide": {"rows": 0},
}
SLOW_QUERY = {"metrics": ["slow_distinct_buckets"]}
BY_DAY = {"metrics": ["orders"], "dimensions": ["metric_time__day"]}


def ctx(user: str, *roles: str) -> SecurityContext:
    return SecurityContext(user, frozenset(roles))


def quotas(clock=time.monotonic) -> Quotas:
    return Quotas({k: RoleLimits.model_validate(v) for k, v in LIMITS.items()}, timeout=30, clock=clock)


# ------------------------------------------------------------------------------------------------ the library

def test_a_context_gets_the_most_generous_of_its_roles_and_the_default_for_the_rest():
    q = quotas()
    assert q.allowance(ctx("a")).timeout == 20 and q.allowance(ctx("a")).rows == 100_000
    assert q.allowance(ctx("a", "hasty")).timeout == 1 and q.allowance(ctx("a", "hasty")).rows == 100_000
    both = q.allowance(ctx("a", "hasty", "pair", "unknown"))
    assert both.timeout == 4  # pair's 4 s beats hasty's 1 s
    assert both.concurrent is None  # hasty inherits the default's: no bound at once, more generous than pair's 2
    assert q.allowance(ctx("a", "pair")).concurrent == 2
    assert q.allowance(ctx("a", "tiny", "wide")).rows is None  # 0: no limit, the most generous
    assert q.allowance(ctx("a", "tiny")).limits.rows == 3


def test_concurrent_queries_are_counted_per_user_and_released():
    q = quotas()
    first, second = q.admit(ctx("ann", "pair")), q.admit(ctx("ann", "pair"))
    with pytest.raises(LimitExceeded, match="2 queries running") as e:
        q.admit(ctx("ann", "pair"))
    assert e.value.sqlstate == "53300" and e.value.retry_after == 1.0
    q.admit(ctx("bob", "pair")).release()  # another user has their own count
    first.release()
    first.release()  # twice is once
    with q.admit(ctx("ann", "pair")):
        pass
    second.release()


def test_requests_per_minute_slide_and_say_when_to_come_back():
    now = [1000.0]
    q = quotas(clock=lambda: now[0])
    for step in (0, 10, 20):
        now[0] = 1000.0 + step
        q.admit(ctx("ann", "burst")).release()
    now[0] = 1030.0
    with pytest.raises(LimitExceeded, match="3 requests in the last minute") as e:
        q.admit(ctx("ann", "burst"))
    assert e.value.retry_after == pytest.approx(30.0)  # when the first of the three leaves the window
    now[0] = 1060.5
    q.admit(ctx("ann", "burst")).release()  # it left
    with pytest.raises(LimitExceeded):
        q.admit(ctx("ann", "burst"))


def test_admission_is_thread_safe():
    q = Quotas({"default": RoleLimits(concurrent=5)})
    held, refused, lock = [], [], threading.Lock()

    def take():
        try:
            t = q.admit(ctx("ann"))
            with lock:
                held.append(t)
        except LimitExceeded:
            with lock:
                refused.append(1)

    threads = [threading.Thread(target=take) for _ in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(held) == 5 and len(refused) == 35
    for t in held:
        t.release()
    q.admit(ctx("ann")).release()


def test_limits_settings_are_checked(tmp_path):
    from semantic.errors import ModelError
    from semantic.project.load import load_project

    root = tmp_path / "p"
    create(root, scale=100)
    doc = yaml.safe_load((root / "phloem.yml").read_text())
    doc["limits"] = {"analyst": {"timeout": "soon"}, "x": {"bytes": "12 parsecs"}, "y": {"per_minut": 3}}
    (root / "phloem.yml").write_text(yaml.safe_dump(doc))
    with pytest.raises(ModelError) as e:
        load_project(root)
    text = str(e.value)
    assert "`soon` is not a duration" in text and "not a size" in text and "did you mean `per_minute`" in text


# ------------------------------------------------------------------------------------------------ over HTTP

@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("limits") / "shop"
    create(root, scale=1500)
    (root / "models" / "slow.yml").write_text(SLOW)
    doc = yaml.safe_load((root / "phloem.yml").read_text())
    doc["limits"] = LIMITS
    (root / "phloem.yml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return root


@pytest.fixture(scope="module")
def served(root):
    from server.app import create_app

    runtime = Runtime(root, timeout=30)
    runtime.project.build()
    with LiveServer(create_app(runtime, auth=authenticator())) as server:
        yield server, runtime


def post(server, body, *who, timeout=60):
    return httpx.post(server.url + "/api/v1/query", json=body, headers=identity(*who), timeout=timeout)


def test_a_roles_time_limit_cancels_the_query_in_the_warehouse(served):
    server, runtime = served
    engine = runtime.project.engine
    start = time.monotonic()
    r = post(server, SLOW_QUERY, "hal", "hasty")
    took = time.monotonic() - start
    assert r.status_code == 504 and r.json()["error"]["type"] == "timeout", r.text
    assert "1 s" in r.json()["error"]["message"]
    assert took < 6  # the server's own limit is 30 s, the default role's 20 s
    assert engine.rows("select 1") == [(1,)]  # the warehouse is free again


def test_a_roles_row_limit_refuses_the_answer(served):
    server, _ = served
    r = post(server, BY_DAY, "tim", "tiny")
    assert r.status_code == 400 and r.json()["error"]["type"] == "limit", r.text
    assert "more than 3 rows" in r.json()["error"]["message"]
    assert post(server, BY_DAY, "tim", "analyst").status_code == 200  # the default allows it
    # the answer is in the cache now; a cache hit is held to the limit too
    r = post(server, BY_DAY, "tim", "tiny")
    assert r.status_code == 400 and "more than 3 rows" in r.text


def test_a_third_query_at_once_is_refused_while_two_run(served):
    server, _ = served
    results = []

    def slow():
        results.append(post(server, SLOW_QUERY, "pam", "pair"))

    threads = [threading.Thread(target=slow) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(1.0)  # both are running in the warehouse now (each for up to pair's 4 s)
    third = post(server, {"metrics": ["orders"]}, "pam", "pair")
    other = post(server, {"metrics": ["orders"]}, "pat", "pair")  # another user of the role is not held up
    for t in threads:
        t.join()
    assert third.status_code == 429 and third.json()["error"]["type"] == "limit", third.text
    assert third.headers["retry-after"] == "1" and "2 queries running" in third.json()["error"]["message"]
    assert other.status_code == 200
    assert [r.status_code for r in results] == [504, 504]
    assert post(server, {"metrics": ["orders"]}, "pam", "pair").status_code == 200  # released


def test_requests_per_minute_are_refused_with_retry_after(served):
    server, _ = served
    codes = [post(server, {"metrics": ["orders"]}, "bea", "burst").status_code for _ in range(3)]
    assert codes == [200, 200, 200]
    r = post(server, {"metrics": ["orders"]}, "bea", "burst")
    assert r.status_code == 429 and "3 requests in the last minute" in r.json()["error"]["message"]
    assert 55 <= int(r.headers["retry-after"]) <= 60
    assert post(server, {"metrics": ["orders"]}, "ben", "burst").status_code == 200


def _door(server, door: str, *who):
    """One request at `door` asking for the orders total (or its tree), as `who`."""
    url, headers = server.url, identity(*who)
    if door == "sql":
        return httpx.post(url + "/api/v1/sql", json={"sql": "SELECT MEASURE(orders) FROM orders"}, headers=headers,
                          timeout=60)
    if door == "graphql":
        return httpx.post(url + "/graphql", json={"query": "{ query { orders } }"}, headers=headers, timeout=60)
    return httpx.get(url + "/api/v1/tree", params={"root": "profit", "start": "2024-01-01", "end": "2024-01-31"},
                     headers=headers, timeout=60)


@pytest.mark.parametrize("door", ["sql", "graphql", "explore"])
def test_every_http_door_counts_requests_per_minute(served, door):
    server, _ = served
    codes = [_door(server, door, f"burst-{door}", "burst").status_code for _ in range(3)]
    assert codes == [200, 200, 200]
    r = _door(server, door, f"burst-{door}", "burst")
    assert r.status_code == 429 and "3 requests in the last minute" in r.json()["error"]["message"], r.text
    assert 55 <= int(r.headers["retry-after"]) <= 60


@pytest.mark.parametrize("door", ["sql", "graphql"])
def test_every_http_door_holds_answers_to_the_roles_row_limit(served, door):
    server, _ = served
    url, headers = server.url, identity("tia", "tiny")
    if door == "sql":
        r = httpx.post(url + "/api/v1/sql", json={"sql": "SELECT ordered_at__day, MEASURE(orders) FROM orders "
                                                         "GROUP BY 1"}, headers=headers, timeout=60)
        assert r.status_code == 400 and "more than 3 rows" in r.text, r.text
    else:
        r = httpx.post(url + "/graphql", json={"query": "{ query { orders metricTime { day } } }"}, headers=headers,
                       timeout=60)
        assert r.status_code == 200 and "more than 3 rows" in r.json()["errors"][0]["message"], r.text


def test_a_roles_time_limit_holds_on_graphql_and_the_sql_door(served):
    server, _ = served
    headers = identity("hank", "hasty")
    start = time.monotonic()
    r = httpx.post(server.url + "/graphql", json={"query": "{ query { slowDistinctBuckets } }"}, headers=headers,
                   timeout=60)
    assert time.monotonic() - start < 6 and "1 s" in r.json()["errors"][0]["message"], r.text
    start = time.monotonic()
    r = httpx.post(server.url + "/api/v1/sql", json={"sql": "SELECT MEASURE(distinct_buckets) FROM slow_numbers"},
                   headers=headers, timeout=60)
    assert time.monotonic() - start < 6 and r.status_code == 504, r.text


# ------------------------------------------------------------------------------------------------ the pg wire

@pytest.fixture(scope="module")
def pg(root, served):
    """The pg wire door of a server whose `default` role (the trust sessions' unrestricted context) is limited."""
    from server.pgwire.server import PgConfig, PgServer, ServerThread

    _, runtime = served
    with ServerThread(PgServer(runtime, PgConfig(port=0, users=None, trust="loopback"))) as thread:
        yield thread.port, runtime


def connect(port: int) -> psycopg.Connection:
    return psycopg.connect(host="127.0.0.1", port=port, user="phloem", dbname="shop", autocommit=True)


def test_pg_statements_obey_the_limits_of_their_role(pg):
    port, runtime = pg
    settings = runtime.project.model.settings.limits
    try:
        runtime.quotas.configure({**settings, "default": RoleLimits(timeout=1, rows=3, per_minute=3)}, 30,
                                 runtime.limits)
        with connect(port) as conn:
            start = time.monotonic()
            with pytest.raises(psycopg.errors.QueryCanceled):  # 57014
                conn.execute("SELECT MEASURE(distinct_buckets) FROM slow_numbers").fetchall()
            assert time.monotonic() - start < 6
            with pytest.raises(psycopg.errors.ProgramLimitExceeded, match="more than 3 rows"):  # 54000
                conn.execute("SELECT ordered_at__day, MEASURE(orders) FROM orders GROUP BY 1").fetchall()
            assert conn.execute("SELECT MEASURE(orders) FROM orders").fetchall()[0][0] > 0  # the 3rd
            with pytest.raises(psycopg.errors.TooManyConnections) as e:  # 53300: the 4th this minute (a repeat, from the cache)
                conn.execute("SELECT MEASURE(orders) FROM orders").fetchall()
            assert e.value.sqlstate == "53300" and "last minute" in str(e.value)
            assert conn.execute("SELECT 1").fetchall() == [(1,)]  # the catalog and constants are not counted
    finally:
        runtime.quotas.configure(settings, 30, runtime.limits)
