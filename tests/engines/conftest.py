"""A demo shop (scale 2000) on DuckDB and its twin on PostgreSQL over the same raw rows, shared by this folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from semantic.demo import create

# a real, deliberately slow view (2 billion rows, PostgreSQL's SQL): proves queries past the time limit are cancelled
SLOW_ON_POSTGRES = """
views:
  - name: slow_numbers
    sql: "select (i * 7919) % 1000003 as bucket from generate_series(1, 2000000000) as t(i)"
    dimensions: [bucket]
    measures: [{name: distinct_buckets, agg: count_distinct, expr: bucket}]
metrics:
  - {name: slow_distinct_buckets, measure: slow_numbers.distinct_buckets}
"""


@pytest.fixture(scope="session")
def twin_shops(tmp_path_factory, postgres_project) -> tuple[Path, Path]:
    """(DuckDB project, PostgreSQL project) folders, unbuilt; the PostgreSQL one also has `slow_numbers`."""
    base = tmp_path_factory.mktemp("twin_shops")
    duck = base / "duckdb"
    create(duck, scale=2000)
    pg = postgres_project(shutil.copytree(duck, base / "postgres"))
    (pg / "models" / "slow.yml").write_text(SLOW_ON_POSTGRES)
    return duck, pg
