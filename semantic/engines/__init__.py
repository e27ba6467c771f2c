"""Warehouses: `connect(model)` opens the one the project's `warehouse:` setting names."""

from __future__ import annotations

import os
import re

from semantic.engines.duckdb import DuckDBEngine
from semantic.errors import ModelError, Problem, WarehouseError
from semantic.project.yamlpos import load_yaml

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")
PROJECT_FILE = "phloem.yml"


def expand_env(text: str, key: str = "warehouse.dsn", line: int | None = None) -> str:
    """`${VAR}` / `$VAR` from the environment (DSNs hold passwords, so they stay out of model files)."""
    missing = [a or b for a, b in _VARIABLE.findall(text) if (a or b) not in os.environ]
    if missing:
        raise ModelError([Problem(
            f"environment variable `{name}` is not set", PROJECT_FILE, line, key,
            f"export {name}=postgresql://user:password@host:5432/dbname before running phloem")
            for name in dict.fromkeys(missing)])
    return _VARIABLE.sub(lambda m: os.environ[m.group(1) or m.group(2)], text)


def _line(model, *path: str) -> int | None:
    """The line of a key of phloem.yml, for messages that point at it."""
    try:
        _, positions, _ = load_yaml((model.root / PROJECT_FILE).read_text(), PROJECT_FILE)
    except OSError:
        return None
    return positions.get(path) or positions.get(path[:1])


def connect(model):
    """The engine of `model.settings.warehouse`: embedded DuckDB (default) or a PostgreSQL server."""
    warehouse = model.settings.warehouse
    if warehouse.engine == "postgres":
        from semantic.engines.postgres import PostgresEngine  # imported here: DuckDB users never load psycopg

        if not warehouse.dsn:
            raise ModelError([Problem(
                "`warehouse: {engine: postgres}` needs a `dsn`", PROJECT_FILE, _line(model, "warehouse"),
                "warehouse", "add `dsn: ${PHLOEM_PG_DSN}` and export PHLOEM_PG_DSN=postgresql://user:password@host/db")])
        line = _line(model, "warehouse", "dsn")
        try:
            return PostgresEngine(expand_env(warehouse.dsn, line=line))
        except WarehouseError as e:  # a DSN that does not parse is a mistake in phloem.yml
            raise ModelError([Problem(str(e), PROJECT_FILE, line, "warehouse.dsn",
                                      "write it as postgresql://user:password@host:5432/dbname")]) from None
    return DuckDBEngine(model.database_path, files=model.root)
