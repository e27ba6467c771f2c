"""Edge cases of activity streams and datasets (MODEL.md §2, §3, §8) that the dbt-aql pack never pins.

Every expected value below is worked out by hand from the inline data next to it, never taken from our
own output. Days are `day(n)` = 2024-01-01 + n days. YAML datasets use the `phloem` semantics (the
default); the `.aql` datasets use dbt_aql compat (the project default for AQL): `sum` over no rows is 0
and the in-between window stops before the next primary row, `(p.ts, next.ts)`.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import pytest
import yaml

from semantic import Project

T0 = datetime(2024, 1, 1)


def day(n: int, hour: int = 0) -> datetime:
    return T0 + timedelta(days=n, hours=hour)


def literal(value) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, datetime):
        return f"'{value:%Y-%m-%d %H:%M:%S}'"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return str(value)


def values(columns: dict[str, str], rows: list[tuple]) -> str:
    """Inline activity SQL with explicit casts; no rows gives a typed, empty result."""
    names = ", ".join(columns)
    body = rows or [(None,) * len(columns)]
    tuples = ",\n  ".join("(" + ", ".join(literal(v) for v in row) + ")" for row in body)
    casts = ", ".join(f"cast({c} as {t}) as {c}" for c, t in columns.items())
    return f"select {casts}\nfrom (values\n  {tuples}\n) t({names})" + ("" if rows else "\nwhere false")


def activity(name: str, columns: dict[str, str], rows: list[tuple], id: str | None = None,
             features: tuple[str, ...] = ()) -> dict:
    out = {"name": name, "sql": values(columns, rows), "features": list(features)}
    if id:
        out["id"] = id
    return out


def pick(relationship: str, name: str, expr: str = "activity_id", **extra) -> dict:
    """One appended column (a pick relationship); `activity` defaults to `buy`."""
    return {"activity": "buy", "relationship": relationship, **extra, "columns": [{"name": name, "expr": expr}]}


def agg(relationship: str, *columns: dict, **extra) -> dict:
    return {"activity": "buy", "relationship": relationship, **extra, "columns": list(columns)}


BUY = {"customer": "text", "ts": "timestamp", "buy_id": "text", "amount": "integer"}
VISIT = {"customer": "text", "ts": "timestamp", "visit_id": "text"}

# ------------------------------------------------------------------ stream `s`: the relationship table
#
# c1 visits p1 (day 1), p2 (day 5), p3 (day 9): next = day 5, day 9, none.
# c1 buys   b1 d0 10 | b2 d3 20 | b3 d5 30 (= p2.ts) | b4 d6 40 | b5 d9 50 (= p3.ts = p2's next) | b6 d12 60
# c2 visits q1 (day 2) once and buys x1 (day 4, 7) once: the single-event entity.
S_VISITS = [("c1", day(9), "p3"), ("c1", day(1), "p1"), ("c2", day(2), "q1"), ("c1", day(5), "p2")]
S_BUYS = [("c1", day(6), "b4", 40), ("c1", day(0), "b1", 10), ("c1", day(12), "b6", 60), ("c1", day(3), "b2", 20),
          ("c2", day(4), "x1", 7), ("c1", day(9), "b5", 50), ("c1", day(5), "b3", 30)]
S_STREAM = {"name": "s", "entity": "customer", "activities": [
    activity("visit", VISIT, S_VISITS, id="visit_id"),
    activity("buy", BUY, S_BUYS, id="buy_id", features=("amount",)),
]}

N = None
# column -> (append, expected per primary row p1, p2, p3, q1)
RELATIONSHIPS = {
    "first_ever": (pick("first_ever", "first_ever"), ["b1", "b1", "b1", "x1"]),
    "last_ever": (pick("last_ever", "last_ever"), ["b6", "b6", "b6", "x1"]),
    "nth_ever_2": (pick("nth_ever", "nth_ever_2", nth=2), ["b2", "b2", "b2", N]),
    "first_before": (pick("first_before", "first_before"), ["b1", "b1", "b1", N]),
    # b3 (day 5) is not before p2 (day 5), b5 (day 9) not before p3 (day 9): strict
    "last_before": (pick("last_before", "last_before"), ["b1", "b2", "b4", N]),
    # nth = the n-th occurrence overall (b2, day 3) if it meets the time condition
    "nth_before_2": (pick("nth_before", "nth_before_2", nth=2), [N, "b2", "b2", N]),
    "first_after": (pick("first_after", "first_after"), ["b2", "b4", "b6", "x1"]),
    "last_after": (pick("last_after", "last_after"), ["b6", "b6", "b6", "x1"]),
    # b2 is after p1 only; the 2nd row inside p2's after-window (b5) is NOT what nth_after 2 means
    "nth_after_2": (pick("nth_after", "nth_after_2", nth=2), ["b2", N, N, N]),
    "nth_after_4": (pick("nth_after", "nth_after_4", nth=4), ["b4", "b4", N, N]),
    # windows: p1 (d1, d5] = b2, b3; p2 (d5, d9] = b4, b5; p3 (d9, inf) = b6; q1 (d2, inf) = x1
    "first_in_between": (pick("first_in_between", "first_in_between"), ["b2", "b4", "b6", "x1"]),
    "last_in_between": (pick("last_in_between", "last_in_between"), ["b3", "b5", "b6", "x1"]),
    "nth_in_between_3": (pick("nth_in_between", "nth_in_between_3", nth=3), ["b3", N, N, N]),
    "nth_in_between_5": (pick("nth_in_between", "nth_in_between_5", nth=5), [N, "b5", N, N]),
    "count_all_ever": (agg("aggregate_all_ever", {"name": "count_all_ever", "agg": "count"}), [6, 6, 6, 1]),
    "sum_all_ever": (agg("aggregate_all_ever", {"name": "sum_all_ever", "agg": "sum", "expr": "amount"}),
                     [210, 210, 210, 7]),
    "count_before": (agg("aggregate_before", {"name": "count_before", "agg": "count"}), [1, 2, 4, 0]),
    "sum_before": (agg("aggregate_before", {"name": "sum_before", "agg": "sum", "expr": "amount"}),
                   [10, 30, 100, N]),
    "count_after": (agg("aggregate_after", {"name": "count_after", "agg": "count"}), [5, 3, 1, 1]),
    "sum_after": (agg("aggregate_after", {"name": "sum_after", "agg": "sum", "expr": "amount"}),
                  [200, 150, 60, 7]),
    "count_in_between": (agg("aggregate_in_between", {"name": "count_in_between", "agg": "count"}), [2, 2, 1, 1]),
    "sum_in_between": (agg("aggregate_in_between", {"name": "sum_in_between", "agg": "sum", "expr": "amount"}),
                       [50, 90, 60, 7]),
    "ids_in_between": (agg("aggregate_in_between", {"name": "ids_in_between", "agg": "listagg",
                                                    "expr": "activity_id"}), ["b2,b3", "b4,b5", "b6", "x1"]),
    # extra `join` conditions are ANDed into the candidates (first/last then rank the candidates)
    "first_after_join": (pick("first_after", "first_after_join", join="joined.amount >= 50"),
                         ["b5", "b5", "b6", N]),
    "last_in_between_join": (pick("last_in_between", "last_in_between_join", join="joined.amount < 50"),
                             ["b3", "b4", N, "x1"]),
    "sum_before_join": (agg("aggregate_before", {"name": "sum_before_join", "agg": "sum", "expr": "amount"},
                            join="joined.amount > 10"), [N, 20, 90, N]),
    "count_all_ever_join": (agg("aggregate_all_ever", {"name": "count_all_ever_join", "agg": "count"},
                                join="joined.amount > 25"), [4, 4, 4, 0]),
}
S_PRIMARY = ["p1", "p2", "p3", "q1"]

S_AQL = """
using s
select all visit (activity_id as visit_id)
append first between buy (activity_id as first_in_between)
append last between buy (activity_id as last_in_between)
append nth(3) between buy (activity_id as nth_in_between_3)
append nth(5) between buy (activity_id as nth_in_between_5)
aggregate between buy (count(activity_id) as count_in_between, sum(amount) as sum_in_between,
                       listagg(activity_id) as ids_in_between)
aggregate before buy (sum(amount) as sum_before)
"""

# ------------------------------------------------------------------ stream `ties`: identical timestamps
#
# buy ids are integers; the declared id is cast to TEXT, so '10' < '9' and '11' < '8'.
# Order by (ts, activity_id): 10 (d3), 9 (d3), 11 (d7), 8 (d7).
# Visits p1 d1, p2 d5, p3 d5, p4 d7: p2 and p3 tie, p2 first by id.
TIES_STREAM = {"name": "ties", "entity": "customer", "activities": [
    activity("visit", VISIT, [("c1", day(5), "p3"), ("c1", day(7), "p4"), ("c1", day(1), "p1"),
                              ("c1", day(5), "p2")], id="visit_id"),
    activity("buy", {"customer": "text", "ts": "timestamp", "buy_id": "integer", "amount": "integer"},
             [("c1", day(3), 9, 1), ("c1", day(7), 8, 3), ("c1", day(3), 10, 2), ("c1", day(7), 11, 4)],
             id="buy_id", features=("amount",)),
]}
TIES_APPENDS = [
    pick("first_ever", "first_ever"), pick("last_ever", "last_ever"), pick("nth_ever", "nth_ever_2", nth=2),
    pick("first_before", "first_before"), pick("last_before", "last_before"),
    pick("first_after", "first_after"), pick("last_after", "last_after"),
    pick("first_in_between", "first_in_between"), pick("last_in_between", "last_in_between"),
    pick("last_ever", "last_ever_join", join="joined.amount > 0"),
    pick("last_in_between", "last_in_between_join", join="joined.amount > 0"),
    agg("aggregate_in_between", {"name": "count_in_between", "agg": "count"},
        {"name": "ids_in_between", "agg": "listagg", "expr": "activity_id"}),
    agg("aggregate_all_ever", {"name": "first_amount", "agg": "first_value", "expr": "amount"},
        {"name": "last_amount", "agg": "last_value", "expr": "amount"},
        {"name": "ids_ever", "agg": "listagg", "expr": "activity_id"}),
]
TIES_AQL = """
using ties
select all visit (activity_id as visit_id)
append first between buy (activity_id as first_in_between)
append last between buy (activity_id as last_in_between)
aggregate between buy (count(activity_id) as count_in_between, sum(amount) as sum_in_between)
"""

# Without `id`: activity_id is an md5, identical rows share it.
NOID_STREAM = {"name": "noid", "entity": "customer", "activities": [
    activity("visit", {"customer": "text", "ts": "timestamp"}, [("c1", day(5)), ("c1", day(5))]),
    activity("buy", {"customer": "text", "ts": "timestamp", "amount": "integer"},
             [("c1", day(3), 1), ("c1", day(3), 2), ("c1", day(3), 3)], features=("amount",)),
]}

# ------------------------------------------------------------------ stream `empty`: an activity with no rows
EMPTY_STREAM = {"name": "empty", "entity": "customer", "activities": [
    activity("visit", VISIT, [("c1", day(1), "p1"), ("c1", day(3), "p2")], id="visit_id"),
    activity("buy", BUY, [], id="buy_id", features=("amount",)),
]}
EMPTY_APPENDS = [
    pick("first_ever", "first_ever"), pick("nth_ever", "nth_ever_1", nth=1), pick("last_before", "last_before"),
    pick("first_in_between", "first_in_between"),
    agg("aggregate_all_ever", {"name": "n", "agg": "count"},
        {"name": "n_distinct", "agg": "count_distinct", "expr": "amount"},
        {"name": "total", "agg": "sum", "expr": "amount"},
        {"name": "total_filled", "agg": "sum", "expr": "amount", "fill": 0},
        {"name": "mean", "agg": "avg", "expr": "amount"},
        {"name": "lowest", "agg": "min", "expr": "amount"},
        {"name": "ids", "agg": "listagg", "expr": "activity_id"}),
    agg("aggregate_before", {"name": "n_before", "agg": "count"},
        {"name": "total_before", "agg": "sum", "expr": "amount"}),
    agg("aggregate_in_between", {"name": "total_in_between", "agg": "sum", "expr": "amount", "fill": 0}),
]
EMPTY_AQL = """
using empty
select all visit (activity_id as visit_id)
append first ever buy (activity_id as first_ever)
aggregate all buy (count(activity_id) as n, sum(amount) as total, min(amount) as lowest)
aggregate between buy (sum(amount) as total_in_between)
"""

# ------------------------------------------------------------------ stream `web`: anonymous ids
#
# The key of a row is its customer, or its anonymous id where the customer is NULL. Customer 'a1' and
# anonymous 'a1' are different people. pg5/ck5 have neither and join nothing.
WEB = {"customer": "text", "anon": "text", "ts": "timestamp", "row_id": "text"}
WEB_STREAM = {"name": "web", "entity": "customer", "anonymous_entity": "anon", "activities": [
    activity("page", WEB, [(N, "a1", day(3), "pg2"), (N, "a2", day(2), "pg3"), (N, "a1", day(1), "pg1"),
                           ("a1", N, day(2), "pg4"), (N, N, day(1), "pg5")], id="row_id"),
    activity("click", WEB, [(N, "a1", day(2), "ck1"), (N, "a2", day(1), "ck2"), ("a1", N, day(5), "ck3"),
                            (N, "a1", day(4), "ck4"), (N, N, day(3), "ck5")], id="row_id"),
]}
WEB_APPENDS = [{"activity": "click", **a} for a in [
    {"relationship": "aggregate_all_ever", "columns": [{"name": "clicks", "agg": "count"},
                                                       {"name": "click_ids", "agg": "listagg", "expr": "activity_id"}]},
    {"relationship": "first_ever", "columns": [{"name": "first_ever", "expr": "activity_id"}]},
    {"relationship": "nth_ever", "nth": 2, "columns": [{"name": "nth_ever_2", "expr": "activity_id"}]},
    {"relationship": "first_after", "columns": [{"name": "first_after", "expr": "activity_id"}]},
    {"relationship": "last_before", "columns": [{"name": "last_before", "expr": "activity_id"}]},
]]

# ------------------------------------------------------------------ stream `orders`: join_keys and filters
#
# o1 d1, o2 d2, o3 d3. Shipments s1 (o1, d3, 5), s2 (o2, d4, 7), s3 (o1, d5, 6).
# Quotes (key `order_ref`) q1 (o1, d0 00h, 95), q2 (o2, d0 12h, 190), q3 (o1, d0 18h, 90).
ORDERS_STREAM = {"name": "orders", "entity": "customer", "activities": [
    activity("placed_order", {"customer": "text", "ts": "timestamp", "order_id": "text", "total": "integer"},
             [("c1", day(2), "o2", 200), ("c1", day(1), "o1", 100), ("c1", day(3), "o3", 300)],
             id="order_id", features=("order_id", "total")),
    activity("shipped_order", {"customer": "text", "ts": "timestamp", "ship_id": "text", "order_id": "text",
                               "cost": "integer"},
             [("c1", day(5), "s3", "o1", 6), ("c1", day(3), "s1", "o1", 5), ("c1", day(4), "s2", "o2", 7)],
             id="ship_id", features=("order_id", "cost")),
    activity("quoted", {"customer": "text", "ts": "timestamp", "quote_id": "text", "order_ref": "text",
                        "price": "integer"},
             [("c1", day(0, 12), "q2", "o2", 190), ("c1", day(0, 18), "q3", "o1", 90), ("c1", day(0), "q1", "o1", 95)],
             id="quote_id", features=("order_ref", "price")),
]}
BY_ORDER = {"join_keys": ["order_id"]}
QUOTE_KEY = {"join_keys": [{"primary": "order_id", "joined": "order_ref"}]}
BIG = {"filter": "cost > 5"}
ORDERS_APPENDS = [
    {"activity": "shipped_order", "relationship": "aggregate_all_ever", **BY_ORDER, "columns": [
        {"name": "ship_cost", "agg": "sum", "expr": "cost"},
        {"name": "ship_cost_filled", "agg": "sum", "expr": "cost", "fill": 0},
        {"name": "shipments", "agg": "count"}]},
    {"activity": "shipped_order", "relationship": "aggregate_all_ever",
     "columns": [{"name": "all_shipments", "agg": "count"}]},
    {"activity": "shipped_order", "relationship": "first_ever", **BY_ORDER,
     "columns": [{"name": "first_ship", "expr": "activity_id"}]},
    {"activity": "shipped_order", "relationship": "first_ever", "columns": [{"name": "first_ship_any", "expr": "activity_id"}]},
    {"activity": "quoted", "relationship": "last_before", **QUOTE_KEY, "columns": [{"name": "quote", "expr": "price"}]},
    {"activity": "quoted", "relationship": "last_before", "columns": [{"name": "quote_any", "expr": "price"}]},
    {"activity": "shipped_order", "relationship": "nth_ever", "nth": 2,
     "columns": [{"name": "second_ship", "expr": "activity_id"}]},
    {"activity": "shipped_order", "relationship": "nth_ever", "nth": 2, **BIG,
     "columns": [{"name": "second_big_ship", "expr": "activity_id"}]},
    {"activity": "shipped_order", "relationship": "first_ever", **BIG,
     "columns": [{"name": "first_big_ship", "expr": "activity_id"}]},
    {"activity": "shipped_order", "relationship": "aggregate_all_ever", **BY_ORDER, **BIG,
     "columns": [{"name": "big_shipments", "agg": "count"}]},
    {"activity": "shipped_order", "relationship": "first_ever", **BY_ORDER, **BIG,
     "columns": [{"name": "first_big_ship_of_order", "expr": "activity_id"}]},
]

# ------------------------------------------------------------------ stream `agg`: every aggregate
#
# c1 buys before its visit (day 10), in (ts, id) order: b1 10 'b', b2 40 'a', b3 20 'b', b4 NULL 'c',
# b5 90 'a', b6 5 'd' (b5 and b6 tie on day 5, b5 first by id). b7 (day 11) is after. c2 only buys after.
AGG_STREAM = {"name": "agg", "entity": "customer", "activities": [
    activity("visit", VISIT, [("c1", day(10), "v1"), ("c2", day(10), "v2")], id="visit_id"),
    activity("buy", {**BUY, "sku": "text"},
             [("c1", day(5), "b6", 5, "d"), ("c1", day(2), "b2", 40, "a"), ("c1", day(1), "b1", 10, "b"),
              ("c1", day(11), "b7", 1000, "z"), ("c1", day(4), "b4", N, "c"), ("c1", day(5), "b5", 90, "a"),
              ("c1", day(3), "b3", 20, "b"), ("c2", day(11), "b8", 3, "y")],
             id="buy_id", features=("amount", "sku")),
]}
AGG_COLUMNS = [
    {"name": "n_rows", "agg": "count"},
    {"name": "n_amount", "agg": "count", "expr": "amount"},
    {"name": "n_sku", "agg": "count_distinct", "expr": "sku"},
    {"name": "total", "agg": "sum", "expr": "amount"},
    {"name": "total_filled", "agg": "sum", "expr": "amount", "fill": 0},
    {"name": "mean", "agg": "avg", "expr": "amount"},
    {"name": "lowest", "agg": "min", "expr": "amount"},
    {"name": "lowest_filled", "agg": "min", "expr": "amount", "fill": -1},
    {"name": "highest", "agg": "max", "expr": "amount"},
    {"name": "middle", "agg": "median", "expr": "amount"},
    {"name": "opening", "agg": "first_value", "expr": "amount"},
    {"name": "closing", "agg": "last_value", "expr": "amount"},
    {"name": "closing_sku", "agg": "last_value", "expr": "sku"},
    {"name": "skus", "agg": "listagg", "expr": "sku"},
    {"name": "skus_filled", "agg": "listagg", "expr": "sku", "fill": ""},
]
AGG_APPENDS = [
    agg("aggregate_before", *AGG_COLUMNS),
    # all amounts of c1: 5, 10, 20, 40, 90, 1000 -> continuous median (20 + 40) / 2; c2: 3
    agg("aggregate_all_ever", {"name": "middle_ever", "agg": "median", "expr": "amount"}),
]
AGG_AQL = """
using agg
select all visit (activity_id as visit_id)
aggregate before buy (count(activity_id) as n_rows, count_distinct(sku) as n_sku, sum(amount) as total,
    avg(amount) as mean, min(amount) as lowest, max(amount) as highest, median(amount) as middle,
    first_value(amount) as opening, last_value(amount) as closing, listagg(sku) as skus)
"""

# ------------------------------------------------------------------ stream `sel`: primary selectors + filter
#
# c1 visits v1 d1 google, v2 d2 bing, v3 d3 google, v4 d4 bing, v5 d5 google; c2 w1 d1 bing, w2 d2 bing.
SEL_STREAM = {"name": "sel", "entity": "customer", "activities": [
    activity("visit", {**VISIT, "source": "text"},
             [("c1", day(3), "v3", "google"), ("c2", day(2), "w2", "bing"), ("c1", day(1), "v1", "google"),
              ("c1", day(5), "v5", "google"), ("c1", day(2), "v2", "bing"), ("c1", day(4), "v4", "bing"),
              ("c2", day(1), "w1", "bing")],
             id="visit_id", features=("source",)),
]}
GOOGLE, BING = "source = 'google'", "source = 'bing'"
SEL_CASES = {  # dataset -> (primary, expected (visit_id, activity_occurrence, activity_repeated_at) rows)
    "sel_first_google": ({"select": "first", "filter": GOOGLE}, {("v1", 1, day(3))}),
    "sel_last_google": ({"select": "last", "filter": GOOGLE}, {("v5", 3, N)}),
    "sel_nth_google": ({"select": "nth", "nth": 2, "filter": GOOGLE}, {("v3", 2, day(5))}),
    "sel_first_bing": ({"select": "first", "filter": BING}, {("v2", 1, day(4)), ("w1", 1, day(2))}),
    "sel_last_bing": ({"select": "last", "filter": BING}, {("v4", 2, N), ("w2", 2, N)}),
    "sel_nth_3_bing": ({"select": "nth", "nth": 3, "filter": BING}, set()),
    "sel_nth_plain": ({"select": "nth", "nth": 2}, {("v2", 2, day(3)), ("w2", 2, N)}),
    "sel_first_plain": ({"select": "first"}, {("v1", 1, day(2)), ("w1", 1, day(2))}),
    "sel_last_plain": ({"select": "last"}, {("v5", 5, N), ("w2", 2, N)}),
}
SEL_AQL = """
using sel
select nth(2) visit (activity_id as visit_id, activity_occurrence, activity_repeated_at
                     filter feature_json.source = 'google')
"""


def dataset(name: str, stream: str, primary: str | dict, columns: list, appends: list) -> dict:
    primary = {"activity": primary} if isinstance(primary, str) else primary
    return {"name": name, "stream": stream, "primary": primary, "columns": columns, "append": appends}


ID = {"name": "visit_id", "expr": "activity_id"}
DATASETS = [
    dataset("relationships", "s", "visit", [ID], [a for a, _ in RELATIONSHIPS.values()]),
    dataset("s_first", "s", {"activity": "visit", "select": "first"}, [ID], []),
    dataset("s_last", "s", {"activity": "visit", "select": "last"}, [ID], []),
    dataset("tie_picks", "ties", "visit", [ID], TIES_APPENDS),
    dataset("ties_first", "ties", {"activity": "visit", "select": "first"}, [ID], []),
    dataset("ties_last", "ties", {"activity": "visit", "select": "last"}, [ID], []),
    dataset("ties_nth_2", "ties", {"activity": "visit", "select": "nth", "nth": 2}, [ID], []),
    dataset("ties_nth_3", "ties", {"activity": "visit", "select": "nth", "nth": 3}, [ID], []),
    dataset("noid_rows", "noid", "visit", ["customer"], [
        agg("aggregate_before", {"name": "n_before", "agg": "count"}, {"name": "total_before", "agg": "sum",
                                                                         "expr": "amount"}),
        agg("aggregate_all_ever", {"name": "n_ever", "agg": "count"}),
        pick("first_before", "first_amount", expr="amount", join="joined.amount > 1"),
        agg("aggregate_before", {"name": "n_big_before", "agg": "count"}, join="joined.amount > 1"),
    ]),
    dataset("empty_appended", "empty", "visit", [ID], EMPTY_APPENDS),
    dataset("empty_primary", "empty", "buy", [{"name": "buy_id", "expr": "activity_id"}, "amount"], [
        {"activity": "visit", "relationship": "first_ever", "columns": [{"name": "first_visit", "expr": "ts"}]},
        {"activity": "visit", "relationship": "aggregate_all_ever", "columns": [{"name": "visits", "agg": "count"}]},
    ]),
    dataset("empty_primary_first", "empty", {"activity": "buy", "select": "first"}, ["amount"], []),
    dataset("web_rows", "web", "page", [{"name": "page_id", "expr": "activity_id"}], WEB_APPENDS),
    dataset("order_rows", "orders", "placed_order", ["order_id"], ORDERS_APPENDS),
    dataset("aggs", "agg", "visit", [ID], AGG_APPENDS),
    dataset("google_windows", "sel", {"activity": "visit", "filter": GOOGLE}, [ID], [
        {"activity": "visit", "relationship": "aggregate_in_between",
         "columns": [{"name": "visits_between", "agg": "count"}]},
        {"activity": "visit", "relationship": "last_in_between",
         "columns": [{"name": "last_between", "expr": "activity_id"}]},
    ]),
    *(dataset(name, "sel", {"activity": "visit", **primary}, [ID, "activity_occurrence", "activity_repeated_at"],
              []) for name, (primary, _) in SEL_CASES.items()),
]
AQL = {"s_aql": S_AQL, "ties_aql": TIES_AQL, "empty_aql": EMPTY_AQL, "agg_aql": AGG_AQL, "sel_aql": SEL_AQL}


@pytest.fixture(scope="module", params=["duckdb", "postgres"])
def project(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"edge_cases_{request.param}")
    (root / "models").mkdir()
    settings = {"name": "edge_cases"}  # AQL compat: dbt_aql (default)
    if request.param == "postgres":  # the inline VALUES activities are plain SQL both engines read
        settings["warehouse"] = {"engine": "postgres", "dsn": request.getfixturevalue("pg_dsn")}
    (root / "phloem.yml").write_text(yaml.safe_dump(settings))
    streams = [S_STREAM, TIES_STREAM, NOID_STREAM, EMPTY_STREAM, WEB_STREAM, ORDERS_STREAM, AGG_STREAM, SEL_STREAM]
    (root / "models" / "edge.yml").write_text(yaml.safe_dump({"streams": streams, "datasets": DATASETS},
                                                             sort_keys=False))
    for name, text in AQL.items():
        (root / "models" / f"{name}.aql").write_text(text)
    p = Project.load(root)
    p.build()
    yield p
    p.close()


def by_key(project, name: str, key: str = "visit_id") -> dict[str, dict]:
    rows = project.dataset(name).to_pylist()
    out = {r[key]: r for r in rows}
    assert len(out) == len(rows), f"{name}: duplicate {key}"
    return out


def order_columns(project, table: str) -> dict[str, tuple]:
    """activity_id -> (activity_occurrence, activity_repeated_at) of one materialized activity."""
    rows = project.engine.rows(f'select activity_id, activity_occurrence, activity_repeated_at from phloem."{table}"')
    return {r[0]: (r[1], r[2]) for r in rows}


# ================================================================== 7. every relationship, one table


@pytest.mark.parametrize("column", RELATIONSHIPS)
def test_relationship(project, column):
    rows = by_key(project, "relationships")
    assert sorted(rows) == S_PRIMARY  # a relationship never adds or removes primary rows
    assert [rows[p][column] for p in S_PRIMARY] == RELATIONSHIPS[column][1]


def test_every_relationship_is_in_the_table():
    used = {a["relationship"] for a, _ in RELATIONSHIPS.values()}
    assert len(used) == 16


def test_relationships_in_aql_dbt_compat(project):
    # in-between is (p.ts, next.ts): p1 (d1, d5) = b2; p2 (d5, d9) = b4; p3 (d9, inf) = b6; q1 = x1
    rows = by_key(project, "s_aql")
    got = {p: (r["first_in_between"], r["last_in_between"], r["nth_in_between_3"], r["nth_in_between_5"],
               r["count_in_between"], r["sum_in_between"], r["ids_in_between"], r["sum_before"])
           for p, r in rows.items()}
    assert got == {
        "p1": ("b2", "b2", N, N, 1, 20, "b2", 10),
        "p2": ("b4", "b4", N, N, 1, 40, "b4", 30),
        "p3": ("b6", "b6", N, N, 1, 60, "b6", 100),
        "q1": ("x1", "x1", N, N, 1, 7, "x1", 0),  # nothing before: sum zero-filled
    }


# ================================================================== 2. an appended event at exactly p.ts


def test_event_at_primary_ts(project):
    p2 = by_key(project, "relationships")["p2"]  # p2 is day 5; b3 is day 5
    assert (p2["last_before"], p2["count_before"]) == ("b2", 2)  # b3 not before
    assert (p2["first_after"], p2["count_after"]) == ("b4", 3)  # b3 not after
    assert p2["count_all_ever"] == 6  # but in *_ever
    assert p2["ids_in_between"] == "b4,b5"  # and not in p2's own in-between window


# ================================================================== 3. an event at exactly the next primary ts


def test_event_at_next_primary_ts(project):
    rows = by_key(project, "relationships")
    # b5 (day 9) = p3.ts: the end of p2's window (p2.ts, p3.ts] in phloem mode
    assert (rows["p2"]["last_in_between"], rows["p2"]["ids_in_between"]) == ("b5", "b4,b5")
    assert rows["p1"]["ids_in_between"] == "b2,b3"  # b3 (= p2.ts) closes p1's window
    assert rows["p3"]["ids_in_between"] == "b6"  # the last primary row's window is open-ended (b6, day 12)
    aql = by_key(project, "s_aql")  # dbt_aql: (p.ts, next.ts) leaves b5 and b3 out
    assert (aql["p2"]["last_in_between"], aql["p2"]["ids_in_between"]) == ("b4", "b4")
    assert aql["p1"]["ids_in_between"] == "b2"
    assert aql["p3"]["ids_in_between"] == "b6"


# ================================================================== 1. ties on identical timestamps


def test_ties_occurrence_follows_text_activity_id(project):
    # declared integer ids become text: '10' < '9' and '11' < '8'
    assert order_columns(project, "ties__buy") == {
        "10": (1, day(3)), "9": (2, day(7)), "11": (3, day(7)), "8": (4, N)}
    assert order_columns(project, "ties__visit") == {
        "p1": (1, day(5)), "p2": (2, day(5)), "p3": (3, day(7)), "p4": (4, N)}


def test_ties_picks(project):
    rows = by_key(project, "tie_picks")
    columns = ["first_ever", "last_ever", "nth_ever_2", "first_before", "last_before", "first_after",
               "last_after", "first_in_between", "last_in_between", "count_in_between", "ids_in_between"]
    got = {p: tuple(r[c] for c in columns) for p, r in rows.items()}
    assert got == {
        # p1 (d1): window (d1, d5] = 10, 9
        "p1": ("10", "8", "9", N, N, "10", "8", "10", "9", 2, "10,9"),
        # p2 (d5) ties with p3: its window (d5, d5] is empty
        "p2": ("10", "8", "9", "10", "9", "11", "8", N, N, 0, N),
        # p3 (d5): window (d5, d7] = 11, 8
        "p3": ("10", "8", "9", "10", "9", "11", "8", "11", "8", 2, "11,8"),
        # p4 (d7): 11 and 8 are at p4.ts, so neither before nor after
        "p4": ("10", "8", "9", "10", "9", N, N, N, N, 0, N),
    }
    assert {(r["first_amount"], r["last_amount"], r["ids_ever"]) for r in rows.values()} == {(2, 3, "10,9,11,8")}
    # the same picks through extra join conditions (ranked candidates) break ties the same way
    assert {p: (r["last_ever_join"], r["last_in_between_join"]) for p, r in rows.items()} == {
        "p1": ("8", "9"), "p2": ("8", N), "p3": ("8", "8"), "p4": ("8", N)}


def test_ties_primary_selectors(project):
    assert set(by_key(project, "ties_first")) == {"p1"}
    assert set(by_key(project, "ties_last")) == {"p4"}
    assert set(by_key(project, "ties_nth_2")) == {"p2"}
    assert set(by_key(project, "ties_nth_3")) == {"p3"}


def test_ties_in_aql_dbt_compat(project):
    # (p.ts, next.ts): p1 (d1, d5) = 10, 9; p2 (d5, d5), p3 (d5, d7) empty; p4 has nothing after d7
    got = {p: (r["first_in_between"], r["last_in_between"], r["count_in_between"], r["sum_in_between"])
           for p, r in by_key(project, "ties_aql").items()}
    assert got == {"p1": ("10", "9", 2, 3), "p2": (N, N, 0, 0), "p3": (N, N, 0, 0), "p4": (N, N, 0, 0)}


def test_ties_without_id_follow_the_hash(project):
    rows = project.engine.rows('select activity_id, amount, activity_occurrence, activity_repeated_at '
                               'from phloem."noid__buy" order by activity_occurrence')
    ids = [r[0] for r in rows]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids) and len(set(ids)) == 3
    assert ids == sorted(ids)  # occurrence follows activity_id on a ts tie
    assert [r[2] for r in rows] == [1, 2, 3]
    assert [r[3] for r in rows] == [day(3), day(3), N]


def test_identical_primary_rows_each_get_their_own_values(project):
    # Two identical visits (same md5 activity_id) on day 5; buys 1, 2, 3 on day 3.
    rows = project.dataset("noid_rows").to_pylist()
    assert len(rows) == 2
    for r in rows:
        assert (r["n_before"], r["total_before"], r["n_ever"], r["n_big_before"]) == (3, 6, 3, 2)
        assert r["first_amount"] in (2, 3)  # amounts 2 and 3 tie on ts; which one is first follows the hash
    assert rows[0]["first_amount"] == rows[1]["first_amount"]


# ================================================================== 4. empty activities


def test_empty_appended_activity(project):
    rows = by_key(project, "empty_appended")
    assert sorted(rows) == ["p1", "p2"]
    for r in rows.values():
        assert {k: v for k, v in r.items() if k != "visit_id"} == {
            "first_ever": N, "nth_ever_1": N, "last_before": N, "first_in_between": N,
            "n": 0, "n_distinct": 0, "total": N, "total_filled": 0, "mean": N, "lowest": N, "ids": N,
            "n_before": 0, "total_before": N, "total_in_between": 0,
        }


def test_empty_primary_activity(project):
    table = project.dataset("empty_primary")
    assert table.num_rows == 0
    assert table.column_names == ["buy_id", "amount", "first_visit", "visits"]
    assert project.dataset("empty_primary_first").num_rows == 0


def test_empty_appended_activity_in_aql(project):
    got = {p: (r["first_ever"], r["n"], r["total"], r["lowest"], r["total_in_between"])
           for p, r in by_key(project, "empty_aql").items()}
    assert got == {"p1": (N, 0, 0, N, 0), "p2": (N, 0, 0, N, 0)}  # dbt_aql zero-fills count and sum only


# ================================================================== 5. NULL entity with an anonymous id


def test_anonymous_occurrence(project):
    pages = order_columns(project, "web__page")
    assert {k: pages[k] for k in ("pg1", "pg2", "pg3", "pg4")} == {
        "pg1": (1, day(3)), "pg2": (2, N), "pg3": (1, N), "pg4": (1, N)}
    clicks = order_columns(project, "web__click")
    assert {k: clicks[k] for k in ("ck1", "ck2", "ck3", "ck4")} == {
        "ck1": (1, day(4)), "ck4": (2, N), "ck2": (1, N), "ck3": (1, N)}


def test_anonymous_joins(project):
    columns = ["clicks", "click_ids", "first_ever", "nth_ever_2", "first_after", "last_before"]
    got = {p: tuple(r[c] for c in columns) for p, r in by_key(project, "web_rows", "page_id").items()}
    assert got == {
        "pg1": (2, "ck1,ck4", "ck1", "ck4", "ck1", N),  # anonymous a1, day 1
        "pg2": (2, "ck1,ck4", "ck1", "ck4", "ck4", "ck1"),  # anonymous a1, day 3
        "pg3": (1, "ck2", "ck2", N, N, "ck2"),  # anonymous a2, day 2
        "pg4": (1, "ck3", "ck3", N, "ck3", N),  # customer a1 (not anonymous a1), day 2
        "pg5": (0, N, N, N, N, N),  # neither: joins nothing, not even ck5
    }


# ================================================================== 6. an entity with a single event


def test_single_event_entity(project):
    assert order_columns(project, "s__visit")["q1"] == (1, N)
    assert order_columns(project, "s__buy")["x1"] == (1, N)
    q1 = by_key(project, "relationships")["q1"]
    assert q1["first_ever"] == q1["last_ever"] == "x1"
    assert q1["nth_ever_2"] is None
    assert set(by_key(project, "s_first")) == {"p1", "q1"}
    assert set(by_key(project, "s_last")) == {"p3", "q1"}


# ================================================================== 8. join_keys and appended-activity filters


def test_join_keys_and_filters(project):
    rows = by_key(project, "order_rows", "order_id")
    columns = ["ship_cost", "ship_cost_filled", "shipments", "all_shipments", "first_ship", "first_ship_any",
               "quote", "quote_any"]
    assert {o: tuple(r[c] for c in columns) for o, r in rows.items()} == {
        # o1 (d1): shipments s1 5 + s3 6; quotes of o1 before d1: q1, q3 (d0 18h) -> 90
        "o1": (11, 11, 2, 3, "s1", "s1", 90, 90),
        # o2 (d2): s2 7; quotes of o2: q2 (190); the latest quote of any order before d2 is q3 (90)
        "o2": (7, 7, 1, 3, "s2", "s1", 190, 90),
        # o3 (d3): no shipment, no quote of its own
        "o3": (N, 0, 0, 3, N, "s1", N, 90),
    }
    # filter cost > 5 keeps s2 (d4), s3 (d5): occurrence is recomputed over those two
    filtered = ["second_ship", "second_big_ship", "first_big_ship", "big_shipments", "first_big_ship_of_order"]
    assert {o: tuple(r[c] for c in filtered) for o, r in rows.items()} == {
        "o1": ("s2", "s3", "s2", 1, "s3"),
        "o2": ("s2", "s3", "s2", 1, "s2"),
        "o3": ("s2", "s3", "s2", 0, N),
    }


# ================================================================== 9. every aggregate


AGG_EXPECTED = {
    "v1": {"n_rows": 6, "n_amount": 5, "n_sku": 4, "total": 165, "total_filled": 165, "mean": 33.0, "lowest": 5,
           "lowest_filled": 5, "highest": 90, "middle": 20.0, "opening": 10, "closing": 5, "closing_sku": "d",
           "skus": "b,a,b,c,a,d", "skus_filled": "b,a,b,c,a,d", "middle_ever": 30.0},
    "v2": {"n_rows": 0, "n_amount": 0, "n_sku": 0, "total": N, "total_filled": 0, "mean": N, "lowest": N,
           "lowest_filled": -1, "highest": N, "middle": N, "opening": N, "closing": N, "closing_sku": N,
           "skus": N, "skus_filled": "", "middle_ever": 3.0},
}


def test_every_aggregate(project):
    rows = by_key(project, "aggs")
    assert {v: {k: x for k, x in r.items() if k != "visit_id"} for v, r in rows.items()} == AGG_EXPECTED


def test_every_aggregate_in_aql(project):
    rows = by_key(project, "agg_aql")
    keys = ["n_rows", "n_sku", "total", "mean", "lowest", "highest", "middle", "opening", "closing", "skus"]
    assert {v: {k: r[k] for k in keys} for v, r in rows.items()} == {
        "v1": {k: AGG_EXPECTED["v1"][k] for k in keys},
        "v2": {**{k: AGG_EXPECTED["v2"][k] for k in keys}, "total": 0},  # dbt_aql zero-fills sum
    }


# ================================================================== 10. primary selectors with a primary filter


@pytest.mark.parametrize("name", SEL_CASES)
def test_primary_selector(project, name):
    got = {(r["visit_id"], r["activity_occurrence"], r["activity_repeated_at"])
           for r in project.dataset(name).to_pylist()}
    assert got == SEL_CASES[name][1]


def test_primary_selector_in_aql(project):
    got = {(r["visit_id"], r["activity_occurrence"], r["activity_repeated_at"])
           for r in project.dataset("sel_aql").to_pylist()}
    assert got == {("v3", 2, day(5))}


def test_filtered_primary_windows(project):
    # google visits v1 d1, v3 d3, v5 d5: next = d3, d5, none (after the filter), so the in-between
    # windows (d1, d3], (d3, d5], (d5, inf) hold v2 v3 | v4 v5 | nothing of all visits
    got = {v: (r["visits_between"], r["last_between"]) for v, r in by_key(project, "google_windows").items()}
    assert got == {"v1": (2, "v3"), "v3": (2, "v5"), "v5": (0, N)}
