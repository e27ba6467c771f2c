"""What a running server holds: the current project, swapped whole on reload so requests never mix versions."""

from __future__ import annotations

import json
import os
import secrets
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from cachetools import LRUCache

from semantic import Project
from semantic.access.context import SecurityContext
from semantic.access.quota import Quotas, Ticket
from semantic.limits import Limits
from semantic.project.load import find_project, load_project
from semantic.project.tenants import Tenants


class Runtime:
    def __init__(self, root: Path | str, timeout: float | None = 30.0, token: str | None = None,
                 limits: Limits | None = None):
        self.root = find_project(root)
        self.token = token  # the admin endpoints' secret (from the server record); None: admin is closed
        # the most rows and bytes one answer may have, at every door (PHLOEM_MAX_ROWS / PHLOEM_MAX_BYTES)
        self.limits = limits if limits is not None else Limits.from_env()
        self.tenants = Tenants(load_project(self.root), limits=self.limits)  # the model as written, and per tenant
        self.project: Project = self.tenants.default
        self.timeout = timeout  # seconds a query may run before it is cancelled (504); roles may say otherwise
        self.quotas = Quotas(self.project.model.settings.limits, timeout, self.limits)
        self._lock = threading.Lock()
        self._listeners = []
        self._sql: dict = {}  # SQL doors by project (each tenant's) of the current version: (unrestricted, by access)
        self._sql_of: Project | None = None  # the version they are of

    def sql(self, context: SecurityContext | None = None):
        """The semantic-SQL door of the project `context` queries (its tenant's), as it sees it (one per model
        version and access: its tables list only what that access may see)."""
        from server.sql import SemanticSQL

        project = self.project_for(context)
        held = self._sql.get(project)
        if held is None:
            with self._lock:
                if self._sql_of is not self.project:  # a reload: the old version's doors go
                    self._sql, self._sql_of = {}, self.project
                held = self._sql.setdefault(project, (SemanticSQL(project, timeout=self.timeout),
                                                      LRUCache(maxsize=256)))
        scoped = project.scoped(context)
        if scoped is project:  # unrestricted: the one door, no lock on the hot path
            return held[0]
        with self._lock:
            door = held[1].get(scoped.access.key)
            if door is None:
                door = held[1][scoped.access.key] = SemanticSQL(scoped, timeout=self.timeout)
        return door

    def project_for(self, context: SecurityContext | None) -> Project:
        """The project `context` queries: its tenant's (Forbidden for an unknown tenant, or for a restricted context
        without one, when tenants are configured), else the model as written. Apply `.scoped(context)` for its
        access policies."""
        return self.tenants.for_context(context)

    def admit(self, context: SecurityContext | None) -> Ticket:
        """Admission of one query of `context` under its roles' limits (LimitExceeded when over): use it as a
        context manager around the query; its `timeout` and `limits` are the ones to run the query with."""
        return self.quotas.admit(context)

    def ensure_built(self) -> None:
        """Build what is missing or stale: every tenant's, or the model as written without tenants."""
        self.tenants.ensure_built()

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
            old, self.tenants = self.tenants, self.tenants.reloaded(model)  # every tenant's project at once
            self.project = self.tenants.default
            self.quotas.configure(model.settings.limits, self.timeout, self.limits)
            old.release()  # engines are shared and stay open; only the old log file is released
        for listener in self._listeners:
            listener(self.project)
        return True

    def close(self) -> None:
        self.tenants.close()


RECORD = Path(".phloem") / "server.json"  # inside the project: whoever can read the project can find its server


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


@dataclass(frozen=True)
class ServerRecord:
    """What `phloem serve` leaves in the project while it runs, so the CLI can find it and forward to it.

    Written atomically with mode 0600 (the token drives the admin endpoints); removed on a clean exit; a
    record whose process is gone is stale and ignored.
    """

    pid: int
    url: str
    pg_port: int
    token: str

    @classmethod
    def read(cls, root: Path) -> ServerRecord | None:
        """The running server of the project at `root`, or None (no record, unreadable, or its process died)."""
        try:
            data = json.loads((Path(root) / RECORD).read_text())
            record = cls(int(data["pid"]), str(data["url"]), int(data["pg_port"]), str(data["token"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return record if _alive(record.pid) else None

    @classmethod
    def unwritten(cls, url: str, pg_port: int) -> ServerRecord:
        """This server's record, kept in memory only (the project folder is read-only)."""
        return cls(os.getpid(), url, pg_port, secrets.token_urlsafe(32))

    @classmethod
    def write(cls, root: Path, url: str, pg_port: int) -> ServerRecord:
        record = cls.unwritten(url, pg_port)
        path = Path(root) / RECORD
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".server.{record.pid}.json")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(record), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # readers see the whole record or none
        return record

    def remove(self, root: Path) -> None:
        """Delete the record if it is still this server's (never another server's)."""
        path = Path(root) / RECORD
        try:
            if json.loads(path.read_text()).get("pid") == self.pid:
                path.unlink()
        except (OSError, ValueError):
            pass
