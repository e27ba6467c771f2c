"""Prometheus metrics: what the doors answered, how fast, from which caches, and the builds.

Labels are only the door, the status and the route template, so a series never carries a data value or a user
name, and their number stays small whatever clients send.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest

from semantic.events import BuildEvent, Event, QueryEvent

QUERY_BUCKETS = (.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60)
BUILD_BUCKETS = (.1, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)

QUERIES = Counter("phloem_queries", "Metric queries answered or failed, by door and status (ok, error).",
                  ["door", "status"])
QUERY_SECONDS = Histogram("phloem_query_seconds", "Seconds until a metric query's answer was ready, by door.",
                          ["door"], buckets=QUERY_BUCKETS)
CACHE_HITS = Counter("phloem_result_cache_hits", "Metric queries answered from the result cache.", ["door"])
CACHE_MISSES = Counter("phloem_result_cache_misses", "Metric queries the warehouse answered.", ["door"])
ROLLUP_HITS = Counter("phloem_rollup_hits", "Leaf measures of warehouse queries read from a rollup.", ["door"])
ROLLUP_MISSES = Counter("phloem_rollup_misses", "Leaf measures of warehouse queries read from the views' own "
                                                "tables (no rollup answered them).", ["door"])
BUILD_SECONDS = Histogram("phloem_build_seconds", "Seconds a build took (datasets and rollups), failed or not.",
                          buckets=BUILD_BUCKETS)
BUILD_FAILURES = Counter("phloem_build_failures", "Builds that failed.")
PG_CONNECTIONS = Gauge("phloem_pg_connections", "Open connections to the PostgreSQL wire door.")
HTTP_REQUESTS = Counter("phloem_http_requests", "HTTP requests by route template and status code.",
                        ["route", "status"])
HTTP_SECONDS = Histogram("phloem_http_request_seconds", "Seconds from an HTTP request to the end of its response, "
                                                        "by route template.", ["route"], buckets=QUERY_BUCKETS)


class _Door:
    """One door's series, looked up once (`labels()` takes a lock and builds a key on every call)."""

    def __init__(self, door: str):
        self.ok, self.error = QUERIES.labels(door, "ok"), QUERIES.labels(door, "error")
        self.seconds = QUERY_SECONDS.labels(door)
        self.hits, self.misses = CACHE_HITS.labels(door), CACHE_MISSES.labels(door)
        self.rollup_hits, self.rollup_misses = ROLLUP_HITS.labels(door), ROLLUP_MISSES.labels(door)


_doors: dict[str, _Door] = {}


def count(event: Event) -> None:
    """The event subscriber behind the query and build metrics."""
    if isinstance(event, QueryEvent):
        door = _doors.get(event.door) or _doors.setdefault(event.door, _Door(event.door))
        door.seconds.observe(event.seconds)
        if event.status != "ok":
            door.error.inc()
            return
        door.ok.inc()
        if event.cached:
            door.hits.inc()
            return
        door.misses.inc()
        if event.leaves:  # only a warehouse read uses rollups; a cached answer read nothing
            door.rollup_hits.inc(event.rollup_leaves)
            door.rollup_misses.inc(event.leaves - event.rollup_leaves)
    elif isinstance(event, BuildEvent):
        BUILD_SECONDS.observe(event.seconds)
        if event.status != "ok":
            BUILD_FAILURES.inc()


def exposition() -> tuple[bytes, str]:
    """The body and content type of /metrics (this process's registry, with its process and GC metrics)."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
