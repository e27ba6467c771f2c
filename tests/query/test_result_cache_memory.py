"""The result cache's budget is real memory: many small answers cannot hold more than it (bench/soak.py once grew a
server's RSS 262 → 661 MB in 10 minutes while the cache counted only the answers' Arrow bytes, ~5 KiB each)."""

from __future__ import annotations

import gc
import shutil
import tracemalloc
from pathlib import Path

import pytest

from semantic import Project
from semantic.project.project import ENTRY_BYTES, answer_bytes

STARTER = Path(__file__).resolve().parents[2] / "semantic" / "demo" / "starter"


def project(tmp_path: Path) -> Project:
    shutil.copytree(STARTER, tmp_path / "p")
    return Project.load(tmp_path / "p")


def ask(p: Project, n: int, start: int = 0) -> None:
    for i in range(start, start + n):  # a distinct limit: a distinct SQL, a new cache entry, a tiny answer
        p.query(metrics=["revenue"], dimensions=["channel"], limit=1000 + i)


def test_many_small_answers_stay_within_the_budget(tmp_path, monkeypatch):
    monkeypatch.setenv("PHLOEM_RESULT_CACHE_MB", "1")
    p = project(tmp_path)
    ask(p, 200)
    assert p.results.maxsize == 2**20
    assert p.results.currsize <= p.results.maxsize
    # counted by Arrow bytes alone (~100 bytes each) all 200 would be kept
    assert 0 < len(p.results) <= 2**20 // ENTRY_BYTES


def test_an_answer_is_charged_at_least_what_holding_it_costs_in_python(tmp_path):
    p = project(tmp_path)
    ask(p, 5)  # warm: plans, imports, first allocations
    p.results.clear()
    tracemalloc.start()
    try:
        ask(p, 150, start=5)
        kept, charged = len(p.results), p.results.currsize
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        p.results.clear()
        gc.collect()
        freed = before - tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert kept == 150
    # what the cache's entries held on the Python heap (DuckDB's Arrow buffers are beyond tracemalloc: more still)
    assert 0 < freed <= charged, (freed / kept, charged / kept)


def test_a_budget_of_zero_caches_nothing_and_still_answers(tmp_path, monkeypatch):
    monkeypatch.setenv("PHLOEM_RESULT_CACHE_MB", "0")
    p = project(tmp_path)
    first = p.query(metrics=["revenue"], dimensions=["channel"])
    assert p.query(metrics=["revenue"], dimensions=["channel"]).equals(first)
    assert len(p.results) == 0


def test_the_budget_must_be_a_number(tmp_path, monkeypatch):
    monkeypatch.setenv("PHLOEM_RESULT_CACHE_MB", "lots")
    with pytest.raises(ValueError, match="PHLOEM_RESULT_CACHE_MB"):
        project(tmp_path)


def test_the_charge_grows_with_the_answer():
    import pyarrow as pa

    small = pa.table({"a": [1]})
    wide = pa.table({f"c{i}": list(range(10_000)) for i in range(4)})
    assert answer_bytes(small) >= ENTRY_BYTES + small.nbytes
    assert answer_bytes(wide) > answer_bytes(small) + wide.nbytes - small.nbytes
