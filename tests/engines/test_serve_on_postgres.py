"""`phloem serve` on a PostgreSQL warehouse: a real server process answers REST, HTTP SQL, GraphQL and the
PostgreSQL wire door with the numbers hand-written SQL gives on PostgreSQL's raw tables (and DuckDB's twin),
runs client queries as the reader role, and cancels a query past `--timeout` in PostgreSQL itself."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from decimal import Decimal

import httpx
import psycopg
import pytest
import yaml

from semantic import Project
from semantic.engines.postgres import READER_ROLE

TIMEOUT = 1.5  # the server's --timeout: the demo's questions take milliseconds, slow_numbers minutes

REVENUE_BY_CHANNEL = "select channel, sum(total) as revenue, count(*) as orders from raw.orders group by 1"
PROFIT_BY_CHANNEL = """
with per_order as (
    select o.channel, o.total, o.discount,
           coalesce((select sum(amount) from raw.refunds r where r.order_id = o.order_id), 0) as refunded,
           coalesce((select sum(shipping_cost) from raw.shipments s where s.order_id = o.order_id), 0) as shipping,
           coalesce((select sum(fee) from raw.payments p where p.order_id = o.order_id), 0) as fees
    from raw.orders o
), cogs as (
    select o.channel, sum(l.quantity * l.unit_cost) as cogs
    from raw.order_lines l join raw.orders o using (order_id) group by 1
)
select b.channel, sum(b.total) - sum(b.discount) - sum(b.refunded) - (c.cogs + sum(b.shipping) + sum(b.fees)) as profit
from per_order b join cogs c using (channel) group by b.channel, c.cogs
"""
US_CA_REVENUE = "select channel, sum(total) from raw.orders where country in ('US', 'CA') group by 1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    def __init__(self, root, tmp_path):
        self.root, self.http_port, self.pg_port = root, free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.name = yaml.safe_load((root / "phloem.yml").read_text())["name"]
        self.dsn = yaml.safe_load((root / "phloem.yml").read_text())["warehouse"]["dsn"]
        self.log = tmp_path / "serve.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server.cli", "serve", str(root), "--port", str(self.http_port),
             "--pg-port", str(self.pg_port), "--timeout", str(TIMEOUT)],
            cwd=tmp_path, stdout=self.log.open("w"), stderr=subprocess.STDOUT,
            env={**os.environ, "PHLOEM_PG_TRUST": "loopback"})

    def wait_ready(self, seconds: float = 120) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"phloem serve exited with {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        pytest.fail(f"phloem serve was not ready in {seconds} s:\n{self.log.read_text()}")

    def post(self, path: str, body: dict) -> httpx.Response:
        return httpx.post(self.url + path, json=body, timeout=30)

    def wire(self) -> psycopg.Connection:
        return psycopg.connect(host="127.0.0.1", port=self.pg_port, dbname=self.name, user="analyst",
                               autocommit=True, connect_timeout=10)

    def __enter__(self) -> Served:
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture(scope="module")
def served(twin_shops, tmp_path_factory):
    with Served(twin_shops[1], tmp_path_factory.mktemp("serve_pg")) as server:
        yield server


@pytest.fixture(scope="module")
def warehouse(served):
    """A direct connection to the PostgreSQL database, as the configured user: the hand-written answers."""
    with psycopg.connect(served.dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="module")
def duck(twin_shops):
    p = Project.load(twin_shops[0])
    yield p
    p.close()


def by_channel(rows) -> dict[str, tuple[Decimal, ...]]:
    """{channel: numbers} with every number as an exact Decimal (JSON numbers, floats and Decimals alike)."""
    return {r[0]: tuple(Decimal(str(v)) for v in r[1:]) for r in rows}


def assert_same(got: dict, want: dict) -> None:
    assert got.keys() == want.keys() and len(want) >= 3
    for channel, values in want.items():
        for g, w in zip(got[channel], values, strict=True):
            assert abs(g - w) <= abs(w) * Decimal("1e-12"), f"{channel}: {got[channel]} != {values}"


def four_doors(served, metrics: list[str], graphql_fields: str, filters: tuple[str, ...] = ()):
    """The same question asked at REST query, REST SQL, GraphQL and the wire door: {door: {channel: numbers}}."""
    where = f" WHERE {' AND '.join(filters)}" if filters else ""
    sql = f"SELECT channel, {', '.join(f'MEASURE({m})' for m in metrics)} FROM metrics{where} GROUP BY 1"
    rest = served.post("/api/v1/query", {"metrics": metrics, "dimensions": ["channel"], "filters": list(filters)})
    assert rest.status_code == 200, rest.text
    http_sql = served.post("/api/v1/sql", {"sql": sql})
    assert http_sql.status_code == 200, http_sql.text
    gql_where = ""
    if filters:
        gql_where = '(where: {country: {in: ["US", "CA"]}})'
    gql = served.post("/graphql", {"query": f"{{ query{gql_where} {{ channel {graphql_fields} }} }}"})
    assert gql.status_code == 200 and "errors" not in gql.json(), gql.text
    with served.wire() as conn:
        wire = conn.execute(sql).fetchall()
    fields = graphql_fields.split()
    return rest, {
        "rest": by_channel(rest.json(parse_float=Decimal)["rows"]),
        "sql": by_channel(http_sql.json(parse_float=Decimal)["rows"]),
        "graphql": by_channel([[r["channel"], *(r[f] for f in fields)]
                               for r in gql.json(parse_float=Decimal)["data"]["query"]]),
        "wire": by_channel(wire),
    }


def test_revenue_and_orders_by_channel_at_every_door(served, warehouse, duck):
    rest, doors = four_doors(served, ["revenue", "orders"], "revenue orders")
    assert [c["name"] for c in rest.json()["columns"]] == ["channel", "revenue", "orders"]
    hand = by_channel(warehouse.execute(REVENUE_BY_CHANNEL).fetchall())
    on_duck = by_channel([tuple(r.values()) for r in duck.query(metrics=["revenue", "orders"],
                                                                dimensions=["channel"]).to_pylist()])
    assert_same(on_duck, hand)
    for door, answer in doors.items():
        assert_same(answer, hand), door


def test_profit_by_channel_at_every_door(served, warehouse, duck):
    _, doors = four_doors(served, ["profit"], "profit")
    hand = by_channel(warehouse.execute(PROFIT_BY_CHANNEL).fetchall())
    assert_same(by_channel([tuple(r.values()) for r in duck.query(metrics=["profit"],
                                                                   dimensions=["channel"]).to_pylist()]), hand)
    for door, answer in doors.items():
        assert_same(answer, hand), door


def test_an_uncached_filtered_question_at_every_door(served, warehouse, duck):
    rest, doors = four_doors(served, ["revenue"], "revenue", filters=("country in ('US', 'CA')",))
    assert rest.headers["X-Phloem-Cache"] == "miss"  # asked for the first time: PostgreSQL answered it
    hand = by_channel(warehouse.execute(US_CA_REVENUE).fetchall())
    on_duck = duck.query(metrics=["revenue"], dimensions=["channel"], filters=["country in ('US', 'CA')"])
    assert_same(by_channel([tuple(r.values()) for r in on_duck.to_pylist()]), hand)
    for door, answer in doors.items():
        assert_same(answer, hand), door
    again = served.post("/api/v1/query", {"metrics": ["revenue"], "dimensions": ["channel"],
                                          "filters": ["country in ('US', 'CA')"]})
    assert again.headers["X-Phloem-Cache"] == "hit" and again.json()["rows"] == rest.json()["rows"]


def test_client_queries_ran_as_the_reader_role(served, warehouse):
    assert served.post("/api/v1/query", {"metrics": ["orders"], "dimensions": ["metric_time__year"]}).status_code == 200
    users = {u for (u,) in warehouse.execute(
        "select distinct usename from pg_stat_activity where datname = current_database()").fetchall()}
    assert READER_ROLE in users
    assert "cannot be set up" not in served.log.read_text() and "cannot log in" not in served.log.read_text()


def still_running(warehouse) -> list:
    return warehouse.execute("select pid from pg_stat_activity where datname = current_database() "
                             "and state = 'active' and query like '%generate_series%' and pid <> pg_backend_pid()"
                             ).fetchall()


@pytest.mark.parametrize("door", ["rest", "sql", "graphql", "wire"])
def test_a_query_past_the_time_limit_is_cancelled_in_postgres(served, warehouse, door):
    start = time.monotonic()
    if door == "rest":
        r = served.post("/api/v1/query", {"metrics": ["slow_distinct_buckets"]})
        assert r.status_code == 504 and r.json()["error"]["type"] == "timeout", r.text
    elif door == "sql":
        r = served.post("/api/v1/sql", {"sql": "SELECT MEASURE(slow_distinct_buckets) FROM metrics"})
        assert r.status_code == 504 and r.json()["error"]["type"] == "timeout", r.text
    elif door == "graphql":
        r = served.post("/graphql", {"query": "{ query { slowDistinctBuckets } }"})
        assert r.json()["errors"][0]["extensions"]["code"] == "TIMEOUT", r.text
    else:
        with served.wire() as conn, pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT MEASURE(slow_distinct_buckets) FROM metrics")
    assert TIMEOUT * 0.9 < time.monotonic() - start < TIMEOUT + 8
    assert still_running(warehouse) == []  # PostgreSQL stopped it: nothing keeps reading 2 billion rows
    assert served.post("/api/v1/query", {"metrics": ["orders"]}).status_code == 200  # and the server goes on


FILE_READ = "length(pg_read_file('/etc/passwd')) > 0"


def test_a_file_read_in_a_filter_is_refused_and_reads_nothing(served):
    # whichever wall stops it (the filter check, or the reader role PostgreSQL enforces), it is a 400 with no file
    for path, body in (("/api/v1/query", {"metrics": ["orders"], "filters": [FILE_READ]}),
                       ("/api/v1/sql", {"sql": f"SELECT MEASURE(orders) FROM metrics WHERE {FILE_READ}"})):
        r = served.post(path, body)
        assert r.status_code == 400, r.text
        assert "root:" not in r.text and "Traceback" not in r.text
    with served.wire() as conn, pytest.raises(psycopg.Error) as caught:
        conn.execute(f"SELECT MEASURE(orders) FROM metrics WHERE {FILE_READ}")
    assert "root:" not in str(caught.value)


def test_a_type_mismatch_on_postgres_is_a_400_as_on_duckdb(served):
    r = served.post("/api/v1/query", {"metrics": ["orders"], "filters": ["channel = 1"]})
    assert r.status_code == 400 and r.json()["error"]["type"] == "query", r.text
    assert "psycopg" not in r.text and "Traceback" not in r.text
