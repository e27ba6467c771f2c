"""The query log: each answered query's shape (leaf measures, dimensions, grain), for rollup suggestions.

One JSON object a line in `<project>/.phloem/query_log.jsonl`, at most `limit` lines (the oldest half is
dropped when it is full). Logging never fails a query: a folder that cannot be written is skipped.
"""

from __future__ import annotations

import threading
from pathlib import Path

import orjson

LIMIT = 10_000


def entry(plan) -> dict:
    """A query's normalized shape: what each leaf aggregates, by what, at which grain."""
    leaves = []
    for leaf in plan.leaves:
        if leaf.kind == "conversion":
            continue
        dims = sorted(f"{leaf.dim_views[d.text]}.{d.name}" + (f"__{d.grain}" if d.grain else "")
                      for d in plan.dims if d.view is not None)
        filters = sorted({f"{leaf.dim_views[d.text]}.{d.name}" + (f"__{d.grain}" if d.grain else "")
                          for d in plan.filter_dims if d.view is not None})
        leaves.append({"view": leaf.view, "measures": sorted({m.measure.name for m in leaf.metrics}),
                       "dims": dims, "filters": filters, "kind": leaf.kind,
                       "rollup": leaf.rollup.spec.name if leaf.rollup else None})
    return {"metrics": sorted(plan.metrics), "dimensions": sorted(d.output for d in plan.dims), "grain": plan.grain,
            "time_range": plan.query.time_range is not None, "leaves": leaves}


class QueryLog:
    def __init__(self, root: Path, limit: int = LIMIT):
        self.path = Path(root) / ".phloem" / "query_log.jsonl"
        self.limit = limit
        self._lines: int | None = None
        self._lock = threading.Lock()
        self._file = None
        self.enabled = True

    def append(self, plan) -> None:
        if not self.enabled:
            return
        line = getattr(plan, "_log_line", None)
        if line is None:  # plans are cached, so each shape is serialized once, not once per query
            line = orjson.dumps(entry(plan)) + b"\n"
            plan._log_line = line
        with self._lock:
            try:
                if self._lines is None:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    self._lines = self.path.read_bytes().count(b"\n") if self.path.exists() else 0
                if self._lines >= self.limit:
                    self.close()
                    keep = self.path.read_bytes().splitlines(keepends=True)[-(self.limit // 2):]
                    self.path.write_bytes(b"".join(keep))
                    self._lines = len(keep)
                if self._file is None:
                    self._file = self.path.open("ab", buffering=0)  # kept open: no open() per query
                self._file.write(line)
                self._lines += 1
            except OSError:
                self.enabled = False  # a read-only project folder: answer queries, log nothing

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def entries(self) -> list[dict]:
        if not self.path.exists():
            return []
        out = []
        for raw in self.path.read_bytes().splitlines():
            try:
                out.append(orjson.loads(raw))
            except orjson.JSONDecodeError:
                continue  # a line cut by a crash
        return out
