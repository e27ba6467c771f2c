"""Every dbt-aql conformance case (tests/data/activity_schema, Apache-2.0, see its NOTICE.md) must pass,
on DuckDB (activities read the seed CSVs) and on PostgreSQL (the seeds are loaded into tables `seeds.*`)."""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import duckdb
import pytest
import yaml

from semantic import Project
from semantic.engines.copy import copy_tables
from semantic.engines.postgres import PostgresEngine

PACK = Path(__file__).resolve().parents[1] / "data" / "activity_schema"
CASES = yaml.safe_load((PACK / "cases.yaml").read_text())
# dbt-aql's activity_id recipe: md5('<entity>-<ts>-<activity name with spaces>'); ts::varchar gives
# '2022-01-02 22:10:11' on both engines
ACTIVITY_SQL = """
select md5(entity_uuid::varchar || '-' || ts::varchar || '-' || '{label}') as aid,
       entity_uuid::varchar as entity_uuid, ts{features}
from {source}
"""
READ_SEED = "read_csv('{seed}', header = true, types = {{'ts': 'TIMESTAMP'}})"


UPSTREAM_SPELLING = [c for c in CASES["cases"] if c["name"].startswith("aql_syntax__")]


def upstream(aql: str) -> str:
    """Undo the pack's one rewrite (NOTICE.md): `joined.x` / `feature_json.x` back to dbt-aql's Jinja."""
    aql = re.sub(r"\bjoined\.(\w+)", r"{{dbt_aql.json_extract('{joined}.{feature_json}', '\1')}}", aql)
    return re.sub(r"\bfeature_json\.(\w+)", r"{{dbt_aql.json_extract('{feature_json}', '\1')}}", aql)


def seed_table(seed: str) -> str:
    return Path(seed).stem


def load_seeds(dsn: str) -> None:
    """The seed CSVs as PostgreSQL tables `seeds.<name>`, read and typed by DuckDB as on the DuckDB side."""
    con = duckdb.connect()
    con.execute("create schema seeds")
    for a in CASES["stream"]["activities"]:
        con.execute(f"create table seeds.{seed_table(a['seed'])} as select * from "
                    + READ_SEED.format(seed=PACK / a["seed"]))
    engine = PostgresEngine(dsn)
    try:
        copy_tables(con, engine, "seeds")
    finally:
        engine.close()
        con.close()


def write_project(root: Path, dsn: str | None = None) -> None:
    """The conformance project; on PostgreSQL (`dsn`) its activities read `seeds.*` instead of the CSVs."""
    stream = CASES["stream"]
    activities = []
    for a in stream["activities"]:
        features = list(a["features"])
        source = f"seeds.{seed_table(a['seed'])}" if dsn else READ_SEED.format(seed=PACK / a["seed"])
        sql = ACTIVITY_SQL.format(label=a["activity"], source=source, features="".join(f", {f}" for f in features))
        activities.append({"name": a["aql_name"], "sql": sql, "id": "aid",
                           "features": [{"name": f, "type": t} for f, t in a["features"].items()]})
    (root / "models").mkdir(parents=True)
    settings = {"name": "conformance", "aql": {"compat": "dbt_aql"}}
    if dsn:
        settings["warehouse"] = {"engine": "postgres", "dsn": dsn}
    (root / "phloem.yml").write_text(yaml.safe_dump(settings))
    (root / "models" / "stream.yml").write_text(yaml.safe_dump(
        {"streams": [{"name": stream["name"], "entity": "entity_uuid", "activities": activities}]}))
    for column in CASES["dataset_columns"]:
        (root / "models" / f"{column['name']}.aql").write_text(column["aql"])
    for case in CASES["cases"]:
        (root / "models" / f"{case['name']}.aql").write_text(case["aql"])
    for case in UPSTREAM_SPELLING:  # the same cases as upstream wrote them, with dbt-aql's Jinja
        (root / "models" / f"{case['name']}__jinja.aql").write_text(upstream(case["aql"]))


@pytest.fixture(scope="module", params=["duckdb", "postgres"])
def project(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"conformance_{request.param}")
    dsn = request.getfixturevalue("pg_dsn") if request.param == "postgres" else None
    if dsn:
        load_seeds(dsn)
    write_project(root, dsn)
    p = Project.load(root)
    assert p.engine.dialect == request.param
    p.build()
    yield p
    p.close()


def normalise(value) -> object:
    if value is None or value == "":
        return None
    text = str(value)
    try:
        number = float(text)
    except ValueError:
        return text[:19] if len(text) >= 19 and text[4] == "-" and text[10] in " T" else text
    return round(number, 9) if math.isfinite(number) else text


def test_every_case_is_loaded(project):
    assert len(CASES["cases"]) == 66
    assert {c["name"] for c in CASES["cases"]} <= set(project.model.datasets)


@pytest.mark.parametrize("case", CASES["cases"] + [{**c, "name": f"{c['name']}__jinja"} for c in UPSTREAM_SPELLING],
                         ids=lambda c: c["name"])
def test_case(project, case):
    with open(PACK / "expected" / case["expected"], newline="") as f:
        expected_rows = list(csv.DictReader(f))
    columns = list(expected_rows[0].keys())
    table = project.dataset(case["name"])
    assert sorted(table.column_names) == sorted(columns)
    got = {tuple(normalise(r[c]) for c in columns) for r in table.to_pylist()}
    want = {tuple(normalise(r[c]) for c in columns) for r in expected_rows}
    assert len(table) == len(expected_rows)
    assert got == want
