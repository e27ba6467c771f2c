"""PostgreSQL types as the door reports them: OIDs, names, how a value of each type is held in Arrow.

Types are OIDs (ints) everywhere; a composite value (a record such as `_pg_expandarray`'s) is a `Record`.
`UNKNOWN` is an untyped literal or NULL: it becomes text in a result, as in PostgreSQL.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from server.pgwire import pg15

BOOL, BYTEA, CHAR, NAME, INT8, INT2, INT2VECTOR, INT4, REGPROC, TEXT, OID = 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26
OIDVECTOR, JSON, XML, FLOAT4, FLOAT8, UNKNOWN = 30, 114, 142, 700, 701, 705
BPCHAR, VARCHAR, DATE, TIME, TIMESTAMP, TIMESTAMPTZ, INTERVAL, TIMETZ = 1042, 1043, 1082, 1083, 1114, 1184, 1186, 1266
NUMERIC, REGCLASS, REGTYPE, RECORD, REGNAMESPACE, REGROLE, JSONB = 1700, 2205, 2206, 2249, 4089, 4096, 3802
TEXT_ARRAY, NAME_ARRAY, INT2_ARRAY, OID_ARRAY, CHAR_ARRAY = 1009, 1003, 1005, 1028, 1002

_TYPES = {row[0]: dict(zip(pg15.TYPE_COLUMNS, row, strict=False)) for row in pg15.TYPES}
for _row in pg15.TYPES:
    _TYPES[_row[0]]["format_null"], _TYPES[_row[0]]["format"] = _row[-2], _row[-1]
BY_NAME = {t["typname"]: oid for oid, t in _TYPES.items()}

REG_TYPES = {REGCLASS, REGTYPE, REGPROC, REGNAMESPACE, REGROLE, 2202, 2203, 2204, 3734, 3769, 4191}  # reg* OIDs
STRING_TYPES = {TEXT, VARCHAR, NAME, BPCHAR, CHAR, UNKNOWN, JSON, JSONB, XML, 194}  # 194: pg_node_tree
INTEGER_TYPES = {INT2: 1, INT4: 2, INT8: 3}
VECTORS = {INT2VECTOR: INT2, OIDVECTOR: OID}  # subscripted from 0


@dataclass(frozen=True)
class Record:
    """A composite value: `(information_schema._pg_expandarray(a)).x`."""

    fields: tuple[tuple[str, int], ...]

    def field(self, name: str) -> int | None:
        return next((t for n, t in self.fields if n == name), None)


PgType = int | Record


def oid_of(t: PgType) -> int:
    if isinstance(t, Record):
        return RECORD
    return TEXT if t == UNKNOWN else t


def info(oid: int) -> dict:
    return _TYPES.get(oid, {})


def typname(oid: int) -> str:
    return info(oid).get("typname", "unknown")


def element(t: PgType) -> int | None:
    """The element type of an array (or int2vector/oidvector), None for anything else."""
    if not isinstance(t, int):
        return None
    row = _TYPES.get(t)
    if row and row["typcategory"] == "A":
        return row["typelem"]
    return None


def array_of(t: PgType) -> int:
    if t == UNKNOWN:
        t = TEXT
    if isinstance(t, int) and t in _TYPES:
        return _TYPES[t]["typarray"] or TEXT_ARRAY
    return TEXT_ARRAY


def is_array(t: PgType) -> bool:
    return element(t) is not None


def is_string(t: PgType) -> bool:
    return isinstance(t, int) and t in STRING_TYPES


def is_numeric(t: PgType) -> bool:
    return isinstance(t, int) and (t in INTEGER_TYPES or t in (OID, FLOAT4, FLOAT8, NUMERIC) or t in REG_TYPES)


def typlen(oid: int) -> int:
    return int(info(oid).get("typlen", -1))


# ------------------------------------------------------------------ type names in SQL text

_ALIASES = {
    "int": INT4, "integer": INT4, "int4": INT4, "serial": INT4, "smallint": INT2, "int2": INT2, "bigint": INT8,
    "int8": INT8, "bigserial": INT8, "real": FLOAT4, "float4": FLOAT4, "float": FLOAT8, "double": FLOAT8,
    "double precision": FLOAT8, "float8": FLOAT8, "boolean": BOOL, "bool": BOOL, "varchar": VARCHAR,
    "character varying": VARCHAR, "char": BPCHAR, "character": BPCHAR, "bpchar": BPCHAR, "nchar": BPCHAR,
    "decimal": NUMERIC, "numeric": NUMERIC, "text": TEXT, "string": TEXT, "name": NAME, "oid": OID,
    "timestamp": TIMESTAMP, "timestamp without time zone": TIMESTAMP, "timestamptz": TIMESTAMPTZ,
    "timestamp with time zone": TIMESTAMPTZ, "time": TIME, "timetz": TIMETZ, "date": DATE, "interval": INTERVAL,
    "json": JSON, "jsonb": JSONB, "bytea": BYTEA, "blob": BYTEA, "uuid": 2950, '"char"': CHAR,
    "regclass": REGCLASS, "regtype": REGTYPE, "regproc": REGPROC, "regprocedure": 2202, "regoper": 2203,
    "regoperator": 2204, "regnamespace": REGNAMESPACE, "regrole": REGROLE, "regconfig": 3734,
    "hugeint": NUMERIC, "ubigint": NUMERIC, "uinteger": INT8, "usmallint": INT4, "utinyint": INT2,
    "tinyint": INT2, "int128": NUMERIC,
}


def named(name: str) -> int | None:
    """A type name as written in SQL (`integer`, `pg_catalog.int2`, `character varying`, `_text`) → OID."""
    name = name.strip().lower().removeprefix("pg_catalog.")
    if name.endswith("[]"):
        inner = named(name[:-2])
        return array_of(inner) if inner is not None else None
    if name in _ALIASES:
        return _ALIASES[name]
    return BY_NAME.get(name)


# ------------------------------------------------------------------ format_type

def format_type(oid: int | None, typmod: int | None = None) -> str | None:
    """PostgreSQL's format_type(oid, typmod): `bigint`, `character varying(20)`, `numeric(38,2)`, `text[]`."""
    if oid is None:
        return None
    row = _TYPES.get(oid)
    if row is None:
        return "???"
    if typmod is None:
        return row["format_null"]
    base = row["format"]
    if typmod < 0:
        return base
    if oid == NUMERIC:
        return f"numeric({(typmod - 4) >> 16},{(typmod - 4) & 0xFFFF})"
    if oid in (VARCHAR, BPCHAR):
        return f"{base}({typmod - 4})"
    if oid in (TIMESTAMP, TIMESTAMPTZ, TIME, TIMETZ):
        head, _, zone = base.partition(" ")
        return f"{head}({typmod}) {zone}"
    return base


def numeric_typmod(precision: int, scale: int) -> int:
    return ((precision << 16) | scale) + 4


# ------------------------------------------------------------------ Arrow

def from_arrow(t: pa.DataType) -> tuple[int, int]:
    """(type OID, typmod) for an Arrow column of a semantic answer."""
    if pa.types.is_boolean(t):
        return BOOL, -1
    if pa.types.is_int8(t) or pa.types.is_int16(t) or pa.types.is_uint8(t):
        return INT2, -1
    if pa.types.is_int32(t) or pa.types.is_uint16(t):
        return INT4, -1
    if pa.types.is_int64(t) or pa.types.is_uint32(t):
        return INT8, -1
    if pa.types.is_uint64(t):
        return NUMERIC, -1
    if pa.types.is_float16(t) or pa.types.is_float32(t):
        return FLOAT4, -1
    if pa.types.is_float64(t):
        return FLOAT8, -1
    if pa.types.is_decimal(t):
        return NUMERIC, numeric_typmod(t.precision, t.scale)
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t) or pa.types.is_null(t):
        return TEXT, -1
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return BYTEA, -1
    if pa.types.is_date(t):
        return DATE, -1
    if pa.types.is_timestamp(t):
        return (TIMESTAMPTZ if t.tz else TIMESTAMP), -1
    if pa.types.is_time(t):
        return TIME, -1
    if pa.types.is_duration(t) or pa.types.is_interval(t):
        return INTERVAL, -1
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return array_of(from_arrow(t.value_type)[0]), -1
    if pa.types.is_struct(t) or pa.types.is_map(t):
        return JSON, -1
    return TEXT, -1


_ARROW = {BOOL: pa.bool_(), INT2: pa.int16(), INT4: pa.int32(), INT8: pa.int64(), OID: pa.int64(),
          FLOAT4: pa.float32(), FLOAT8: pa.float64(), DATE: pa.date32(), TIMESTAMP: pa.timestamp("us"),
          TIMESTAMPTZ: pa.timestamp("us", tz="UTC"), TIME: pa.time64("us"), BYTEA: pa.binary(), 28: pa.int64(),
          29: pa.int64()}  # 28 xid, 29 cid


def arrow_type(t: PgType) -> pa.DataType | None:
    """How a catalog result holds a value of type `t` (None: keep what the query produced, e.g. numeric)."""
    if isinstance(t, Record):
        return pa.string()
    if t in _ARROW:
        return _ARROW[t]
    if t in VECTORS:
        return pa.list_(_ARROW[VECTORS[t]])
    inner = element(t)
    if inner is not None:
        value = arrow_type(inner)
        return pa.list_(value if value is not None else pa.string())
    if t == NUMERIC or t == INTERVAL:
        return None
    return pa.string()  # text, name, "char", json, the reg* types (their text form) and everything else


def duckdb_type(t: int) -> str:
    """The DuckDB column type that stores a catalog column of PostgreSQL type `t`."""
    if t in VECTORS:
        return f"{duckdb_type(VECTORS[t])}[]"
    inner = element(t)
    if inner is not None:
        return f"{duckdb_type(inner)}[]"
    return {BOOL: "BOOLEAN", INT2: "SMALLINT", INT4: "INTEGER", INT8: "BIGINT", OID: "BIGINT", 28: "BIGINT",
            29: "BIGINT", FLOAT4: "FLOAT", FLOAT8: "DOUBLE", NUMERIC: "DOUBLE", DATE: "DATE",
            TIMESTAMP: "TIMESTAMP", TIMESTAMPTZ: "TIMESTAMPTZ", BYTEA: "BLOB", INTERVAL: "INTERVAL",
            REGCLASS: "BIGINT", REGTYPE: "BIGINT", REGNAMESPACE: "BIGINT", REGROLE: "BIGINT"}.get(t, "VARCHAR")
