"""The PostgreSQL catalog the door serves: PostgreSQL 15's `pg_catalog` and `information_schema`, filled from the
model, in an in-memory DuckDB database (one per model version).

Every semantic table (a view, and `metrics`) is a table of schema `public` (relkind 'r') whose columns are its
dimensions and measures (metrics), typed as its answers come back; descriptions become column comments. A view
with a dimension that reads its primary key column gets a primary key on it (and its index); a dimension that
reads an entity column pointing at such a view, a foreign key. (Keys no dimension shows are not listed: a client
could not select them.) The catalog relations themselves are there too (with their real
OIDs), so `'pg_class'::regclass` and `\\dS` work.

DuckDB cannot host objects in its own `pg_catalog`, so the relations live in schemas `pgcat` and `infoschema`;
the translator (translate.py) points queries there. Per connection facts (user, database, settings, search
path) live in temporary tables of each session's own DuckDB connection, which the views read.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa

from server.pgwire import pg15
from server.pgwire import pgtypes as T

SCHEMAS = {"pg_catalog": "pgcat", "information_schema": "infoschema"}  # PostgreSQL schema → DuckDB schema
PG_CATALOG, PG_TOAST, PUBLIC = 11, 99, 2200
INFORMATION_SCHEMA = dict((name, oid) for oid, name in pg15.NAMESPACES)["information_schema"]
NAMESPACES = {"pg_catalog": PG_CATALOG, "pg_toast": PG_TOAST, "public": PUBLIC,
              "information_schema": INFORMATION_SCHEMA}
OWNER = 10  # every object belongs to the connected user (pg_authid holds them as role 10)
DATABASE_OWNER = 6171  # pg_database_owner, which owns schema public
DATABASE_OID = 16383
FIRST_OID = 16384  # PostgreSQL's first user OID
HEAP, BTREE = 2, 403
DEFAULT_COLLATION = 100
PG_CLASS, PG_CONSTRAINT = 1259, 2606
TEXT_OPS = 3126  # btree opclass of text (unused by clients beyond "is it a default one")


@dataclass(frozen=True)
class Relation:
    oid: int
    schema: str
    name: str
    kind: str  # 'r' table, 'v' view, 'i' index
    columns: tuple[tuple[str, int, int], ...]  # (name, type OID, typmod)

    def column(self, name: str) -> tuple[str, int, int] | None:
        return next((c for c in self.columns if c[0] == name), None)


@dataclass(frozen=True)
class SemanticColumn:
    name: str
    type: int
    typmod: int = -1
    comment: str | None = None


@dataclass
class SemanticRelation:
    """A semantic table as the catalog shows it."""

    name: str
    columns: list[SemanticColumn]
    comment: str | None = None
    key: str | None = None  # the primary key column, when the view exposes it
    references: list[tuple[str, str, str]] = field(default_factory=list)  # (column, target table, target column)
    oid: int = 0


# ------------------------------------------------------------------ the relations of pg_catalog, as rows

def _catalog_relations() -> dict[tuple[str, str], Relation]:
    return {tuple(key.split(".", 1)): Relation(oid, key.split(".", 1)[0], key.split(".", 1)[1], kind, columns)
            for key, (oid, kind, columns) in pg15.RELATIONS.items()}


CATALOG_RELATIONS = _catalog_relations()


def _attribute(rel: int, num: int, name: str, typ: int, typmod: int, notnull: bool = False) -> dict:
    info = T.info(typ)
    return {"attrelid": rel, "attname": name, "atttypid": typ, "attstattarget": -1, "attlen": T.typlen(typ),
            "attnum": num, "attndims": 1 if T.is_array(typ) and typ not in T.VECTORS else 0, "attcacheoff": -1,
            "atttypmod": typmod, "attbyval": bool(info.get("typbyval", False)), "attalign": info.get("typalign", "i"),
            "attstorage": info.get("typstorage", "p"), "attcompression": "", "attnotnull": notnull,
            "atthasdef": False, "atthasmissing": False, "attidentity": "", "attgenerated": "",
            "attisdropped": False, "attislocal": True, "attinhcount": 0,
            "attcollation": info.get("typcollation", 0) or 0}


def _class(oid: int, name: str, namespace: int, kind: str, natts: int, am: int = HEAP, has_index: bool = False,
           tuples: float = -1.0) -> dict:
    return {"oid": oid, "relname": name, "relnamespace": namespace, "reltype": 0, "reloftype": 0, "relowner": OWNER,
            "relam": am if kind in ("r", "i", "m") else 0, "relfilenode": oid if kind in ("r", "i") else 0,
            "reltablespace": 0, "relpages": 0, "reltuples": tuples, "relallvisible": 0, "reltoastrelid": 0,
            "relhasindex": has_index, "relisshared": False, "relpersistence": "p", "relkind": kind,
            "relnatts": natts, "relchecks": 0, "relhasrules": kind == "v", "relhastriggers": False,
            "relhassubclass": False, "relrowsecurity": False, "relforcerowsecurity": False, "relispopulated": True,
            "relreplident": "n" if kind in ("v", "i") else "d", "relispartition": False, "relrewrite": 0,
            "relfrozenxid": 0, "relminmxid": 0}


def _type_rows() -> list[dict]:
    rows = []
    for row in pg15.TYPES:
        r = dict(zip(pg15.TYPE_COLUMNS, row, strict=False))
        r.update(typowner=OWNER, typisdefined=True)
        rows.append(r)
    return rows


# ------------------------------------------------------------------ session-dependent relations (views)

_ROLE = ("SELECT 10::BIGINT AS oid, s.usr AS rolname, false AS rolsuper, true AS rolinherit, false AS rolcreaterole,"
         " false AS rolcreatedb, true AS rolcanlogin, false AS rolreplication, false AS rolbypassrls,"
         " -1 AS rolconnlimit, '********' AS rolpassword, NULL::TIMESTAMPTZ AS rolvaliduntil,"
         " NULL::VARCHAR[] AS rolconfig FROM temp.pgw_session s UNION ALL SELECT 6171, 'pg_database_owner', false,"
         " true, false, false, false, false, false, -1, NULL, NULL, NULL")  # PostgreSQL 15: the owner of public

_USERS = {"usename": "rolname", "usesysid": "oid", "usecreatedb": "rolcreatedb", "usesuper": "rolsuper",
          "userepl": "rolreplication", "usebypassrls": "rolbypassrls", "passwd": "'********'",
          "valuntil": "rolvaliduntil", "useconfig": "rolconfig"}

VIEWS: dict[str, tuple[str, dict[str, str]]] = {
    # relation: (FROM clause, {column: expression}); columns left out are NULL
    "pg_catalog.pg_authid": (f"({_ROLE}) r", {c: c for c in (
        "oid", "rolname", "rolsuper", "rolinherit", "rolcreaterole", "rolcreatedb", "rolcanlogin", "rolreplication",
        "rolbypassrls", "rolconnlimit", "rolpassword", "rolvaliduntil")}),
    "pg_catalog.pg_roles": (f"({_ROLE}) r", {c: c for c in (
        "rolname", "rolsuper", "rolinherit", "rolcreaterole", "rolcreatedb", "rolcanlogin", "rolreplication",
        "rolconnlimit", "rolvaliduntil", "rolbypassrls", "rolconfig", "oid")} | {"rolpassword": "'********'"}),
    "pg_catalog.pg_user": (f"({_ROLE}) r", _USERS),
    "pg_catalog.pg_shadow": (f"({_ROLE}) r", _USERS),
    "pg_catalog.pg_database": ("temp.pgw_session s", {
        "oid": str(DATABASE_OID), "datname": "s.db", "datdba": str(OWNER), "encoding": "6", "datlocprovider": "'c'",
        "datistemplate": "false", "datallowconn": "true", "datconnlimit": "-1", "datfrozenxid": "0",
        "datminmxid": "1", "dattablespace": "1663", "datcollate": "'C.UTF-8'", "datctype": "'C.UTF-8'"}),
    "pg_catalog.pg_settings": ("temp.pgw_settings s", {
        "name": "s.name", "setting": "s.setting", "category": "'Phloem'", "short_desc": "s.name",
        "context": "'user'", "vartype": "'string'", "source": "'session'", "boot_val": "s.setting",
        "reset_val": "s.setting", "pending_restart": "false"}),
    "pg_catalog.pg_stat_activity": ("temp.pgw_session s", {
        "datid": str(DATABASE_OID), "datname": "s.db", "pid": "s.pid", "usesysid": str(OWNER), "usename": "s.usr",
        "application_name": "s.application_name", "state": "'active'", "backend_type": "'client backend'"}),
    "pg_catalog.pg_tables": (
        "pgcat.pg_class c JOIN pgcat.pg_namespace n ON n.oid = c.relnamespace, temp.pgw_session s "
        "WHERE c.relkind IN ('r', 'p')", {
            "schemaname": "n.nspname", "tablename": "c.relname", "tableowner": "s.usr", "hasindexes": "c.relhasindex",
            "hasrules": "c.relhasrules", "hastriggers": "c.relhastriggers", "rowsecurity": "c.relrowsecurity"}),
    "pg_catalog.pg_views": (
        "pgcat.pg_class c JOIN pgcat.pg_namespace n ON n.oid = c.relnamespace, temp.pgw_session s "
        "WHERE c.relkind = 'v'", {"schemaname": "n.nspname", "viewname": "c.relname", "viewowner": "s.usr"}),
    "pg_catalog.pg_indexes": (
        "pgcat.pg_index i JOIN pgcat.pg_class c ON c.oid = i.indrelid JOIN pgcat.pg_class ic "
        "ON ic.oid = i.indexrelid JOIN pgcat.pg_namespace n ON n.oid = c.relnamespace "
        "LEFT JOIN pgcat.pgw_indexdef d ON d.indexrelid = i.indexrelid AND d.colno = 0", {
            "schemaname": "n.nspname", "tablename": "c.relname", "indexname": "ic.relname", "indexdef": "d.def"}),
    "pg_catalog.pg_stat_user_tables": (
        "pgcat.pg_class c JOIN pgcat.pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind IN ('r', 'p') AND n.nspname = 'public'", {
            "relid": "c.oid", "schemaname": "n.nspname", "relname": "c.relname", "n_live_tup": "0",
            "n_dead_tup": "0", "seq_scan": "0", "n_tup_ins": "0"}),
    "information_schema.schemata": (
        "pgcat.pg_namespace n, temp.pgw_session s", {
            "catalog_name": "s.db", "schema_name": "n.nspname", "schema_owner": "s.usr"}),
    "information_schema.tables": (
        "pgcat.pg_class c JOIN pgcat.pg_namespace n ON n.oid = c.relnamespace, temp.pgw_session s "
        "WHERE c.relkind IN ('r', 'v', 'p', 'f', 'm')", {
            "table_catalog": "s.db", "table_schema": "n.nspname", "table_name": "c.relname",
            "table_type": "CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'f' THEN 'FOREIGN' ELSE 'BASE TABLE' END",
            "is_insertable_into": "'NO'", "is_typed": "'NO'"}),
    "information_schema.views": (
        "pgcat.pg_class c JOIN pgcat.pg_namespace n ON n.oid = c.relnamespace, temp.pgw_session s "
        "WHERE c.relkind = 'v'", {
            "table_catalog": "s.db", "table_schema": "n.nspname", "table_name": "c.relname",
            "check_option": "'NONE'", "is_updatable": "'NO'", "is_insertable_into": "'NO'",
            "is_trigger_updatable": "'NO'", "is_trigger_deletable": "'NO'", "is_trigger_insertable_into": "'NO'"}),
    "information_schema.columns": (
        "pgcat.pg_attribute a JOIN pgcat.pg_class c ON c.oid = a.attrelid "
        "JOIN pgcat.pg_namespace n ON n.oid = c.relnamespace JOIN pgcat.pgw_type_names t ON t.oid = a.atttypid, "
        "temp.pgw_session s WHERE a.attnum > 0 AND c.relkind IN ('r', 'v', 'p', 'f', 'm')", {
            "table_catalog": "s.db", "table_schema": "n.nspname", "table_name": "c.relname",
            "column_name": "a.attname", "ordinal_position": "a.attnum",
            "is_nullable": "CASE WHEN a.attnotnull THEN 'NO' ELSE 'YES' END",
            "data_type": "CASE WHEN t.typcategory = 'A' THEN 'ARRAY' WHEN t.typtype = 'b' AND t.oid NOT IN (18, 19) "
                         "THEN t.format ELSE 'USER-DEFINED' END",
            "numeric_precision": "CASE a.atttypid WHEN 21 THEN 16 WHEN 23 THEN 32 WHEN 20 THEN 64 WHEN 700 THEN 24 "
                                 "WHEN 701 THEN 53 WHEN 1700 THEN CASE WHEN a.atttypmod >= 4 "
                                 "THEN (a.atttypmod - 4) >> 16 END END",
            "numeric_precision_radix": "CASE WHEN a.atttypid IN (21, 23, 20, 700, 701) THEN 2 "
                                       "WHEN a.atttypid = 1700 THEN 10 END",
            "numeric_scale": "CASE WHEN a.atttypid IN (21, 23, 20) THEN 0 WHEN a.atttypid = 1700 AND "
                             "a.atttypmod >= 4 THEN (a.atttypmod - 4) & 65535 END",
            "datetime_precision": "CASE WHEN a.atttypid = 1082 THEN 0 WHEN a.atttypid IN (1083, 1114, 1184, 1266) "
                                  "THEN 6 END",
            "udt_catalog": "s.db", "udt_schema": "'pg_catalog'", "udt_name": "t.typname",
            "dtd_identifier": "a.attnum::VARCHAR", "is_self_referencing": "'NO'", "is_identity": "'NO'",
            "identity_cycle": "'NO'", "is_generated": "'NEVER'", "is_updatable": "'NO'"}),
    "information_schema.table_constraints": (
        "pgcat.pg_constraint k JOIN pgcat.pg_class c ON c.oid = k.conrelid "
        "JOIN pgcat.pg_namespace n ON n.oid = c.relnamespace, temp.pgw_session s", {
            "constraint_catalog": "s.db", "constraint_schema": "n.nspname", "constraint_name": "k.conname",
            "table_catalog": "s.db", "table_schema": "n.nspname", "table_name": "c.relname",
            "constraint_type": "CASE k.contype WHEN 'p' THEN 'PRIMARY KEY' WHEN 'f' THEN 'FOREIGN KEY' "
                               "WHEN 'u' THEN 'UNIQUE' ELSE 'CHECK' END",
            "is_deferrable": "'NO'", "initially_deferred": "'NO'", "enforced": "'YES'",
            "nulls_distinct": "CASE WHEN k.contype IN ('p', 'u') THEN 'YES' END"}),
    "information_schema.key_column_usage": (
        "pgcat.pg_constraint k JOIN pgcat.pg_class c ON c.oid = k.conrelid "
        "JOIN pgcat.pg_namespace n ON n.oid = c.relnamespace "
        "JOIN pgcat.pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = k.conkey[1], temp.pgw_session s "
        "WHERE k.contype IN ('p', 'u', 'f')", {
            "constraint_catalog": "s.db", "constraint_schema": "n.nspname", "constraint_name": "k.conname",
            "table_catalog": "s.db", "table_schema": "n.nspname", "table_name": "c.relname",
            "column_name": "a.attname", "ordinal_position": "1",
            "position_in_unique_constraint": "CASE WHEN k.contype = 'f' THEN 1 END"}),
    "information_schema.constraint_column_usage": (
        "pgcat.pg_constraint k JOIN pgcat.pg_class c ON c.oid = coalesce(nullif(k.confrelid, 0), k.conrelid) "
        "JOIN pgcat.pg_namespace n ON n.oid = c.relnamespace JOIN pgcat.pg_attribute a ON a.attrelid = c.oid "
        "AND a.attnum = coalesce(k.confkey[1], k.conkey[1]), temp.pgw_session s WHERE k.contype IN ('p', 'u', 'f')", {
            "table_catalog": "s.db", "table_schema": "n.nspname", "table_name": "c.relname",
            "column_name": "a.attname", "constraint_catalog": "s.db", "constraint_schema": "n.nspname",
            "constraint_name": "k.conname"}),
    "information_schema.referential_constraints": (
        "pgcat.pg_constraint k JOIN pgcat.pg_namespace n ON n.oid = k.connamespace "
        "LEFT JOIN pgcat.pg_constraint u ON u.conindid = k.conindid AND u.contype IN ('p', 'u'), "
        "temp.pgw_session s WHERE k.contype = 'f'", {
            "constraint_catalog": "s.db", "constraint_schema": "n.nspname", "constraint_name": "k.conname",
            "unique_constraint_catalog": "s.db", "unique_constraint_schema": "n.nspname",
            "unique_constraint_name": "u.conname", "match_option": "'NONE'", "update_rule": "'NO ACTION'",
            "delete_rule": "'NO ACTION'"}),
}


# PostgreSQL's reserved key words (pg_get_keywords() lists them, catcode 'R')
RESERVED = (
    "all analyse analyze and any array as asc asymmetric both case cast check collate column constraint create "
    "current_catalog current_date current_role current_time current_timestamp current_user default deferrable "
    "desc distinct do else end except false fetch for foreign from grant group having in initially intersect "
    "into lateral leading limit localtime localtimestamp not null offset on only or order placing primary "
    "references returning select session_user some symmetric table then to trailing true union unique user "
    "using variadic when where window with").split()


# ------------------------------------------------------------------ functions the translator calls (pgw_*)

MACROS = [
    "pgw_unquote(x) AS CASE WHEN starts_with(trim(x), '\"') THEN replace(trim(trim(x), '\"'), '\"\"', '\"')"
    " ELSE lower(trim(x)) END",
    """pgw_quote_ident(x) AS CASE WHEN x IS NULL THEN NULL WHEN regexp_full_match(x, '[a-z_][a-z0-9_$]*')
        AND NOT list_contains(['all', 'and', 'any', 'array', 'as', 'asc', 'both', 'case', 'cast', 'check', 'column',
        'constraint', 'create', 'default', 'desc', 'distinct', 'do', 'else', 'end', 'false', 'for', 'foreign', 'from',
        'grant', 'group', 'having', 'in', 'into', 'is', 'join', 'leading', 'limit', 'not', 'null', 'offset', 'on',
        'only', 'or', 'order', 'primary', 'references', 'select', 'table', 'then', 'to', 'trailing', 'true', 'union',
        'unique', 'user', 'using', 'when', 'where', 'with'], x) THEN x
        ELSE '"' || replace(x, '"', '""') || '"' END""",
    # format_type(oid, typmod): PostgreSQL's names, with the typmods the catalog uses
    """pgw_format_type(t, m) AS CASE WHEN t IS NULL THEN NULL ELSE coalesce((
        SELECT CASE WHEN m IS NULL THEN pgw_f.format_null WHEN m < 0 THEN pgw_f.format
                    WHEN t = 1700 THEN 'numeric(' || ((m - 4) >> 16) || ',' || ((m - 4) & 65535) || ')'
                    WHEN t IN (1042, 1043) THEN pgw_f.format || '(' || (m - 4) || ')' ELSE pgw_f.format END
        FROM pgcat.pgw_type_names pgw_f WHERE pgw_f.oid = t), '???') END""",
    "pgw_get_userbyid(r) AS coalesce((SELECT pgw_a.rolname FROM pgcat.pg_authid pgw_a WHERE pgw_a.oid = r),"
    " 'unknown (OID=' || r || ')')",
    "pgw_get_indexdef(i, k) AS (SELECT coalesce(max(pgw_d.def), '') FROM pgcat.pgw_indexdef pgw_d"
    " WHERE pgw_d.indexrelid = i AND pgw_d.colno = coalesce(k, 0))",
    "pgw_get_constraintdef(c) AS (SELECT pgw_d.def FROM pgcat.pgw_constraintdef pgw_d WHERE pgw_d.oid = c)",
    "pgw_relation_visible(r, vis) AS (SELECT list_contains(vis, pgw_c.relnamespace) FROM pgcat.pg_class pgw_c"
    " WHERE pgw_c.oid = r)",
    "pgw_type_visible(t, vis) AS (SELECT list_contains(vis, pgw_y.typnamespace) FROM pgcat.pg_type pgw_y WHERE pgw_y.oid = t)",
    "pgw_function_visible(p, vis) AS (SELECT list_contains(vis, pgw_y.pronamespace) FROM pgcat.pg_proc pgw_y"
    " WHERE pgw_y.oid = p)",
    "pgw_collation_visible(p, vis) AS (SELECT list_contains(vis, pgw_y.collnamespace) FROM pgcat.pg_collation pgw_y"
    " WHERE pgw_y.oid = p)",
    # 'name' / 'schema.name' / '"Name"' / '16386' → a relation's OID
    """pgw_regclass(x, vis) AS CASE WHEN regexp_full_match(x, '\\s*[0-9]+\\s*') THEN trim(x)::BIGINT ELSE (
        SELECT pgw_c.oid FROM pgcat.pg_class pgw_c JOIN pgcat.pg_namespace pgw_n ON pgw_n.oid = pgw_c.relnamespace
        WHERE pgw_c.relname = pgw_unquote(CASE WHEN contains(x, '.') THEN split_part(x, '.', 2) ELSE x END)
          AND CASE WHEN contains(x, '.') THEN pgw_n.nspname = pgw_unquote(split_part(x, '.', 1))
                   ELSE list_contains(vis, pgw_n.oid) END
        ORDER BY list_position(vis, pgw_n.oid) NULLS LAST LIMIT 1) END""",
    """pgw_regclass_out(r, vis) AS coalesce((
        SELECT CASE WHEN list_contains(vis, pgw_c.relnamespace) THEN pgw_quote_ident(pgw_c.relname)
                    ELSE pgw_quote_ident(pgw_n.nspname) || '.' || pgw_quote_ident(pgw_c.relname) END
        FROM pgcat.pg_class pgw_c JOIN pgcat.pg_namespace pgw_n ON pgw_n.oid = pgw_c.relnamespace WHERE pgw_c.oid = r), r::VARCHAR)""",
    "pgw_regtype(x) AS CASE WHEN regexp_full_match(x, '\\s*[0-9]+\\s*') THEN trim(x)::BIGINT ELSE"
    " (SELECT pgw_f.oid FROM pgcat.pgw_type_names pgw_f WHERE pgw_f.typname = lower(trim(x)) OR pgw_f.format = lower(trim(x))"
    " OR pgw_f.format_null = lower(trim(x)) OR 'pg_catalog.' || pgw_f.typname = lower(trim(x)) ORDER BY pgw_f.oid LIMIT 1) END",
    "pgw_regtype_out(t) AS CASE WHEN t = 0 THEN '-' ELSE coalesce((SELECT pgw_f.format FROM pgcat.pgw_type_names pgw_f"
    " WHERE pgw_f.oid = t), t::VARCHAR) END",
    "pgw_regnamespace(x) AS (SELECT pgw_n.oid FROM pgcat.pg_namespace pgw_n WHERE pgw_n.nspname = pgw_unquote(x))",
    "pgw_regnamespace_out(o) AS coalesce((SELECT pgw_quote_ident(pgw_n.nspname) FROM pgcat.pg_namespace pgw_n"
    " WHERE pgw_n.oid = o), o::VARCHAR)",
    "pgw_regrole_out(o) AS coalesce((SELECT pgw_a.rolname FROM pgcat.pg_authid pgw_a WHERE pgw_a.oid = o), o::VARCHAR)",
    "pgw_col_description(r, k) AS (SELECT max(pgw_d.description) FROM pgcat.pg_description pgw_d"
    " WHERE pgw_d.objoid = r AND pgw_d.classoid = 1259 AND pgw_d.objsubid = k)",
    "pgw_obj_description(o, cat) AS (SELECT max(pgw_d.description) FROM pgcat.pg_description pgw_d"
    " WHERE pgw_d.objoid = o AND pgw_d.objsubid = 0 AND (cat IS NULL OR pgw_d.classoid = (SELECT pgw_c.oid FROM pgcat.pg_class pgw_c"
    " WHERE pgw_c.relname = cat AND pgw_c.relnamespace = 11)))",
    "pgw_encoding_to_char(e) AS CASE e WHEN 6 THEN 'UTF8' WHEN 0 THEN 'SQL_ASCII' ELSE '' END",
    """pgw_size_pretty(b) AS CASE WHEN b IS NULL THEN NULL WHEN abs(b) < 10240 THEN b || ' bytes'
        WHEN abs(b) < 10240 * 1024 THEN round(b / 1024) || ' kB'
        WHEN abs(b) < 10240 * 1024 * 1024 THEN round(b / 1024 / 1024) || ' MB'
        ELSE round(b / 1024 / 1024 / 1024) || ' GB' END""",
    "pgw_array_out(a) AS CASE WHEN a IS NULL THEN NULL ELSE '{' || array_to_string(list_transform(a, lambda v:"
    " coalesce(CASE WHEN v::VARCHAR = '' OR regexp_matches(v::VARCHAR, '[\\s,{}\"\\\\]') OR lower(v::VARCHAR) ="
    " 'null' THEN '\"' || replace(replace(v::VARCHAR, '\\\\', '\\\\\\\\'), '\"', '\\\\\"') || '\"'"
    " ELSE v::VARCHAR END, 'NULL')), ',') || '}' END",
    "pgw_vector_out(a) AS array_to_string(a, ' ')",
    r"""pgw_quote_literal(x) AS CASE WHEN x IS NULL THEN NULL WHEN contains(x, '\')
        THEN 'E''' || replace(replace(x, '\', '\\'), '''', '''''') || ''''
        ELSE '''' || replace(x, '''', '''''') || '''' END""",
    "pgw_bool_out(b) AS CASE WHEN b THEN 'true' WHEN NOT b THEN 'false' END",
]


# no files, URLs or extensions, PostgreSQL's NULL order, and no client statement can change any of it
LOCKED = {"enable_external_access": False, "autoinstall_known_extensions": False, "autoload_known_extensions": False,
          "default_null_order": "nulls_last_on_asc_first_on_desc", "lock_configuration": True}


class Catalog:
    """One model version's catalog: the relations (by schema and name, by OID) and the DuckDB database holding them.

    `semantic` lists the semantic tables (name → SemanticRelation); `connect()` opens a connection for a session.
    """

    def __init__(self, semantic: Iterable[SemanticRelation]):
        self.relations: dict[tuple[str, str], Relation] = dict(CATALOG_RELATIONS)
        self.semantic: dict[str, SemanticRelation] = {}
        self._lock = threading.Lock()
        rows = _Rows()
        for rel in self.relations.values():
            namespace = NAMESPACES[rel.schema]
            rows.add("pg_class", _class(rel.oid, rel.name, namespace, rel.kind, len(rel.columns)))
            for i, (name, typ, typmod) in enumerate(rel.columns, 1):
                rows.add("pg_attribute", _attribute(rel.oid, i, name, typ, typmod))
        oid = FIRST_OID
        for table in semantic:
            table.oid = oid
            self.semantic[table.name] = table
            oid += 1
        indexes: dict[str, int] = {}
        for table in self.semantic.values():
            oid = self._add_semantic(table, rows, oid, indexes)
        for table in self.semantic.values():
            oid = self._add_references(table, rows, oid, indexes)
        self.by_oid = {r.oid: r for r in self.relations.values()}
        self.db = duckdb.connect(":memory:", config=LOCKED)
        _session_tables(self.db)
        for schema in SCHEMAS.values():
            self.db.execute(f"CREATE SCHEMA {schema}")
        self._create(rows)

    # the semantic tables: their pg_class, pg_attribute, keys and comments
    def _add_semantic(self, table: SemanticRelation, rows: _Rows, oid: int, indexes: dict[str, int]) -> int:
        columns = tuple((c.name, c.type, c.typmod) for c in table.columns)
        self.relations[("public", table.name)] = Relation(table.oid, "public", table.name, "r", columns)
        rows.add("pg_class", _class(table.oid, table.name, PUBLIC, "r", len(columns), has_index=table.key is not None))
        if table.comment:
            rows.add("pg_description", {"objoid": table.oid, "classoid": PG_CLASS, "objsubid": 0,
                                        "description": table.comment})
        position = {c.name: i for i, c in enumerate(table.columns, 1)}
        for i, c in enumerate(table.columns, 1):
            rows.add("pg_attribute", _attribute(table.oid, i, c.name, c.type, c.typmod, notnull=c.name == table.key))
            if c.comment:
                rows.add("pg_description", {"objoid": table.oid, "classoid": PG_CLASS, "objsubid": i,
                                            "description": c.comment})
        if table.key is not None:
            index, constraint = oid, oid + 1
            indexes[table.name] = index
            oid += 2
            name = f"{table.name}_pkey"
            key = position[table.key]
            typ = table.columns[key - 1].type
            self.relations[("public", name)] = Relation(index, "public", name, "i", ((table.key, typ, -1),))
            rows.add("pg_class", _class(index, name, PUBLIC, "i", 1, am=BTREE))
            rows.add("pg_attribute", _attribute(index, 1, table.key, typ, -1))
            rows.add("pg_index", {
                "indexrelid": index, "indrelid": table.oid, "indnatts": 1, "indnkeyatts": 1, "indisunique": True,
                "indnullsnotdistinct": False, "indisprimary": True, "indisexclusion": False, "indimmediate": True,
                "indisclustered": False, "indisvalid": True, "indcheckxmin": False, "indisready": True,
                "indislive": True, "indisreplident": False, "indkey": [key],
                "indcollation": [DEFAULT_COLLATION if T.is_string(typ) else 0], "indclass": [TEXT_OPS],
                "indoption": [0]})
            rows.add("pg_constraint", _constraint(constraint, name, "p", table.oid, index, [key]))
            rows.add("pgw_constraintdef", {"oid": constraint, "def": f"PRIMARY KEY ({_quote(table.key)})"})
            rows.add("pgw_indexdef", {"indexrelid": index, "colno": 0, "def": (
                f"CREATE UNIQUE INDEX {_quote(name)} ON public.{_quote(table.name)} USING btree ({_quote(table.key)})")})
            rows.add("pgw_indexdef", {"indexrelid": index, "colno": 1, "def": _quote(table.key)})
        return oid

    def _add_references(self, table: SemanticRelation, rows: _Rows, oid: int, indexes: dict[str, int]) -> int:
        position = {c.name: i for i, c in enumerate(table.columns, 1)}
        for column, target, target_column in table.references:
            ref = self.semantic[target]
            name = f"{table.name}_{column}_fkey"
            rows.add("pg_constraint", _constraint(oid, name, "f", table.oid, indexes[target], [position[column]],
                                                  target=ref.oid, target_key=[_position(ref, target_column)]))
            rows.add("pgw_constraintdef", {"oid": oid, "def": (
                f"FOREIGN KEY ({_quote(column)}) REFERENCES {_quote(target)}({_quote(target_column)})")})
            oid += 1
        return oid

    def _create(self, rows: _Rows) -> None:
        db = self.db
        views = []
        for (schema, name), rel in sorted(CATALOG_RELATIONS.items()):
            target = f"{SCHEMAS[schema]}.{name}"
            if f"{schema}.{name}" in VIEWS:
                views.append((target, rel, VIEWS[f"{schema}.{name}"]))
                continue
            columns = ", ".join(f"{_q(c)} {T.duckdb_type(t)}" for c, t, _ in rel.columns)
            db.execute(f"CREATE TABLE {target} ({columns})")
            self._insert(target, [(c, t) for c, t, _ in rel.columns], rows.get(name))
        db.register("_names", type_names_table())
        db.execute("CREATE TABLE pgcat.pgw_type_names AS SELECT * FROM _names")
        db.unregister("_names")
        db.execute("CREATE TABLE pgcat.pgw_indexdef (indexrelid BIGINT, colno INTEGER, def VARCHAR)")
        self._insert("pgcat.pgw_indexdef", [("indexrelid", T.OID), ("colno", T.INT4), ("def", T.TEXT)],
                     rows.get("pgw_indexdef"))
        db.execute("CREATE TABLE pgcat.pgw_keywords (word VARCHAR, catcode VARCHAR, barelabel BOOLEAN, "
                   "catdesc VARCHAR, baredesc VARCHAR)")
        db.executemany("INSERT INTO pgcat.pgw_keywords VALUES (?, 'R', true, 'reserved', 'can be bare label')",
                       [[w] for w in RESERVED])
        db.execute("CREATE TABLE pgcat.pgw_constraintdef (oid BIGINT, def VARCHAR)")
        self._insert("pgcat.pgw_constraintdef", [("oid", T.OID), ("def", T.TEXT)], rows.get("pgw_constraintdef"))
        for target, rel, (source, exprs) in views:
            select = ", ".join(f"CAST({exprs.get(c, 'NULL')} AS {T.duckdb_type(t)}) AS {_q(c)}"
                               for c, t, _ in rel.columns)
            where = ""
            if " WHERE " in source:
                source, where = source.split(" WHERE ", 1)
                where = f" WHERE {where}"
            db.execute(f"CREATE VIEW {target} AS SELECT {select} FROM {source}{where}")
        for macro in MACROS:
            db.execute(f"CREATE MACRO {macro}")

    def _insert(self, target: str, columns: list[tuple[str, int]], rows: list[dict]) -> None:
        if not rows:
            return
        arrays = {}
        for name, typ in columns:
            values = [r.get(name) for r in rows]
            kind = T.arrow_type(typ) if typ not in T.REG_TYPES else pa.int64()
            if typ == T.REGPROC:
                kind = pa.string()
            arrays[name] = pa.array(values, type=kind if kind is not None else pa.float64())
        self.db.register("_rows", pa.table(arrays))
        try:
            self.db.execute(f"INSERT INTO {target} SELECT * FROM _rows")
        finally:
            self.db.unregister("_rows")

    # ------------------------------------------------------------------ lookups

    def relation(self, schema: str | None, name: str, search: list[str]) -> Relation | None:
        """A relation by (optional) schema and name; unqualified names are looked up in pg_catalog, then `search`."""
        if schema is not None:
            return self.relations.get((schema, name))
        for s in ["pg_catalog", *search]:
            found = self.relations.get((s, name))
            if found is not None:
                return found
        return None

    def connect(self) -> duckdb.DuckDBPyConnection:
        """A connection for one session, with its own temporary tables of session facts."""
        with self._lock:
            con = self.db.cursor()
        _session_tables(con)
        return con


def _constraint(oid: int, name: str, kind: str, rel: int, index: int, key: list[int], target: int = 0,
                target_key: list[int] | None = None) -> dict:
    return {"oid": oid, "conname": name, "connamespace": PUBLIC, "contype": kind, "condeferrable": False,
            "condeferred": False, "convalidated": True, "conrelid": rel, "contypid": 0, "conindid": index,
            "conparentid": 0, "confrelid": target, "confupdtype": "a" if kind == "f" else " ",
            "confdeltype": "a" if kind == "f" else " ", "confmatchtype": "s" if kind == "f" else " ",
            "conislocal": True, "coninhcount": 0, "connoinherit": kind == "p", "conkey": key, "confkey": target_key}


def _position(table: SemanticRelation, column: str) -> int:
    return next(i for i, c in enumerate(table.columns, 1) if c.name == column)


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _quote(name: str) -> str:
    return name if re.fullmatch(r"[a-z_][a-z0-9_$]*", name) else _q(name)


class _Rows:
    def __init__(self):
        self.tables: dict[str, list[dict]] = {
            "pg_namespace": [{"oid": oid, "nspname": name, "nspowner": DATABASE_OWNER if oid == PUBLIC else OWNER}
                             for name, oid in NAMESPACES.items()],
            "pg_type": _type_rows(),
            "pg_am": [{"oid": o, "amname": n, "amhandler": h, "amtype": t} for o, n, h, t in pg15.ACCESS_METHODS],
            "pg_collation": [{"oid": o, "collname": n, "collnamespace": PG_CATALOG, "collowner": OWNER,
                              "collprovider": p, "collisdeterministic": True, "collencoding": e, "collcollate": c,
                              "collctype": t} for o, n, p, e, c, t in pg15.COLLATIONS],
            "pg_tablespace": [{"oid": 1663, "spcname": "pg_default", "spcowner": OWNER},
                              {"oid": 1664, "spcname": "pg_global", "spcowner": OWNER}],
        }

    def add(self, table: str, row: dict) -> None:
        self.tables.setdefault(table, []).append(row)

    def get(self, table: str) -> list[dict]:
        return self.tables.get(table, [])


def _session_tables(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("CREATE OR REPLACE TEMP TABLE pgw_session (usr VARCHAR, db VARCHAR, pid INTEGER,"
                " application_name VARCHAR)")
    con.execute("CREATE OR REPLACE TEMP TABLE pgw_settings (name VARCHAR, setting VARCHAR)")
    con.execute("INSERT INTO pgw_session VALUES ('phloem', 'phloem', 0, '')")


def type_names_table() -> pa.Table:
    """oid, typname, typtype, typcategory, format (format_type(oid, -1)) and format_null (format_type(oid, NULL))."""
    oids, names, kinds, cats, fmt, fmt_null = [], [], [], [], [], []
    for row in pg15.TYPES:
        r = dict(zip(pg15.TYPE_COLUMNS, row, strict=False))
        oids.append(r["oid"])
        names.append(r["typname"])
        kinds.append(r["typtype"])
        cats.append(r["typcategory"])
        fmt_null.append(row[-2])
        fmt.append(row[-1])
    return pa.table({"oid": pa.array(oids, pa.int64()), "typname": names, "typtype": kinds, "typcategory": cats,
                     "format": fmt, "format_null": fmt_null})


# ------------------------------------------------------------------ the semantic tables, from the model

SchemaOf = Callable[[str], pa.Schema]  # a semantic SELECT → the Arrow schema of its answer, without running it


def semantic_relations(sql_door, schema_of: SchemaOf) -> list[SemanticRelation]:
    """Every semantic table of the door's catalog, with PostgreSQL types read off compiled queries."""
    from semantic.errors import PhloemError
    from server.sql.tables import METRICS

    tables = sql_door.catalog.tables
    model = sql_door.project.model
    graph = sql_door.project.compiler.graph

    def types_of(table: str, names: list[str]) -> dict[str, tuple[int, int]]:
        if not names:
            return {}
        try:
            schema = schema_of(f"SELECT {', '.join(_q(n) for n in names)} FROM {_q(table)}")
            return {n: T.from_arrow(schema.field(i).type) for i, n in enumerate(names)}
        except PhloemError:
            if len(names) == 1:
                return {}
            found: dict[str, tuple[int, int]] = {}
            for n in names:
                found.update(types_of(table, [n]))
            return found

    relations, dim_types, exposing = [], {}, {}
    for name, table in tables.items():
        if table.view is None:
            continue
        view = model.views[table.view]
        listed = table.listed()
        types = types_of(name, [c.name for c in listed])
        docs = {d.name: d.description or d.label for d in view.dimensions}
        columns = []
        for c in listed:
            typ, typmod = types.get(c.name, _fallback(c))
            dim_types[(table.view, c.name)] = (typ, typmod)
            comment = docs.get(c.name) if c.kind == "dimension" else _measure_comment(c.measure)
            columns.append(SemanticColumn(c.name, typ, typmod, comment))
        exposing[name] = {c.name: column for c in listed if c.kind == "dimension" and not c.is_time
                          and (column := _plain_column(graph.dims[table.view][c.name].sql))}
        key = _exposed(exposing[name], view.primary_key)
        relations.append(SemanticRelation(name, columns, view.description or view.label, key))
    by_name = {r.name: r for r in relations}
    for hops in graph.hops.values():  # an entity column pointing at a view's exposed primary key
        for hop in hops:
            source, target = by_name.get(hop.source), by_name.get(hop.target)
            column = _exposed(exposing.get(hop.source, {}), hop.source_column)
            if source and target and column and target.key and \
                    exposing[hop.target].get(target.key) == hop.target_column:
                source.references.append((column, hop.target, target.key))
    metrics = tables.get(METRICS)
    if metrics is not None:
        listed = metrics.listed()
        names = [c.name for c in listed if c.kind == "metric"]
        types = types_of(METRICS, names)
        columns = []
        for c in listed:
            if c.kind == "metric":
                typ, typmod = types.get(c.name, (T.NUMERIC, -1))
                m = model.metrics[c.name]
                comment = m.description or m.label or _metric_formula(m)
            elif c.view is not None:
                typ, typmod = dim_types.get((c.view, c.ref.rpartition(".")[2].split("__")[0]), _fallback(c))
                comment = None
            else:
                owners = [v for (v, n), _ in dim_types.items() if n == c.name]
                typ, typmod = dim_types[(owners[0], c.name)] if owners else _fallback(c)
                comment = "the shared time dimension of every metric" if c.name == "metric_time" else None
            columns.append(SemanticColumn(c.name, typ, typmod, comment))
        relations.append(SemanticRelation(METRICS, columns, "every metric, by every dimension its views share"))
    return relations


def _plain_column(sql: str) -> str | None:
    """The column a dimension reads when its expression is just that column."""
    import sqlglot
    from sqlglot import exp

    try:
        tree = sqlglot.parse_one(sql, read="duckdb")
    except sqlglot.errors.ParseError:
        return None
    return tree.name if isinstance(tree, exp.Column) and not tree.table else None


def _exposed(columns: dict[str, str], source_column: str | None) -> str | None:
    """The table column (a dimension) that shows `source_column` of the view, if one does."""
    return next((name for name, column in columns.items() if column == source_column), None)


def _fallback(c) -> tuple[int, int]:
    if c.kind == "dimension":
        return {"time": T.DATE, "boolean": T.BOOL, "number": T.FLOAT8}.get(c.type, T.TEXT), -1
    if c.measure is not None and c.measure.agg in ("count", "count_distinct", "approx_count_distinct"):
        return T.INT8, -1
    return T.NUMERIC, -1


def _measure_comment(m) -> str | None:
    if m is None:
        return None
    if m.description or m.label:
        return m.description or m.label
    text = f"{m.agg}({m.expr or ('*' if m.agg == 'count' else m.name)})"
    return f"{text} where {m.filter}" if m.filter else text


def _metric_formula(m) -> str | None:
    if m.measure:
        return f"measure {m.measure}"
    if m.expr:
        return m.expr
    if m.ratio:
        return f"{m.ratio.numerator} / {m.ratio.denominator}"
    return None
