"""No client escapes its sandbox: every door × every attack class is a 4xx (pg: an ErrorResponse with its SQLSTATE)
that names the construct refused, and nothing was read — no file contents, no environment, no internal names,
paths, SQL or Python class names in the answer.

Doors: REST /api/v1/query and /api/v1/explain, the explorer's /api/v1/tree, /tree/series, /drill and /whatif,
the CLI's `--where`, semantic SQL over HTTP (/api/v1/sql) and over the PostgreSQL wire (psycopg), and GraphQL
(whose `where` is typed: a hostile value is only ever a value).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from secret import SECRET, SECRET_NAME
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[2]
PERIOD = {"start": "2024-01-01", "end": "2024-03-31"}


@dataclass(frozen=True)
class Attack:
    cls: str  # the attack class
    text: str  # the filter a client sends
    names: tuple[str, ...]  # the answer names one of these (the construct refused)
    states: tuple[str, ...]  # SQLSTATEs the pg door may answer with
    sql: tuple[str, ...] = ()  # in a semantic SQL WHERE, the SQL door's own refusal may come first and say this

    def __str__(self) -> str:
        return f"{self.cls}: {self.text[:60]}"


FILE, PRIV, SYNTAX = ("42501",), ("42501",), ("42601",)
SUB = ("42501", "0A000", "3F000")  # a subquery: the filter check (42501) or the SQL door's "not supported" first
NAME = ("42501", "42P01")  # a name that is no dimension: internal (42501) or, at the SQL door, an unknown table
ATTACKS = [
    # read a file: straight, through a subquery, through an error message that would echo it
    Attack("file", "read_csv('/etc/passwd') is not null", ("read_csv",), FILE),
    Attack("file", "read_text('/proc/self/environ') is not null", ("read_text",), FILE),
    Attack("file", "cast((select content from read_text('/etc/passwd')) as integer) = 1", ("subquery",), SUB,
           ("read_text",)),
    Attack("file", "country = (select content from read_text('/proc/self/environ'))", ("subquery",), SUB,
           ("read_text",)),
    Attack("file", "country in (select * from read_parquet('/etc/passwd'))", ("subquery",), SUB, ("read_parquet",)),
    Attack("file", "glob('/etc/*') is not null", ("glob",), ("42501", "42601"), ("does not parse", "syntax error")),
    # the environment and the server's settings
    Attack("environment", f"getenv('{SECRET_NAME}') is not null", ("getenv",), FILE),
    Attack("environment", f"cast(getenv('{SECRET_NAME}') as integer) = 1", ("getenv",), FILE),
    Attack("environment", "current_setting('allowed_directories') is not null", ("current_setting",),
           ("42501", "42704"), ("allowed_directories",)),  # the pg door knows PostgreSQL's settings only
    # the catalogs
    Attack("catalog", "country in (select table_name from information_schema.tables)", ("subquery",), SUB,
           ("catalog",)),
    Attack("catalog", "information_schema.tables.table_name = 'orders'", ("information_schema",), NAME,
           ("unknown table",)),
    Attack("catalog", "pg_catalog.pg_class.relname = 'orders'", ("pg_catalog",), NAME, ("unknown table",)),
    Attack("catalog", "cast(duckdb_tables() as varchar) = 'x'", ("duckdb_tables",), PRIV),
    Attack("catalog", "duckdb_settings() is not null", ("duckdb_settings",), PRIV),
    # internal tables and the raw sources
    Attack("internal", "country in (select name from phloem._phloem_builds)", ("subquery",), SUB,
           ("schema \"phloem\" does not exist", "_phloem_builds")),
    Attack("internal", "_phloem_builds.name = 'orders'", ("_phloem_builds",), NAME),
    Attack("internal", "raw.orders.total > 0", ("raw",), NAME, ("unknown table",)),
    # URLs that would load an extension
    Attack("extension", "cast((select count(*) from read_parquet('https://example.com/x.parquet')) as integer) = 1",
           ("subquery",), SUB, ("read_parquet",)),
    Attack("extension", "read_csv('s3://bucket/x.csv') is not null", ("read_csv",), FILE),
]
# what only a text filter can hold (the SQL doors parse a whole statement, where `;` and comments are syntax)
FILTER_ONLY = [
    Attack("stacked", "1=1; drop table phloem.orders", (";",), SYNTAX),
    Attack("stacked", "channel = 'web'; install httpfs", (";",), SYNTAX),
    Attack("extension", "install httpfs", ("statement",), PRIV),
    Attack("comment", f"channel = 'web' -- ' or getenv('{SECRET_NAME}') is not null", ("comment",), SYNTAX),
    Attack("comment", "channel = 'web' /* */ or 1=1", ("comment",), SYNTAX),
    Attack("bad input", "'", ("quote",), SYNTAX),
    Attack("bad input", "(" * 5000 + "channel = 'web'" + ")" * 5000, ("nests too deeply", "characters long"),
           ("54001", "54000")),
    Attack("bad input", "(" * 2000 + "channel = 'web'" + ")" * 2000, ("nests too deeply",), ("54001",)),
    Attack("bad input", "channel in (" + ", ".join(["'web'"] * 3000) + ")", ("characters long",), ("54000",)),
    Attack("bad input", "channel = $1", ("parameter",), SYNTAX),
    Attack("bad input", "no_such_function(channel) = 1", ("no_such_function",), ("42883",)),
    Attack("bad input", "sum(total) > 1", ("aggregate",), ("42803",)),
]
FILTERS = ATTACKS + FILTER_ONLY
# what a semantic SQL statement may carry besides its WHERE: the same classes, written as SQL
SQL_ATTACKS = [
    ("file", "SELECT * FROM read_text('/etc/passwd')"),
    ("file", "SELECT (SELECT content FROM read_text('/proc/self/environ')) AS x FROM metrics"),
    ("file", "SELECT MEASURE(revenue) FROM metrics WHERE channel = 'web' -- comment\n"
             "  AND country = (SELECT content FROM read_text('/etc/passwd'))"),
    ("environment", f"SELECT getenv('{SECRET_NAME}') AS x, MEASURE(revenue) FROM metrics"),
    ("internal", "SELECT * FROM phloem._phloem_builds"),
    ("internal", "SELECT * FROM raw.orders"),
    ("catalog", "SELECT MEASURE(revenue) FROM metrics WHERE channel IN (SELECT table_name FROM duckdb_tables())"),
    ("extension", "SELECT * FROM read_parquet('https://example.com/x.parquet')"),
    ("comment", "SELECT MEASURE(revenue) FROM metrics WHERE channel = 'web' /* */ OR "
                f"getenv('{SECRET_NAME}') IS NOT NULL"),
    ("stacked", "SELECT MEASURE(revenue) FROM metrics; DROP TABLE phloem.orders"),
    ("stacked", "SELECT MEASURE(revenue) FROM metrics; INSTALL httpfs"),
]
# nothing of these may reach a client: file contents, the environment, the server's paths, internals
# (a client's own text may come back in a message: the path it asked for, never what is there)
LEAKS = ("root:", ":/bin/", SECRET, "PATH=", "HOME=", "Traceback", "sqlglot", "Exception", "_duckdb",
         "site-packages", str(ROOT))


def clean(text: str, shop: Path) -> None:
    for leak in (*LEAKS, str(shop)):
        assert leak not in text, f"the answer carries {leak!r}: {text[:300]}"
    assert not re.search(r"\b[A-Z][a-z]+(Error|Exception)\b", text), f"a class name in: {text[:300]}"


def refused(response, attack: Attack, shop: Path, sql: bool = False) -> str:
    assert 400 <= response.status_code < 500, f"{attack}: {response.status_code} {response.text[:300]}"
    error = response.json()["error"]
    text = f"{error['message']} — {error.get('suggestion', '')}"
    names = attack.names + (attack.sql if sql else ())
    assert any(n in text for n in names), f"{attack}: the answer does not name it: {text}"
    clean(response.text, shop)
    return text


# ------------------------------------------------------------------------------------------------ REST

@pytest.mark.parametrize("attack", FILTERS, ids=str)
def test_rest_query_refuses(http, shop, attack):
    refused(http.post("/api/v1/query", json={"metrics": ["revenue"], "filters": [attack.text]}), attack, shop)


@pytest.mark.parametrize("attack", FILTERS, ids=str)
def test_rest_explain_refuses(http, shop, attack):
    body = {"metrics": ["revenue"], "dimensions": ["channel"], "filters": [attack.text]}
    refused(http.post("/api/v1/explain", json=body), attack, shop)


@pytest.mark.parametrize("attack", FILTERS, ids=str)
def test_explorer_tree_series_drill_and_whatif_refuse(http, shop, attack):
    where = {"where": [attack.text]}
    refused(http.get("/api/v1/tree", params={"root": "profit", **PERIOD, **where}), attack, shop)
    refused(http.get("/api/v1/tree/series", params={"root": "profit", "periods": 3, "end": "2024-03-31", **where}),
            attack, shop)
    refused(http.get("/api/v1/drill", params={"metric": "revenue", **PERIOD, "dimensions": "channel", **where}),
            attack, shop)
    body = {"root": "profit", **PERIOD, "where": [attack.text], "changes": {"cogs": -5.0}}
    refused(http.post("/api/v1/whatif", json=body), attack, shop)


def test_legitimate_filters_still_answer(http, runtime):
    """The same doors, with filters a client means: the numbers of the library itself."""
    filters = ["channel in ('web', 'app') and upper(country) <> 'XX'", "ordered_at >= date '2024-01-01'",
               "date_trunc('month', ordered_at) = '2024-02-01' or coalesce(country, '?') like 'N%'"]
    for f in filters:
        answer = http.post("/api/v1/query", json={"metrics": ["revenue"], "filters": [f]})
        assert answer.status_code == 200, answer.text
        (want,), = runtime.project.query(metrics=["revenue"], filters=[f]).to_pylist()[0].items(),
        assert answer.json()["rows"] == [[pytest.approx(float(want[1]))]] and want[1] > 0
    tree = http.get("/api/v1/tree", params={"root": "profit", **PERIOD, "where": "channel = 'web'"})
    assert tree.status_code == 200, tree.text
    # quotes, `;` and comment marks inside a value are part of the value (structured or as a SQL string)
    for f in ({"dimension": "country", "op": "=", "values": ["it's -- /* ; */ read_text('/etc/passwd')"]},
              "country = 'it''s -- /* ; */'"):
        answer = http.post("/api/v1/query", json={"metrics": ["orders"], "filters": [f]})
        assert answer.status_code == 200 and answer.json()["rows"] == [[0]], answer.text


# ------------------------------------------------------------------------------------------------ semantic SQL

def _where_sql(attack: Attack) -> str:
    return f"SELECT channel, MEASURE(revenue) AS revenue FROM metrics WHERE {attack.text} GROUP BY channel"


@pytest.mark.parametrize("attack", ATTACKS, ids=str)
def test_http_sql_where_refuses(http, shop, attack):
    refused(http.post("/api/v1/sql", json={"sql": _where_sql(attack)}), attack, shop, sql=True)


@pytest.mark.parametrize(("cls", "sql"), SQL_ATTACKS, ids=[f"{c}: {s[:50]}" for c, s in SQL_ATTACKS])
def test_http_sql_statements_refused(http, shop, cls, sql):
    response = http.post("/api/v1/sql", json={"sql": sql})
    assert 400 <= response.status_code < 500, f"{cls}: {response.status_code} {response.text[:300]}"
    clean(response.text, shop)


@pytest.mark.parametrize("attack", ATTACKS, ids=str)
def test_pg_wire_where_refuses_with_its_sqlstate(wire_dsn, shop, attack):
    with psycopg.connect(wire_dsn, autocommit=True) as conn:
        with pytest.raises(psycopg.Error) as caught:
            conn.execute(_where_sql(attack)).fetchall()
        e = caught.value
        assert e.sqlstate in attack.states, f"{attack}: {e.sqlstate} {e}"
        text = f"{e.diag.message_primary} {e.diag.message_hint or ''}"
        assert any(n in text for n in attack.names + attack.sql), f"{attack}: {text}"
        clean(f"{text} {e.diag.message_detail or ''}", shop)
        assert conn.execute("SELECT MEASURE(orders) FROM metrics").fetchone()[0] > 0  # the session goes on


@pytest.mark.parametrize(("cls", "sql"), SQL_ATTACKS, ids=[f"{c}: {s[:50]}" for c, s in SQL_ATTACKS])
def test_pg_wire_statements_refused(wire_dsn, shop, cls, sql):
    with psycopg.connect(wire_dsn, autocommit=True) as conn:
        with pytest.raises(psycopg.Error) as caught:
            for _ in conn.execute(sql).fetchall():
                pass
        e = caught.value
        assert e.sqlstate and e.sqlstate[:2] in ("42", "25", "0A", "3F"), f"{cls}: {e.sqlstate} {e}"
        clean(f"{e.diag.message_primary} {e.diag.message_hint or ''} {e.diag.message_detail or ''}", shop)
    with psycopg.connect(wire_dsn, autocommit=True) as conn:  # nothing was dropped, nothing installed
        assert conn.execute("SELECT MEASURE(orders) FROM orders").fetchone()[0] > 0


# ------------------------------------------------------------------------------------------------ GraphQL

@pytest.mark.parametrize("attack", FILTERS[:12], ids=str)
def test_graphql_where_takes_values_only(http, shop, attack, runtime):
    """`where` is typed: a hostile string is compared as a value (no rows match), never run as SQL."""
    for op in ("equals", "contains", "in_"):
        value = json.dumps([attack.text] if op == "in_" else attack.text)
        field = {"in_": "in"}.get(op, op)
        query = f'{{ query(where: {{country: {{{field}: {value}}}}}) {{ revenue orders }} }}'
        response = http.post("/graphql", json={"query": query})
        assert response.status_code == 200, response.text
        body = response.json()
        assert "errors" not in body, body
        rows = body["data"]["query"]
        assert rows in ([], [{"revenue": None, "orders": None}], [{"revenue": None, "orders": 0}]) or \
            all(not r["orders"] for r in rows), f"{attack}: {rows}"
        clean(response.text, shop)


def test_graphql_unknown_dimension_or_operator_is_a_validation_error(http, shop):
    response = http.post("/graphql", json={"query": '{ query(where: {passwd: {equals: "x"}}) { revenue } }'})
    assert response.status_code in (200, 400) and response.json()["errors"]
    clean(response.text, shop)


# ------------------------------------------------------------------------------------------------ CLI

@pytest.mark.parametrize("attack", FILTERS, ids=str)
def test_cli_where_refuses(runtime, shop, attack):
    from server.cli import app

    result = CliRunner().invoke(app, ["query", "-m", "revenue", "--where", attack.text, "-p", str(shop)])
    assert result.exit_code == 1, result.output
    output = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert any(n in output for n in attack.names), output
    assert "error" in output
    clean(output.replace(str(shop), "<project>"), shop)


def test_cli_where_refuses_in_a_real_process(tmp_path):
    """The installed command, in a fresh process, on the starter project: exit 1, the construct named."""
    env_cmd = [sys.executable, "-m", "server.cli"]
    subprocess.run([*env_cmd, "init", str(tmp_path / "p")], check=True, capture_output=True, cwd=ROOT)
    done = subprocess.run([*env_cmd, "query", "-m", "revenue", "--where",
                           "country = (select content from read_text('/etc/passwd'))"],
                          capture_output=True, text=True, cwd=tmp_path / "p")
    assert done.returncode == 1 and "subquery" in done.stderr, done.stderr
    assert "root:" not in done.stdout + done.stderr and "Traceback" not in done.stderr


def test_semantic_sql_keeps_its_room_outside_the_filters(http, wire_dsn):
    """The outer step still runs what surrounds the semantic tables (generate_series, functions, CTEs), and a
    semantic WHERE with the functions BI tools send still answers."""
    sql = ("WITH months AS (SELECT metric_time__month AS m, MEASURE(orders) AS n FROM metrics "
           "WHERE upper(channel) IN ('WEB', 'APP') AND metric_time >= DATE '2024-01-01' "
           "AND date_trunc('month', metric_time) < '2024-04-01' GROUP BY 1) "
           "SELECT g, (SELECT count(*) FROM months) AS months FROM generate_series(1, 3) AS t(g) ORDER BY g")
    answer = http.post("/api/v1/sql", json={"sql": sql})
    assert answer.status_code == 200, answer.text
    assert [r[0] for r in answer.json()["rows"]] == [1, 2, 3] and answer.json()["rows"][0][1] == 3
    with psycopg.connect(wire_dsn, autocommit=True) as conn:
        assert [r[0] for r in conn.execute(sql).fetchall()] == [1, 2, 3]
