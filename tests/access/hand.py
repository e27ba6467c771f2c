"""Expected answers by hand: plain SQL over the demo's raw.* tables (copied into memory), with a policy's
condition written out again by hand. Nothing here reads Phloem's SQL, plans or models."""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal
from pathlib import Path

import duckdb

from semantic.demo.generate import TABLES


def raw_tables(root: Path) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB holding a copy of the project's raw tables (read before the project opens it)."""
    source = duckdb.connect(str(root / "data" / "shop.duckdb"), read_only=True)
    con = duckdb.connect(":memory:")
    con.execute("create schema raw")
    try:
        for t in TABLES:
            rows = source.sql(f"select * from raw.{t}").to_arrow_table()  # noqa: F841 - read by name below
            con.execute(f"create table raw.{t} as select * from rows")
    finally:
        source.close()
    return con


def value(v):
    """One cell, comparable across doors: decimals and numbers as float, instants as ISO dates."""
    if isinstance(v, dt.datetime):
        return v.date().isoformat()
    if isinstance(v, dt.date):
        return v.isoformat()
    if isinstance(v, Decimal | int) and not isinstance(v, bool):
        return float(v)
    if isinstance(v, str):
        try:
            return dt.date.fromisoformat(v[:10]).isoformat() if len(v) >= 10 and v[4] == "-" and v[7] == "-" else v
        except ValueError:
            return v
    return v


def close(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) or isinstance(b, float):
        if isinstance(a, str) or isinstance(b, str):
            return False
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-6)
    return a == b


def rows_of(rows: list[dict], keys: list[str]) -> dict[tuple, dict]:
    out = {}
    for r in rows:
        key = tuple(value(r[k]) for k in keys)
        assert key not in out, f"two rows for {key}"
        out[key] = {k: value(v) for k, v in r.items() if k not in keys}
    return out


def same(got: list[dict], want: list[dict], keys: list[str], metrics: list[str]) -> str | None:
    """None when the two answers hold the same rows (by dimension values) and values; else what differs.
    A row whose every metric is null counts as no row (an answer may leave it out)."""
    def meaningful(rows):
        return {k: v for k, v in rows.items() if any(v.get(m) is not None for m in metrics)}

    g, w = meaningful(rows_of(got, keys)), meaningful(rows_of(want, keys))
    if set(g) != set(w):
        return f"rows differ: extra {sorted(set(g) - set(w), key=str)[:5]}, missing {sorted(set(w) - set(g), key=str)[:5]}"
    for k, row in w.items():
        for m in metrics:
            if not close(g[k].get(m), row.get(m)):
                return f"{k} {m}: got {g[k].get(m)!r}, want {row.get(m)!r}"
    return None


def answer(con: duckdb.DuckDBPyConnection, sql: str) -> list[dict]:
    cur = con.cursor()
    try:
        return cur.sql(sql).to_arrow_table().to_pylist()
    finally:
        cur.close()
