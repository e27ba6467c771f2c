"""What a running server holds: the current project, swapped whole on reload so requests never mix versions."""

from __future__ import annotations

import threading
from pathlib import Path

from semantic import Project
from semantic.project.load import find_project, load_project


class Runtime:
    def __init__(self, root: Path | str, timeout: float | None = 30.0):
        self.root = find_project(root)
        self.project = Project.load(self.root)
        self.timeout = timeout  # seconds a query may run before it is cancelled (504)
        self._lock = threading.Lock()
        self._listeners = []
        self._sql = None

    def sql(self):
        """The semantic-SQL door of the current project (one per model version)."""
        from server.sql import SemanticSQL

        project = self.project
        if self._sql is None or self._sql.project is not project:
            self._sql = SemanticSQL(project, timeout=self.timeout)
        return self._sql

    @property
    def version(self) -> str:
        return self.project.model.version

    def on_reload(self, listener) -> None:
        """Call `listener(project)` after every reload that changed the model (e.g. rebuild the GraphQL schema)."""
        self._listeners.append(listener)

    def reload(self) -> bool:
        """Re-read the model files; a new version gets a new Project (fresh caches) on the same warehouse."""
        with self._lock:
            model = load_project(self.root)  # a ModelError leaves the running version in place
            if model.version == self.project.model.version:
                return False
            old, self.project = self.project, Project(model, engine=self.project.engine)
            old.query_log.close()  # the engine is shared and stays open; only the old log file is released
        for listener in self._listeners:
            listener(self.project)
        return True

    def close(self) -> None:
        self.project.close()
