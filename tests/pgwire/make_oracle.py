"""Write tests/pgwire/oracle.json: what a real PostgreSQL 15 answers to every statement of the BI reference pack.

    python tests/pgwire/make_oracle.py [DSN]     (default: $PHLOEM_PG_DSN or the local test server)

It builds the demo shop, reads the door's catalog, and creates the same tables in a scratch database of the
real server (`phloem_pgwire_oracle`, dropped and recreated): every semantic table with its columns, types,
keys and comments. Then it replays each reference statement there, with the same substitution the test
applies (bi_reference.substitute), and records the row description (column names and type OIDs) and the
parameter types libpq's Describe reports, plus the rows. The test compares the door's answers with this file;
it fails with a hint to rerun this script when the demo's tables no longer match the ones recorded here.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import duckdb
import psycopg
from psycopg import sql as pgsql
from psycopg.conninfo import make_conninfo

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

from bi_reference import all_statements, substitute, substitute_params  # noqa: E402

from semantic.demo.generate import generate  # noqa: E402
from server.pgwire import pgtypes as T  # noqa: E402
from server.pgwire.frontend import Frontend  # noqa: E402
from server.runtime import Runtime  # noqa: E402

DSN = os.environ.get("PHLOEM_PG_DSN", "postgresql://postgres:phloem@127.0.0.1:5432/postgres")
DEMO = HERE.parents[1] / "semantic" / "demo" / "project"
DATABASE = "phloem_pgwire_oracle"
TARGET = HERE / "oracle.json"
NO_ROWS = {"pgjdbc-42.5.5#22"}  # the cancel test: counts to three billion


def q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def ddl(catalog) -> list[str]:
    """The door's semantic tables as PostgreSQL DDL (what a client reflecting them would write back)."""
    statements = []
    for table in catalog.semantic.values():
        columns = [f"{q(c.name)} {T.format_type(c.type, c.typmod)}" for c in table.columns]
        if table.key:
            columns.append(f"PRIMARY KEY ({q(table.key)})")
        statements.append(f"CREATE TABLE public.{q(table.name)} ({', '.join(columns)})")
        if table.comment:
            statements.append(f"COMMENT ON TABLE public.{q(table.name)} IS {quote_literal(table.comment)}")
        for c in table.columns:
            if c.comment:
                statements.append(f"COMMENT ON COLUMN public.{q(table.name)}.{q(c.name)} IS "
                                  f"{quote_literal(c.comment)}")
    for table in catalog.semantic.values():
        for column, target, target_column in table.references:
            statements.append(f"ALTER TABLE public.{q(table.name)} ADD CONSTRAINT {q(f'{table.name}_{column}_fkey')} "
                              f"FOREIGN KEY ({q(column)}) REFERENCES public.{q(target)} ({q(target_column)})")
    return statements


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def tables(catalog) -> dict:
    """The fingerprint the test checks: each semantic table's columns and types."""
    return {t.name: [[c.name, T.format_type(c.type, c.typmod)] for c in t.columns] for t in catalog.semantic.values()}


def main(dsn: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "shop"
        shutil.copytree(DEMO, root)
        (root / "data").mkdir()
        con = duckdb.connect(str(root / "data" / "shop.duckdb"))
        generate(con, scale=2000)
        con.close()
        runtime = Runtime(root)
        runtime.project.build()
        catalog = Frontend(runtime).catalog
        runtime.close()
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(pgsql.Identifier(DATABASE)))
        admin.execute(pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(DATABASE)))
    answers = {}
    with psycopg.connect(make_conninfo(dsn, dbname=DATABASE), autocommit=True) as con:
        version = con.execute("show server_version").fetchone()[0]
        for statement in ddl(catalog):
            con.execute(statement)
        oid = con.execute("select 'public.orders'::regclass::oid::int").fetchone()[0]
        oids = dict(con.execute("select relname::text, oid::int from pg_class "
                                "where relnamespace = 'public'::regnamespace order by 1").fetchall())
        pg = con.pgconn
        for s in all_statements():
            text = substitute(s.sql, oid)
            prepared = pg.prepare(b"", text.encode(), None)
            if prepared.error_message:
                raise SystemExit(f"{s.id} does not prepare on PostgreSQL: {prepared.error_message.decode()}")
            d = pg.describe_prepared(b"")
            entry = {"columns": [[d.fname(i).decode(), d.ftype(i)] for i in range(d.nfields)],
                     "params": [d.param_type(i) for i in range(d.nparams)], "rows": None}
            if d.nfields and s.id not in NO_ROWS:
                values = substitute_params(s.params[0], oid) if s.params else []
                con.execute("SET statement_timeout = '5s'")
                result = pg.exec_params(text.encode(), [v.encode() for v in values] or None)
                if result.error_message:
                    raise SystemExit(f"{s.id} fails on PostgreSQL: {result.error_message.decode()}")
                entry["rows"] = [[None if (v := result.get_value(r, c)) is None else v.decode()
                                  for c in range(result.nfields)] for r in range(result.ntuples)]
            answers[s.id] = entry
    TARGET.write_text(json.dumps({
        "about": "PostgreSQL's answers to the BI reference pack over the demo's tables; "
                 "written by tests/pgwire/make_oracle.py",
        "server_version": version, "tables": tables(catalog), "oids": oids, "statements": answers}, indent=1) + "\n")
    print(f"wrote {TARGET}: {len(answers)} statements, PostgreSQL {version}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else DSN)
