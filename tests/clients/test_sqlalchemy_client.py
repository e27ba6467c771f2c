"""SQLAlchemy 2 (psycopg 3 dialect, `postgresql+psycopg://`) against the live door: the Inspector's reflection
and Core queries over a reflected Table, each answer compared with `project.query(...)`."""

from __future__ import annotations

import datetime as dt
import warnings
from decimal import Decimal

import pytest
import sqlalchemy as sa
from sqlalchemy import exc, func, inspect, select, types

VIEWS = ["orders", "order_lines", "customers", "visits"]  # the demo's (checked against its model below)


@pytest.fixture(scope="module")
def engine(server):
    engine = sa.create_engine(server.sqlalchemy_url(), pool_size=2)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def keys_engine(keys_server):
    engine = sa.create_engine(keys_server.sqlalchemy_url(), pool_size=1)
    yield engine
    engine.dispose()


@pytest.fixture
def strict():
    """SQLAlchemy warns (and reflects NullType) on a type it does not recognise: make that an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", exc.SAWarning)
        yield


def test_inspector_lists_schemas_tables_and_no_views(engine, server, strict):
    assert list(server.project.model.views) == VIEWS
    inspector = inspect(engine)
    assert inspector.get_schema_names() == ["information_schema", "public"]
    assert inspector.default_schema_name == "public"
    assert sorted(inspector.get_table_names()) == sorted([*VIEWS, "metrics"])
    assert sorted(inspector.get_table_names(schema="public")) == sorted([*VIEWS, "metrics"])
    assert inspector.get_view_names() == []
    assert inspector.has_table("orders") and not inspector.has_table("no_such_table")


ORDERS_TYPES = {  # column -> (SQLAlchemy generic type it must be, exact PostgreSQL dialect type name)
    "channel": (types.String, "TEXT"), "country": (types.String, "TEXT"),
    "acquisition_channel": (types.String, "TEXT"), "ordered_at": (types.Date, "DATE"),
    "is_first_order": (types.Boolean, "BOOLEAN"), "gross_revenue": (types.Numeric, "NUMERIC"),
    "discounts": (types.Numeric, "NUMERIC"), "refunded": (types.Numeric, "NUMERIC"),
    "shipping_cost": (types.Numeric, "NUMERIC"), "payment_fees": (types.Numeric, "NUMERIC"),
    "orders": (types.Integer, "BIGINT"), "buyers": (types.Integer, "BIGINT"), "new_buyers": (types.Integer, "BIGINT"),
    "median_order_value": (types.Float, "DOUBLE_PRECISION"),
}


def test_inspector_columns_of_orders_carry_sqlalchemy_types_and_comments(engine, server, strict):
    columns = inspect(engine).get_columns("orders")
    assert [c["name"] for c in columns] == list(ORDERS_TYPES)
    for column in columns:
        generic, name = ORDERS_TYPES[column["name"]]
        assert isinstance(column["type"], generic), column
        assert type(column["type"]).__name__ == name, column
        assert column["nullable"] is True and column["default"] is None
    by_name = {c["name"]: c for c in columns}
    assert by_name["gross_revenue"]["type"].scale == 2  # decimal128(38, 2) in the project
    answer = server.project.query(metrics=["orders.gross_revenue", "orders.orders"], dimensions=["channel"])
    assert str(answer.schema.field("orders.gross_revenue").type) == "decimal128(38, 2)"
    assert by_name["gross_revenue"]["comment"] == "sum(gross_revenue)"  # what the measure computes
    assert by_name["new_buyers"]["comment"] == "count_distinct(customer) where order_number = 1"
    assert by_name["channel"]["comment"] is None


def test_every_column_of_every_table_reflects_to_a_known_type(engine, server, strict):
    inspector = inspect(engine)
    for table in [*VIEWS, "metrics"]:
        for column in inspector.get_columns(table):
            assert not isinstance(column["type"], types.NullType), (table, column)
    metrics = {c["name"]: c for c in inspector.get_columns("metrics")}
    model = server.project.model
    for metric in model.metrics.values():
        assert metric.name in metrics, metric.name
        if metric.description:
            assert metrics[metric.name]["comment"] == metric.description
    assert isinstance(metrics["metric_time"]["type"], types.Date)
    assert isinstance(metrics["revenue"]["type"], types.Numeric)
    assert isinstance(metrics["margin"]["type"], types.Float)
    assert isinstance(metrics["converted"]["type"], types.Boolean)


def test_table_comments(engine, strict):
    inspector = inspect(engine)
    assert inspector.get_table_comment("metrics") == {"text": "every metric, by every dimension its views share"}
    assert inspector.get_table_comment("orders") == {"text": None}  # the demo's views have no description


def test_the_demo_views_show_no_keys(engine, strict):
    """The demo's views keep their keys out of their dimensions: nothing to reflect, and no error."""
    inspector = inspect(engine)
    assert inspector.get_pk_constraint("orders")["constrained_columns"] == []
    assert inspector.get_foreign_keys("orders") == []
    assert inspector.get_indexes("orders") == []
    assert inspector.get_unique_constraints("orders") == []
    assert inspector.get_check_constraints("orders") == []


def test_keys_variant_reflects_primary_and_foreign_keys(keys_engine, strict):
    inspector = inspect(keys_engine)
    assert inspector.get_pk_constraint("orders")["constrained_columns"] == ["order_id"]
    assert inspector.get_pk_constraint("customers")["constrained_columns"] == ["customer"]
    assert inspector.get_pk_constraint("metrics")["constrained_columns"] == []
    foreign = inspector.get_foreign_keys("orders")
    assert [(f["constrained_columns"], f["referred_schema"], f["referred_table"], f["referred_columns"])
            for f in foreign] == [(["customer"], None, "customers", ["customer"])]
    assert inspector.get_foreign_keys("customers") == []
    # the primary key's index is in the catalog, but not one of get_indexes' (SQLAlchemy leaves it out)
    assert inspector.get_indexes("orders") == []
    with keys_engine.connect() as conn:
        indexes = conn.execute(sa.text("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'orders'")).all()
    assert len(indexes) == 1 and "UNIQUE INDEX" in indexes[0].indexdef and "(order_id)" in indexes[0].indexdef
    assert inspector.get_unique_constraints("orders") == []
    orders = {c["name"]: c["type"] for c in inspector.get_columns("orders")}
    customers = {c["name"]: c["type"] for c in inspector.get_columns("customers")}
    assert isinstance(orders["order_id"], types.Integer | types.String)
    assert type(orders["customer"]) is type(customers["customer"])  # the key and its reference agree


def test_keys_variant_reflected_table_knows_its_keys(keys_engine, strict):
    metadata = sa.MetaData()
    orders = sa.Table("orders", metadata, autoload_with=keys_engine, resolve_fks=True)
    assert [c.name for c in orders.primary_key.columns] == ["order_id"]
    assert [(fk.parent.name, fk.column.table.name, fk.column.name) for fk in orders.foreign_keys] == [
        ("customer", "customers", "customer")]
    assert "customers" in metadata.tables  # resolve_fks reflected the referred table too
    assert [c.name for c in metadata.tables["customers"].primary_key.columns] == ["customer"]


# ------------------------------------------------------------------------------------------------ Core

def _reflect(engine, name: str) -> sa.Table:
    return sa.Table(name, sa.MetaData(), autoload_with=engine)


def test_core_sum_by_channel_over_a_reflected_table_equals_the_library(engine, server, strict):
    orders = _reflect(engine, "orders")
    query = select(orders.c.channel, func.sum(orders.c.gross_revenue).label("gross_revenue")).group_by(orders.c.channel)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    want = server.project.query(metrics=["orders.gross_revenue"], dimensions=["channel"]).to_pylist()
    assert sorted((r.channel, r.gross_revenue) for r in rows) == sorted(
        (w["channel"], w["orders.gross_revenue"]) for w in want)
    assert all(isinstance(r.gross_revenue, Decimal) for r in rows)
    assert len(rows) == 3


def test_core_bound_parameters_where_order_and_limit(engine, server, strict):
    """Date, IN-list and numeric parameters (psycopg binds them server side), HAVING, ORDER BY and LIMIT."""
    orders = _reflect(engine, "orders")
    revenue = func.sum(orders.c.gross_revenue)
    query = (select(orders.c.country, revenue.label("revenue"), func.count().label("n"))
             .where(orders.c.ordered_at >= dt.date(2024, 1, 1), orders.c.ordered_at < dt.date(2024, 4, 1),
                    orders.c.channel.in_(["app", "web"]))
             .group_by(orders.c.country).having(revenue > Decimal("100.00"))
             .order_by(revenue.desc()).limit(5))
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    want = server.project.query(metrics=["orders.gross_revenue", "orders.orders"], dimensions=["country"],
                                time_range={"start": "2024-01-01", "end": "2024-03-31"},
                                filters=["channel in ('app', 'web')"]).to_pylist()
    want = [(w["country"], w["orders.gross_revenue"], w["orders.orders"]) for w in want
            if w["orders.gross_revenue"] > Decimal("100.00")]
    want.sort(key=lambda w: w[1], reverse=True)
    assert [tuple(r) for r in rows] == want[:5]
    assert rows


def test_core_metrics_table_by_month(engine, server, strict):
    metrics = _reflect(engine, "metrics")
    month = func.date_trunc("month", metrics.c.metric_time).label("month")
    query = (select(month, func.sum(metrics.c.revenue).label("revenue"), func.sum(metrics.c.orders).label("orders"))
             .where(metrics.c.metric_time.between(dt.date(2023, 1, 1), dt.date(2023, 12, 31)))
             .group_by(month).order_by(month))
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    want = server.project.query(metrics=["revenue", "orders"], dimensions=["metric_time__month"],
                                time_range={"start": "2023-01-01", "end": "2023-12-31"},
                                order_by=["metric_time__month"]).to_pylist()
    assert len(rows) == 12
    got = [(r.month if isinstance(r.month, dt.date) and not isinstance(r.month, dt.datetime) else r.month.date(),
            r.revenue, r.orders) for r in rows]
    assert got == [(w["metric_time__month"], w["revenue"], w["orders"]) for w in want]


# ------------------------------------------------------------------------------------------------ auth, TLS

def test_tls_required_server_with_sslmode_require(tls_server, strict):
    engine = sa.create_engine(tls_server.sqlalchemy_url(), connect_args={"sslmode": "require"}, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            assert conn.connection.dbapi_connection.pgconn.ssl_in_use
            assert conn.execute(sa.text("SELECT MEASURE(orders) AS orders FROM metrics")).scalar() == (
                tls_server.project.query(metrics=["orders"]).to_pylist()[0]["orders"])
        assert sorted(inspect(engine).get_table_names()) == sorted([*VIEWS, "metrics"])
    finally:
        engine.dispose()
    refused = sa.create_engine(tls_server.sqlalchemy_url(), connect_args={"sslmode": "disable"},
                               poolclass=sa.NullPool)
    with pytest.raises(exc.OperationalError):
        refused.connect().close()


def test_a_wrong_password_is_refused(server):
    url = server.sqlalchemy_url().set(password="not the password")
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    with pytest.raises(exc.OperationalError, match="password authentication failed"):
        engine.connect().close()
