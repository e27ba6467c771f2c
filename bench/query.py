"""Phloem's metric queries vs hand-written DuckDB SQL on the demo shop: compile time, end-to-end time, overhead.

    python bench/query.py --scale 1000000 --runs 5
    python bench/query.py --scales 1000000,5000000 --runs 5

For each scale:

1. copies `semantic/demo/project` to a work folder, generates the raw tables (`semantic.demo.generate`) into its
   `data/shop.duckdb` and builds the project once (`project.build()`);
2. for each of the four questions below it measures
   - the compile time, cold (`project.compiler.cache.clear()` before each `project.compile(**fields)`) and warm
     (a compile-cache hit through `project.compile(**fields)`), in ms;
   - the end-to-end time of `project.query(**fields)` (after one warm-up run; a result cache, if the project
     has one, is emptied before each run so that every run executes its SQL), and inside each of those runs
     how long `engine.arrow(sql)` and `ensure_built()` took, so that Phloem's own overhead per query is
     `e2e - arrow` of the same run;
   - the same question as hand-written DuckDB SQL over `raw.*` (`HAND` below), and Phloem's compiled SQL on its
     own, both through `project.engine.arrow` on the same connection; the three runs rotate who goes first;
3. checks that Phloem and the hand-written SQL give the same answer (rows sorted; decimals exactly equal,
   floats within 1e-9 relative) and prints MISMATCH loudly if not;
4. prints a table and writes bench/results/query-<scale>.json.

The exit status is 1 if any answer differs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import decimal
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python bench/query.py` from a checkout, installed or not
    sys.path.insert(0, str(ROOT))

from workdir import generated_demo  # noqa: E402

from semantic import Project  # noqa: E402

DEMO = ROOT / "semantic" / "demo" / "project"
RESULTS = ROOT / "bench" / "results"

# Targets from the issue.
TARGET_RATIO = 1.2  # Phloem e2e / hand-written
TARGET_COLD_MS = 10.0
TARGET_WARM_MS = 0.2

# ---------------------------------------------------------------------------------------------------------
# The questions, and the fastest correct hand-written SQL we found for each, over the raw tables only.
#
# Semantics (docs/model.md §4-5, the demo's views.yml and metrics.yml): revenue = sum(orders.total);
# profit = revenue - discounts - refunds - (cogs + shipping + payment fees). Refunds, shipping costs and payment
# fees are sums per order (the `orders` dataset's aggregate_all_ever columns), so they count in their ORDER's
# month / channel / country, whenever they happened. cogs = sum(quantity * unit_cost) of the order lines, at
# the line's ordered_at (the order's) and the order's channel / country (order_lines joins orders on order_id).
# The time range is on the order's (line's) ordered_at: a date end includes its whole day.
#
# Shape: aggregate each table to the question's grain first (joining only the small order-id -> grain lookup),
# then join the handful of result rows. Variants we timed at 1M orders (2 busy cores) and dropped, all slower:
# aggregating each cost table per order_id first, then joining them to orders (~1.8x); one UNION ALL of the
# four cost tables joined to the lookup once (~2x); taking cogs' month from order_lines.ordered_at instead of
# the lookup (~1.2x); for q3, also filtering the cost tables on their own timestamps (~1.1x).
# ---------------------------------------------------------------------------------------------------------

Q3_RANGE = "ordered_at >= TIMESTAMP '2025-10-03' AND ordered_at < TIMESTAMP '2026-01-01'"


@dataclass(frozen=True)
class Question:
    name: str
    label: str
    fields: dict
    hand: str
    short: str = ""


QUESTIONS = [
    Question(
        "q1",
        "revenue by month",
        {"metrics": ["revenue"], "dimensions": ["metric_time__month"]},
        """
SELECT date_trunc('month', ordered_at)::DATE AS metric_time__month, sum(total) AS revenue
FROM raw.orders
GROUP BY 1
""",
        "revenue by month",
    ),
    Question(
        "q2",
        "revenue, cogs, shipping, profit by month and channel",
        {"metrics": ["revenue", "cogs", "shipping", "profit"], "dimensions": ["metric_time__month", "channel"]},
        """
WITH og AS (  -- order -> its (month, channel)
    SELECT order_id, date_trunc('month', ordered_at)::DATE AS m, channel FROM raw.orders
),
rev AS (
    SELECT date_trunc('month', ordered_at)::DATE AS m, channel, sum(total) AS revenue, sum(discount) AS discounts
    FROM raw.orders GROUP BY 1, 2
),
c AS (SELECT og.m, og.channel, sum(quantity * unit_cost) AS cogs FROM raw.order_lines JOIN og USING (order_id) GROUP BY 1, 2),
s AS (SELECT og.m, og.channel, sum(shipping_cost) AS shipping FROM raw.shipments JOIN og USING (order_id) GROUP BY 1, 2),
r AS (SELECT og.m, og.channel, sum(amount) AS refunds FROM raw.refunds JOIN og USING (order_id) GROUP BY 1, 2),
f AS (SELECT og.m, og.channel, sum(fee) AS fees FROM raw.payments JOIN og USING (order_id) GROUP BY 1, 2)
SELECT m AS metric_time__month, channel, revenue, cogs, coalesce(shipping, 0) AS shipping,
       revenue - discounts - coalesce(refunds, 0) - (cogs + coalesce(shipping, 0) + coalesce(fees, 0)) AS profit
FROM rev
LEFT JOIN c USING (m, channel) LEFT JOIN s USING (m, channel) LEFT JOIN r USING (m, channel)
LEFT JOIN f USING (m, channel)
""",
        "4 metrics by month, channel",
    ),
    Question(
        "q3",
        "margin by country, last 90 days (2025-10-03 .. 2025-12-31)",
        {"metrics": ["margin"], "dimensions": ["country"], "time_range": {"start": "2025-10-03", "end": "2025-12-31"}},
        f"""
WITH og AS (  -- orders in range -> their country
    SELECT order_id, country FROM raw.orders WHERE {Q3_RANGE}
),
rev AS (
    SELECT country, sum(total) AS revenue, sum(discount) AS discounts FROM raw.orders WHERE {Q3_RANGE} GROUP BY 1
),
c AS (SELECT og.country, sum(quantity * unit_cost) AS cogs FROM raw.order_lines JOIN og USING (order_id) GROUP BY 1),
s AS (SELECT og.country, sum(shipping_cost) AS shipping FROM raw.shipments JOIN og USING (order_id) GROUP BY 1),
r AS (SELECT og.country, sum(amount) AS refunds FROM raw.refunds JOIN og USING (order_id) GROUP BY 1),
f AS (SELECT og.country, sum(fee) AS fees FROM raw.payments JOIN og USING (order_id) GROUP BY 1),
t AS (
    SELECT country, revenue - discounts - coalesce(refunds, 0) AS net,
           cogs + coalesce(shipping, 0) + coalesce(fees, 0) AS costs
    FROM rev LEFT JOIN c USING (country) LEFT JOIN s USING (country) LEFT JOIN r USING (country)
    LEFT JOIN f USING (country)
)
SELECT country, CAST(net - costs AS DOUBLE) / NULLIF(net, 0) AS margin FROM t
""",
        "margin by country, 90 d",
    ),
    Question(
        "q4",
        "distinct buyers by week",
        {"metrics": ["buyers"], "dimensions": ["metric_time__week"]},
        """
SELECT date_trunc('week', ordered_at)::DATE AS metric_time__week, count(DISTINCT customer_id) AS buyers
FROM raw.orders
GROUP BY 1
""",
        "buyers by week",
    ),
]

# ---------------------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------------------


def ms(seconds: float) -> float:
    return seconds * 1000.0


def summary(values: list[float], digits: int = 4) -> dict:
    ordered = sorted(values)
    return {
        "median": round(statistics.median(ordered), digits),
        "min": round(ordered[0], digits),
        "p90": round(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], digits),
        "max": round(ordered[-1], digits),
        "n": len(ordered),
    }


def clear_results(project: Project) -> None:
    """Empty the project's result cache, if it has one, so the next query executes its SQL."""
    results = getattr(project, "results", None)
    if results is not None:
        results.clear()


def compile_times(project: Project, fields: dict, cold_n: int, warm_n: int) -> tuple[list[float], list[float]]:
    """Seconds per `project.compile(**fields)`: with the compile cache emptied first, and as a cache hit."""
    project.compile(**fields)  # graph and metric tree (built once per model) are not part of a cold compile
    cold = []
    for _ in range(cold_n):
        project.compiler.cache.clear()
        start = time.perf_counter()
        project.compile(**fields)
        cold.append(time.perf_counter() - start)
    project.compile(**fields)
    warm = []
    for _ in range(warm_n):
        start = time.perf_counter()
        project.compile(**fields)
        warm.append(time.perf_counter() - start)
    return cold, warm


@dataclass
class E2E:
    """One `project.query` run, with what it spent inside `engine.arrow` and `ensure_built`."""

    total: float
    arrow: float
    ensure_built: float

    @property
    def overhead(self) -> float:
        return self.total - self.arrow


class Instrumented:
    """Times `project.engine.arrow` and `project.ensure_built` while `project.query` runs (instance attributes
    shadow the methods; removed on exit)."""

    def __init__(self, project: Project):
        self.project = project
        self.arrow = 0.0
        self.ensure = 0.0

    def __enter__(self) -> Instrumented:
        engine, project = self.project.engine, self.project
        arrow, ensure = engine.arrow, project.ensure_built

        def timed_arrow(*args, **kwargs):
            start = time.perf_counter()
            try:
                return arrow(*args, **kwargs)
            finally:
                self.arrow += time.perf_counter() - start

        def timed_ensure(*args, **kwargs):
            start = time.perf_counter()
            try:
                return ensure(*args, **kwargs)
            finally:
                self.ensure += time.perf_counter() - start

        engine.arrow, project.ensure_built = timed_arrow, timed_ensure
        return self

    def __exit__(self, *exc) -> None:
        del self.project.engine.arrow
        del self.project.ensure_built

    def run(self, fields: dict) -> tuple[E2E, pa.Table]:
        clear_results(self.project)
        self.arrow = self.ensure = 0.0
        start = time.perf_counter()
        table = self.project.query(**fields)
        total = time.perf_counter() - start
        return E2E(total, self.arrow, self.ensure), table


def python_overhead(project: Project, fields: dict, answer: pa.Table, n: int) -> list[float]:
    """Seconds per `project.query(**fields)` with `engine.arrow` stubbed to return `answer` at once: Phloem's own
    Python per query (validation, compile-cache hit, freshness check, result cache), without DuckDB's noise."""
    project.engine.arrow = lambda *args, **kwargs: answer
    try:
        times = []
        for _ in range(n):
            clear_results(project)
            start = time.perf_counter()
            project.query(**fields)
            times.append(time.perf_counter() - start)
        return times
    finally:
        del project.engine.arrow


def timed_arrow(project: Project, sql: str) -> tuple[float, pa.Table]:
    start = time.perf_counter()
    table = project.engine.arrow(sql)
    return time.perf_counter() - start, table


# ---------------------------------------------------------------------------------------------------------
# Comparing answers
# ---------------------------------------------------------------------------------------------------------


def _sort_key(row: tuple) -> tuple:
    return tuple((v is None, v if v is not None else 0) for v in row)


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) or isinstance(b, float):
        a, b = float(a), float(b)
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b or math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)
    return a == b  # Decimal, int, date, str: exactly


def _plain(v):
    if isinstance(v, decimal.Decimal | dt.date | dt.datetime):
        return str(v)
    return v


def compare(phloem: pa.Table, hand: pa.Table) -> dict | None:
    """None when both answers hold the same rows (sorted; columns compared by position); else what differs."""
    problems: dict = {}
    if phloem.num_columns != hand.num_columns:
        problems["columns"] = {"phloem": phloem.column_names, "hand": hand.column_names}
        return problems
    if phloem.num_rows != hand.num_rows:
        problems["rows"] = {"phloem": phloem.num_rows, "hand": hand.num_rows}
    left = sorted(zip(*(c.to_pylist() for c in phloem.columns), strict=True), key=_sort_key)
    right = sorted(zip(*(c.to_pylist() for c in hand.columns), strict=True), key=_sort_key)
    names = phloem.column_names
    differing = {n: 0 for n in names}
    examples = []
    for lrow, rrow in zip(left, right, strict=False):
        bad = [n for n, a, b in zip(names, lrow, rrow, strict=True) if not _same(a, b)]
        for n in bad:
            differing[n] += 1
        if bad and len(examples) < 5:
            examples.append({"phloem": [_plain(v) for v in lrow], "hand": [_plain(v) for v in rrow]})
    differing = {n: c for n, c in differing.items() if c}
    if differing:
        problems["differing_values"] = differing
        problems["examples"] = examples
    return problems or None


def types_of(table: pa.Table) -> list[str]:
    return [str(t) for t in table.schema.types]


# ---------------------------------------------------------------------------------------------------------
# One scale
# ---------------------------------------------------------------------------------------------------------


@dataclass
class Result:
    question: Question
    phloem_sql: str = ""
    rows: int = 0
    cold: list[float] = field(default_factory=list)
    warm: list[float] = field(default_factory=list)
    e2e: list[E2E] = field(default_factory=list)
    arrow: list[float] = field(default_factory=list)
    hand: list[float] = field(default_factory=list)
    cached_e2e: list[float] = field(default_factory=list)
    stub: list[float] = field(default_factory=list)
    mismatch: dict | None = None
    types: dict = field(default_factory=dict)

    @property
    def e2e_s(self) -> float:
        return statistics.median(r.total for r in self.e2e)

    @property
    def hand_s(self) -> float:
        return statistics.median(self.hand)

    @property
    def arrow_s(self) -> float:
        return statistics.median(self.arrow)

    @property
    def ratio(self) -> float:
        return self.e2e_s / self.hand_s

    @property
    def cold_ms(self) -> float:
        return ms(statistics.median(self.cold))

    @property
    def warm_ms(self) -> float:
        return ms(statistics.median(self.warm))

    @property
    def overhead_ms(self) -> float:
        """Median over runs of (e2e - time inside engine.arrow) of the same run."""
        return ms(statistics.median(r.overhead for r in self.e2e))

    @property
    def misses(self) -> list[str]:
        out = []
        if self.ratio > TARGET_RATIO:
            out.append(f"e2e>{TARGET_RATIO}x")
        if self.cold_ms >= TARGET_COLD_MS:
            out.append(f"cold>={TARGET_COLD_MS:g}ms")
        if self.warm_ms >= TARGET_WARM_MS:
            out.append(f"warm>={TARGET_WARM_MS:g}ms")
        return out


def prepare(scale: int, seed: int, folder: Path, console: Console) -> tuple[Project, dict]:
    """The demo project in `folder` with `scale` orders generated and built. A folder left by an earlier run with
    the same scale and seed (--workdir) is reused: the generator is deterministic."""
    reuse, info = generated_demo(folder, scale, seed, console, ".bench-query.json")
    project = Project.load(folder)
    if reuse:
        info["raw_rows"] = {t: project.engine.rows(f"select count(*) from raw.{t}")[0][0]
                            for t in ("customers", "visits", "orders", "order_lines", "shipments", "refunds",
                                      "payments")}
    start = time.perf_counter()
    report = project.build()
    info["build_s"] = round(time.perf_counter() - start, 3)
    info["built"] = list(report.built)
    console.print(f"  project.build(): {info['build_s']:.1f} s ({len(report.built)} tables built)")
    return project, info


def measure(project: Project, q: Question, runs: int, cold_n: int, warm_n: int, console: Console) -> Result:
    result = Result(q)
    result.cold, result.warm = compile_times(project, q.fields, cold_n, warm_n)
    result.phloem_sql = project.compile(**q.fields).sql

    with Instrumented(project) as inst:
        _, phloem_table = inst.run(q.fields)  # warm-up (and the first freshness check)
    hand_table = project.engine.arrow(q.hand)  # warm-up
    project.engine.arrow(result.phloem_sql)  # warm-up
    result.rows = phloem_table.num_rows
    result.types = {"phloem": types_of(phloem_table), "hand": types_of(hand_table)}
    result.mismatch = compare(phloem_table, hand_table)

    # the three sides take turns going first
    for i in range(runs):
        for side in [("e2e", "arrow", "hand")[(i + k) % 3] for k in range(3)]:
            if side == "e2e":
                with Instrumented(project) as inst:
                    run, _ = inst.run(q.fields)
                result.e2e.append(run)
            elif side == "arrow":
                result.arrow.append(timed_arrow(project, result.phloem_sql)[0])
            else:
                result.hand.append(timed_arrow(project, q.hand)[0])

    result.stub = python_overhead(project, q.fields, phloem_table, warm_n)
    if getattr(project, "results", None) is not None:  # a result cache: how fast a repeated question is
        project.query(**q.fields)
        for _ in range(max(50, runs)):
            start = time.perf_counter()
            project.query(**q.fields)
            result.cached_e2e.append(time.perf_counter() - start)

    status = "[bold red]MISMATCH[/]" if result.mismatch else "same answer"
    console.print(f"  {q.name} {q.label}: e2e {result.e2e_s:.4f} s, hand {result.hand_s:.4f} s, {status}")
    return result


def stale_check_ms(project: Project, n: int = 20) -> dict | None:
    """How long `project.builder.stale()` (what ensure_built asks when it does not trust its last answer) takes."""
    stale = getattr(project.builder, "stale", None)
    if stale is None:
        return None
    stale()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        stale()
        times.append(ms(time.perf_counter() - start))
    return summary(times, 3)


def machine(project: Project) -> dict:
    return {
        "duckdb": duckdb.__version__,
        "threads": project.engine.rows("select current_setting('threads')")[0][0],
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def run_scale(scale: int, args, console: Console) -> tuple[list[Result], dict]:
    load_start = loadavg()
    if args.workdir:
        folder = Path(args.workdir) / f"query-{scale}"
        tmp = None
    else:
        tmp = tempfile.mkdtemp(prefix=f"phloem-bench-query-{scale}-")
        folder = Path(tmp) / "project"
    try:
        project, info = prepare(scale, args.seed, folder, console)
        try:
            if args.threads:
                project.engine.execute(f"SET threads = {int(args.threads)}")
            results = [measure(project, q, args.runs, args.cold, args.warm, console) for q in QUESTIONS]
            stale = stale_check_ms(project)
            info["machine"] = {**machine(project), "loadavg_start": load_start, "loadavg_end": loadavg()}
        finally:
            project.close()
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    info["stale_check_ms"] = stale
    return results, info


# ---------------------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------------------


def print_table(scale: int, results: list[Result], info: dict, console: Console) -> None:
    for r in results:
        if r.mismatch:
            console.print(f"[bold red]!!! MISMATCH[/] {r.question.name} ({r.question.label}) at scale {scale:,}: "
                          f"{json.dumps(r.mismatch, default=str)}")
        if r.types["phloem"] != r.types["hand"]:
            console.print(f"[yellow]note[/] {r.question.name}: column types differ: phloem {r.types['phloem']}, "
                          f"hand {r.types['hand']}")
    table = Table(title=f"Phloem queries vs hand-written SQL — {scale:,} orders, median of {len(results[0].e2e)} runs")
    for name in ("query", "scale", "cold compile ms", "warm compile ms", "phloem e2e s", "hand-written s",
                 "ratio", "overhead ms", "answer", "targets"):
        table.add_column(name, justify="left" if name in ("query", "answer", "targets") else "right")
    for r in results:
        table.add_row(
            f"{r.question.name} {r.question.short}",
            f"{scale:,}",
            f"{r.cold_ms:.3f}",
            f"{r.warm_ms:.4f}",
            f"{r.e2e_s:.4f}",
            f"{r.hand_s:.4f}",
            f"{r.ratio:.2f}",
            f"{r.overhead_ms:.3f}",
            "[bold red]MISMATCH[/]" if r.mismatch else "same",
            ", ".join(r.misses) or "met",
        )
    console.print(table)

    detail = Table(title="Where Phloem's end-to-end time goes (medians, ms)")
    for name in ("query", "e2e", "inside arrow(sql)", "overhead = e2e − arrow", "of which ensure_built",
                 "arrow(sql) alone", "e2e − arrow alone", "stub-engine query", "result-cache hit"):
        detail.add_column(name, justify="left" if name == "query" else "right")
    for r in results:
        ensure = [ms(x.ensure_built) for x in r.e2e]
        detail.add_row(
            r.question.name,
            f"{ms(r.e2e_s):.1f}",
            f"{ms(statistics.median(x.arrow for x in r.e2e)):.1f}",
            f"{r.overhead_ms:.3f}",
            f"{statistics.median(ensure):.3f} (max {max(ensure):.3f})",
            f"{ms(r.arrow_s):.1f}",
            f"{ms(r.e2e_s - r.arrow_s):+.1f}",
            f"{ms(statistics.median(r.stub)):.4f}",
            f"{ms(statistics.median(r.cached_e2e)):.4f}" if r.cached_e2e else "–",
        )
    console.print(detail)
    stale = info.get("stale_check_ms")
    if stale:
        console.print(f"project.builder.stale() alone: median {stale['median']:.3f} ms (min {stale['min']:.3f}, "
                      f"max {stale['max']:.3f}, n={stale['n']})")
    m = info["machine"]
    console.print(f"DuckDB {m['duckdb']}, {m['threads']} threads, {m['cpus']} CPUs; load average "
                  f"{m['loadavg_start']} → {m['loadavg_end']}")


def to_json(scale: int, results: list[Result], info: dict, args) -> dict:
    out = {"scale": scale, "runs": args.runs, "seed": args.seed, "cold_compiles": args.cold,
           "warm_compiles": args.warm, "targets": {"ratio": TARGET_RATIO, "cold_ms": TARGET_COLD_MS,
                                                   "warm_ms": TARGET_WARM_MS}, **info, "questions": []}
    for r in results:
        ensure = [ms(x.ensure_built) for x in r.e2e]
        out["questions"].append({
            "name": r.question.name,
            "label": r.question.label,
            "fields": r.question.fields,
            "rows": r.rows,
            "same_answer": r.mismatch is None,
            "mismatch": r.mismatch,
            "types": r.types,
            "compile_cold_ms": summary([ms(x) for x in r.cold]),
            "compile_warm_ms": summary([ms(x) for x in r.warm]),
            "phloem_e2e_s": round(r.e2e_s, 4),
            "hand_s": round(r.hand_s, 4),
            "phloem_sql_s": round(r.arrow_s, 4),
            "ratio": round(r.ratio, 3),
            "overhead_ms": round(r.overhead_ms, 4),
            "e2e_minus_sql_alone_ms": round(ms(r.e2e_s - r.arrow_s), 2),
            "ensure_built_ms": summary(ensure),
            "stub_engine_query_ms": summary([ms(x) for x in r.stub]),
            "result_cache_hit_ms": summary([ms(x) for x in r.cached_e2e]) if r.cached_e2e else None,
            "targets_missed": r.misses,
            "runs": {
                "phloem_e2e_s": [round(x.total, 5) for x in r.e2e],
                "phloem_e2e_arrow_s": [round(x.arrow, 5) for x in r.e2e],
                "phloem_e2e_overhead_ms": [round(ms(x.overhead), 4) for x in r.e2e],
                "phloem_sql_s": [round(x, 5) for x in r.arrow],
                "hand_s": [round(x, 5) for x in r.hand],
            },
            "phloem_sql": r.phloem_sql,
            "hand_sql": r.question.hand.strip(),
        })
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=1_000_000, help="orders in the generated shop")
    parser.add_argument("--scales", help="several scales, comma-separated (overrides --scale)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per query (at least 5); median reported")
    parser.add_argument("--cold", type=int, default=50, help="cold compiles per query (at least 50)")
    parser.add_argument("--warm", type=int, default=1000, help="warm compiles per query (at least 1000)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--threads", type=int, help="SET threads (default: DuckDB's, one per core)")
    parser.add_argument("--workdir", help="keep the generated projects here (reused by a later run)")
    parser.add_argument("--out", help="JSON path (default bench/results/query-<scale>.json; one scale only)")
    args = parser.parse_args(argv)
    args.runs, args.cold, args.warm = max(5, args.runs), max(50, args.cold), max(1000, args.warm)
    scales = [int(s.replace("_", "")) for s in args.scales.split(",")] if args.scales else [args.scale]
    if args.out and len(scales) > 1:
        parser.error("--out needs a single scale")

    console = Console(highlight=False, width=max(160, Console().width))
    failed = False
    for scale in scales:
        results, info = run_scale(scale, args, console)
        print_table(scale, results, info, console)
        path = Path(args.out) if args.out else RESULTS / f"query-{scale}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(to_json(scale, results, info, args), indent=1, default=str) + "\n")
        console.print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}\n")
        failed |= any(r.mismatch for r in results)
    if failed:
        console.print("[bold red]!!! MISMATCH: Phloem and the hand-written SQL disagree (see above)[/]")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
