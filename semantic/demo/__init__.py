"""The demo shop: a project template and a deterministic data generator, shipped inside the package."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb

PROJECT = Path(__file__).resolve().parent / "project"


def create(directory: Path | str, scale: int = 100_000, seed: int = 7) -> dict[str, int]:
    """Copy the demo project to `directory` (unless it is there) and generate its raw tables at `scale` orders
    into the project's DuckDB file; returns the row counts."""
    from semantic.demo.generate import generate

    directory = Path(directory)
    if not (directory / "phloem.yml").exists():
        shutil.copytree(PROJECT, directory, dirs_exist_ok=True)
    (directory / "data").mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(directory / "data" / "shop.duckdb"))
    try:
        return generate(con, scale=scale, seed=seed)
    finally:
        con.close()
