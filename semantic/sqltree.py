"""Small builders for sqlglot trees, made for the hot path: no re-parsing, no deep copies."""

from __future__ import annotations

from functools import lru_cache

import sqlglot
from sqlglot import exp


def ident(name: str) -> exp.Identifier:
    return exp.to_identifier(name, quoted=True)


def col(name: str, table: str | None = None) -> exp.Column:
    return exp.Column(this=ident(name), table=ident(table) if table else None)


@lru_cache(maxsize=64)
def _type(name: str) -> exp.DataType:
    return exp.DataType.build(name)


def cast(value: exp.Expression, to: str) -> exp.Cast:
    """exp.cast() parses its type name on every call; this builds each type once."""
    return exp.Cast(this=value, to=_type(to).copy())


@lru_cache(maxsize=4096)
def _parsed(sql: str, dialect: str) -> exp.Expression:
    return sqlglot.parse_one(sql, read=dialect)


def parse(sql: str, dialect: str = "duckdb") -> exp.Expression:
    """A fresh tree for a model expression; each distinct text is parsed once per process."""
    return _parsed(sql, dialect).copy()


def with_ctes(query: exp.Select, ctes: list[tuple[str, exp.Expression]]) -> exp.Select:
    """Attach CTEs in one step (Query.with_ deep-copies the whole query per CTE)."""
    if ctes:
        query.set("with_", exp.With(expressions=[
            exp.CTE(this=body, alias=exp.TableAlias(this=ident(name))) for name, body in ctes]))
    return query
