"""Phloem's library: load a project, build its activity streams and datasets, answer metric queries."""

from semantic.errors import (
    AqlSyntaxError,
    BuildError,
    ModelError,
    PhloemError,
    Problem,
    QueryError,
    WarehouseError,
)
from semantic.project.project import Project
from semantic.project.tenants import Tenants, projects

__all__ = ["AqlSyntaxError", "BuildError", "ModelError", "PhloemError", "Problem", "Project", "QueryError",
           "Tenants", "WarehouseError", "projects"]
