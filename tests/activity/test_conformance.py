"""Every dbt-aql conformance case (tests/data/activity_schema, Apache-2.0, see its NOTICE.md) must pass."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import yaml

from semantic import Project

PACK = Path(__file__).resolve().parents[1] / "data" / "activity_schema"
CASES = yaml.safe_load((PACK / "cases.yaml").read_text())
# dbt-aql's activity_id recipe: md5('<entity>-<ts>-<activity name with spaces>')
ACTIVITY_SQL = """
select md5(entity_uuid::varchar || '-' || ts::varchar || '-' || '{label}') as aid,
       entity_uuid::varchar as entity_uuid, ts{features}
from read_csv('{seed}', header = true, types = {{'ts': 'TIMESTAMP'}})
"""


def write_project(root: Path) -> None:
    stream = CASES["stream"]
    activities = []
    for a in stream["activities"]:
        features = list(a["features"])
        sql = ACTIVITY_SQL.format(label=a["activity"], seed=PACK / a["seed"],
                                  features="".join(f", {f}" for f in features))
        activities.append({"name": a["aql_name"], "sql": sql, "id": "aid",
                           "features": [{"name": f, "type": t} for f, t in a["features"].items()]})
    (root / "models").mkdir(parents=True)
    (root / "phloem.yml").write_text(yaml.safe_dump({"name": "conformance", "aql": {"compat": "dbt_aql"}}))
    (root / "models" / "stream.yml").write_text(yaml.safe_dump(
        {"streams": [{"name": stream["name"], "entity": "entity_uuid", "activities": activities}]}))
    for column in CASES["dataset_columns"]:
        (root / "models" / f"{column['name']}.aql").write_text(column["aql"])
    for case in CASES["cases"]:
        (root / "models" / f"{case['name']}.aql").write_text(case["aql"])


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("conformance")
    write_project(root)
    p = Project.load(root)
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


@pytest.mark.parametrize("case", CASES["cases"], ids=lambda c: c["name"])
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
