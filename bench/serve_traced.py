"""`phloem serve` with a memory probe beside it: where a long-running server's memory goes, sampled over time.

    PHLOEM_TRACE_OUT=trace.jsonl python bench/serve_traced.py serve <project> --port … --pg-port …
    python bench/soak.py --seconds 300 --clients 20 --trace trace.jsonl    # the same, started by the soak

A bench tool, not part of the product: it runs `server.cli` in this process after starting `tracemalloc`
(PHLOEM_TRACE_FRAMES frames per allocation, default 6; 0: no tracemalloc, the other counts only), and a thread
that every PHLOEM_TRACE_EVERY seconds (default 30) appends one JSON line to PHLOEM_TRACE_OUT:

- `rss_mb` (VmRSS), glibc's `mallinfo2` (arena bytes in use / free: fragmentation), Arrow's pool bytes;
- DuckDB's own memory (`duckdb_memory()` summed, and by tag) on the server's warehouse connection;
- the length and size of every cache the server holds (results, plans, SQL rewrites, pg sessions' statements,
  GraphQL, access, lru_caches of the modules loaded), found by walking the server's objects;
- with tracemalloc: the Python heap traced, and the 25 allocation sites (grouped by traceback) that grew most
  since the first sample.
"""

from __future__ import annotations

import ctypes
import functools
import gc
import json
import os
import sys
import threading
import time
import tracemalloc
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

APP: list = []  # the FastAPI app the server created (captured from server.app.create_app)


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def mallinfo() -> dict:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        m = libc.mallinfo2()
    except (OSError, AttributeError):
        return {}
    mb = 1 << 20
    return {"arena_mb": round(m.arena / mb, 1), "mmap_mb": round(m.hblkhd / mb, 1),
            "in_use_mb": round(m.uordblks / mb, 1), "free_mb": round(m.fordblks / mb, 1)}


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def caches() -> dict:
    """Every cachetools cache and functools.lru_cache reachable in the process, by the type that holds it."""
    from cachetools import Cache

    out: dict[str, dict] = {}
    seen: set[int] = set()
    gc.unfreeze()  # what startup allocated (gc.freeze in serve) is out of gc.get_objects()' reach until thawed
    try:
        objects = gc.get_objects()
    finally:
        gc.freeze()
    for obj in objects:
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, Cache):
            name = f"{type(obj).__name__}(max {obj.maxsize})"
            entry = out.setdefault(name, {"caches": 0, "entries": 0, "size": 0})
            entry["caches"] += 1
            entry["entries"] += len(obj)
            entry["size"] += obj.currsize
            entry["key_chars"] = entry.get("key_chars", 0) + sum(len(str(k)) for k in list(obj.keys())[:20000])
        elif isinstance(obj, functools._lru_cache_wrapper):
            info = obj.cache_info()
            if info.currsize:
                out[f"lru {obj.__module__}.{obj.__qualname__}"] = {"entries": info.currsize, "max": info.maxsize}
    return dict(sorted(out.items()))


def duckdb_memory() -> dict:
    if not APP:
        return {}
    try:
        engine = APP[0].state.runtime.project.engine
        rows = engine.rows("SELECT tag, memory_usage_bytes, temporary_storage_bytes FROM duckdb_memory()")
    except Exception as e:  # noqa: BLE001 - a probe: report, never break the server
        return {"error": str(e)[:200]}
    mb = 1 << 20
    return {"total_mb": round(sum(r[1] for r in rows) / mb, 1),
            "by_tag_mb": {r[0]: round(r[1] / mb, 1) for r in rows if r[1]},
            "temp_mb": round(sum(r[2] for r in rows) / mb, 1)}


def arrow_mb() -> float | None:
    try:
        import pyarrow as pa
        return round(pa.total_allocated_bytes() / (1 << 20), 1)
    except Exception:  # noqa: BLE001
        return None


def probe(out: Path, every: float, frames: int) -> None:
    start, first = time.monotonic(), None
    while True:
        time.sleep(every)
        line: dict = {"t": round(time.monotonic() - start, 1), "rss_mb": round(rss_mb(), 1), "malloc": mallinfo(),
                      "arrow_mb": arrow_mb(), "duckdb": duckdb_memory(), "gc_objects": len(gc.get_objects())}
        try:
            line["caches"] = caches()
        except Exception as e:  # noqa: BLE001
            line["caches"] = {"error": str(e)[:200]}
        if frames:
            snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
            line["traced_mb"] = round(tracemalloc.get_traced_memory()[0] / (1 << 20), 1)
            if first is None:
                first = snap
            else:
                top = snap.compare_to(first, "lineno" if frames == 1 else "traceback")[:25]
                line["grew"] = [{"kb": round(s.size_diff / 1024), "count": s.count_diff,
                                 "where": [f"{f.filename.replace(str(ROOT) + '/', '')}:{f.lineno}"
                                           for f in s.traceback][-frames:]} for s in top]
        with out.open("a") as f:
            f.write(json.dumps(line) + "\n")


def main() -> None:
    frames = int(os.environ.get("PHLOEM_TRACE_FRAMES", "6"))
    out = Path(os.environ.get("PHLOEM_TRACE_OUT", "trace.jsonl"))
    if frames:
        tracemalloc.start(frames)
    import server.app
    import server.cli

    create = server.app.create_app

    def capturing(*args, **kwargs):
        app = create(*args, **kwargs)
        APP.append(app)
        return app

    server.app.create_app = capturing
    threading.Thread(target=probe, args=(out, float(os.environ.get("PHLOEM_TRACE_EVERY", "30")), frames),
                     daemon=True, name="memory-probe").start()
    sys.argv = ["phloem", *sys.argv[1:]]
    server.cli.main()


if __name__ == "__main__":
    main()
