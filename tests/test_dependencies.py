"""Every third-party import is declared in pyproject.toml, in the group that installs it where it is used.

`semantic/` and `server/` run from `pip install -e .`: their imports must be main dependencies. `tests/` run
from `pip install -e ".[test]"`: main or test; `bench/` from `pip install -e ".[bench]"`: main or bench. A fresh
virtual environment would fail on anything else.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
FIRST_PARTY = {"semantic", "server", "tests", "bench"}


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    return normalized(re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement).group(1))


MAIN = {requirement_name(r) for r in PYPROJECT["project"]["dependencies"]}
EXTRAS = PYPROJECT["project"]["optional-dependencies"]
TEST = {requirement_name(r) for r in EXTRAS["test"]}
BENCH = {requirement_name(r) for r in EXTRAS["bench"]}
DISTRIBUTIONS = {name: {normalized(d) for d in dists} for name, dists in metadata.packages_distributions().items()}


def local_modules(folder: Path) -> set[str]:
    """Modules a test or bench script imports by bare name (its own folder is on sys.path)."""
    return {p.stem for p in folder.rglob("*.py")} | {p.name for p in folder.rglob("*") if p.is_dir()}


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def third_party(folder: str) -> dict[str, set[str]]:
    """Top-level third-party module → the files under `folder` that import it."""
    base = ROOT / folder
    local = (local_modules(base) if folder in ("tests", "bench") else set()) | FIRST_PARTY
    out: dict[str, set[str]] = {}
    for path in base.rglob("*.py"):
        if "node_modules" in path.parts:
            continue
        for module in imports(path) - local:
            if module not in sys.stdlib_module_names and module != "__future__":
                out.setdefault(module, set()).add(str(path.relative_to(ROOT)))
    return out


@pytest.mark.parametrize(("folder", "allowed", "group"), [
    ("semantic", MAIN, "[project] dependencies"),
    ("server", MAIN, "[project] dependencies"),
    ("tests", MAIN | TEST, "[project] dependencies or the `test` extra"),
    ("bench", MAIN | BENCH, "[project] dependencies or the `bench` extra"),
])
def test_every_import_is_declared(folder: str, allowed: set[str], group: str) -> None:
    problems = []
    for module, files in sorted(third_party(folder).items()):
        dists = DISTRIBUTIONS.get(module)
        if not dists and folder == "bench":  # an extra the test venv does not install: its name must be declared
            dists = {normalized(module)}
        if not dists:
            problems.append(f"`{module}` (imported by {', '.join(sorted(files))}) is not installed at all")
        elif not dists & allowed:
            problems.append(f"`{module}` (distribution {', '.join(sorted(dists))}, imported by "
                            f"{', '.join(sorted(files))}) is not declared in {group}")
    assert not problems, "undeclared imports:\n" + "\n".join(problems)


def test_the_walk_sees_real_imports() -> None:
    """Guard against a walk that finds nothing (and so passes vacuously)."""
    assert {"duckdb", "sqlglot", "pyarrow"} <= set(third_party("semantic"))
    assert {"fastapi", "strawberry", "numpy"} <= set(third_party("server"))
    assert {"pytest", "yaml", "schemathesis"} <= set(third_party("tests"))
