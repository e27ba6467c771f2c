"""The catalog BI tools read: every view and `metrics` as a table of schema public, with typed columns, comments,
keys, and the functions and casts clients call on them. Statements are the clients' own (bi_reference)."""

from __future__ import annotations

import pytest
from bi_reference import statements, substitute

from semantic.errors import QueryError
from server.pgwire import pgtypes as T

PSQL = {s.n: s.sql for s in statements("psql-15.sql")}
JDBC = {s.n: s.sql for s in statements("pgjdbc-42.5.5.sql")}
ALCHEMY = {s.n: s.sql for s in statements("sqlalchemy-2.1.sql")}
SUPERSET = {s.n: s.sql for s in statements("superset-6.1.0.sql")}
VIEWS = ["customers", "metrics", "order_lines", "orders", "visits"]


def rows(frontend, session, sql, params=None) -> list[tuple]:
    result = frontend.execute(session, sql, params)[-1]
    return [tuple(r) for r in zip(*[c.to_pylist() for c in result.table.columns], strict=True)]


def test_psql_dt_lists_every_view_and_metrics(frontend, session):
    assert rows(frontend, session, PSQL[4]) == [("public", v, "table", "postgres") for v in VIEWS]
    assert rows(frontend, session, PSQL[5]) == []  # \dv: no views, every semantic table is a table


def test_psql_describes_a_table(frontend, session):
    [(oid, schema, name)] = rows(frontend, session, PSQL[7])  # \d orders: find it
    assert (schema, name) == ("public", "orders")
    columns = rows(frontend, session, PSQL[19].replace("16386", str(oid)))  # \d+ orders: its columns
    assert [c[:2] for c in columns] == [
        ("channel", "text"), ("country", "text"), ("acquisition_channel", "text"), ("ordered_at", "date"),
        ("is_first_order", "boolean"), ("gross_revenue", "numeric(38,2)"), ("discounts", "numeric(38,2)"),
        ("refunded", "numeric(38,2)"), ("shipping_cost", "numeric(38,2)"), ("payment_fees", "numeric(38,2)"),
        ("orders", "bigint"), ("buyers", "bigint"), ("new_buyers", "bigint"),
        ("median_order_value", "double precision")]
    comments = {c[0]: c[-1] for c in columns}
    assert comments["discounts"] == "sum(discount)"
    assert comments["new_buyers"] == "count_distinct(customer) where order_number = 1"
    assert comments["channel"] is None


def test_columns_have_the_types_their_answers_have(frontend, session):
    """The catalog's column types are the types a query returns (read off compiled queries)."""
    for table in frontend.catalog.semantic.values():
        if table.name == "metrics":
            continue
        names = ", ".join(f'"{c.name}"' for c in table.columns)
        result = frontend.execute(session, f"SELECT {names} FROM {table.name} LIMIT 1")[0]
        assert [(c.name, c.type_oid) for c in result.columns] == [(c.name, c.type) for c in table.columns]


def test_metrics_table_lists_metrics_and_shared_dimensions(frontend, session):
    sql = ("SELECT a.attname, format_type(a.atttypid, a.atttypmod), col_description(a.attrelid, a.attnum) "
           "FROM pg_attribute a WHERE a.attrelid = 'metrics'::regclass AND a.attnum > 0 ORDER BY a.attnum")
    columns = {name: (kind, comment) for name, kind, comment in rows(frontend, session, sql)}
    assert columns["revenue"] == ("numeric(38,2)", "Order totals before discounts.")
    assert columns["net_revenue"] == ("numeric(38,2)", "revenue - discounts - refunds")
    assert columns["margin"][0] == "double precision"
    assert columns["orders"][0] == "bigint"
    assert columns["metric_time"][0] == "date"
    assert columns["channel"][0] == "text"
    assert columns["orders__country"][0] == "text"  # a dimension two views share, by view
    assert rows(frontend, session, "SELECT obj_description('metrics'::regclass, 'pg_class')") == [
        ("every metric, by every dimension its views share",)]


def test_information_schema(frontend, session):
    tables = rows(frontend, session, "SELECT table_name, table_type FROM information_schema.tables "
                                     "WHERE table_schema = 'public' ORDER BY 1")
    assert tables == [(v, "BASE TABLE") for v in VIEWS]
    columns = rows(frontend, session, "SELECT column_name, data_type, numeric_precision, numeric_scale "
                                      "FROM information_schema.columns WHERE table_name = 'orders' "
                                      "ORDER BY ordinal_position")
    assert columns[:2] == [("channel", "text", None, None), ("country", "text", None, None)]
    assert ("gross_revenue", "numeric", 38, 2) in columns
    assert ("orders", "bigint", 64, 0) in columns
    schemata = rows(frontend, session, "SELECT schema_name FROM information_schema.schemata ORDER BY 1")
    assert ("public",) in schemata and ("pg_catalog",) in schemata


def test_pgjdbc_metadata(frontend, session):
    tables = rows(frontend, session, JDBC[5])  # getTables(null, "public", "%", …)
    assert [(t[2], t[3]) for t in tables] == [(v, "TABLE") for v in VIEWS]
    columns = rows(frontend, session, JDBC[6])  # getColumns(null, "public", "orders", "%")
    assert [(c[2], c[3], c[8]) for c in columns][:4] == [("channel", T.TEXT, 1), ("country", T.TEXT, 2),
                                                        ("acquisition_channel", T.TEXT, 3), ("ordered_at", T.DATE, 4)]
    assert rows(frontend, session, JDBC[8]) == [("32",)]  # max_index_keys
    assert rows(frontend, session, JDBC[4])[-1] == ("public", None)  # getSchemas


def test_sqlalchemy_reflects_types_and_comments(frontend, session):
    """What SQLAlchemy's Inspector.get_columns reads: PostgreSQL's own type names (else NullType)."""
    columns = rows(frontend, session, ALCHEMY[13])
    assert {c[0]: c[1] for c in columns} == {
        "channel": "text", "country": "text", "acquisition_channel": "text", "ordered_at": "date",
        "is_first_order": "boolean", "gross_revenue": "numeric(38,2)", "discounts": "numeric(38,2)",
        "refunded": "numeric(38,2)", "shipping_cost": "numeric(38,2)", "payment_fees": "numeric(38,2)",
        "orders": "bigint", "buyers": "bigint", "new_buyers": "bigint", "median_order_value": "double precision"}
    assert all(c[3] is False and c[4] == "orders" for c in columns)  # not null, table name
    assert rows(frontend, session, ALCHEMY[10].replace("'public'", "'public'")) == [(v,) for v in
                                                                                    ["orders", "order_lines",
                                                                                     "customers", "visits",
                                                                                     "metrics"]]


def _keys_session(keys_frontend):
    return keys_frontend.session("postgres", "shop", {})


def test_keys_become_primary_and_foreign_keys(keys_frontend):
    session = _keys_session(keys_frontend)
    catalog = keys_frontend.catalog
    orders, customers = catalog.semantic["orders"].oid, catalog.semantic["customers"].oid
    # SQLAlchemy: get_pk_constraint, get_foreign_keys
    [pk] = rows(keys_frontend, session, substitute(ALCHEMY[15], orders))
    assert pk[1:4] == (["order_id"], "orders_pkey", None)
    fks = rows(keys_frontend, session, substitute(ALCHEMY[16], orders))
    assert fks == [("orders", "orders_customer_fkey", "FOREIGN KEY (customer) REFERENCES customers(customer)",
                    "public", None)]
    assert rows(keys_frontend, session, substitute(ALCHEMY[15], customers))[0][1:3] == (["customer"], "customers_pkey")
    # Superset: the key columns, the constraint name, the foreign keys
    assert rows(keys_frontend, session, substitute(SUPERSET[18], orders)) == [("order_id",)]
    assert rows(keys_frontend, session, substitute(SUPERSET[19], orders)) == [("orders_pkey",)]
    assert rows(keys_frontend, session, substitute(SUPERSET[20], orders)) == [
        ("orders_customer_fkey", "FOREIGN KEY (customer) REFERENCES customers(customer)", "public")]
    # pgjdbc: getPrimaryKeys, getImportedKeys, getIndexInfo
    assert rows(keys_frontend, session, JDBC[7]) == [(None, "public", "orders", "order_id", 1, "orders_pkey")]
    imported = rows(keys_frontend, session, JDBC[9])
    assert [(r[2], r[3], r[6], r[7], r[11], r[12]) for r in imported] == [
        ("customers", "customer", "orders", "customer", "orders_customer_fkey", "customers_pkey")]
    [index] = rows(keys_frontend, session, JDBC[10])
    assert (index[3], index[5], index[8], index[9]) == (False, "orders_pkey", "order_id", "A")
    # psql \d orders: the index
    [(name, primary, unique, *_rest)] = rows(keys_frontend, session, substitute(PSQL[10], orders))
    assert (name, primary, unique) == ("orders_pkey", True, True)
    assert _rest[2] == "CREATE UNIQUE INDEX orders_pkey ON public.orders USING btree (order_id)"
    assert _rest[3] == "PRIMARY KEY (order_id)"


def test_key_columns_answer_queries(keys_frontend):
    session = _keys_session(keys_frontend)
    result = keys_frontend.execute(session, "SELECT order_id, customer, MEASURE(gross_revenue) FROM orders "
                                            "GROUP BY 1, 2 ORDER BY 1 LIMIT 2")[0]
    assert [c.name for c in result.columns] == ["order_id", "customer", "gross_revenue"]
    assert [c.type_oid for c in result.columns[:2]] == [
        c.type for c in keys_frontend.catalog.semantic["orders"].columns[:2]]
    assert result.table.num_rows == 2


def test_regclass_and_friends(frontend, session):
    oid = frontend.catalog.semantic["orders"].oid
    assert rows(frontend, session, "SELECT 'orders'::regclass, 'public.orders'::regclass::oid, "
                                   "'pg_catalog.pg_class'::regclass::oid, 23::regtype, 'integer'::regtype::oid, "
                                   "'public'::regnamespace::oid") == [("orders", oid, 1259, "integer", 23, 2200)]
    assert rows(frontend, session, f"SELECT c.oid::regclass::text FROM pg_class c WHERE c.oid = '{oid}'") == [
        ("orders",)]
    assert rows(frontend, session, "SELECT 'pg_class'::regclass::oid = 1259, to_regtype('hstore'), "
                                   "to_regtype('bigint')::oid") == [(True, None, 20)]
    with pytest.raises(QueryError) as e:
        frontend.execute(session, "SELECT 'nope'::regclass")
    assert e.value.sqlstate == "42P01"


def test_functions_clients_call(frontend, session):
    assert rows(frontend, session, "SELECT current_database(), current_user, session_user, current_schema(), "
                                   "current_schemas(true), pg_catalog.version() LIKE 'PostgreSQL 15.%'") == [
        ("shop", "postgres", "postgres", "public", ["pg_catalog", "public"], True)]
    assert rows(frontend, session, "SELECT format_type(1043, 24), format_type(1700, 655366), "
                                   "format_type(1114, NULL), format_type(1009, NULL), format_type(18, -1)") == [
        ("character varying(20)", "numeric(10,2)", "timestamp without time zone", "text[]", '"char"')]
    assert rows(frontend, session, "SELECT has_table_privilege('orders', 'SELECT'), "
                                   "has_schema_privilege('public', 'USAGE'), pg_encoding_to_char(6), "
                                   "quote_ident('Mixed Case'), quote_ident('plain'), "
                                   "format('%I.%s = %L', 'A b', 'c', 'it''s')") == [
        (True, True, "UTF8", '"Mixed Case"', "plain", "\"A b\".c = 'it''s'")]
    assert rows(frontend, session, "SELECT current_setting('max_index_keys'), "
                                   "current_setting('application_name')") == [("32", "pytest")]
    assert rows(frontend, session, "SELECT x FROM pg_catalog.generate_series(1, 3) x") == [(1,), (2,), (3,)]
    assert rows(frontend, session, "SELECT n.nspname FROM pg_namespace n WHERE n.nspname !~ '^pg_' "
                                   "AND n.nspname OPERATOR(pg_catalog.~) '^p' COLLATE pg_catalog.default") == [
        ("public",)]


def test_a_session_sees_itself(frontend):
    alice = frontend.session("alice", "analytics", {"application_name": "superset"})
    bob = frontend.session("bob", "reports", {})
    assert rows(frontend, alice, "SELECT current_user, current_database()") == [("alice", "analytics")]
    assert rows(frontend, bob, "SELECT usename, datname, application_name FROM pg_stat_activity") == [
        ("bob", "reports", "")]
    assert rows(frontend, alice, "SELECT datname FROM pg_database") == [("analytics",)]
    assert rows(frontend, alice, "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = 'orders'") == [
        ("alice",)]


def test_search_path_decides_visibility(frontend):
    session = frontend.session("postgres", "shop", {})
    frontend.execute(session, "SET search_path TO nowhere")
    assert rows(frontend, session, "SELECT current_schema()") == [(None,)]
    assert rows(frontend, session, PSQL[4]) == []  # \dt shows what the search path makes visible
    assert rows(frontend, session, "SELECT count(*) FROM pg_class WHERE relname = 'orders'") == [(1,)]


def test_catalog_follows_model_reloads(tmp_path, make_demo):
    """A new model version (a view added) gets a new catalog; the old one served until then."""
    from server.pgwire.frontend import Frontend
    from server.runtime import Runtime

    root = make_demo(tmp_path / "shop")
    runtime = Runtime(root)
    try:
        runtime.project.build()
        frontend = Frontend(runtime)
        session = frontend.session("postgres", "shop", {})
        before = rows(frontend, session, PSQL[4])
        (root / "models" / "more.yml").write_text(
            "views:\n  - name: more_orders\n    dataset: orders\n    dimensions: [channel]\n"
            "    measures: [{name: n, agg: count}]\n")
        assert runtime.reload()
        after = rows(frontend, session, PSQL[4])
        assert [r[1] for r in after] == sorted([r[1] for r in before] + ["more_orders"])
        assert rows(frontend, session, "SELECT channel, n FROM more_orders ORDER BY 1 LIMIT 1")[0][1] > 0
    finally:
        runtime.close()


METABASE_TABLES = """SELECT "n"."nspname" AS "schema", "c"."relname" AS "name", CASE "c"."relkind" WHEN 'r' THEN 'TABLE'
WHEN 'p' THEN 'PARTITIONED TABLE' WHEN 'v' THEN 'VIEW' WHEN 'f' THEN 'FOREIGN TABLE' WHEN 'm' THEN 'MATERIALIZED VIEW'
ELSE NULL END AS "type", "d"."description" AS "description", "stat"."n_live_tup" AS "estimated_row_count"
FROM "pg_catalog"."pg_class" AS "c" INNER JOIN "pg_catalog"."pg_namespace" AS "n" ON "c"."relnamespace" = "n"."oid"
LEFT JOIN "pg_catalog"."pg_description" AS "d" ON ("c"."oid" = "d"."objoid") AND ("d"."objsubid" = 0)
  AND ("d"."classoid" = 'pg_class'::regclass)
LEFT JOIN "pg_stat_user_tables" AS "stat" ON ("n"."nspname" = "stat"."schemaname") AND ("c"."relname" = "stat"."relname")
WHERE ("n"."nspname" !~ '^pg_') AND ("n"."nspname" <> 'information_schema') AND c.relkind in ('r', 'p', 'v', 'f', 'm')
  AND ("n"."nspname" IN ('public')) AND has_schema_privilege(n.nspname, 'USAGE')
  AND (has_table_privilege(c.oid, 'SELECT') OR has_any_column_privilege(c.oid, 'SELECT'))
ORDER BY "type" ASC, "schema" ASC, "name" ASC"""

METABASE_FIELDS = """SELECT "c"."column_name" AS "name", CASE WHEN "c"."udt_schema" IN ('public', 'pg_catalog')
THEN format('%s', "c"."udt_name") ELSE format('"%s"."%s"', "c"."udt_schema", "c"."udt_name") END AS "database-type",
"c"."ordinal_position" - 1 AS "database-position", "c"."table_name" AS "table-name",
"pk"."column_name" IS NOT NULL AS "pk?",
COL_DESCRIPTION(CAST(CAST(FORMAT('%I.%I', CAST("c"."table_schema" AS TEXT), CAST("c"."table_name" AS TEXT))
  AS REGCLASS) AS OID), "c"."ordinal_position") AS "field-comment"
FROM "information_schema"."columns" AS "c"
LEFT JOIN (SELECT "tc"."table_schema", "tc"."table_name", "kc"."column_name"
  FROM "information_schema"."table_constraints" AS "tc" INNER JOIN "information_schema"."key_column_usage" AS "kc"
  ON ("tc"."constraint_name" = "kc"."constraint_name") AND ("tc"."table_schema" = "kc"."table_schema")
  AND ("tc"."table_name" = "kc"."table_name") WHERE "tc"."constraint_type" = 'PRIMARY KEY') AS "pk"
  ON ("c"."table_schema" = "pk"."table_schema") AND ("c"."table_name" = "pk"."table_name")
  AND ("c"."column_name" = "pk"."column_name")
WHERE c.table_schema !~ '^information_schema|catalog_history|pg_' AND ("c"."table_schema" IN ('public'))
ORDER BY "table-name" ASC, "database-position" ASC"""


def test_queries_of_tools_outside_the_pack(keys_frontend):
    """Metabase's sync (shaped as it sends it) and DBeaver's favourites run too."""
    session = _keys_session(keys_frontend)
    tables = rows(keys_frontend, session, METABASE_TABLES)
    assert [(t[1], t[2]) for t in tables] == [(v, "TABLE") for v in VIEWS]
    fields = {(f[3], f[0]): f for f in rows(keys_frontend, session, METABASE_FIELDS)}
    assert fields[("orders", "order_id")][1:] == ("int8", 0, "orders", True, None)
    assert fields[("orders", "discounts")][1:] == ("numeric", 8, "orders", False, "sum(discount)")
    assert rows(keys_frontend, session, "SELECT count(*) > 50 FROM pg_catalog.pg_get_keywords() "
                                        "WHERE catcode = 'R'") == [(True,)]
    namespaces = rows(keys_frontend, session, "SELECT n.oid, n.*, d.description FROM pg_catalog.pg_namespace n "
                                              "LEFT OUTER JOIN pg_catalog.pg_description d ON d.objoid = n.oid "
                                              "AND d.objsubid = 0 AND d.classoid = 'pg_namespace'::regclass "
                                              "ORDER BY nspname")
    assert [n[2] for n in namespaces] == ["information_schema", "pg_catalog", "pg_toast", "public"]
