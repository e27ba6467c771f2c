"""Rollups vs the views: the four questions of bench/query.py answered from the demo's rollups and without them.

    python bench/rollups.py --scale 5000000 --workdir /tmp/qb/wd --runs 5

1. prepares the demo project at `--scale` exactly as bench/query.py does (the same `--workdir` folder
   `query-<scale>` is reused), copies the demo's `models/rollups.yml` into it and runs `project.build()`
   (the rollups are built then; their build time and row counts are reported);
2. for each question, times `project.run(query)` with rollups and with `use_rollups=False` (result cache
   emptied before every run; the two sides take turns going first, each timed run right after an untimed one
   of the same side, so a 5M-row scan just before does not slow the next millisecond query), checks both
   answers are the same (rows sorted; decimals exactly, floats to 1e-9) and records which rollup each leaf
   read;
3. times the matcher on a model with 50 rollups (the demo's five and 45 generated ones over `orders` and
   `order_lines`, all "built", with made-up row counts): `Matcher.choose` over every leaf of each question,
   and a whole cold compile with and without rollups;
4. prints a table and writes bench/results/rollups-<scale>.json. The exit status is 1 if any answer differs.

Targets (the issue): month-level questions at least 50x faster from rollups; matching under 1 ms a query.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from query import DEMO, QUESTIONS, clear_results, compare, prepare  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from semantic import Project  # noqa: E402
from semantic.materialize.rollups import RollupJob  # noqa: E402
from semantic.project.load import load_project  # noqa: E402
from semantic.query.compile import Compiler  # noqa: E402
from semantic.query.plan import Planner  # noqa: E402
from semantic.query.query import make_query  # noqa: E402
from semantic.query.rollups import Catalog, RollupState  # noqa: E402

RESULTS = ROOT / "bench" / "results"
TARGET_SPEEDUP = 50.0  # month-level questions
TARGET_MATCH_MS = 1.0
MONTH_LEVEL = {"q1", "q2"}


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def measure(project: Project, fields: dict, runs: int) -> dict:
    query = make_query(**fields)
    answers = {}
    for use in (True, False):  # warm-up, and the answers to compare
        clear_results(project)
        answers[use] = project.run(query, use_rollups=use).table
    times: dict[bool, list[float]] = {True: [], False: []}
    for i in range(runs):
        for use in ((True, False) if i % 2 == 0 else (False, True)):
            clear_results(project)
            project.run(query, use_rollups=use)  # untimed: the other side's run must not cost this one
            clear_results(project)
            times[use].append(timed(lambda u=use: project.run(query, use_rollups=u))[0])
    plan = project.compile(query).plan
    return {
        "rollup_s": statistics.median(times[True]), "raw_s": statistics.median(times[False]),
        "runs": {"rollup_s": [round(x, 5) for x in times[True]], "raw_s": [round(x, 5) for x in times[False]]},
        "mismatch": compare(answers[True], answers[False]), "rows": answers[True].num_rows,
        "tables": plan.tables(), "sql": project.compile(query).sql,
    }


def build_times(project: Project) -> dict:
    """Seconds to stage each rollup in full, and (partitioned ones) to refresh its incremental window."""
    builds = project.builder.rollups
    recorded = builds.recorded()
    out = {}
    try:
        for name, spec in builds.specs.items():
            fp = project.builder.fingerprints[name]
            full = RollupJob(spec, fp, incremental=False)
            out[name] = {"full": round(timed(lambda j=full: builds.stage(j, set()))[0], 3)}
            if spec.rollup.incremental:
                job = RollupJob(spec, fp, incremental=True, kept=dict(recorded[name]["partitions"]))
                out[name]["incremental"] = round(timed(lambda j=job: builds.stage(j, set()))[0], 3)
                out[name]["partitions_refreshed"] = len(job.rebuilt)
    finally:
        project.builder.drop_stages()
    return out


# ---------------------------------------------------------------------------------------------------------
# The matcher with 50 rollups
# ---------------------------------------------------------------------------------------------------------

ORDER_DIMS = ["channel", "country", "acquisition_channel", "is_first_order", "customers.signed_up_at__year"]
ORDER_MEASURES = ["gross_revenue", "discounts", "refunded", "shipping_cost", "payment_fees", "orders"]
LINE_DIMS = ["category", "channel", "country", "acquisition_channel"]
GRAINS = ["day", "week", "month", "quarter", "hour"]


def generated_rollups(n: int) -> str:
    """`n` plausible rollups over orders and order_lines: every few dimensions, measures and grains."""
    items = []
    for i in range(n):
        lines = i % 3 == 2
        dims = LINE_DIMS if lines else ORDER_DIMS
        chosen = [d for k, d in enumerate(dims) if (i >> k) & 1][:3]
        measures = ["cogs", "units"] if lines else ORDER_MEASURES[: 2 + i % 5]
        items.append(f"  - {{name: gen_{i:02d}, view: {'order_lines' if lines else 'orders'}, "
                     f"measures: [{', '.join(measures)}], dimensions: [{', '.join(chosen)}], "
                     f"grain: {GRAINS[i % len(GRAINS)]}}}")
    return "rollups:\n" + "\n".join(items) + "\n"


def matcher_times(iterations: int) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="phloem-bench-rollups-"))
    try:
        shutil.copytree(DEMO, folder / "project")
        (folder / "project" / "models" / "generated_rollups.yml").write_text(generated_rollups(45))
        model = load_project(folder / "project")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    compiler = Compiler(model)
    states = {name: RollupState(rows=1000 + 37 * i, partitions=0, built_at=None, fresh_before=None, behind=False,
                                current=True, timezone=None) for i, name in enumerate(compiler.rollups)}
    compiler.catalog = Catalog(states, "bench")
    matcher = compiler.matcher()
    out = {"rollups": len(compiler.rollups), "questions": {}}
    for q in QUESTIONS:
        query = make_query(**q.fields)
        plan = Planner(compiler.graph, compiler.tree, model.streams).plan(query)
        leaves = list(plan.leaves)
        for leaf in leaves:
            matcher.choose(leaf, plan)
        samples = []
        for _ in range(iterations):
            start = time.perf_counter()
            for leaf in leaves:
                matcher.choose(leaf, plan)
            samples.append(time.perf_counter() - start)
        cold = {}
        for use in (True, False):
            ts = []
            for _ in range(max(50, iterations // 20)):
                compiler.cache.clear()
                ts.append(timed(lambda u=use, q=query: compiler.compile(q, use_rollups=u))[0])
            cold[use] = statistics.median(ts)
        out["questions"][q.name] = {
            "leaves": len(leaves), "candidates": sum(len(matcher.by_view.get(leaf.view, [])) for leaf in leaves),
            "match_ms": round(statistics.median(samples) * 1000, 4),
            "match_ms_p90": round(sorted(samples)[int(0.9 * len(samples))] * 1000, 4),
            "compile_cold_ms_with_rollups": round(cold[True] * 1000, 3),
            "compile_cold_ms_without": round(cold[False] * 1000, 3),
        }
    return out


# ---------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=11, help="timed runs per side (median reported)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workdir", help="keep (or reuse) the generated project here, as bench/query.py does")
    parser.add_argument("--match-iterations", type=int, default=2000)
    parser.add_argument("--out", help="JSON path (default bench/results/rollups-<scale>.json)")
    args = parser.parse_args(argv)
    console = Console(highlight=False, width=max(160, Console().width))

    tmp = None
    if args.workdir:
        folder = Path(args.workdir) / f"query-{args.scale}"
    else:
        tmp = tempfile.mkdtemp(prefix=f"phloem-bench-rollups-{args.scale}-")
        folder = Path(tmp) / "project"
    info: dict = {}
    try:
        project, info = prepare(args.scale, args.seed, folder, console)  # datasets up to date
        project.close()
        shutil.copy(DEMO / "models" / "rollups.yml", folder / "models" / "rollups.yml")
        project = Project.load(folder)
        try:
            project.build()  # builds the rollups (prepare already did when it copied the demo afresh)
            info["rollup_rows"] = {n: s.rows for n, s in project.compiler.catalog.states.items()}
            info["rollup_build_s"] = build_times(project)
            console.print("  rollups (rows; full build s / incremental refresh s): " + ", ".join(
                f"{n} {info['rollup_rows'][n]:,}; {t['full']:.2f}" + (f" / {t['incremental']:.2f}" if
                                                                     "incremental" in t else "")
                for n, t in info["rollup_build_s"].items()))
            results = {}
            for q in QUESTIONS:
                results[q.name] = measure(project, q.fields, args.runs)
                r = results[q.name]
                console.print(f"  {q.name} {q.label}: rollups {r['rollup_s']:.4f} s, views {r['raw_s']:.4f} s, "
                              f"{'MISMATCH' if r['mismatch'] else 'same answer'}")
        finally:
            project.close()
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    matching = matcher_times(args.match_iterations)

    table = Table(title=f"Rollups vs views — {args.scale:,} orders, median of {args.runs} runs (end to end)")
    for name in ("query", "views s", "rollups s", "speedup", "read from", "answer", "match ms (50 rollups)",
                 "target"):
        table.add_column(name, justify="left" if name in ("query", "read from", "answer", "target") else "right")
    failed = False
    for q in QUESTIONS:
        r, m = results[q.name], matching["questions"][q.name]
        speedup = r["raw_s"] / r["rollup_s"]
        r["speedup"] = round(speedup, 1)
        read = ", ".join(sorted({t["rollup"] or t["table"] for t in r["tables"]}))
        misses = []
        if q.name in MONTH_LEVEL and speedup < TARGET_SPEEDUP:
            misses.append(f"<{TARGET_SPEEDUP:g}x")
        if m["match_ms"] >= TARGET_MATCH_MS:
            misses.append(f"match>={TARGET_MATCH_MS:g}ms")
        r["targets_missed"] = misses
        failed |= r["mismatch"] is not None
        table.add_row(f"{q.name} {q.short}", f"{r['raw_s']:.4f}", f"{r['rollup_s']:.4f}", f"{speedup:,.1f}x", read,
                      "MISMATCH" if r["mismatch"] else "same", f"{m['match_ms']:.3f}", ", ".join(misses) or "met")
    console.print(table)
    console.print(f"matcher: {matching['rollups']} rollups; cold compile with/without rollups (ms): " + ", ".join(
        f"{n} {m['compile_cold_ms_with_rollups']:.2f}/{m['compile_cold_ms_without']:.2f}"
        for n, m in matching["questions"].items()))
    out = {"scale": args.scale, "runs": args.runs, "seed": args.seed,
           "targets": {"month_level_speedup": TARGET_SPEEDUP, "match_ms": TARGET_MATCH_MS}, **info,
           "questions": {q.name: {"label": q.label, "fields": q.fields, **results[q.name]} for q in QUESTIONS},
           "matching": matching}
    path = Path(args.out) if args.out else RESULTS / f"rollups-{args.scale}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1, default=str) + "\n")
    console.print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
