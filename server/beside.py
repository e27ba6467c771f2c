"""The CLI beside a running server: while `phloem serve` holds a DuckDB project (one writer process per file),
the CLI's commands are answered by that server over HTTP and print what they would print locally."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from semantic.errors import ModelError, PhloemError, Problem, QueryError
from semantic.materialize.build import BuildReport
from semantic.query.query import Query
from server.encode import ARROW
from server.runtime import ServerRecord

_LOCK = re.compile(r'Could not set lock on file "(?P<file>[^"]+)": Conflicting lock is held in '
                   r"(?P<program>.*?) \(PID (?P<pid>\d+)\)")
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # the server is local: never via a proxy
STARTING = 30.0  # seconds to wait for a server that wrote its record but is not answering yet (first build)


@dataclass(frozen=True)
class Lock:
    """Who holds a DuckDB file, as DuckDB's error tells it (program and pid may be unknown)."""

    file: str
    program: str | None = None
    pid: int | None = None


def lock_of(error: Exception, database: str = "") -> Lock | None:
    """The lock behind a DuckDB error, or None when the error is about something else."""
    text = str(error)
    if "Could not set lock" not in text and "Conflicting lock" not in text:
        return None
    m = _LOCK.search(text)
    if m is None:
        return Lock(database)
    return Lock(m["file"], m["program"] or None, int(m["pid"]))


class Held(PhloemError):
    """The project's warehouse file is locked by another process; says which, and what will work."""


def held_by_other(lock: Lock) -> Held:
    by = f"PID {lock.pid}" + (f" ({lock.program})" if lock.program else "") if lock.pid else "another process"
    return Held(f"the warehouse file {lock.file} is locked by {by}, which is not a Phloem server of this project"
                " — DuckDB lets one process at a time open it; stop that process (or close its connection) and "
                "run the command again")


def held_by_server(record: ServerRecord, root: Path, what: str) -> Held:
    return Held(f"PID {record.pid} serves this project at {record.url}, so {what} cannot run beside it — "
                f"stop that server (kill {record.pid}) and run the command again, or ask it: "
                f"phloem query -p {root} -m <metrics>")


class Beside:
    """The running server of a project, used the way the CLI uses a `Project` (same answers, same errors)."""

    def __init__(self, record: ServerRecord, model):
        self.record, self.model = record, model
        self.reloaded = False

    # ------------------------------------------------------------ HTTP

    def _request(self, method: str, path: str, body: dict | None = None, accept: str = "application/json"):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.record.url + path, data=data, method=method, headers={
            "Accept": accept, "Content-Type": "application/json", "Authorization": f"Bearer {self.record.token}"})
        deadline = time.monotonic() + STARTING
        while True:
            try:
                return _DIRECT.open(req, timeout=None)
            except urllib.error.HTTPError as e:
                raise self._error(e) from None
            except urllib.error.URLError as e:  # the server wrote its record and is still building: wait for it
                refused = isinstance(e.reason, ConnectionRefusedError)
                if not refused or time.monotonic() > deadline or ServerRecord.read(self.model.root) is None:
                    raise Held(f"PID {self.record.pid} holds this project but does not answer at "
                               f"{self.record.url} ({e.reason}); wait until `phloem serve` prints its URLs, "
                               f"or stop it (kill {self.record.pid})") from None
                time.sleep(0.2)

    def _error(self, e: urllib.error.HTTPError) -> PhloemError:
        try:
            error = json.loads(e.read())["error"]
        except (ValueError, KeyError, TypeError):
            return PhloemError(f"the server at {self.record.url} answered {e.code} {e.reason}")
        if error.get("type") == "model" and error.get("problems"):
            return PhloemError("\n".join(["the served model has problems:", *(f"  {p}" for p in error["problems"])]))
        return QueryError(error.get("message", ""), error.get("suggestion", ""))

    def _json(self, method: str, path: str, body: dict | None = None):
        with self._request(method, path, body) as resp:
            return json.loads(resp.read())

    def _arrow(self, method: str, path: str, body: dict | None = None) -> pa.Table:
        with self._request(method, path, body, accept=ARROW) as resp:
            return pa.ipc.open_stream(resp.read()).read_all()

    def reload(self) -> None:
        """Have the server read the model files first, as a local command would (once per command)."""
        if not self.reloaded:
            self._json("POST", "/api/v1/reload")
            self.reloaded = True

    # ------------------------------------------------------------ what the CLI asks

    def query(self, query: Query, progress=None) -> pa.Table:
        self.reload()
        return self._arrow("POST", "/api/v1/query", query.model_dump(mode="json", exclude_none=True))

    def explain(self, query: Query) -> str:
        self.reload()
        answer = self._json("POST", "/api/v1/explain", query.model_dump(mode="json", exclude_none=True))
        return f"{answer['plan']}\n\nSQL:\n{answer['sql']}"  # as Compiled.explain() writes it

    def dataset(self, name: str, limit: int | None = None, progress=None) -> pa.Table:
        from server.rest import DATASET_ROWS

        if limit is None or limit > DATASET_ROWS:
            raise Held(f"PID {self.record.pid} serves this project at {self.record.url} and returns at most "
                       f"{DATASET_ROWS:,} rows of a dataset; ask for fewer (--limit), or stop that server "
                       f"(kill {self.record.pid}) to read more")
        self.reload()
        return self._arrow("GET", f"/api/v1/datasets/{urllib.request.quote(name)}?limit={limit}")

    def rollups(self) -> list[dict]:
        self.reload()
        return self._json("GET", "/api/v1/meta")["rollups"]

    def suggest(self, limit: int) -> list:
        from semantic.materialize.suggest import Suggestion
        from semantic.project.model import Rollup

        self.reload()
        return [Suggestion(Rollup.model_validate(s["rollup"]), s["queries"], s["rows"], s["source_rows"])
                for s in self._json("POST", "/api/v1/admin/rollups/suggest", {"limit": limit})]

    def validate(self) -> None:
        """The warehouse checks of `phloem validate`, run by the server on its connection; raises ModelError."""
        problems = self._json("POST", "/api/v1/admin/validate")["problems"]
        if problems:
            raise ModelError([Problem(**p) for p in problems])

    def build_tenants(self, tenant: str | None = None, force: bool = False, progress=None) -> dict[str, BuildReport]:
        """As Tenants.build, by the server: every tenant's build (or one), reports by tenant ('' without tenants)."""
        reports = self._build({"force": force, "tenant": tenant, "tenants": True}, "reports", progress)
        return {who: _report(r) for who, r in reports.items()}

    def build(self, force: bool = False, progress=None) -> BuildReport:
        """The server re-reads the model and builds on its own connection; progress arrives line by line."""
        return _report(self._build({"force": force}, "report", progress))

    def _build(self, body: dict, answer: str, progress) -> dict:
        """The admin build's last line (`answer`), passing progress lines on as they come."""
        with self._request("POST", "/api/v1/admin/build", body) as resp:
            for line in resp:
                item = json.loads(line)
                if "progress" in item and progress:
                    progress(*item["progress"])
                elif "error" in item:
                    raise PhloemError(item["error"]["message"])
                elif answer in item:
                    return item[answer]
        raise PhloemError(f"the server at {self.record.url} stopped before the build finished")


def _report(r: dict) -> BuildReport:
    return BuildReport(built=r["built"], fresh=r["fresh"], seconds=r["seconds"])
