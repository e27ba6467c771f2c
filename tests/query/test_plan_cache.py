"""The plan cache: keyed by model version and the normalized query; a reload starts from nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from semantic import Project
from semantic.query.query import make_query

STARTER = Path(__file__).resolve().parents[2] / "semantic" / "demo" / "starter"


@pytest.fixture()
def project_dir(tmp_path) -> Path:
    root = tmp_path / "p"
    shutil.copytree(STARTER, root)
    return root


def test_same_query_is_compiled_once(project_dir):
    p = Project.load(project_dir)
    try:
        first = p.compile(metrics=["revenue"], dimensions=["channel"])
        # the same query spelled differently (a CSV string) normalizes to the same key
        again = p.compile(metrics="revenue", dimensions="channel")
        assert again is first
        assert p.compile(metrics=["revenue"], dimensions=["country"]) is not first
        assert len(p.compiler.cache) == 2
    finally:
        p.close()


def test_reload_compiles_against_the_new_model(project_dir):
    p = Project.load(project_dir)
    before = p.compile(metrics=["revenue"]).sql
    version = p.model.version
    p.close()
    views = project_dir / "models" / "views.yml"
    views.write_text(views.read_text().replace("{name: revenue, agg: sum, expr: total}",
                                               "{name: revenue, agg: sum, expr: total, filter: \"channel = 'web'\"}"))
    p = Project.load(project_dir)
    try:
        assert p.model.version != version
        after = p.compile(metrics=["revenue"])
        assert after.sql != before and "FILTER" in after.sql
        # the new filter is in the answer: web orders of seeds/orders.csv are 120 + 42 + 310.25 + 15
        assert float(p.query(make_query(metrics=["revenue"])).column("revenue")[0].as_py()) == 487.25
    finally:
        p.close()


def test_cache_keys_include_the_model_version(project_dir):
    p = Project.load(project_dir)
    try:
        p.compile(metrics=["revenue"])
        ((version, dialect, _access, _),) = p.compiler.cache.keys()
        assert (version, dialect) == (p.model.version, "duckdb")
    finally:
        p.close()
