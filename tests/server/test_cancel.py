"""A client that disconnects cancels its warehouse query at every HTTP door (GraphQL, the explorer API, as REST
in test_limits.py), and a PostgreSQL warehouse reads an answer in batches, so one over the limit stops there."""

from __future__ import annotations

import time
import urllib.parse

import httpx
import pyarrow as pa
import pytest

from semantic.limits import Cancel, Limits, QueryCancelled
from tests.server.rawhttp import get, post, wait_for

SLOW_GRAPHQL = {"query": "{ query { slowDistinctBuckets } }"}
SLOW_TREE = "/api/v1/tree?" + urllib.parse.urlencode(
    {"root": "slow_dated_buckets", "start": "2025-01-01", "end": "2025-01-31"})
# the slow view of tests/server/conftest.py with a time column, so the explorer can ask it for a period
SLOW_DATED = """
views:
  - name: slow_dated
    sql: "select date '2025-01-01' + (i % 28)::int as day, hash(i) % 1000003 as bucket from range(20000000000) t(i)"
    time: day
    dimensions: [bucket]
    measures: [{name: distinct_buckets, agg: count_distinct, expr: bucket}]
metrics:
  - {name: slow_dated_buckets, measure: slow_dated.distinct_buckets}
"""


@pytest.fixture(scope="module")
def slow_live(tmp_path_factory):
    from semantic.demo import create
    from server.app import create_app
    from tests.server.conftest import SLOW, LiveServer

    root = tmp_path_factory.mktemp("cancel") / "shop"
    create(root, scale=50)
    (root / "models" / "slow.yml").write_text(SLOW)
    (root / "models" / "slow_dated.yml").write_text(SLOW_DATED)
    app = create_app(root, timeout=5.0)
    app.state.runtime.project.build()
    with LiveServer(app) as server:
        yield server


def _dropped_stops_the_query(live, open_request) -> None:
    """The slow view takes minutes and the time limit is 5 s: the query must stop when the client leaves."""
    engine = live.app.state.runtime.project.engine
    before = engine.cancelled
    sock = open_request()
    time.sleep(0.5)  # the warehouse query is running
    assert engine.cancelled == before
    dropped = time.monotonic()
    sock.close()
    assert wait_for(lambda: engine.cancelled > before, 2.0), "the warehouse query was not interrupted"
    assert time.monotonic() - dropped < 2.0  # the disconnect stopped it, not the 5 s time limit
    time.sleep(0.3)
    assert engine.cancelled == before + 1  # and no other query of the request was started after it
    assert httpx.get(live.url + "/healthz", timeout=1).status_code == 200


def test_a_graphql_client_that_disconnects_cancels_its_warehouse_query(slow_live):
    _dropped_stops_the_query(slow_live, lambda: post(slow_live.port, "/graphql", SLOW_GRAPHQL))


def test_a_graphql_get_that_disconnects_cancels_too(slow_live):
    path = "/graphql?" + urllib.parse.urlencode(SLOW_GRAPHQL)
    _dropped_stops_the_query(slow_live, lambda: get(slow_live.port, path))


def test_a_graphql_tree_that_disconnects_cancels_too(slow_live):
    tree = {"query": '{ metricTree(root: "slow_dated_buckets", period: {start: "2025-01-01", end: "2025-01-31"}) '
                     "{ root } }"}
    _dropped_stops_the_query(slow_live, lambda: post(slow_live.port, "/graphql", tree))


def test_an_explorer_tree_client_that_disconnects_cancels_its_warehouse_query(slow_live):
    _dropped_stops_the_query(slow_live, lambda: get(slow_live.port, SLOW_TREE))


def test_an_explorer_drill_client_that_disconnects_cancels_too(slow_live):
    drill = "/api/v1/drill?" + urllib.parse.urlencode(
        {"metric": "slow_dated_buckets", "start": "2025-01-01", "end": "2025-01-31"})
    _dropped_stops_the_query(slow_live, lambda: get(slow_live.port, drill))


def test_a_client_that_stays_gets_its_answer(live):
    """The disconnect watch must not cancel a client that is still there (a normal GraphQL and tree answer)."""
    graphql = httpx.post(live.url + "/graphql", json={"query": "{ query { revenue } }"}, timeout=30)
    assert graphql.status_code == 200 and "errors" not in graphql.json()
    assert float(graphql.json()["data"]["query"][0]["revenue"]) > 0  # money: a Decimal, written as a string
    tree = httpx.get(live.url + "/api/v1/tree", params={"root": "revenue", "start": "2025-01-01",
                                                        "end": "2025-01-31"}, timeout=30)
    assert tree.status_code == 200, tree.text
    assert tree.json()["nodes"]


def test_a_cancelled_request_starts_no_further_query(live):
    """Once cancelled, the next query of a multi-query request is refused before it is even planned."""
    import datetime as dt

    from semantic.metrics import explore
    from server.explore import _Cancellable

    project = live.app.state.runtime.project
    cancel = Cancel()
    cancel()
    logged = len(project.query_log.entries())
    with pytest.raises(QueryCancelled):
        explore.tree_values(_Cancellable(project, cancel, live.app.state.runtime.admit(None)), "revenue",
                            explore.Period(dt.date(2025, 1, 1), dt.date(2025, 1, 31)))
    assert len(project.query_log.entries()) == logged


# ------------------------------------------------------------------ PostgreSQL reads in batches

def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))


@pytest.fixture(scope="module")
def pg(pg_dsn):
    from semantic.engines.postgres import PostgresEngine

    engine = PostgresEngine(pg_dsn)
    yield engine
    engine.close()


def test_postgresql_refuses_an_answer_over_the_limit_after_about_the_limit(pg):
    from semantic.limits import ResultTooLarge

    wide = "select g, repeat('x', 100) as pad from generate_series(1, 5000000) as g"  # ~600 MB in the client
    import threading

    before, peak, done = _rss_mb(), [0.0], threading.Event()

    def sample():  # the peak while it runs: a result fetched whole is freed again before arrow() returns
        while not done.is_set():
            peak[0] = max(peak[0], _rss_mb())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    started = time.monotonic()
    try:
        with pytest.raises(ResultTooLarge, match="more than 1,000 rows"):
            pg.arrow(wide, limits=Limits(rows=1000, bytes=None))
    finally:
        took = time.monotonic() - started
        done.set()
        sampler.join()
    grew = peak[0] - before
    assert took < 3, f"refusing took {took:.1f} s: the whole answer was read"
    assert grew < 50, f"the process grew by {grew:.0f} MB: the whole answer was fetched"
    assert pg.arrow("select 1 as one").num_rows == 1  # the pooled connection is still good


def test_postgresql_batched_answer_equals_the_whole_one(pg, pg_dsn):
    """Read in batches, an answer is the one the whole result gives at once (psycopg's fetchall, then Arrow) —
    also for a numeric without a declared scale whose scale differs between batches."""
    import psycopg

    from semantic.engines.pgarrow import to_arrow
    from semantic.limits import BATCH_ROWS, ResultTooLarge

    sql = ("select g, 'n' || g as label, date '2025-01-01' + g as day, case when g % 3 = 0 then null else g end "
           f"as sometimes, case when g <= {BATCH_ROWS} then g::numeric else g::numeric / 8 end as share, "
           "case when g = 30000 then power(10::numeric, 40) else g::numeric end as big, "  # 38 digits, then 76
           "case when g = 30000 then 'NaN'::numeric else g::numeric / 4 end as odd "  # decimals, then a float
           "from generate_series(1, 30000) as g order by g")
    with psycopg.connect(pg_dsn, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(sql)
        whole = to_arrow(cur.description, cur.fetchall())
    for limits in (Limits(rows=100000, bytes=None), None):
        batched = pg.arrow(sql, limits=limits)
        assert batched.num_rows == 30000 and batched.schema.equals(whole.schema)
        assert batched.drop_columns(["odd"]).equals(whole.drop_columns(["odd"]))
        assert list(map(str, batched["odd"].to_pylist())) == list(map(str, whole["odd"].to_pylist()))  # NaN ≠ NaN
    assert whole.schema.field("share").type.scale > 0  # while the first batch alone inferred scale 0
    assert whole.schema.field("big").type.precision == 76 and whole.schema.field("odd").type == pa.float64()
    empty = pg.arrow("select 1 as one where false", limits=Limits())
    assert empty.num_rows == 0 and empty.column_names == ["one"]
    with pytest.raises(ResultTooLarge, match="larger than 100 bytes"):
        pg.arrow("select * from generate_series(1, 100)", limits=Limits(rows=None, bytes=100))


def test_postgresql_batched_reading_still_cancels_and_times_out(pg):
    import threading

    from semantic.errors import QueryTimeout

    cancel = Cancel()
    threading.Timer(0.3, cancel).start()
    started = time.monotonic()
    with pytest.raises(QueryCancelled):
        pg.arrow("select pg_sleep(10)", limits=Limits(), cancel=cancel)
    assert time.monotonic() - started < 3
    with pytest.raises(QueryTimeout):
        pg.arrow("select pg_sleep(10)", timeout=0.3, limits=Limits())
    already = Cancel()
    already()
    with pytest.raises(QueryCancelled):
        pg.arrow("select pg_sleep(10)", limits=Limits(), cancel=already)
    assert pg.arrow("select 1 as one", limits=Limits()).num_rows == 1
