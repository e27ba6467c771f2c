"""Every statement of the BI client reference pack, replayed through the Frontend, answers like PostgreSQL 15.

The oracle is tests/pgwire/oracle.json, written by tests/pgwire/make_oracle.py from a real PostgreSQL 15
holding the demo's tables (same columns, types, keys and comments as the door's catalog). For each statement
(with the captured `public.orders` read as the demo's `orders` view, bi_reference.substitute) the door must:
describe it with the same column names, type OIDs and parameter types, without running it; run it with the
captured parameters; and return the same columns. Catalog queries must also return the same rows, except where
this file says why not (the door serves one database and no system extras).
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
from pathlib import Path

import pytest
from bi_reference import FILES, all_statements, statements, substitute, substitute_params

from semantic.errors import QueryTimeout
from server.pgwire import pgtypes as T

ORACLE = json.loads((Path(__file__).parent / "oracle.json").read_text())
CANCEL = "pgjdbc-42.5.5#22"  # the cancel test's query (DuckDB counts it in half a second: see test_cancel_*)

STATEMENTS = all_statements()

# rows the door answers differently from a real server, on purpose
ROWS_DIFFER = {
    "psql-15#16": "\\l: the door serves one database, the one the client connected to",
    "psql-15#20": "\\dt+: semantic tables have no on-disk size (0 bytes, not an empty heap's 8192)",
    "psql-15#22": "\\du: the door's user is no superuser and cannot create roles or databases",
    "pgjdbc-42.5.5#11": "getTypeInfo: no composite row types per relation, no information_schema domains",
    "pgjdbc-42.5.5#12": "getTypeInfo: no composite row types per relation, no information_schema domains",
    "sqlalchemy-2.1#4": "version() names Phloem",
    "sqlalchemy-2.1#28": "version() names Phloem",
    "superset-6.1.0#4": "version() names Phloem",
    "sqlalchemy-2.1#18": "no operator classes are listed",
    "sqlalchemy-2.1#46": "no operator classes are listed",
    "superset-6.1.0#16": "information_schema's domains are not listed",
}


def test_the_pack_is_complete():
    counts = {name: len(statements(name)) for name in FILES}
    assert counts == {"psql-15.sql": 24, "pgjdbc-42.5.5.sql": 22, "sqlalchemy-2.1.sql": 53,
                      "superset-6.1.0.sql": 25, "evidence-postgres.sql": 11}
    assert set(ORACLE["statements"]) == {s.id for s in STATEMENTS}


def test_the_oracle_describes_these_tables(frontend):
    """oracle.json was made from the tables the door serves now (else: python tests/pgwire/make_oracle.py)."""
    now = {t.name: [[c.name, T.format_type(c.type, c.typmod)] for c in t.columns]
           for t in frontend.catalog.semantic.values()}
    assert now == ORACLE["tables"], "the demo's tables changed: rerun python tests/pgwire/make_oracle.py"


@pytest.mark.parametrize("statement", STATEMENTS, ids=[s.id for s in STATEMENTS])
def test_statement_answers_like_postgresql(frontend, statement):
    want = ORACLE["statements"][statement.id]
    session = frontend.session("postgres", "phloem_pgwire_oracle", {})
    oid = frontend.catalog.semantic["orders"].oid
    sql = substitute(statement.sql, oid)
    values = substitute_params(statement.params[0], oid) if statement.params else []
    if "SAVEPOINT" in sql or "RELEASE" in sql:  # psycopg 3 sends them inside its BEGIN … ROLLBACK
        frontend.execute(session, "BEGIN")
    if "RELEASE" in sql:
        frontend.execute(session, 'SAVEPOINT "_pg3_1"')

    params, columns = frontend.describe(session, sql, [0] * len(values))
    assert [[c.name, c.type_oid] for c in columns or []] == want["columns"]
    if statement.protocol == "extended":
        assert params == want["params"]
    results = frontend.execute(session, sql, values or None)
    assert len(results) == 1
    result = results[0]
    assert [[c.name, c.type_oid] for c in result.columns or []] == want["columns"]
    if result.columns is not None:
        assert result.table.num_columns == len(result.columns)
        assert result.tag == f"SELECT {result.table.num_rows}" or result.tag == "SHOW"
    semantic = "pg_" not in sql and "information_schema" not in sql and result.tag.startswith("SELECT") and \
        "orders" in sql
    if want["rows"] is None or semantic or statement.id in ROWS_DIFFER:
        return
    ours = _texts(result, frontend.catalog)
    theirs = sorted(_normalized(row, {str(v): f"<oid {k}>" for k, v in ORACLE["oids"].items()})
                    for row in want["rows"])
    assert ours == theirs


def _texts(result, catalog) -> list[list]:
    """Our rows in PostgreSQL's text format, OIDs of our tables named, sorted."""
    oids = {str(r.oid): f"<oid {r.name}>" for (schema, _), r in catalog.relations.items() if schema == "public"}
    types = [c.type_oid for c in result.columns]
    rows = zip(*[c.to_pylist() for c in result.table.columns], strict=True) if result.table.num_columns else []
    return sorted(_normalized([_text(v, types[i]) for i, v in enumerate(row)], oids) for row in rows)


def _normalized(row: list, oids: dict[str, str]) -> list:
    return [(oids.get(v, v) if v is not None else "\0NULL") for v in row]


def _text(v, oid: int):
    """A value as PostgreSQL's text output prints it (enough for catalog answers)."""
    if v is None:
        return None
    if isinstance(v, bool):
        return "t" if v else "f"
    if isinstance(v, list):
        items = ["NULL" if x is None else _text(x, 0) for x in v]
        items = [f'"{x}"' if x == "" or any(ch in x for ch in ' ,{}"\\') else x for x in items]
        return "{" + ",".join(items) + "}"
    if isinstance(v, float):
        return repr(v) if v != int(v) or abs(v) >= 1e15 else str(int(v)) if oid in (T.FLOAT4, T.FLOAT8) else repr(v)
    if isinstance(v, decimal.Decimal | dt.date):
        return str(v)
    return str(v)


# ------------------------------------------------------------------ the cancel test of the pgjdbc capture


def test_cancel_interrupts_a_long_statement_and_the_session_goes_on(frontend, cancel_after):
    captured = next(s.sql for s in STATEMENTS if s.id == CANCEL)
    sql = captured.replace("3000000000) i", "3000000000000) i WHERE i % 7 = 3")  # long enough to cancel
    assert sql != captured
    session = frontend.session("postgres", "shop", {})
    error, took = cancel_after(frontend, session, sql, 0.3)
    assert isinstance(error, QueryTimeout) and error.sqlstate == "57014" and took < 5
    assert "canceling statement due to user request" in str(error)
    assert frontend.execute(session, "SELECT 1")[0].table.to_pylist() == [{"?column?": 1}]
