"""Row-level security, randomized: well over 1,000 metric queries by random identities (roles, countries, channel
lists), metrics (plain, ratio, derived across views, cumulative, offset, public), dimensions, filters and periods,
through every door — the library, REST, GraphQL, HTTP SQL (each person with a JWT) and the PostgreSQL wire (psycopg
as a SCRAM user the users file maps to the same roles and claims) — with rollups on and
off and the result cache on (warmed by another identity first) and off. Every answer is compared with one
computed here by hand: plain SQL over the demo's raw tables with the policy's condition written out again, and
the cumulative and offset arithmetic done in Python. Phloem's SQL is never read.

Seeded: PHLOEM_RLS_SEED=<n> replays a run (the seed is printed); PHLOEM_RLS_QUERIES sets how many (default 1,250).
"""

from __future__ import annotations

import collections
import datetime as dt
import os
import random
import secrets
import shutil
import time
from decimal import Decimal

import httpx
import jwt
import psycopg
import pytest
import yaml

import semantic
from semantic.access.context import SecurityContext
from semantic.query.query import make_query
from server.app import create_app
from server.auth import Authenticator
from server.auth.tokens import Tokens, TokenSettings
from server.pgwire import PgConfig, PgServer, ServerThread
from server.pgwire.auth import parse_users_yaml
from server.runtime import Runtime
from tests.access.conftest import make_shop
from tests.access.hand import answer, raw_tables, same
from tests.server.conftest import LiveServer

QUERIES = int(os.environ.get("PHLOEM_RLS_QUERIES", "1250"))
PEOPLE = 40
SEED = int(os.environ.get("PHLOEM_RLS_SEED") or random.SystemRandom().randrange(2**32))
COUNTRIES = ["US", "CA", "GB", "AU", "FR", "NL", "ES", "DE"]
CHANNELS = ["web", "app", "marketplace"]

# ---------------------------------------------------------------- who asks, and what each may see (by hand)

SALES = ["revenue", "orders", "aov", "discounts", "buyers", "revenue_benchmark", "revenue_share"]
EVERYTHING = [*SALES, "refunds", "net_revenue", "cogs", "profit", "margin", "signups"]
HIDDEN_FROM_ANALYSTS = {"cogs", "profit", "margin"}


def identity(rng: random.Random) -> SecurityContext:
    """A random person: a country manager, a channel partner, both, an analyst, an auditor, or a manager whose
    token lacks the country claim."""
    kind = rng.choice(["manager", "manager", "partner", "partner", "both", "analyst", "auditor", "claimless"])
    n = rng.randrange(10**6)
    if kind == "manager":
        return SecurityContext(f"m{n}", frozenset({"manager"}), attributes={"country": rng.choice(COUNTRIES)})
    if kind == "partner":
        channels = rng.sample(CHANNELS, rng.randint(1, 2))
        return SecurityContext(f"p{n}", frozenset({"partner"}), attributes={"channels": channels})
    if kind == "both":
        return SecurityContext(f"b{n}", frozenset({"partner", "manager"}), attributes={
            "country": rng.choice(COUNTRIES), "channels": rng.sample(CHANNELS, 1)})
    if kind == "claimless":
        return SecurityContext(f"c{n}", frozenset({"manager"}))
    return SecurityContext(f"{kind[:2]}{n}", frozenset({kind}))


def visible(ctx: SecurityContext) -> list[str]:
    if ctx.roles == {"partner"}:
        return SALES
    if ctx.roles == {"analyst"}:
        return [m for m in EVERYTHING if m not in HIDDEN_FROM_ANALYSTS]
    return EVERYTHING


def condition(ctx: SecurityContext, view: str) -> str:
    """The policies' rows for `view`, by hand: `o` is the order (of a line), `c` the customer."""
    ors = []
    if "manager" in ctx.roles and view in ("orders", "order_lines", "customers"):
        country = ctx.attributes.get("country")
        column = "c.country" if view == "customers" else "o.country"
        ors.append(f"{column} = '{country}'" if country else "false")
    if "partner" in ctx.roles and view in ("orders", "order_lines"):
        ors.append("o.channel in (" + ", ".join(f"'{c}'" for c in ctx.attributes["channels"]) + ")")
    return " or ".join(ors) if ors else "true"


# ---------------------------------------------------------------- random questions


def question(rng: random.Random, ctx: SecurityContext) -> dict:
    metrics_pool = visible(ctx)
    if rng.random() < 0.2:  # a time question: cumulative or offset metrics by day or month
        if rng.random() < 0.5:
            metrics = rng.sample(["revenue", "revenue_mtd", "revenue_7d"], rng.randint(1, 3))
            grain = "day"
            start = dt.date(rng.choice([2024, 2025]), rng.randint(1, 12), 1)
            time_range = (start, (start + dt.timedelta(days=40)).replace(day=1) - dt.timedelta(days=1))
        else:
            metrics, grain, time_range = ["revenue", "revenue_mom"][: rng.randint(1, 2)][::-1], "month", None
        if ctx.roles == {"partner"} or True:
            pass
        filters = rng.sample(["channel = 'web'", "country in ('US', 'DE', 'FR')"], rng.randint(0, 1))
        return {"metrics": metrics, "dims": [f"metric_time__{grain}"], "filters": filters, "time_range": time_range}
    metrics = rng.sample(metrics_pool, rng.randint(1, 3))
    customers_only = "signups" in metrics
    if customers_only:  # customers reach no order dimension: a question they can answer
        metrics = [m for m in metrics if m == "signups" or m not in ()]
        dims_pool, filters_pool = ["country", "metric_time__month", "metric_time__quarter"], [
            "country in ('US', 'DE', 'FR')", "country <> 'GB'"]
        metrics = ["signups"] + [m for m in metrics if m != "signups" and rng.random() < 0.3 and m in
                                 ("revenue", "orders", "buyers")]
    else:
        dims_pool = ["channel", "country", "metric_time__month", "metric_time__quarter"]
        filters_pool = ["channel = 'web'", "channel <> 'app'", "country in ('US', 'DE', 'FR')", "country <> 'GB'"]
    dims = rng.sample(dims_pool, rng.randint(0, 2))
    if sum(d.startswith("metric_time") for d in dims) > 1:
        dims = [d for d in dims if not d.startswith("metric_time")][:1] + ["metric_time__month"]
    filters = rng.sample(filters_pool, rng.randint(0, 1))
    time_range = None
    if rng.random() < 0.5:
        year = rng.choice([2023, 2024, 2025])
        time_range = (dt.date(year, 1, 1), dt.date(year, 12, 31)) if rng.random() < 0.5 else \
            (dt.date(year, 4, 1), dt.date(year, 6, 30))
    return {"metrics": list(dict.fromkeys(metrics)), "dims": dims, "filters": filters, "time_range": time_range}


# ---------------------------------------------------------------- the hand answer

TIME = {"orders": "o.ordered_at", "order_lines": "l.ordered_at", "customers": "c.signed_up_at"}
# each order with its refunds, shipping and fees summed (staged once: every orders question reads it)
ORDER_TOTALS = ("create table hand_orders as select o.*, rf.amount, sh.cost, pf.fee from raw.orders o "
                "left join (select order_id, sum(amount) as amount from raw.refunds group by 1) rf using (order_id) "
                "left join (select order_id, sum(shipping_cost) as cost from raw.shipments group by 1) sh "
                "using (order_id) left join (select order_id, sum(fee) as fee from raw.payments group by 1) pf "
                "using (order_id)")
FROM = {
    "orders": "hand_orders o",
    "order_lines": "raw.order_lines l join raw.orders o using (order_id)",
    "customers": "raw.customers c",
}
SUMS = {  # per view: the sums the metrics are made of
    "orders": {"revenue": "sum(o.total)", "orders": "count(*)", "discounts": "sum(o.discount)",
               "buyers": "count(distinct o.customer_id)", "refunds": "sum(coalesce(o.amount, 0))",
               "shipping": "sum(coalesce(o.cost, 0))", "fees": "sum(coalesce(o.fee, 0))"},
    "order_lines": {"cogs": "sum(l.quantity * l.unit_cost)"},
    "customers": {"signups": "count(*)"},
}


def hand(raw, ctx: SecurityContext, q: dict) -> list[dict]:
    dims, (start, end) = q["dims"], q["time_range"] or (None, None)
    grain = next((d.split("__")[1] for d in dims if d.startswith("metric_time")), None)
    cumulative = bool({"revenue_mtd", "revenue_7d", "revenue_mom"} & set(q["metrics"]))

    def sums(view: str, public: bool = False, ranged: bool = True, day: bool = False) -> dict[tuple, dict]:
        alias = "c" if view == "customers" else "o"
        cols = []
        for d in dims:
            if d.startswith("metric_time"):
                g = "day" if day else d.split("__")[1]
                cols.append(f"date_trunc('{g}', {TIME[view]})::date as \"{d}\"")
            else:
                cols.append(f"{alias}.{d} as \"{d}\"")
        where = ["true" if public else f"({condition(ctx, view)})"]
        where += [f"({alias}.{f.split()[0]} {' '.join(f.split()[1:])})" for f in q["filters"]]
        if start is not None and ranged:
            where.append(f"{TIME[view]} >= '{start}' and {TIME[view]} < '{end + dt.timedelta(days=1)}'")
        select = ", ".join([*cols, *(f"{e} as \"{n}\"" for n, e in SUMS[view].items())])
        group = f" group by {', '.join(str(i + 1) for i in range(len(cols)))}" if cols else ""
        rows = answer(raw, f"select {select} from {FROM[view]} where {' and '.join(where)}{group}")
        return {tuple(r[d] for d in dims): r for r in rows}

    need = set(q["metrics"])
    parts = {}
    if need & {"revenue", "orders", "aov", "discounts", "buyers", "refunds", "net_revenue", "profit", "margin",
               "revenue_share"} or cumulative:
        parts["orders"] = sums("orders", ranged=not cumulative, day=cumulative)
    if need & {"revenue_benchmark", "revenue_share"}:
        parts["public"] = sums("orders", public=True)
    if need & {"cogs", "profit", "margin"}:
        parts["order_lines"] = sums("order_lines")
    if "signups" in need:
        parts["customers"] = sums("customers")
    if cumulative:
        return _over_time(parts["orders"], q, grain, start, end)
    keys = set().union(*(p.keys() for p in parts.values()))
    out = []
    for k in keys:
        o, pub, lines, cust = (parts.get(n, {}).get(k) or {} for n in ("orders", "public", "order_lines",
                                                                         "customers"))
        row = dict(zip(dims, k, strict=True))
        revenue = o.get("revenue")
        net = _minus(revenue, o.get("discounts"), o.get("refunds"))
        costs = None if lines.get("cogs") is None or not o else lines["cogs"] + o["shipping"] + o["fees"]
        profit = _minus(net, costs)
        values = {"revenue": revenue, "orders": o.get("orders"), "discounts": o.get("discounts"),
                  "buyers": o.get("buyers"), "refunds": o.get("refunds"), "net_revenue": net,
                  "aov": _div(revenue, o.get("orders")), "cogs": lines.get("cogs"), "profit": profit,
                  "margin": _div(profit, net), "signups": cust.get("signups"),
                  "revenue_benchmark": pub.get("revenue"), "revenue_share": _div(revenue, pub.get("revenue"))}
        row.update({m: values[m] for m in q["metrics"]})
        out.append(row)
    return out


def _over_time(daily: dict[tuple, dict], q: dict, grain: str, start, end) -> list[dict]:
    """revenue_mtd and revenue_7d by day, revenue_mom by month, from the policy's per-day (or month) revenue."""
    by = {k[0]: r["revenue"] for k, r in daily.items() if r["revenue"] is not None}
    days = sorted(by)
    out = []
    for d in days:
        if grain == "month":
            d = d.replace(day=1)
        if start is not None and not (start <= d <= end):
            continue
        row = {f"metric_time__{grain}": d}
        if grain == "month":
            month = {k: v for k, v in by.items() if k.replace(day=1) == d}
            revenue = sum(month.values())
            before = (d - dt.timedelta(days=1)).replace(day=1)
            prev = [v for k, v in by.items() if k.replace(day=1) == before]
            values = {"revenue": revenue, "revenue_mom": revenue - sum(prev) if prev else None}
        else:
            values = {"revenue": by[d],
                      "revenue_mtd": sum(v for k, v in by.items() if k.replace(day=1) == d.replace(day=1) and k <= d),
                      "revenue_7d": sum(v for k, v in by.items() if d - dt.timedelta(days=6) <= k <= d)}
        row.update({m: values[m] for m in q["metrics"]})
        if row not in out:
            out.append(row)
    return out


def _minus(a, *others):
    if a is None or any(o is None for o in others):
        return None
    return a - sum(others)


def _div(a, b):
    return None if a is None or not b else float(a) / float(b)


# ---------------------------------------------------------------- the doors


SECRET = secrets.token_urlsafe(48)  # the servers' JWT secret (HS256)


def token(ctx: SecurityContext) -> str:
    """A signed JWT saying who `ctx` is: its roles and its claims (country, channels)."""
    claims = {"sub": ctx.user, "roles": sorted(ctx.roles), **ctx.attributes,
              "exp": int(time.time()) + 3600}
    return jwt.encode(claims, SECRET, algorithm="HS256")


def users_file(roster: list[SecurityContext]) -> str:
    """The pg door's users: each person with a password, roles and attributes (docs/auth.md)."""
    return yaml.safe_dump({ctx.user: {"password": password(ctx), "roles": sorted(ctx.roles),
                                      "attributes": ctx.attributes} for ctx in roster})


def password(ctx: SecurityContext) -> str:
    return f"pw-{ctx.user}-{SECRET[:8]}"


def _number(v):
    return Decimal(v) if isinstance(v, str) else v


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def sql_of(q: dict) -> str:
    cols, group = [], []
    for i, d in enumerate(q["dims"]):
        cols.append(f"{d}" if not d.startswith("metric_time") else f"metric_time__{d.split('__')[1]} AS {d}")
        group.append(str(i + 1))
    cols += [f"MEASURE({m}) AS {m}" for m in q["metrics"]]
    where = list(q["filters"])
    if q["time_range"]:
        s, e = q["time_range"]
        where.append(f"metric_time >= DATE '{s}' AND metric_time <= DATE '{e}'")
    return (f"SELECT {', '.join(cols)} FROM metrics" + (f" WHERE {' AND '.join(where)}" if where else "")
            + (f" GROUP BY {', '.join(group)}" if group else ""))


def graphql_of(q: dict) -> str:
    fields = [camel(m) for m in q["metrics"]]
    times = [d.split("__")[1] for d in q["dims"] if d.startswith("metric_time")]
    fields += [d for d in q["dims"] if not d.startswith("metric_time")]
    if times:
        fields.append("metricTime { " + " ".join(times) + " }")
    where = []
    for f in q["filters"]:
        dim, op, rest = f.split(" ", 2)
        if op == "in":
            values = [v.strip(" '") for v in rest.strip("()").split(",")]
            where.append(f"{dim}: {{in: [{', '.join(chr(34) + v + chr(34) for v in values)}]}}")
        else:
            where.append(f"{dim}: {{{'equals' if op == '=' else 'notEquals'}: \"{rest.strip(chr(39))}\"}}")
    args = []
    if where:
        args.append("where: {" + ", ".join(where) + "}")
    if q["time_range"]:
        args.append(f'timeRange: {{start: "{q["time_range"][0]}", end: "{q["time_range"][1]}"}}')
    return "{ query" + (f"({', '.join(args)})" if args else "") + " { " + " ".join(fields) + " } }"


def fields_of(q: dict) -> dict:
    tr = q["time_range"]
    return {"metrics": q["metrics"], "dimensions": q["dims"], "filters": q["filters"],
            "time_range": {"start": tr[0].isoformat(), "end": tr[1].isoformat()} if tr else None}


class Refused(Exception):
    """A door's error answer (its text)."""


class Doors:
    def __init__(self, project, http: str, pg_port: int):
        self.project, self.http, self.pg_port = project, httpx.Client(base_url=http, timeout=60), pg_port
        self.pg: dict[str, psycopg.Connection] = {}
        self.tokens: dict[str, str] = {}

    def ask(self, door: str, ctx: SecurityContext, q: dict) -> list[dict]:
        if door == "library":
            return self.project.scoped(ctx).run(make_query(**fields_of(q))).table.to_pylist()
        headers = {"Authorization": f"Bearer {self.tokens.setdefault(ctx.user, token(ctx))}"}
        if door == "rest":
            r = self.http.post("/api/v1/query", json=fields_of(q), headers=headers)
            if r.status_code != 200:
                raise Refused(r.text)
            body = r.json()
            names = [c["name"] for c in body["columns"]]
            return [dict(zip(names, row, strict=True)) for row in body["rows"]]
        if door == "http_sql":
            r = self.http.post("/api/v1/sql", json={"sql": sql_of(q)}, headers=headers)
            if r.status_code != 200:
                raise Refused(f"{sql_of(q)}: {r.text}")
            body = r.json()
            names = [c["name"] for c in body["columns"]]
            return [dict(zip(names, row, strict=True)) for row in body["rows"]]
        if door == "graphql":
            r = self.http.post("/graphql", json={"query": graphql_of(q)}, headers=headers)
            body = r.json()
            if r.status_code != 200 or body.get("errors"):
                raise Refused(f"{graphql_of(q)}: {body}")
            out = []
            for row in body["data"]["query"]:
                flat = {m: _number(row[camel(m)]) for m in q["metrics"]}  # GraphQL writes decimals as strings
                flat.update({d: row[d] for d in q["dims"] if not d.startswith("metric_time")})
                flat.update({d: row["metricTime"][d.split("__")[1]] for d in q["dims"] if d.startswith("metric_time")})
                out.append(flat)
            return out
        con = self.pg.get(ctx.user)
        if con is None:  # SCRAM, as the user the users file maps to these roles and attributes
            con = self.pg[ctx.user] = psycopg.connect(host="127.0.0.1", port=self.pg_port, user=ctx.user,
                                                      password=password(ctx), dbname="shop", autocommit=True)
        with con.cursor() as cur:
            cur.execute(sql_of(q))
            names = [c.name for c in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def refused(self, door: str, ctx: SecurityContext, metric: str) -> bool:
        """Asking for a hidden metric is refused as unknown, and no value comes back."""
        q = {"metrics": [metric], "dims": [], "filters": [], "time_range": None}
        try:
            got = self.ask(door, ctx, q)
        except (Refused, semantic.QueryError, psycopg.Error) as e:
            return any(w in str(e) for w in ("unknown", "does not exist", "has no column", "Cannot query field"))
        print(f"{door} answered {metric} to {ctx}: {got}")
        return False

    def close(self):
        for con in self.pg.values():
            con.close()
        self.http.close()


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    """Two served copies of one policed shop: one with rollups built, one without any."""
    base = tmp_path_factory.mktemp("rls")
    with_rollups = make_shop(base / "rollups")
    raw = raw_tables(with_rollups)
    raw.execute(ORDER_TOTALS)
    plain = base / "plain"
    shutil.copytree(with_rollups, plain, ignore=shutil.ignore_patterns(".phloem"))
    (plain / "models" / "rollups.yml").unlink()
    rng = random.Random(SEED)
    roster = [identity(rng) for _ in range(PEOPLE)]  # random people, each asking many questions
    users, identities = parse_users_yaml(users_file(roster))
    auth = Authenticator(tokens=Tokens(TokenSettings.from_env({"PHLOEM_JWT_SECRET": SECRET})))
    out, stack = {}, []
    for name, root in (("rollups", with_rollups), ("no_rollups", plain)):
        runtime = Runtime(root, timeout=30)
        runtime.project.build()
        http = LiveServer(create_app(runtime, auth=auth)).__enter__()
        pg = ServerThread(PgServer(runtime, PgConfig(port=0, users=users, identities=identities))).__enter__()
        stack += [http, pg]
        out[name] = Doors(runtime.project, http.url, pg.port)
    yield out, raw, rng, roster
    for doors in out.values():
        doors.close()
    for handle in reversed(stack):
        handle.__exit__(None, None, None)


DOORS = ["library", "rest", "graphql", "http_sql", "pg"]


def test_no_one_ever_sees_a_row_or_total_they_may_not(worlds):
    doors_by_world, raw, rng, roster = worlds
    seed = SEED
    print(f"\nPHLOEM_RLS_SEED={seed}")
    began = time.monotonic()
    asked, checks, refusals = collections.Counter(), 0, 0
    hand_answers: dict[tuple, list[dict]] = {}
    spent = collections.Counter()
    for i in range(QUERIES):
        door = DOORS[i % len(DOORS)]
        world = "rollups" if (i // len(DOORS)) % 2 == 0 else "no_rollups"
        doors = doors_by_world[world]
        ctx = rng.choice(roster)
        q = question(rng, ctx)
        key = (ctx.key(), repr(q))
        t0 = time.monotonic()
        if key not in hand_answers:
            hand_answers[key] = hand(raw, ctx, q)
        spent["hand"] += time.monotonic() - t0
        want = hand_answers[key]
        cache = rng.choice(["off", "warm"])
        if cache == "off":
            with doors.project._lock:
                doors.project.results.clear()
        else:  # someone else asked the same question first: their answer is in the cache
            other = rng.choice([p for p in roster if p is not ctx])
            if all(m in visible(other) for m in q["metrics"]):
                doors.ask(door, other, q)
        t0 = time.monotonic()
        got = doors.ask(door, ctx, q)
        spent[door] += time.monotonic() - t0
        problem = same(got, want, q["dims"], q["metrics"])
        assert problem is None, f"seed {seed}, query {i} via {door} ({world}, cache {cache}) as {ctx}: {q}: {problem}"
        asked[door] += 1
        checks += 1 + sum(len(q["metrics"]) for _ in want)
        if cache == "warm" and rng.random() < 0.3:  # the same identity again: its own cached answer, still right
            again = doors.ask(door, ctx, q)
            assert same(again, want, q["dims"], q["metrics"]) is None
            checks += 1
        hidden = [m for m in EVERYTHING if m not in visible(ctx)]
        if hidden and rng.random() < 0.05:
            assert doors.refused(door, ctx, rng.choice(hidden)), f"seed {seed}: {door} answered a hidden metric"
            refusals += 1
    took = time.monotonic() - began
    print(f"RLS randomized: {sum(asked.values())} queries in {took:.1f} s; per door {dict(asked)}; "
          f"{checks} checks (answers and values); {refusals} hidden-metric refusals; seconds spent: "
          f"{ {k: round(v, 1) for k, v in spent.items()} }")
    assert sum(asked.values()) >= 1000
