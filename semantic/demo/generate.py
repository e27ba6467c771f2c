"""Deterministic synthetic e-commerce business for the Phloem demo.

Everything is generated inside DuckDB with set-based SQL: rows come from ``range()``, every
pseudo-random number is a hash of (row key, seed, salt), so the same ``scale`` and ``seed``
always produce identical tables regardless of thread count, and a different seed gives
different data. No Python-side loops over rows, no ``random()``.

Shape of the business (2023-01-01 .. 2025-12-31):

* order volume follows an hourly weight curve = gentle growth x month seasonality
  (busy November/December, Black Friday..Cyber Monday spike, Christmas dip) x weekday x
  hour-of-day; timestamps are drawn from it by inverse-CDF (ASOF join on cumulative weight);
* customers sign up along the same curve (plus a launch-week cohort in January 2023) and carry a
  log-normal "appetite" weight; each order is given to a customer that had already signed up,
  chosen in proportion to that weight, so a few customers order a lot, many order once and
  some never order;
* lines, shipments, refunds, payments and visits are derived from the orders.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import duckdb

__all__ = ["TABLES", "generate"]

TABLES = ("customers", "visits", "orders", "order_lines", "shipments", "refunds", "payments")

N_PRODUCTS = 200
MIN_CUSTOMERS = 10

# Temporary objects (session-local; dropped when generate() returns).
_MACROS = ("phloem_gen_u", "phloem_gen_int", "phloem_gen_hash")
_TEMP_TABLES = (
    "phloem_gen_hours",
    "phloem_gen_products",
    "phloem_gen_customers",
    "phloem_gen_cust_steps",
    "phloem_gen_orders",
)

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# ---------------------------------------------------------------------------------------------
# SQL. The only values interpolated into these strings are the (validated, quoted) schema
# name, integers (seed, row counts, weight totals) and this module's own constant fragments
# and salts; nothing else comes from the caller.
# phloem_gen_u(key, salt) is a uniform DOUBLE in [0, 1); phloem_gen_int(key, salt, n) is a
# uniform BIGINT in [0, n).  Both are pure functions of (key, seed, salt).
# ---------------------------------------------------------------------------------------------

# hash(k, seed, salt) with several arguments combines the per-argument hashes too weakly
# (two salts give strongly correlated values), so the key is XOR-ed with a per-(seed, salt)
# constant and hashed on its own; DuckDB's 64-bit integer hash mixes that well.
_MACROS_SQL = """
CREATE OR REPLACE TEMP MACRO phloem_gen_hash(k, salt) AS
    hash(xor(k::UBIGINT, hash({seed}, salt)));
CREATE OR REPLACE TEMP MACRO phloem_gen_u(k, salt) AS
    (phloem_gen_hash(k, salt) >> 11) / 9007199254740992.0;
CREATE OR REPLACE TEMP MACRO phloem_gen_int(k, salt, n) AS
    (phloem_gen_hash(k, salt) % n)::BIGINT;
"""

# One row per hour of 2023-01-01 00:00 .. 2025-12-31 22:00 (the last hour is left out so that
# payments, a few minutes after an order, still fall inside 2025).  w = relative volume.
_HOURS_SQL = """
CREATE OR REPLACE TEMP TABLE phloem_gen_hours AS
WITH days AS (
    SELECT
        d,
        (DATE '2023-01-01' + d::INTEGER) AS day
    FROM range(1096) r(d)
),
day_weights AS (
    SELECT
        d,
        day,
        (1.0 + 0.5 * d / 1095.0)                                           -- growth
        * [0.85, 0.80, 0.90, 0.92, 0.95, 0.93, 0.90, 0.92, 0.95, 1.00, 1.20, 1.40][month(day)]
        * [1.08, 1.12, 1.05, 1.00, 0.97, 0.90, 0.88][dayofweek(day) + 1]   -- Sun..Sat
        * CASE
            -- Black Friday .. Cyber Monday (Thanksgiving = 4th Thursday of November)
            WHEN day BETWEEN thanksgiving + 1 AND thanksgiving + 4 THEN 1.8
            WHEN month(day) = 12 AND day(day) = 24 THEN 0.8
            WHEN month(day) = 12 AND day(day) = 25 THEN 0.5
            ELSE 1.0
          END AS factor
    FROM (
        SELECT
            d,
            day,
            make_date(year(day), 11, 1)
                + ((4 - dayofweek(make_date(year(day), 11, 1)) + 7) % 7 + 21)::INTEGER
                AS thanksgiving
        FROM days
    )
),
hours AS (
    SELECT
        day::TIMESTAMP + to_hours(h) AS bucket_start,
        greatest(1, round(1000 * factor * [
            0.35, 0.25, 0.18, 0.14, 0.13, 0.16, 0.28, 0.50, 0.75, 0.95, 1.05, 1.12,
            1.20, 1.18, 1.10, 1.05, 1.05, 1.10, 1.20, 1.35, 1.45, 1.40, 1.10, 0.70
        ][h + 1]))::BIGINT AS w
    FROM day_weights, range(24) r(h)
    WHERE day::TIMESTAMP + to_hours(h) < TIMESTAMP '2025-12-31 23:00:00'
)
SELECT
    bucket_start,
    w,
    sum(w) OVER (ORDER BY bucket_start) - w AS cw_excl
FROM hours
ORDER BY bucket_start
"""

_PRODUCTS_SQL = """
CREATE OR REPLACE TEMP TABLE phloem_gen_products AS
WITH p AS (
    SELECT
        product_id,
        CASE
            WHEN phloem_gen_u(product_id, 'product_category') < 0.30 THEN 'apparel'
            WHEN phloem_gen_u(product_id, 'product_category') < 0.55 THEN 'home'
            WHEN phloem_gen_u(product_id, 'product_category') < 0.75 THEN 'beauty'
            WHEN phloem_gen_u(product_id, 'product_category') < 0.90 THEN 'electronics'
            ELSE 'toys'
        END AS category,
        phloem_gen_u(product_id, 'product_price') AS u_price,
        phloem_gen_u(product_id, 'product_cost') AS u_cost
    FROM range(1, {n_products} + 1) r(product_id)
),
priced AS (
    SELECT
        product_id,
        category,
        -- prices like 24.99; low/high by category, skewed towards the cheap end
        (round(CASE category
            WHEN 'apparel' THEN 15 + 105 * u_price * u_price
            WHEN 'home' THEN 10 + 240 * u_price * u_price
            WHEN 'beauty' THEN 6 + 74 * u_price * u_price
            WHEN 'electronics' THEN 25 + 575 * u_price * u_price
            ELSE 8 + 82 * u_price * u_price
        END) - 0.01)::DECIMAL(10, 2) AS unit_price,
        u_cost
    FROM p
)
SELECT
    product_id,
    category,
    unit_price,
    round(unit_price * (0.35 + 0.35 * u_cost), 2)::DECIMAL(10, 2) AS unit_cost
FROM priced
ORDER BY product_id
"""

# Customers: signed_up_at from the hourly curve (15% launch cohort in the first 7 days;
# customer 1 signs up at the very first instant so every order has an eligible customer).
# weight = log-normal appetite, an integer so that cumulative sums are exact.
_CUSTOMERS_SQL = """
CREATE OR REPLACE TEMP TABLE phloem_gen_customers AS
WITH base AS (
    SELECT
        i,
        phloem_gen_int(i, 'signup_hour', {hours_total}) AS t_target
    FROM range({n_customers}) r(i)
),
timed AS (
    SELECT
        b.i,
        CASE
            WHEN b.i = 0 THEN TIMESTAMP '2023-01-01 00:00:00'
            WHEN phloem_gen_u(b.i, 'launch') < 0.15 THEN TIMESTAMP '2023-01-01 00:00:00'
                + to_microseconds(1 + phloem_gen_int(b.i, 'launch_us', 604799999999))
            ELSE h.bucket_start + to_microseconds(1 + phloem_gen_int(b.i, 'signup_us', 3599999999))
        END AS signed_up_at
    FROM base b
    ASOF JOIN phloem_gen_hours h ON b.t_target >= h.cw_excl
),
attrs AS (
    SELECT
        row_number() OVER (ORDER BY signed_up_at, i) AS customer_id,
        i,
        signed_up_at,
        phloem_gen_u(i, 'country') AS u_country,
        phloem_gen_u(i, 'acquisition') AS u_acq,
        -- exp(standard normal), the normal drawn with Box-Muller
        greatest(1, round(1000 * exp(
            sqrt(-2 * ln(1 - phloem_gen_u(i, 'weight_a'))) * cos(2 * pi() * phloem_gen_u(i, 'weight_b'))
        )))::BIGINT AS weight
    FROM timed
)
SELECT
    customer_id,
    signed_up_at,
    CASE
        WHEN u_country < 0.40 THEN 'US'
        WHEN u_country < 0.52 THEN 'GB'
        WHEN u_country < 0.62 THEN 'CA'
        WHEN u_country < 0.72 THEN 'DE'
        WHEN u_country < 0.80 THEN 'FR'
        WHEN u_country < 0.88 THEN 'AU'
        WHEN u_country < 0.94 THEN 'NL'
        ELSE 'ES'
    END AS country,
    CASE
        WHEN u_acq < 0.35 THEN 'organic'
        WHEN u_acq < 0.60 THEN 'paid_search'
        WHEN u_acq < 0.78 THEN 'social'
        WHEN u_acq < 0.90 THEN 'email'
        ELSE 'affiliate'
    END AS acquisition_channel,
    weight,
    sum(weight) OVER (ORDER BY customer_id) - weight AS cw_excl
FROM attrs
ORDER BY customer_id
"""

# For "pick a customer who signed up before t": the total weight of customers signed up at or
# before each distinct sign-up instant (customer_id order == sign-up order).
_CUST_STEPS_SQL = """
CREATE OR REPLACE TEMP TABLE phloem_gen_cust_steps AS
SELECT signed_up_at, max(cw_excl + weight) AS eligible_w
FROM phloem_gen_customers
GROUP BY signed_up_at
ORDER BY signed_up_at
"""


def _timed_events_sql(n: int, salt: str, hours_total: int) -> str:
    """SELECT (i, ts) for i in [0, n): ts drawn from the hourly volume curve, strictly after
    2023-01-01 00:00:00. `salt` is an internal constant."""
    return f"""
    SELECT
        b.i,
        h.bucket_start + to_microseconds(1 + phloem_gen_int(b.i, '{salt}_us', 3599999999)) AS ts
    FROM (
        SELECT i, phloem_gen_int(i, '{salt}_hour', {hours_total}) AS t_target
        FROM range({n}) r(i)
    ) b
    ASOF JOIN phloem_gen_hours h ON b.t_target >= h.cw_excl
    """


def _assign_customer_sql(events: str, key: str, salt: str) -> str:
    """Give every row of `events` (which has `ts` and a unique integer `key`) a customer who
    signed up strictly before `ts`, chosen in proportion to the customers' weights."""
    return f"""
    SELECT e.*, c.customer_id
    FROM (
        SELECT ev.*, phloem_gen_int(ev.{key}, '{salt}', s.eligible_w) AS c_target
        FROM ({events}) ev
        ASOF JOIN phloem_gen_cust_steps s ON ev.ts > s.signed_up_at
    ) e
    ASOF JOIN phloem_gen_customers c ON e.c_target >= c.cw_excl
    """


def _orders_base_sql(scale: int, hours_total: int) -> str:
    numbered = f"""
        SELECT row_number() OVER (ORDER BY ts, i) AS order_id, ts
        FROM ({_timed_events_sql(scale, "order", hours_total)})
    """
    return f"""
CREATE OR REPLACE TEMP TABLE phloem_gen_orders AS
WITH assigned AS ({_assign_customer_sql(numbered, "order_id", "order_customer")})
SELECT
    a.order_id,
    a.customer_id,
    a.ts AS ordered_at,
    CASE
        WHEN phloem_gen_u(a.order_id, 'channel') < 0.60 THEN 'web'
        WHEN phloem_gen_u(a.order_id, 'channel') < 0.90 THEN 'app'
        ELSE 'marketplace'
    END AS channel,
    c.country,
    CASE
        WHEN phloem_gen_u(a.order_id, 'n_lines') < 0.20 THEN 1
        WHEN phloem_gen_u(a.order_id, 'n_lines') < 0.50 THEN 2
        WHEN phloem_gen_u(a.order_id, 'n_lines') < 0.80 THEN 3
        ELSE 4
    END AS n_lines,
    CASE
        WHEN phloem_gen_u(a.order_id, 'discount') < 0.75 THEN 0
        ELSE 5 * (1 + phloem_gen_int(a.order_id, 'discount_pct', 4))   -- 5, 10, 15 or 20 %
    END AS discount_pct,
    CASE
        WHEN phloem_gen_u(a.order_id, 'shipments') < 0.01 THEN 0
        WHEN phloem_gen_u(a.order_id, 'shipments') < 0.03 THEN 2
        ELSE 1
    END AS n_shipments
FROM assigned a
JOIN phloem_gen_customers c USING (customer_id)
ORDER BY a.order_id
"""


# Product of line k of an order (popularity skew: low product ids sell more).
_PRODUCT_SQL = "1 + floor({n_products} * pow(phloem_gen_u({order_id} * 4 + {k}, 'product'), 1.6))::BIGINT"

_ORDER_LINES_SQL = """
CREATE OR REPLACE TABLE {schema}.order_lines AS
WITH lines AS (
    SELECT
        o.order_id,
        o.customer_id,
        o.ordered_at,
        k AS line_no,
        o.order_id * 4 + k AS line_key,
        {product} AS product_id
    FROM phloem_gen_orders o
    JOIN range(4) r(k) ON r.k < o.n_lines
)
SELECT
    row_number() OVER (ORDER BY l.order_id, l.line_no) AS order_line_id,
    l.order_id,
    l.customer_id,
    l.ordered_at,
    l.product_id,
    p.category,
    CASE
        WHEN phloem_gen_u(l.line_key, 'quantity') < 0.70 THEN 1
        WHEN phloem_gen_u(l.line_key, 'quantity') < 0.90 THEN 2
        WHEN phloem_gen_u(l.line_key, 'quantity') < 0.97 THEN 3
        ELSE 5
    END::INTEGER AS quantity,
    p.unit_price,
    p.unit_cost
FROM lines l
JOIN phloem_gen_products p USING (product_id)
ORDER BY order_line_id
"""

_ORDERS_SQL = """
CREATE OR REPLACE TABLE {schema}.orders AS
WITH totals AS (
    SELECT order_id, sum(quantity * unit_price)::DECIMAL(12, 2) AS total
    FROM {schema}.order_lines
    GROUP BY order_id
)
SELECT
    o.order_id,
    o.customer_id,
    o.ordered_at,
    o.channel,
    o.country,
    t.total,
    round(t.total * o.discount_pct * 0.01, 2)::DECIMAL(12, 2) AS discount
FROM phloem_gen_orders o
JOIN totals t USING (order_id)
ORDER BY o.order_id
"""

_SHIPMENTS_SQL = """
CREATE OR REPLACE TABLE {schema}.shipments AS
WITH s AS (
    SELECT
        o.order_id,
        o.customer_id,
        o.country,
        k,
        o.order_id * 2 + k AS ship_key,
        -- 0.5 .. 5 days after the order
        o.ordered_at + to_microseconds(
            43200000000 + phloem_gen_int(o.order_id * 2 + k, 'shipped_us', 388800000000)
        ) AS shipped_at
    FROM phloem_gen_orders o
    JOIN range(2) r(k) ON r.k < o.n_shipments
),
c AS (
    SELECT
        *,
        phloem_gen_u(ship_key, 'carrier') AS u_carrier
    FROM s
)
SELECT
    row_number() OVER (ORDER BY shipped_at, order_id, k) AS shipment_id,
    order_id,
    customer_id,
    shipped_at,
    CASE
        WHEN country = 'US' THEN
            CASE WHEN u_carrier < 0.40 THEN 'ups' WHEN u_carrier < 0.70 THEN 'usps' ELSE 'fedex' END
        ELSE
            CASE WHEN u_carrier < 0.50 THEN 'dhl' WHEN u_carrier < 0.75 THEN 'ups' ELSE 'fedex' END
    END AS carrier,
    round(
        CASE WHEN country = 'US' THEN 4.0 ELSE 9.0 END
        + 8.0 * phloem_gen_u(ship_key, 'shipping_cost'),
        2
    )::DECIMAL(10, 2) AS shipping_cost
FROM c
ORDER BY shipment_id
"""

# Unshipped orders are always refunded in full (2-5 days later); ~5% of the others get a full
# or partial refund 2-40 days later.  Refunds that would land after 2025-12-31 have not
# happened yet and are left out.
_REFUNDS_SQL = """
CREATE OR REPLACE TABLE {schema}.refunds AS
WITH candidates AS (
    SELECT
        o.order_id,
        o.customer_id,
        o.total - o.discount AS net,
        g.n_shipments = 0 AS unshipped,
        o.ordered_at + to_microseconds(
            2 * 86400000000 + phloem_gen_int(
                o.order_id, 'refund_us',
                CASE WHEN g.n_shipments = 0 THEN 3 ELSE 38 END * 86400000000
            )
        ) AS refunded_at
    FROM {schema}.orders o
    JOIN phloem_gen_orders g USING (order_id)
    WHERE g.n_shipments = 0 OR phloem_gen_u(o.order_id, 'refund') < 0.05
)
SELECT
    row_number() OVER (ORDER BY refunded_at, order_id) AS refund_id,
    order_id,
    customer_id,
    refunded_at,
    CASE
        WHEN unshipped OR phloem_gen_u(order_id, 'refund_full') < 0.40 THEN net
        ELSE least(net, greatest(0.01,
            round(net * (10 + phloem_gen_int(order_id, 'refund_pct', 90)) * 0.01, 2)))
    END::DECIMAL(12, 2) AS amount
FROM candidates
WHERE refunded_at <= TIMESTAMP '2025-12-31 23:59:59.999999'
ORDER BY refund_id
"""

_PAYMENTS_SQL = """
CREATE OR REPLACE TABLE {schema}.payments AS
WITH p AS (
    SELECT
        order_id,
        customer_id,
        total - discount AS net,
        -- 2 seconds .. 15 minutes after the order
        ordered_at + to_microseconds(2000000 + phloem_gen_int(order_id, 'paid_us', 898000000))
            AS paid_at,
        CASE
            WHEN phloem_gen_u(order_id, 'method') < 0.60 THEN 'card'
            WHEN phloem_gen_u(order_id, 'method') < 0.80 THEN 'paypal'
            WHEN phloem_gen_u(order_id, 'method') < 0.92 THEN 'apple_pay'
            ELSE 'bank_transfer'
        END AS method
    FROM {schema}.orders
)
SELECT
    row_number() OVER (ORDER BY paid_at, order_id) AS payment_id,
    order_id,
    customer_id,
    paid_at,
    method,
    CASE
        WHEN method = 'bank_transfer' THEN least(round(net * 0.008, 2), 5.00)
        ELSE round(net * 0.029 + 0.30, 2)
    END::DECIMAL(10, 2) AS fee
FROM p
ORDER BY payment_id
"""

_CUSTOMERS_FINAL_SQL = """
CREATE OR REPLACE TABLE {schema}.customers AS
SELECT customer_id, signed_up_at, country, acquisition_channel
FROM phloem_gen_customers
ORDER BY customer_id
"""

# Visits come in four kinds:
#   1 anonymous browsing, 2 the session an order was placed in (~75% of orders),
#   3 a customer's visits in the two weeks before signing up, 4 customers browsing later.
# Kind 4 tops the others up to exactly 3 x scale.  The parts only produce narrow rows
# (kind, src, customer_id, visited_at, acquisition_channel); the string columns are derived
# from (kind, src) after numbering, so the big sorts do not have to carry them.


def _visit_parts_sql(schema: str, n_anon: int, hours_total: int) -> tuple[str, str, str]:
    anon = f"""
    SELECT 1 AS kind, i AS src, NULL::BIGINT AS customer_id, ts AS visited_at,
           NULL::VARCHAR AS acquisition_channel
    FROM ({_timed_events_sql(n_anon, "anon_visit", hours_total)})
    """
    order_sessions = f"""
    SELECT
        2 AS kind,
        order_id AS src,
        customer_id,
        -- 1 .. 120 minutes before the order
        greatest(TIMESTAMP '2023-01-01 00:00:00', ordered_at - to_microseconds(
            60000000 + phloem_gen_int(order_id, 'session_us', 7140000000))) AS visited_at,
        NULL AS acquisition_channel
    FROM {schema}.orders
    WHERE phloem_gen_u(order_id, 'session') < 0.75
    """
    pre_signup = """
    SELECT *
    FROM (
        SELECT
            3 AS kind,
            c.customer_id * 4 + r.k AS src,
            c.customer_id,
            c.signed_up_at - to_microseconds(
                600000000 + phloem_gen_int(c.customer_id * 4 + r.k, 'pre_us', 14 * 86400000000)
            ) AS visited_at,
            c.acquisition_channel
        FROM phloem_gen_customers c
        JOIN range(3) r(k)
            ON phloem_gen_u(c.customer_id * 4 + r.k, 'pre_visit') < [0.7, 0.35, 0.15][r.k + 1]
    )
    -- a customer who signed up right at the start has no earlier visits
    WHERE visited_at >= TIMESTAMP '2023-01-01 00:00:00'
    """
    return anon, order_sessions, pre_signup


def _browse_sql(n: int, hours_total: int) -> str:
    events = _timed_events_sql(n, "browse", hours_total)
    return f"""
    SELECT 4 AS kind, i AS src, customer_id, ts AS visited_at, NULL AS acquisition_channel
    FROM ({_assign_customer_sql(events, "i", "browse_customer")})
    """


_VISITS_SQL = """
CREATE OR REPLACE TABLE {schema}.visits AS
WITH numbered AS (
    SELECT
        row_number() OVER (ORDER BY visited_at, kind, src) AS visit_id,
        kind,
        src,
        src * 4 + kind AS vkey,
        customer_id,
        visited_at,
        acquisition_channel
    FROM ({parts})
)
SELECT
    visit_id,
    customer_id,
    CASE WHEN kind = 1 THEN 'anon-' || (1 + phloem_gen_int(src, 'anon_id', {n_anonymous_ids})) END
        AS anonymous_id,
    visited_at,
    CASE
        -- half of the order sessions land on the product of the order's first line
        WHEN kind = 2 AND phloem_gen_u(vkey, 'session_landing') < 0.5 THEN '/products/' || {first_product}
        WHEN phloem_gen_u(vkey, 'landing') < 0.30 THEN '/'
        WHEN phloem_gen_u(vkey, 'landing') < 0.42 THEN '/sale'
        WHEN phloem_gen_u(vkey, 'landing') < 0.65 THEN '/category/'
            || ['apparel', 'home', 'beauty', 'electronics', 'toys'][1 + phloem_gen_int(vkey, 'landing_cat', 5)]
        ELSE '/products/' || (1 + phloem_gen_int(vkey, 'landing_product', {n_products}))
    END AS landing_page,
    CASE
        -- before signing up, the referrer matches how the customer was acquired
        WHEN kind = 3 THEN
            CASE acquisition_channel
                WHEN 'organic' THEN
                    CASE WHEN phloem_gen_u(vkey, 'pre_ref') < 0.8 THEN 'google.com' ELSE 'bing.com' END
                WHEN 'paid_search' THEN 'googleads.g.doubleclick.net'
                WHEN 'social' THEN
                    CASE
                        WHEN phloem_gen_u(vkey, 'pre_ref') < 0.4 THEN 'instagram.com'
                        WHEN phloem_gen_u(vkey, 'pre_ref') < 0.8 THEN 'facebook.com'
                        ELSE 'tiktok.com'
                    END
                WHEN 'email' THEN 'newsletter'
                ELSE 'partner-site.com'
            END
        WHEN phloem_gen_u(vkey, 'referrer') < 0.30 THEN 'direct'
        WHEN phloem_gen_u(vkey, 'referrer') < 0.60 THEN 'google.com'
        WHEN phloem_gen_u(vkey, 'referrer') < 0.64 THEN 'bing.com'
        WHEN phloem_gen_u(vkey, 'referrer') < 0.72 THEN 'facebook.com'
        WHEN phloem_gen_u(vkey, 'referrer') < 0.80 THEN 'instagram.com'
        WHEN phloem_gen_u(vkey, 'referrer') < 0.85 THEN 'tiktok.com'
        WHEN phloem_gen_u(vkey, 'referrer') < 0.93 THEN 'newsletter'
        ELSE 'partner-site.com'
    END AS referrer
FROM numbered
ORDER BY visit_id
"""


def _scalar(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    # fetchall() so that no half-read result is left open on the caller's connection
    ((value,),) = con.execute(sql).fetchall()
    return int(value)


STEPS = 12  # progress calls of generate(): the helpers, then each raw table, then the counts


def generate(
    con: duckdb.DuckDBPyConnection, scale: int = 100_000, seed: int = 7, schema: str = "raw",
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, int]:
    """(Re)create the demo's raw tables in `schema`; returns row counts per table. `scale` = number of orders.

    `progress(step, done, total)` is called before each step and once when all are done.
    """
    done = 0

    def step(name: str) -> None:
        nonlocal done
        if progress:
            progress(name, done, STEPS)
        done += 1

    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if not _IDENT.match(schema):
        raise ValueError(f"schema must be a plain identifier, got {schema!r}")

    q = f'"{schema}"'
    n_customers = max(MIN_CUSTOMERS, scale // 4)
    n_visits = 3 * scale
    n_anon = n_visits * 3 // 10

    con.execute(f"CREATE SCHEMA IF NOT EXISTS {q}")
    try:
        for stmt in _MACROS_SQL.format(seed=int(seed)).split(";"):
            if stmt.strip():
                con.execute(stmt)
        step("calendar")
        con.execute(_HOURS_SQL)
        hours_total = _scalar(con, "SELECT sum(w)::BIGINT FROM phloem_gen_hours")
        step("products")
        con.execute(_PRODUCTS_SQL.format(n_products=N_PRODUCTS))
        step("customers")
        con.execute(_CUSTOMERS_SQL.format(n_customers=n_customers, hours_total=hours_total))
        con.execute(_CUST_STEPS_SQL)
        step("order times")
        con.execute(_orders_base_sql(scale, hours_total))

        step("customers table")
        con.execute(_CUSTOMERS_FINAL_SQL.format(schema=q))
        step("order_lines")
        con.execute(
            _ORDER_LINES_SQL.format(
                schema=q,
                product=_PRODUCT_SQL.format(n_products=N_PRODUCTS, order_id="o.order_id", k="k"),
            )
        )
        step("orders")
        con.execute(_ORDERS_SQL.format(schema=q))
        step("shipments")
        con.execute(_SHIPMENTS_SQL.format(schema=q))
        step("refunds")
        con.execute(_REFUNDS_SQL.format(schema=q))
        step("payments")
        con.execute(_PAYMENTS_SQL.format(schema=q))

        # helpers that are no longer needed: free their memory before the biggest table
        con.execute("DROP TABLE temp.main.phloem_gen_orders")
        con.execute("DROP TABLE temp.main.phloem_gen_products")

        # visits: the browse part tops the others up to exactly 3 x scale
        step("visits")
        anon, order_sessions, pre_signup = _visit_parts_sql(q, n_anon, hours_total)
        n_sessions = _scalar(con, f"SELECT count(*) FROM ({order_sessions})")
        n_pre_signup = _scalar(con, f"SELECT count(*) FROM ({pre_signup})")
        n_browse = max(0, n_visits - n_anon - n_sessions - n_pre_signup)
        parts = [anon, order_sessions, pre_signup]
        if n_browse:
            parts.append(_browse_sql(n_browse, hours_total))
        con.execute(
            _VISITS_SQL.format(
                schema=q,
                parts=" UNION ALL ".join(f"({part})" for part in parts),
                n_anonymous_ids=max(1, n_anon // 3),
                first_product=_PRODUCT_SQL.format(n_products=N_PRODUCTS, order_id="src", k=0),
                n_products=N_PRODUCTS,
            )
        )
    finally:
        for table in _TEMP_TABLES:
            con.execute(f"DROP TABLE IF EXISTS temp.main.{table}")
        for macro in _MACROS:
            con.execute(f"DROP MACRO IF EXISTS temp.main.{macro}")

    step("counting rows")
    counts = {table: _scalar(con, f"SELECT count(*) FROM {q}.{table}") for table in TABLES}
    if progress:
        progress("done", STEPS, STEPS)
    return counts
