"""PostgreSQL results as Arrow: each column's type comes from the cursor's description, not from its values.

Rows arrive as Python tuples (psycopg, C-accelerated); they are transposed once and each column is handed
to pyarrow whole, so no Python code runs per value except psycopg's own loaders.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

NUMERIC = 1700
TEXT_LOADED = ("json", "jsonb", "uuid")  # loaded as their text (as DuckDB returns them), not as Python objects

# oid -> Arrow type, for every type whose Arrow counterpart the oid alone decides
FIXED: dict[int, pa.DataType] = {
    16: pa.bool_(),
    17: pa.binary(),
    18: pa.string(),  # "char"
    19: pa.string(),  # name
    20: pa.int64(),
    21: pa.int16(),
    23: pa.int32(),
    25: pa.string(),
    26: pa.int64(),  # oid
    114: pa.string(),
    700: pa.float32(),
    701: pa.float64(),
    1042: pa.string(),
    1043: pa.string(),
    1082: pa.date32(),
    1083: pa.time64("us"),
    1114: pa.timestamp("us"),
    1184: pa.timestamp("us", tz="UTC"),
    1186: pa.duration("us"),
    2950: pa.string(),
    3802: pa.string(),
}


def arrow_type(column) -> pa.DataType | None:
    """The Arrow type of a result column; None when only the values can tell (numeric without a scale)."""
    fixed = FIXED.get(column.type_code)
    if fixed is not None:
        return fixed
    if column.type_code == NUMERIC and column.precision is not None and column.scale is not None \
            and 0 <= column.scale <= column.precision <= 76:
        return (pa.decimal128 if column.precision <= 38 else pa.decimal256)(column.precision, column.scale)
    return None


def numeric_array(values: Sequence) -> pa.Array:
    """numeric without a declared scale: decimal(38 or 76, the largest scale present), else float64."""
    try:
        inferred = pa.array(values)  # pyarrow infers precision and scale from the Decimals themselves
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # NaN / Infinity have no decimal form
        return pa.array([None if v is None else float(v) for v in values], pa.float64())
    if pa.types.is_null(inferred.type):
        return inferred.cast(pa.decimal128(38, 0))
    if pa.types.is_decimal(inferred.type) and inferred.type.precision <= 76:
        wide = pa.decimal128(38, inferred.type.scale) if inferred.type.precision <= 38 \
            else pa.decimal256(76, inferred.type.scale)
        return inferred.cast(wide)
    return pa.array([None if v is None else float(v) for v in values], pa.float64())


def column_array(column, values: Sequence) -> pa.Array:
    known = arrow_type(column)
    if known is not None:
        return pa.array(values, type=known)
    if column.type_code == NUMERIC:
        return numeric_array(values)
    try:  # arrays, ranges, ...: what pyarrow can infer, else their text
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return pa.array([None if v is None else str(v) for v in values], pa.string())


def to_arrow(description: Sequence, rows: list[tuple]) -> pa.Table:
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(description)
    arrays = [column_array(c, v) for c, v in zip(description, columns, strict=True)]
    return pa.Table.from_arrays(arrays, names=[c.name for c in description])
