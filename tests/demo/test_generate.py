"""Tests for the synthetic demo data generator (semantic/demo/generate.py)."""

from __future__ import annotations

import time

import duckdb
import pytest

from semantic.demo.generate import TABLES, generate

SCALE = 10_000


def _rows(con: duckdb.DuckDBPyConnection, sql: str) -> list[tuple]:
    return con.execute(sql).fetchall()


def _scalar(con: duckdb.DuckDBPyConnection, sql: str):
    ((value,),) = _rows(con, sql)
    return value


def _checksums(con: duckdb.DuckDBPyConnection, schema: str = "raw") -> dict[str, tuple[int, int]]:
    """Order-independent fingerprint of every table: (row count, sum of row hashes)."""
    return {
        table: tuple(_rows(con, f"SELECT count(*), sum(hash(t)) FROM {schema}.{table} t")[0])
        for table in TABLES
    }


@pytest.fixture(scope="module")
def con() -> duckdb.DuckDBPyConnection:
    connection = duckdb.connect()
    generate(connection, scale=SCALE, seed=7)
    yield connection
    connection.close()


# --- determinism ---------------------------------------------------------------------------


def test_same_seed_gives_identical_tables(con):
    other = duckdb.connect()
    generate(other, scale=SCALE, seed=7)
    first, second = _checksums(con), _checksums(other)
    assert first == second
    assert all(count > 0 for count, _ in first.values())


def test_same_seed_identical_with_different_thread_counts():
    single, multi = duckdb.connect(), duckdb.connect()
    single.execute("SET threads = 1")
    multi.execute("SET threads = 4")
    generate(single, scale=3_000, seed=11)
    generate(multi, scale=3_000, seed=11)
    assert _checksums(single) == _checksums(multi)


def test_other_seed_gives_different_data(con):
    other = duckdb.connect()
    generate(other, scale=SCALE, seed=8)
    first, second = _checksums(con), _checksums(other)
    assert first["orders"][0] == second["orders"][0] == SCALE
    for table in TABLES:
        assert first[table][1] != second[table][1], table


def test_regenerating_replaces_tables_and_custom_schema():
    connection = duckdb.connect()
    generate(connection, scale=500, seed=1, schema="demo_raw")
    counts = generate(connection, scale=300, seed=1, schema="demo_raw")
    assert counts["orders"] == 300
    assert _scalar(connection, "SELECT count(*) FROM demo_raw.orders") == 300
    # no helper objects leak into the session
    leftovers = _scalar(
        connection,
        "SELECT count(*) FROM duckdb_tables() WHERE table_name LIKE 'phloem_gen%'",
    )
    assert leftovers == 0
    with pytest.raises(duckdb.Error):
        connection.execute("SELECT phloem_gen_u(1, 'x')").fetchall()


def test_rejects_bad_arguments():
    connection = duckdb.connect()
    with pytest.raises(ValueError):
        generate(connection, scale=0)
    with pytest.raises(ValueError):
        generate(connection, scale=10, schema="raw; DROP TABLE x")


# --- row counts and shapes -----------------------------------------------------------------


def test_row_counts(con):
    counts = {t: _scalar(con, f"SELECT count(*) FROM raw.{t}") for t in TABLES}
    assert counts["orders"] == SCALE
    assert counts["payments"] == SCALE
    assert SCALE < counts["order_lines"] < 4 * SCALE
    assert 2.2 * SCALE < counts["order_lines"] < 2.8 * SCALE
    assert counts["visits"] == 3 * SCALE
    assert counts["customers"] == SCALE // 4
    assert 0.95 * SCALE < counts["shipments"] < 1.06 * SCALE
    assert 0.04 * SCALE < counts["refunds"] < 0.08 * SCALE


def test_returned_counts_match_tables():
    connection = duckdb.connect()
    counts = generate(connection, scale=40, seed=3)
    assert set(counts) == set(TABLES)
    for table, count in counts.items():
        assert _scalar(connection, f"SELECT count(*) FROM raw.{table}") == count
    assert counts["customers"] == 10  # at least 10 customers even for tiny scales
    assert counts["orders"] == 40


def test_column_types(con):
    expected = {
        "customers": [
            ("customer_id", "BIGINT"),
            ("signed_up_at", "TIMESTAMP"),
            ("country", "VARCHAR"),
            ("acquisition_channel", "VARCHAR"),
        ],
        "visits": [
            ("visit_id", "BIGINT"),
            ("customer_id", "BIGINT"),
            ("anonymous_id", "VARCHAR"),
            ("visited_at", "TIMESTAMP"),
            ("landing_page", "VARCHAR"),
            ("referrer", "VARCHAR"),
        ],
        "orders": [
            ("order_id", "BIGINT"),
            ("customer_id", "BIGINT"),
            ("ordered_at", "TIMESTAMP"),
            ("channel", "VARCHAR"),
            ("country", "VARCHAR"),
            ("total", "DECIMAL(12,2)"),
            ("discount", "DECIMAL(12,2)"),
        ],
        "order_lines": [
            ("order_line_id", "BIGINT"),
            ("order_id", "BIGINT"),
            ("customer_id", "BIGINT"),
            ("ordered_at", "TIMESTAMP"),
            ("product_id", "BIGINT"),
            ("category", "VARCHAR"),
            ("quantity", "INTEGER"),
            ("unit_price", "DECIMAL(10,2)"),
            ("unit_cost", "DECIMAL(10,2)"),
        ],
        "shipments": [
            ("shipment_id", "BIGINT"),
            ("order_id", "BIGINT"),
            ("customer_id", "BIGINT"),
            ("shipped_at", "TIMESTAMP"),
            ("carrier", "VARCHAR"),
            ("shipping_cost", "DECIMAL(10,2)"),
        ],
        "refunds": [
            ("refund_id", "BIGINT"),
            ("order_id", "BIGINT"),
            ("customer_id", "BIGINT"),
            ("refunded_at", "TIMESTAMP"),
            ("amount", "DECIMAL(12,2)"),
        ],
        "payments": [
            ("payment_id", "BIGINT"),
            ("order_id", "BIGINT"),
            ("customer_id", "BIGINT"),
            ("paid_at", "TIMESTAMP"),
            ("method", "VARCHAR"),
            ("fee", "DECIMAL(10,2)"),
        ],
    }
    for table, columns in expected.items():
        actual = _rows(
            con,
            f"""SELECT column_name, data_type FROM information_schema.columns
                WHERE table_schema = 'raw' AND table_name = '{table}' ORDER BY ordinal_position""",
        )
        assert actual == columns, table


def test_ids_are_unique_and_dense(con):
    for table, key in [
        ("customers", "customer_id"),
        ("visits", "visit_id"),
        ("orders", "order_id"),
        ("order_lines", "order_line_id"),
        ("shipments", "shipment_id"),
        ("refunds", "refund_id"),
        ("payments", "payment_id"),
    ]:
        n, distinct, lo, hi = _rows(
            con, f"SELECT count(*), count(DISTINCT {key}), min({key}), max({key}) FROM raw.{table}"
        )[0]
        assert n == distinct == hi and lo == 1, table


def test_categorical_values(con):
    def values(sql: str) -> set:
        return {row[0] for row in _rows(con, sql)}

    countries = {"US", "CA", "GB", "DE", "FR", "AU", "NL", "ES"}
    assert values("SELECT DISTINCT country FROM raw.customers") == countries
    top_country = _scalar(con, "SELECT country FROM raw.customers GROUP BY 1 ORDER BY count(*) DESC LIMIT 1")
    assert top_country == "US"
    acquisition = {"organic", "paid_search", "social", "email", "affiliate"}
    assert values("SELECT DISTINCT acquisition_channel FROM raw.customers") == acquisition
    assert values("SELECT DISTINCT channel FROM raw.orders") == {"web", "app", "marketplace"}
    top_channel = _scalar(con, "SELECT channel FROM raw.orders GROUP BY 1 ORDER BY count(*) DESC LIMIT 1")
    assert top_channel == "web"
    categories = {"apparel", "home", "beauty", "electronics", "toys"}
    assert values("SELECT DISTINCT category FROM raw.order_lines") == categories
    assert values("SELECT DISTINCT carrier FROM raw.shipments") == {"ups", "fedex", "dhl", "usps"}
    methods = {"card", "paypal", "apple_pay", "bank_transfer"}
    assert values("SELECT DISTINCT method FROM raw.payments") == methods


# --- invariants ----------------------------------------------------------------------------


def test_order_totals_equal_line_sums(con):
    mismatches = _scalar(
        con,
        """
        SELECT count(*)
        FROM raw.orders o
        LEFT JOIN (
            SELECT order_id, sum(quantity * unit_price) AS s, count(*) AS n
            FROM raw.order_lines GROUP BY order_id
        ) l USING (order_id)
        WHERE l.s IS DISTINCT FROM o.total OR l.n NOT BETWEEN 1 AND 4
        """,
    )
    assert mismatches == 0
    orphan_lines = _scalar(
        con, "SELECT count(*) FROM raw.order_lines WHERE order_id NOT IN (SELECT order_id FROM raw.orders)"
    )
    assert orphan_lines == 0


def test_order_lines_copy_order_fields(con):
    bad = _scalar(
        con,
        """
        SELECT count(*) FROM raw.order_lines l JOIN raw.orders o USING (order_id)
        WHERE l.customer_id <> o.customer_id OR l.ordered_at <> o.ordered_at
           OR l.quantity < 1 OR l.unit_price <= 0
        """,
    )
    assert bad == 0


def test_products_are_stable(con):
    n_products, unstable = _rows(
        con,
        """
        SELECT count(*), count(*) FILTER (WHERE n_variants > 1)
        FROM (
            SELECT product_id, count(DISTINCT (category, unit_price, unit_cost)) AS n_variants
            FROM raw.order_lines GROUP BY product_id
        )
        """,
    )[0]
    assert unstable == 0
    assert 150 <= n_products <= 200
    bad_cost = _scalar(
        con,
        """SELECT count(*) FROM raw.order_lines
           WHERE unit_cost < 0.34 * unit_price OR unit_cost > 0.71 * unit_price""",
    )
    assert bad_cost == 0


def test_discounts(con):
    n_discounted, bad = _rows(
        con,
        """
        SELECT
            count(*) FILTER (WHERE discount > 0),
            count(*) FILTER (WHERE discount < 0 OR discount > total
                OR (discount > 0 AND (discount < round(total * 0.05, 2) - 0.01
                                      OR discount > round(total * 0.20, 2) + 0.01)))
        FROM raw.orders
        """,
    )[0]
    assert bad == 0
    assert 0.1 * SCALE < n_discounted < 0.5 * SCALE  # most orders have no discount


def test_orders_belong_to_existing_customers_after_signup(con):
    orphans = _scalar(
        con,
        """
        SELECT count(*) FROM raw.orders o LEFT JOIN raw.customers c USING (customer_id)
        WHERE c.customer_id IS NULL OR o.ordered_at <= c.signed_up_at OR o.country <> c.country
        """,
    )
    assert orphans == 0


def test_customer_order_counts_are_skewed(con):
    never, once, most = _rows(
        con,
        """
        SELECT count(*) FILTER (WHERE n = 0), count(*) FILTER (WHERE n = 1), max(n)
        FROM (
            SELECT c.customer_id, count(o.order_id) AS n
            FROM raw.customers c LEFT JOIN raw.orders o USING (customer_id)
            GROUP BY c.customer_id
        )
        """,
    )[0]
    assert never > 0
    assert once > 0.1 * (SCALE // 4)
    assert most >= 20


def test_independent_attributes_are_uncorrelated(con):
    # Each attribute has its own salt; a weak hash mix makes e.g. payment method and basket
    # size move together.  Average order value must not depend on channel or payment method.
    for sql in (
        "SELECT channel, avg(total) FROM raw.orders GROUP BY 1",
        """SELECT p.method, avg(o.total) FROM raw.orders o JOIN raw.payments p USING (order_id)
           GROUP BY 1""",
    ):
        averages = [float(avg) for _, avg in _rows(con, sql)]
        assert max(averages) < 1.15 * min(averages), sql


def test_timestamps_in_range(con):
    checks = {
        "customers": "signed_up_at",
        "visits": "visited_at",
        "orders": "ordered_at",
        "order_lines": "ordered_at",
        "refunds": "refunded_at",
        "payments": "paid_at",
    }
    for table, column in checks.items():
        out_of_range = _scalar(
            con,
            f"""SELECT count(*) FROM raw.{table}
                WHERE {column} IS NULL OR {column} < TIMESTAMP '2023-01-01'
                   OR {column} >= TIMESTAMP '2026-01-01'""",
        )
        assert out_of_range == 0, table


def test_monthly_volume_has_shape(con):
    by_month = dict(_rows(con, "SELECT strftime(ordered_at, '%Y-%m'), count(*) FROM raw.orders GROUP BY 1"))
    assert len(by_month) == 36
    for year in (2023, 2024, 2025):
        assert by_month[f"{year}-12"] > 1.2 * by_month[f"{year}-06"]
    year_totals = [sum(v for k, v in by_month.items() if k.startswith(str(y))) for y in (2023, 2024, 2025)]
    assert year_totals[0] < year_totals[1] < year_totals[2]


def test_shipments(con):
    orphans = _scalar(
        con,
        """
        SELECT count(*) FROM raw.shipments s LEFT JOIN raw.orders o USING (order_id)
        WHERE o.order_id IS NULL OR s.customer_id <> o.customer_id
           OR s.shipped_at < o.ordered_at + INTERVAL 12 HOUR
           OR s.shipped_at > o.ordered_at + INTERVAL 5 DAY
           OR s.shipping_cost <= 0
        """,
    )
    assert orphans == 0
    per_order = dict(
        _rows(
            con,
            """
            SELECT n, count(*) FROM (
                SELECT o.order_id, count(s.shipment_id) AS n
                FROM raw.orders o LEFT JOIN raw.shipments s USING (order_id) GROUP BY 1
            ) GROUP BY n
            """,
        )
    )
    assert set(per_order) <= {0, 1, 2}
    assert per_order[1] > 0.94 * SCALE
    assert 0 < per_order.get(2, 0) < 0.04 * SCALE
    assert 0 < per_order.get(0, 0) < 0.03 * SCALE


def test_refunds(con):
    bad = _scalar(
        con,
        """
        SELECT count(*) FROM raw.refunds r LEFT JOIN raw.orders o USING (order_id)
        WHERE o.order_id IS NULL OR r.customer_id <> o.customer_id
           OR r.amount <= 0 OR r.amount > o.total - o.discount
           OR r.amount < round((o.total - o.discount) * 0.10, 2) - 0.01
           OR r.refunded_at < o.ordered_at + INTERVAL 2 DAY
           OR r.refunded_at > o.ordered_at + INTERVAL 40 DAY
        """,
    )
    assert bad == 0
    assert _scalar(con, "SELECT count(*) - count(DISTINCT order_id) FROM raw.refunds") == 0


def test_payments(con):
    bad = _scalar(
        con,
        """
        SELECT count(*) FROM raw.payments p LEFT JOIN raw.orders o USING (order_id)
        WHERE o.order_id IS NULL OR p.customer_id <> o.customer_id
           OR p.paid_at <= o.ordered_at OR p.paid_at > o.ordered_at + INTERVAL 1 HOUR
           OR p.fee <= 0
           OR (p.method <> 'bank_transfer'
               AND p.fee <> round((o.total - o.discount) * 0.029 + 0.30, 2))
           OR (p.method = 'bank_transfer'
               AND p.fee >= round((o.total - o.discount) * 0.029 + 0.30, 2))
        """,
    )
    assert bad == 0
    assert _scalar(con, "SELECT count(DISTINCT order_id) FROM raw.payments") == SCALE


def test_visits(con):
    anonymous, bad, linked_customers = _rows(
        con,
        """
        SELECT
            count(*) FILTER (WHERE customer_id IS NULL),
            count(*) FILTER (WHERE (customer_id IS NULL) = (anonymous_id IS NULL)
                OR (anonymous_id IS NOT NULL AND NOT anonymous_id LIKE 'anon-%')),
            count(DISTINCT customer_id)
        FROM raw.visits
        """,
    )[0]
    assert bad == 0
    assert 0.25 * 3 * SCALE < anonymous < 0.35 * 3 * SCALE
    assert linked_customers > 0.5 * (SCALE // 4)
    unknown_customers = _scalar(
        con,
        "SELECT count(*) FROM raw.visits WHERE customer_id NOT IN (SELECT customer_id FROM raw.customers)",
    )
    assert unknown_customers == 0
    before, after = _rows(
        con,
        """
        SELECT count(*) FILTER (WHERE v.visited_at < c.signed_up_at),
               count(*) FILTER (WHERE v.visited_at >= c.signed_up_at)
        FROM raw.visits v JOIN raw.customers c USING (customer_id)
        """,
    )[0]
    assert 0 < before < after


# --- speed ---------------------------------------------------------------------------------


def test_10k_run_is_fast():
    connection = duckdb.connect()
    start = time.perf_counter()
    counts = generate(connection, scale=10_000, seed=42)
    elapsed = time.perf_counter() - start
    assert counts["orders"] == 10_000
    assert elapsed < 5.0, f"generate(scale=10_000) took {elapsed:.2f}s"
