"""`connect(model)`: the warehouse named in phloem.yml, DSNs read from the environment, clear mistakes."""

from __future__ import annotations

import pytest

from semantic import ModelError, Project
from semantic.engines import expand_env
from semantic.engines.duckdb import DuckDBEngine
from semantic.engines.postgres import PostgresEngine


def project_at(tmp_path, warehouse: str) -> Project:
    (tmp_path / "phloem.yml").write_text(f"name: shop\nwarehouse:\n{warehouse}")
    return Project.load(tmp_path)


def test_duckdb_is_the_default(tmp_path):
    (tmp_path / "phloem.yml").write_text("name: shop\n")
    p = Project.load(tmp_path)
    assert isinstance(p.engine, DuckDBEngine) and p.compiler.dialect == "duckdb"
    p.close()


def test_postgres_dsn_from_the_environment(tmp_path, monkeypatch, pg_dsn):
    monkeypatch.setenv("SHOP_DSN", pg_dsn)
    p = project_at(tmp_path, "  engine: postgres\n  dsn: ${SHOP_DSN}\n")
    assert isinstance(p.engine, PostgresEngine) and p.compiler.dialect == "postgres"
    assert p.engine.dsn == pg_dsn
    assert p.engine.rows("select 41 + ?", [1]) == [(42,)]
    p.close()


def test_variables_inside_a_dsn(monkeypatch):
    monkeypatch.setenv("PGPW", "s3cret")
    monkeypatch.setenv("PGHOST_X", "db.internal")
    assert expand_env("postgresql://me:${PGPW}@$PGHOST_X:5432/shop") == "postgresql://me:s3cret@db.internal:5432/shop"


def test_a_missing_variable_is_a_model_error_at_its_line(tmp_path, monkeypatch):
    monkeypatch.delenv("PHLOEM_NO_SUCH_DSN", raising=False)
    with pytest.raises(ModelError) as caught:
        project_at(tmp_path, "  engine: postgres\n  dsn: ${PHLOEM_NO_SUCH_DSN}\n")
    assert str(caught.value).splitlines()[1].strip() == (
        "phloem.yml:4 [warehouse.dsn]: environment variable `PHLOEM_NO_SUCH_DSN` is not set — "
        "export PHLOEM_NO_SUCH_DSN=postgresql://user:password@host:5432/dbname before running phloem")


def test_postgres_without_a_dsn(tmp_path):
    with pytest.raises(ModelError, match=r"phloem.yml:2 \[warehouse\]: `warehouse: \{engine: postgres\}` needs a `dsn`"):
        project_at(tmp_path, "  engine: postgres\n")


def test_a_dsn_that_does_not_parse(tmp_path):
    with pytest.raises(ModelError, match=r"phloem.yml:4 \[warehouse.dsn\]: invalid PostgreSQL dsn: .* — write it as"):
        project_at(tmp_path, "  engine: postgres\n  dsn: 'host=x port'\n")

