"""Defence in depth: the DuckDB warehouse connection cannot reach files, the network or extensions even if a
filter check were bypassed — yet builds still read the files the model's own SQL names, and the demo opens."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
import sqlglot
from secret import SECRET, SECRET_NAME
from sqlglot import exp

from semantic import Project
from semantic.engines.duckdb import DuckDBEngine, file_sources
from semantic.errors import BuildError, QueryError

ROOT = Path(__file__).resolve().parents[2]
ESCAPES = [
    "select content from read_text('/etc/passwd')",
    "select * from read_csv('/proc/self/environ')",
    "select * from glob('/etc/*')",
    "select * from read_parquet('https://example.com/x.parquet')",
    f"select getenv('{SECRET_NAME}')",
    "select * from read_text('seeds/../../../../../etc/passwd')",
]
STATEMENTS = [
    "install httpfs", "load httpfs", "set enable_external_access = true", "set lock_configuration = false",
    "set allowed_directories = ['/']", "attach '/tmp/phloem-sandbox-other.duckdb' as other",
    "copy (select 1) to '/tmp/phloem-sandbox-out.csv'",
]


@pytest.fixture(scope="module")
def starter(tmp_path_factory) -> Path:
    """`phloem init`'s starter project, whose activities read_csv('seeds/…') relative to the project folder."""
    folder = tmp_path_factory.mktemp("lockdown") / "starter"
    subprocess.run([sys.executable, "-m", "server.cli", "init", str(folder)], check=True, capture_output=True,
                   cwd=ROOT)
    return folder


@pytest.fixture(scope="module")
def built(starter):
    p = Project.load(starter)
    p.build()
    yield p
    p.close()


@pytest.mark.parametrize("sql", ESCAPES)
def test_the_engine_itself_refuses_files_network_and_environment(built, sql):
    with pytest.raises((QueryError, duckdb.Error)) as caught:
        built.engine.arrow(sql)
    text = str(caught.value)
    assert "root:" not in text and SECRET not in text
    if isinstance(caught.value, QueryError):  # a refused file: a 4xx that names no path
        assert caught.value.sqlstate == "42501" and "/etc" not in text and "refused" in text


@pytest.mark.parametrize("sql", STATEMENTS)
def test_no_statement_loosens_the_lockdown(sql, tmp_path):
    engine = DuckDBEngine(str(tmp_path / "w.duckdb"), files=tmp_path)
    try:
        with pytest.raises(duckdb.Error):
            engine.execute(sql)
        with pytest.raises(QueryError):
            engine.rows("select content from read_text('/etc/passwd')")
        settings = dict(engine.rows("select name, value from duckdb_settings() where name in "
                                    "('enable_external_access', 'lock_configuration', 'autoload_known_extensions', "
                                    "'autoinstall_known_extensions')"))
        assert settings == {"enable_external_access": "false", "lock_configuration": "true",
                            "autoload_known_extensions": "false", "autoinstall_known_extensions": "false"}
    finally:
        engine.close()
    assert not Path("/tmp/phloem-sandbox-out.csv").exists() and not Path("/tmp/phloem-sandbox-other.duckdb").exists()


def test_the_starter_builds_and_answers_reading_only_its_seeds(built, starter):
    assert built.query(metrics=["orders"]).column(0)[0].as_py() > 0
    # the seeds the SQL names are readable (on any cursor, relative to the project), the folder around them is not
    assert built.engine.rows("select count(*) from read_csv('seeds/orders.csv')")[0][0] > 0
    with pytest.raises(QueryError):
        built.engine.rows("select * from read_text('phloem.yml')")
    with pytest.raises(QueryError):
        built.engine.rows(f"select * from read_text('{starter / 'models' / 'views.yml'}')")


def test_a_model_reading_a_file_it_did_not_name_fails_to_build_saying_why(built, starter):
    """The lockdown is fixed when the warehouse opens: SQL that reads another file is a build error."""
    (starter / "elsewhere").mkdir()
    (starter / "elsewhere" / "x.csv").write_text("a\n1\n")
    with pytest.raises(BuildError, match="reads only the files the model named"):
        built.engine.create_table_as(exp.to_table("phloem.x"),
                                     sqlglot.parse_one("select * from read_csv('elsewhere/x.csv')"))


def test_the_demo_builds_and_its_database_opens_locked(tmp_path):
    from semantic.demo import create

    create(tmp_path / "shop", scale=200)
    p = Project.load(tmp_path / "shop")
    try:
        p.build()
        assert p.query(metrics=["revenue"]).column(0)[0].as_py() > 0
        assert p.engine.rows("select current_setting('enable_external_access')")[0][0] is False
    finally:
        p.close()
    p = Project.load(tmp_path / "shop")  # reopened: the built file opens under the same lockdown
    try:
        assert p.query(metrics=["orders"]).column(0)[0].as_py() > 0
    finally:
        p.close()


def test_file_sources_are_the_paths_the_sql_names(tmp_path):
    files, folders = file_sources([
        "select * from read_csv('seeds/orders.csv')",
        "select * from read_parquet('/data/lake/*/part-*.parquet') where x = 'a/b' or y = 'it''s'",
        "select * from 'exports/signups.json'",
        "select * from read_parquet('https://example.com/x.parquet')",
        "select 'US' as country, 'web' as channel",
    ], tmp_path)
    assert files == ["seeds/orders.csv", str(tmp_path / "seeds/orders.csv"),
                     "exports/signups.json", str(tmp_path / "exports/signups.json")]  # not 'a/b': a value
    assert folders == ["/data/lake/"]
    assert file_sources(["select * from read_csv(['a/1.csv', 'b/*.csv'], header = true)"]) == (
        ["a/1.csv", str(Path.cwd() / "a/1.csv")], ["b/", str(Path.cwd() / "b") + "/"])
