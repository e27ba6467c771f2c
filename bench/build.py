"""Phloem's build vs hand-written DuckDB SQL, table by table, on the demo shop.

    python bench/build.py --scale 1000000 --runs 5

1. generates the demo shop's raw tables once (`semantic.demo.generate`) in a copy of the demo project;
2. builds the project once with Phloem (so that datasets can read the activity tables);
3. for every target (one table per activity, one per dataset) creates the table with Phloem's query and
   with the hand-written query below, checks that both hold the same rows, then times
   `CREATE OR REPLACE TABLE bench.x AS <query>` `--runs` times each (alternating) and keeps the median;
4. measures the layout choice: one temporal-join dataset over typed per-activity tables versus over a single
   per-stream table with the features in a JSON column;
5. prints a table and writes it to bench/results/build-<scale>.json.

The hand-written queries read only the raw tables (`raw.*`) and honour the same semantics as Phloem
(docs: MODEL.md §2, §3 and §8): occurrence order is `(ts, activity_id)` with the id compared as text,
before/after are strict, and the entity key of a visit is the customer, else its anonymous id.
"""

from __future__ import annotations

import argparse
import json
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
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python bench/build.py` from a checkout, installed or not
    sys.path.insert(0, str(ROOT))

from semantic import Project  # noqa: E402
from semantic.demo.generate import generate  # noqa: E402

DEMO = ROOT / "semantic" / "demo" / "project"
RESULTS = ROOT / "bench" / "results"
STREAM = "customer_stream"

# ---------------------------------------------------------------------------------------------------------
# Hand-written SQL: one query per target, from the raw tables only, as fast as we could make it.
#
# Activity tables. `activity_occurrence`, `activity_repeated_at` (next ts) and `_previous_at` (previous ts)
# are one window per entity ordered by (ts, id as text). Phloem partitions by a text key
# coalesce(customer::text, '~' || anonymous id); only visits have anonymous rows, so the other activities
# partition by the BIGINT customer_id, and visits are split into customer rows and anonymous rows, which is
# the same partitioning.
# ---------------------------------------------------------------------------------------------------------

_OCCURRENCE = """
    row_number() OVER w AS activity_occurrence,
    lead({ts}) OVER w AS activity_repeated_at,
    lag({ts}) OVER w AS _previous_at"""


def _occ(ts: str) -> str:
    return _OCCURRENCE.format(ts=ts)


HAND: dict[str, str] = {
    f"{STREAM}__visited_site": f"""
SELECT visit_id::VARCHAR AS activity_id, visited_at AS ts, customer_id AS customer,
       anonymous_id AS anonymous_customer_id, 'visited_site' AS activity, landing_page, referrer,
       NULL::DOUBLE AS revenue_impact, NULL::VARCHAR AS link, {_occ("visited_at")}
FROM raw.visits
WHERE customer_id IS NOT NULL
WINDOW w AS (PARTITION BY customer_id ORDER BY visited_at, visit_id::VARCHAR)
UNION ALL
SELECT visit_id::VARCHAR, visited_at, customer_id, anonymous_id, 'visited_site', landing_page, referrer,
       NULL::DOUBLE, NULL::VARCHAR, {_occ("visited_at")}
FROM raw.visits
WHERE customer_id IS NULL
WINDOW w AS (PARTITION BY anonymous_id ORDER BY visited_at, visit_id::VARCHAR)
""",
    # one sign-up per customer (customer_id is the key of raw.customers): nothing to number
    f"{STREAM}__signed_up": """
SELECT customer_id::VARCHAR AS activity_id, signed_up_at AS ts, customer_id AS customer,
       NULL::VARCHAR AS anonymous_customer_id, 'signed_up' AS activity, country, acquisition_channel,
       NULL::DOUBLE AS revenue_impact, NULL::VARCHAR AS link,
       1::BIGINT AS activity_occurrence, NULL::TIMESTAMP AS activity_repeated_at, NULL::TIMESTAMP AS _previous_at
FROM raw.customers
""",
    f"{STREAM}__placed_order": f"""
SELECT order_id::VARCHAR AS activity_id, ordered_at AS ts, customer_id AS customer,
       NULL::VARCHAR AS anonymous_customer_id, 'placed_order' AS activity,
       order_id, channel, country, total, discount,
       total::DOUBLE AS revenue_impact, NULL::VARCHAR AS link, {_occ("ordered_at")}
FROM raw.orders
WINDOW w AS (PARTITION BY customer_id ORDER BY ordered_at, order_id::VARCHAR)
""",
    f"{STREAM}__ordered_product": f"""
SELECT order_line_id::VARCHAR AS activity_id, ordered_at AS ts, customer_id AS customer,
       NULL::VARCHAR AS anonymous_customer_id, 'ordered_product' AS activity,
       order_id, product_id, category, quantity,
       quantity * unit_price AS line_revenue, quantity * unit_cost AS line_cost,
       NULL::DOUBLE AS revenue_impact, NULL::VARCHAR AS link, {_occ("ordered_at")}
FROM raw.order_lines
WINDOW w AS (PARTITION BY customer_id ORDER BY ordered_at, order_line_id::VARCHAR)
""",
    f"{STREAM}__paid_order": f"""
SELECT payment_id::VARCHAR AS activity_id, paid_at AS ts, customer_id AS customer,
       NULL::VARCHAR AS anonymous_customer_id, 'paid_order' AS activity, order_id, method, fee,
       NULL::DOUBLE AS revenue_impact, NULL::VARCHAR AS link, {_occ("paid_at")}
FROM raw.payments
WINDOW w AS (PARTITION BY customer_id ORDER BY paid_at, payment_id::VARCHAR)
""",
    f"{STREAM}__shipped_order": f"""
SELECT shipment_id::VARCHAR AS activity_id, shipped_at AS ts, customer_id AS customer,
       NULL::VARCHAR AS anonymous_customer_id, 'shipped_order' AS activity, order_id, carrier, shipping_cost,
       NULL::DOUBLE AS revenue_impact, NULL::VARCHAR AS link, {_occ("shipped_at")}
FROM raw.shipments
WINDOW w AS (PARTITION BY customer_id ORDER BY shipped_at, shipment_id::VARCHAR)
""",
    f"{STREAM}__refunded_order": f"""
SELECT refund_id::VARCHAR AS activity_id, refunded_at AS ts, customer_id AS customer,
       NULL::VARCHAR AS anonymous_customer_id, 'refunded_order' AS activity, order_id, amount,
       amount::DOUBLE AS revenue_impact, NULL::VARCHAR AS link, {_occ("refunded_at")}
FROM raw.refunds
WINDOW w AS (PARTITION BY customer_id ORDER BY refunded_at, refund_id::VARCHAR)
""",
    # -----------------------------------------------------------------------------------------------------
    # Datasets, straight from the raw tables.
    #
    # orders: per-order sums are aggregated by order_id first, then joined (lines, payments, shipments and
    # refunds carry their order's customer). previous_order_at is the latest earlier ts of the customer's
    # orders: a RANGE frame ending 1 µs before the row (timestamps are µs) is "strictly before", ties
    # included. last_referrer is an ASOF join on the key (visited_at, visit_id as text), so that of several
    # visits at the same instant the last by id wins, as in Phloem.
    # -----------------------------------------------------------------------------------------------------
    "orders": """
WITH o AS (
    SELECT *,
           row_number() OVER (PARTITION BY customer_id ORDER BY ordered_at, order_id::VARCHAR) AS order_number,
           max(ordered_at) OVER (PARTITION BY customer_id ORDER BY ordered_at
               RANGE BETWEEN UNBOUNDED PRECEDING AND INTERVAL 1 MICROSECOND PRECEDING) AS previous_order_at
    FROM raw.orders
),
lines AS (
    SELECT order_id, sum(quantity * unit_cost) AS cogs, sum(quantity) AS items
    FROM raw.order_lines GROUP BY order_id
),
pay AS (SELECT order_id, sum(fee) AS payment_fees FROM raw.payments GROUP BY order_id),
ship AS (
    SELECT order_id, sum(shipping_cost) AS shipping_cost, count(*) AS shipments
    FROM raw.shipments GROUP BY order_id
),
ref AS (SELECT order_id, sum(amount) AS refunded FROM raw.refunds GROUP BY order_id),
last_visit AS (
    SELECT o.order_id, v.referrer AS last_referrer
    FROM raw.orders o
    ASOF LEFT JOIN (
        SELECT customer_id, {'t': visited_at, 'i': visit_id::VARCHAR} AS k, referrer
        FROM raw.visits WHERE customer_id IS NOT NULL
    ) v ON o.customer_id = v.customer_id AND {'t': o.ordered_at, 'i': ''} > v.k
)
SELECT o.order_id, o.channel, o.country, o.total AS gross_revenue, o.discount, o.ordered_at,
       o.customer_id AS customer, o.order_number, c.signed_up_at, c.acquisition_channel,
       o.previous_order_at, lv.last_referrer,
       coalesce(lines.cogs, 0) AS cogs, coalesce(lines.items, 0) AS items,
       coalesce(pay.payment_fees, 0) AS payment_fees,
       coalesce(ship.shipping_cost, 0) AS shipping_cost, coalesce(ship.shipments, 0) AS shipments,
       coalesce(ref.refunded, 0) AS refunded
FROM o
LEFT JOIN raw.customers c USING (customer_id)
LEFT JOIN last_visit lv USING (order_id)
LEFT JOIN lines USING (order_id)
LEFT JOIN pay USING (order_id)
LEFT JOIN ship USING (order_id)
LEFT JOIN ref USING (order_id)
""",
    "order_lines": """
SELECT l.order_line_id::VARCHAR AS order_line_id, l.order_id, l.product_id, l.category, l.quantity,
       l.quantity * l.unit_price AS line_revenue, l.quantity * l.unit_cost AS cogs,
       l.ordered_at, l.customer_id AS customer, o.channel, o.country
FROM raw.order_lines l
LEFT JOIN raw.orders o USING (order_id)
""",
    # customers: one sign-up per customer; visits before it and orders after it are joined to raw.customers,
    # filtered by time and aggregated; the first order after sign-up is arg_min over (ts, id as text).
    "customers": """
WITH visits AS (
    SELECT v.customer_id, count(*) AS visits_before_signup
    FROM raw.visits v JOIN raw.customers c USING (customer_id)
    WHERE v.visited_at < c.signed_up_at
    GROUP BY v.customer_id
),
orders AS (
    SELECT o.customer_id, count(*) AS lifetime_orders, sum(o.total) AS lifetime_revenue,
           arg_min({'at': o.ordered_at, 'total': o.total}, {'t': o.ordered_at, 'i': o.order_id::VARCHAR}) AS first
    FROM raw.orders o JOIN raw.customers c USING (customer_id)
    WHERE o.ordered_at > c.signed_up_at
    GROUP BY o.customer_id
)
SELECT c.customer_id AS customer, c.signed_up_at, c.country, c.acquisition_channel,
       coalesce(v.visits_before_signup, 0) AS visits_before_signup,
       o.first.at AS first_order_at, o.first.total AS first_order_total,
       coalesce(o.lifetime_orders, 0) AS lifetime_orders, coalesce(o.lifetime_revenue, 0) AS lifetime_revenue
FROM raw.customers c
LEFT JOIN visits v USING (customer_id)
LEFT JOIN orders o USING (customer_id)
""",
    # visits (AQL, dbt-aql semantics): the first order strictly after the visit and strictly before the
    # customer's next visit. Orders are never anonymous, so anonymous visits never convert. ASOF join to the
    # orders, first deduplicated per (customer, instant) keeping the first by id as text.
    "visits": """
WITH first_orders AS (
    SELECT customer_id, ordered_at, arg_min(total, order_id::VARCHAR) AS total
    FROM raw.orders GROUP BY customer_id, ordered_at
),
customer_visits AS (
    SELECT *, lead(visited_at) OVER (PARTITION BY customer_id ORDER BY visited_at, visit_id::VARCHAR) AS next_at
    FROM raw.visits WHERE customer_id IS NOT NULL
)
SELECT v.visit_id::VARCHAR AS visit_id, v.customer_id AS customer, v.anonymous_id AS anonymous_customer_id,
       v.visited_at, v.landing_page, v.referrer,
       CASE WHEN v.next_at IS NULL OR o.ordered_at < v.next_at THEN o.ordered_at END AS converted_at,
       CASE WHEN v.next_at IS NULL OR o.ordered_at < v.next_at THEN o.total END AS converted_order_total
FROM customer_visits v
ASOF LEFT JOIN first_orders o ON v.customer_id = o.customer_id AND o.ordered_at > v.visited_at
UNION ALL
SELECT visit_id::VARCHAR, customer_id, anonymous_id, visited_at, landing_page, referrer,
       NULL::TIMESTAMP, NULL::DECIMAL(12, 2)
FROM raw.visits WHERE customer_id IS NULL
""",
}

# Columns that identify a row of each target: used only to say which columns differ on a mismatch.
KEYS: dict[str, list[str]] = {
    **{name: ["activity_id"] for name in HAND if name.startswith(f"{STREAM}__")},
    "orders": ["order_id"],
    "order_lines": ["order_line_id"],
    "customers": ["customer"],
    "visits": ["visit_id"],
}

# ---------------------------------------------------------------------------------------------------------
# Layout: the same temporal-join dataset (each order, the customer's previous order, and the order's
# shipping costs = last_before placed_order + aggregate_all_ever shipped_order joined on order_id) over
# (a) Phloem's typed per-activity tables, (b) one per-stream table with the features in `feature_json`.
# Only the two source CTEs differ; the body is the same hand-written SQL.
# ---------------------------------------------------------------------------------------------------------

LAYOUT_BODY = """
ship AS (
    SELECT customer, order_id, sum(shipping_cost) AS shipping_cost, count(*) AS shipments
    FROM shipped GROUP BY customer, order_id
)
SELECT p.activity_id, p.customer, p.order_id, p.ts AS ordered_at, p.total,
       max(p.ts) OVER (PARTITION BY p.customer ORDER BY p.ts
           RANGE BETWEEN UNBOUNDED PRECEDING AND INTERVAL 1 MICROSECOND PRECEDING) AS previous_order_at,
       coalesce(s.shipping_cost, 0) AS shipping_cost, coalesce(s.shipments, 0) AS shipments
FROM placed p
LEFT JOIN ship s ON s.customer = p.customer AND s.order_id = p.order_id
"""

LAYOUT_TYPED = f"""
WITH placed AS (
    SELECT activity_id, customer, ts, order_id, total FROM phloem.{STREAM}__placed_order
),
shipped AS (
    SELECT customer, order_id, shipping_cost FROM phloem.{STREAM}__shipped_order
),
{LAYOUT_BODY}"""

# json_extract_string with a list of paths parses each document once
LAYOUT_JSON = (
    """
WITH placed AS (
    SELECT activity_id, customer, ts, f[1]::BIGINT AS order_id, f[2]::DECIMAL(12, 2) AS total
    FROM (
        SELECT *, json_extract_string(feature_json, ['$.order_id', '$.total']) AS f
        FROM {table} WHERE activity = 'placed_order'
    )
),
shipped AS (
    SELECT customer, f[1]::BIGINT AS order_id, f[2]::DECIMAL(10, 2) AS shipping_cost
    FROM (
        SELECT *, json_extract_string(feature_json, ['$.order_id', '$.shipping_cost']) AS f
        FROM {table} WHERE activity = 'shipped_order'
    )
),
"""
    + LAYOUT_BODY
)

# The single stream table, materialized from Phloem's stream view (all activities, features as JSON):
# rows grouped by activity (the best case for `WHERE activity = ...`), and interleaved by time (what an
# append-only event table looks like).
SINGLE_TABLES = {
    "bench.stream_by_activity": f"SELECT * FROM phloem.{STREAM}",
    "bench.stream_by_time": f"SELECT * FROM phloem.{STREAM} ORDER BY ts",
}

# ---------------------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    kind: str
    rows: int = 0
    phloem: list[float] = field(default_factory=list)
    hand: list[float] = field(default_factory=list)
    mismatch: dict | None = None

    @property
    def phloem_s(self) -> float:
        return statistics.median(self.phloem)

    @property
    def hand_s(self) -> float:
        return statistics.median(self.hand)


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def scalar(con: duckdb.DuckDBPyConnection, sql: str):
    return con.execute(sql).fetchall()[0][0]


def create(con: duckdb.DuckDBPyConnection, table: str, query: str) -> float:
    """CREATE OR REPLACE TABLE table AS query; seconds taken. A checkpoint first, untimed, so that no run
    pays for writing out its predecessor's garbage."""
    con.execute("CHECKPOINT")
    start = time.perf_counter()
    con.execute(f"CREATE OR REPLACE TABLE {table} AS {query}")
    return time.perf_counter() - start


def columns(con: duckdb.DuckDBPyConnection, table: str) -> dict[str, str]:
    return {name: str(kind) for name, kind, *_ in con.execute(f"DESCRIBE {table}").fetchall()}


def compare(con: duckdb.DuckDBPyConnection, left: str, right: str, keys: list[str]) -> dict | None:
    """None when both tables hold the same rows on their common columns; else what differs."""
    lcols, rcols = columns(con, left), columns(con, right)
    common = [c for c in lcols if c in rcols]
    cols = ", ".join(quote(c) for c in common)
    only_left = scalar(
        con, f"SELECT count(*) FROM (SELECT {cols} FROM {left} EXCEPT ALL SELECT {cols} FROM {right})"
    )
    only_right = scalar(
        con, f"SELECT count(*) FROM (SELECT {cols} FROM {right} EXCEPT ALL SELECT {cols} FROM {left})"
    )
    missing = {
        "only_phloem": [c for c in lcols if c not in rcols],
        "only_hand": [c for c in rcols if c not in lcols],
    }
    types = {c: [lcols[c], rcols[c]] for c in common if lcols[c] != rcols[c]}
    if not (only_left or only_right or missing["only_phloem"] or missing["only_hand"]):
        return None  # (different but compatible types, e.g. DECIMAL(38,2) vs DECIMAL(18,2), are no mismatch)
    out: dict = {"rows_only_in_phloem": only_left, "rows_only_in_hand": only_right, **missing, "types": types}
    if only_left or only_right:
        out["differing_columns"] = differing_columns(con, left, right, common, keys)
    return out


def differing_columns(con, left: str, right: str, common: list[str], keys: list[str]) -> dict[str, int]:
    """Per column, how many rows differ, pairing rows by `keys` (or, without keys, per-column multisets)."""
    if keys and all(k in common for k in keys):
        on = " AND ".join(f"l.{quote(k)} = r.{quote(k)}" for k in keys)
        k0 = quote(keys[0])
        checks = [
            f'count(*) FILTER (WHERE l.{k0} IS NULL) AS "<key only in hand>"',
            f'count(*) FILTER (WHERE r.{k0} IS NULL) AS "<key only in phloem>"',
        ]
        checks += [
            f"count(*) FILTER (WHERE l.{k0} IS NOT NULL AND r.{k0} IS NOT NULL"
            f" AND l.{quote(c)} IS DISTINCT FROM r.{quote(c)}) AS {quote(c)}"
            for c in common
            if c not in keys
        ]
        cur = con.execute(f"SELECT {', '.join(checks)} FROM {left} l FULL OUTER JOIN {right} r ON {on}")
    else:
        parts = [
            f"(SELECT count(*) FROM (SELECT {quote(c)} FROM {left} EXCEPT ALL SELECT {quote(c)} FROM {right}))"
            f" AS {quote(c)}"
            for c in common
        ]
        cur = con.execute(f"SELECT {', '.join(parts)}")
    names = [d[0] for d in cur.description]
    return {n: v for n, v in zip(names, cur.fetchall()[0], strict=True) if v}


def measure(con, name: str, kind: str, phloem_sql: str, hand_sql: str, runs: int, console: Console) -> Result:
    result = Result(name, kind)
    p, h = f"bench.{quote('p__' + name)}", f"bench.{quote('h__' + name)}"
    create(con, p, phloem_sql)  # warm-up run, and the tables we compare
    create(con, h, hand_sql)
    result.rows = scalar(con, f"SELECT count(*) FROM {p}")
    result.mismatch = compare(con, p, h, KEYS.get(name, []))
    if result.mismatch:
        loud(console, name, result.mismatch)
    for i in range(runs):  # alternate who goes first, so neither always runs on the other's leftovers
        order = [("phloem", p, phloem_sql), ("hand", h, hand_sql)]
        for who, table, sql in order if i % 2 == 0 else reversed(order):
            getattr(result, who).append(create(con, table, sql))
    con.execute(f"DROP TABLE {p}")
    con.execute(f"DROP TABLE {h}")
    return result


def loud(console: Console, name: str, mismatch: dict) -> None:
    console.print(
        f"[bold red]!!! MISMATCH in {name}: Phloem and hand-written SQL do not produce the same rows[/]"
    )
    for key, value in mismatch.items():
        if value:
            console.print(f"[red]    {key}: {value}[/]")


def layout(con, runs: int, console: Console) -> dict:
    """Time the same dataset over the typed per-activity tables and over a single JSON stream table."""
    setup = {}
    for table, sql in SINGLE_TABLES.items():
        setup[table] = create(con, table, sql)
    queries = {
        "per_activity_typed": LAYOUT_TYPED,
        **{f"single_{t.split('_by_')[1]}_json": LAYOUT_JSON.format(table=t) for t in SINGLE_TABLES},
    }
    for name, sql in queries.items():  # all of them must agree
        create(con, f"bench.{name}", sql)
    for name in list(queries)[1:]:
        diff = compare(con, "bench.per_activity_typed", f"bench.{name}", ["activity_id"])
        if diff:
            loud(console, f"layout {name}", diff)
    times: dict[str, list[float]] = {name: [] for name in queries}
    for i in range(runs):
        names = list(queries) if i % 2 == 0 else list(reversed(queries))
        for name in names:
            times[name].append(create(con, f"bench.{name}", queries[name]))
    out = {
        "rows": scalar(con, "SELECT count(*) FROM bench.per_activity_typed"),
        "stream_rows": scalar(con, "SELECT count(*) FROM bench.stream_by_activity"),
        "single_table_setup_s": {t: round(s, 4) for t, s in setup.items()},
        "median_s": {name: round(statistics.median(ts), 4) for name, ts in times.items()},
        "runs_s": {name: [round(t, 4) for t in ts] for name, ts in times.items()},
    }
    base = statistics.median(times["per_activity_typed"])
    out["ratio_vs_typed"] = {name: round(statistics.median(ts) / base, 2) for name, ts in times.items()}
    for name in [*queries, *SINGLE_TABLES]:
        con.execute(f"DROP TABLE IF EXISTS {name if '.' in name else 'bench.' + name}")
    return out


# ---------------------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------------------


def ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def totals(results: list[Result]) -> dict[str, dict]:
    groups = {
        "activities": [r for r in results if r.kind == "activity"],
        "datasets": [r for r in results if r.kind == "dataset"],
        "all": results,
    }
    out = {}
    for name, rs in groups.items():
        p, h = sum(r.phloem_s for r in rs), sum(r.hand_s for r in rs)
        out[name] = {"phloem_s": round(p, 4), "hand_s": round(h, 4), "ratio": round(ratio(p, h), 2)}
    # What it costs to get the datasets from the raw tables: Phloem needs its activity tables first; by hand
    # each dataset reads the raw tables directly.
    p = out["all"]["phloem_s"]
    h = out["datasets"]["hand_s"]
    out["raw_to_datasets"] = {"phloem_s": p, "hand_s": h, "ratio": round(ratio(p, h), 2)}
    return out


def print_table(console: Console, results: list[Result], tot: dict, scale: int, runs: int) -> None:
    table = Table(
        title=f"Phloem vs hand-written DuckDB SQL — build, scale {scale:,} orders, median of {runs} runs"
    )
    table.add_column("target")
    table.add_column("rows", justify="right")
    table.add_column("phloem s", justify="right")
    table.add_column("hand s", justify="right")
    table.add_column("phloem / hand", justify="right")
    table.add_column("same rows")
    for r in results:
        table.add_row(
            r.name,
            f"{r.rows:,}",
            f"{r.phloem_s:.3f}",
            f"{r.hand_s:.3f}",
            f"{ratio(r.phloem_s, r.hand_s):.2f}",
            "yes" if not r.mismatch else "[bold red]MISMATCH[/]",
        )
    table.add_section()
    labels = {
        "activities": "total: activity tables",
        "datasets": "total: datasets",
        "all": "total: everything",
        "raw_to_datasets": "raw → datasets (Phloem: everything; hand: datasets)",
    }
    for key, t in tot.items():
        table.add_row(
            labels[key],
            "",
            f"{t['phloem_s']:.3f}",
            f"{t['hand_s']:.3f}",
            f"{t['ratio']:.2f}",
            "",
            style="bold",
        )
    console.print(table)


def print_layout(console: Console, lay: dict) -> None:
    table = Table(
        title=f"Layout: orders + last_before placed_order + aggregate shipped_order "
        f"({lay['rows']:,} rows; stream of {lay['stream_rows']:,} rows)"
    )
    table.add_column("source")
    table.add_column("median s", justify="right")
    table.add_column("× typed", justify="right")
    labels = {
        "per_activity_typed": "one typed table per activity (Phloem)",
        "single_activity_json": "one stream table, JSON features, rows grouped by activity",
        "single_time_json": "one stream table, JSON features, rows in time order",
    }
    for name, s in lay["median_s"].items():
        table.add_row(labels.get(name, name), f"{s:.3f}", f"{lay['ratio_vs_typed'][name]:.2f}")
    console.print(table)


# ---------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=int, default=100_000, help="number of orders (default 100000)")
    parser.add_argument(
        "--runs", type=int, default=5, help="timed runs per query; the median is kept (default 5)"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--threads", type=int, help="DuckDB threads (default: DuckDB's, one per core)")
    parser.add_argument(
        "--workdir",
        type=Path,
        help="where to put the project copy and its database "
        "(default: a temporary folder, deleted at the end)",
    )
    parser.add_argument("--out", type=Path, help="JSON results (default bench/results/build-<scale>.json)")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.scale < 1:
        parser.error("--scale and --runs must be positive")

    console = Console() if sys.stdout.isatty() else Console(width=120)  # files and pipes: no wrapping
    work = args.workdir or Path(tempfile.mkdtemp(prefix="phloem-bench-"))
    project_dir = work / "project"
    shutil.rmtree(project_dir, ignore_errors=True)
    shutil.copytree(DEMO, project_dir)  # phloem.yml says data/shop.duckdb, relative to the copy
    database = project_dir / "data" / "shop.duckdb"
    database.parent.mkdir(parents=True, exist_ok=True)
    load_start = os.getloadavg()

    try:
        con = duckdb.connect(str(database))
        if args.threads:
            con.execute(f"SET threads = {int(args.threads)}")
        console.print(f"generating the demo shop at scale {args.scale:,} in {database} …")
        start = time.perf_counter()
        raw_rows = generate(con, args.scale, seed=args.seed)
        generate_s = time.perf_counter() - start
        con.close()
        console.print(
            f"generated in {generate_s:.2f} s: " + ", ".join(f"{t} {n:,}" for t, n in raw_rows.items())
        )

        project = Project.load(project_dir)
        con = project.engine.con
        if args.threads:
            con.execute(f"SET threads = {int(args.threads)}")
        start = time.perf_counter()
        project.build(force=True)
        build_s = time.perf_counter() - start
        console.print(
            f"phloem build --force (all {len(project.builder.targets())} tables, staged and published): "
            f"{build_s:.2f} s"
        )
        con.execute("CREATE SCHEMA IF NOT EXISTS bench")

        results = []
        for target in project.builder.targets():
            if target.name not in HAND:
                console.print(f"[yellow]no hand-written SQL for {target.name}: skipped[/]")
                continue
            console.print(f"timing {target.name} …")
            results.append(
                measure(
                    con,
                    target.name,
                    target.kind,
                    target.query.sql("duckdb"),
                    HAND[target.name],
                    args.runs,
                    console,
                )
            )
        console.print("timing the layout …")
        lay = layout(con, args.runs, console)
        threads = scalar(con, "SELECT current_setting('threads')")
        project.close()
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)

    tot = totals(results)
    print_table(console, results, tot, args.scale, args.runs)
    print_layout(console, lay)
    mismatches = {r.name: r.mismatch for r in results if r.mismatch}
    if mismatches:
        console.print(f"[bold red]!!! {len(mismatches)} MISMATCH(ES): {', '.join(mismatches)} — see above[/]")

    report = {
        "scale": args.scale,
        "runs": args.runs,
        "seed": args.seed,
        "machine": {
            "duckdb": duckdb.__version__,
            "threads": threads,
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "loadavg_start": [round(x, 2) for x in load_start],
            "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        },
        "generate_s": round(generate_s, 3),
        "raw_rows": raw_rows,
        "phloem_build_force_s": round(build_s, 3),
        "targets": [
            {
                "name": r.name,
                "kind": r.kind,
                "rows": r.rows,
                "phloem_s": round(r.phloem_s, 4),
                "hand_s": round(r.hand_s, 4),
                "ratio": round(ratio(r.phloem_s, r.hand_s), 2),
                "same_rows": not r.mismatch,
                "phloem_runs_s": [round(t, 4) for t in r.phloem],
                "hand_runs_s": [round(t, 4) for t in r.hand],
            }
            for r in results
        ],
        "totals": tot,
        "layout": lay,
        "mismatches": mismatches,
    }
    out = args.out or RESULTS / f"build-{args.scale}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    console.print(f"results written to {out}")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
