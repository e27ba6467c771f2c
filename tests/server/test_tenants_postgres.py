"""Tenants on PostgreSQL: two tenants' schemas in one database, one engine, client queries as the reader role."""

from __future__ import annotations

import psycopg
import pytest
import yaml

from semantic.access.context import SecurityContext
from semantic.demo import create
from semantic.project.load import load_project
from semantic.project.tenants import Tenants
from semantic.query.query import make_query

DATA = {"acme": "true", "globex": "abs(hashtext(order_id::text)) % 3 = 0"}
QUERY = dict(metrics=["orders", "revenue"], dimensions=["channel"], order_by=["channel"])


@pytest.fixture(scope="module")
def project(tmp_path_factory, postgres_project):
    root = tmp_path_factory.mktemp("pg_tenants") / "shop"
    create(root, scale=1000)
    postgres_project(root)
    dsn = yaml.safe_load((root / "phloem.yml").read_text())["warehouse"]["dsn"]
    with psycopg.connect(dsn, autocommit=True) as conn:
        tables = [r[0] for r in conn.execute(
            "select table_name from information_schema.tables where table_schema = 'raw'").fetchall()]
        for name, where in DATA.items():
            conn.execute(f"create schema {name}_raw")
            for t in tables:
                rows = where if t == "orders" else "true"
                conn.execute(f"create table {name}_raw.{t} as select * from raw.{t} where {rows}")
        conn.execute("drop schema raw cascade")
        expected = {name: [[c, n, round(float(r), 2)] for c, n, r in conn.execute(
            f"select channel, count(*), sum(total) from {name}_raw.orders group by 1 order by 1").fetchall()]
            for name in DATA}
    assert expected["acme"] != expected["globex"]
    doc = yaml.safe_load((root / "phloem.yml").read_text())
    doc["tenants"] = {name: {"schemas": {"raw": f"{name}_raw"}} for name in DATA}
    (root / "phloem.yml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return root, dsn, expected


def test_postgres_tenants_build_and_answer_from_their_own_schemas(project):
    root, dsn, expected = project
    tenants = Tenants(load_project(root))
    try:
        reports = tenants.build()
        assert all(r.built for r in reports.values())
        assert tenants.project("acme").engine is tenants.project("globex").engine
        for round_ in (False, True):  # the second round from each tenant's own cache
            for name in DATA:
                answer = tenants.for_context(SecurityContext("u", frozenset({"analyst"}), name)).run(
                    make_query(**QUERY))
                assert answer.cached is round_
                rows = [[c, n, round(float(r), 2)] for c, n, r in zip(
                    *[answer.table.column(k).to_pylist() for k in ("channel", "orders", "revenue")], strict=True)]
                assert rows == expected[name]
        engine = tenants.default.engine
        assert engine.reader_problem is None  # client queries ran as phloem_reader, granted both tenants' schemas
        with psycopg.connect(dsn) as conn:
            for name in DATA:
                assert conn.execute("select has_schema_privilege('phloem_reader', %s, 'USAGE')",
                                    [f"phloem_{name}"]).fetchone()[0]
                assert not conn.execute("select has_schema_privilege('phloem_reader', %s, 'USAGE')",
                                        [f"{name}_raw"]).fetchone()[0]
            built = {r[0] for r in conn.execute(
                "select table_schema from information_schema.tables where table_name = 'orders_monthly'")}
            assert built == {"phloem_acme", "phloem_globex"}
    finally:
        tenants.close()
