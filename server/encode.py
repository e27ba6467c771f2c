"""Arrow answers to HTTP bodies: JSON (typed columns + rows), CSV or Arrow IPC, by the Accept header."""

from __future__ import annotations

import datetime as dt
import decimal

import orjson
import pyarrow as pa
import pyarrow.csv as pacsv

ARROW = "application/vnd.apache.arrow.stream"
CSV = "text/csv"
JSON = "application/json"


def negotiate(accept: str | None) -> str:
    accept = (accept or "").lower()
    for kind in (ARROW, CSV, JSON):
        if kind in accept:
            return kind
    return JSON


def column_type(t: pa.DataType) -> str:
    """A short, stable type name clients can switch on."""
    if pa.types.is_decimal(t):
        return f"decimal({t.precision},{t.scale})"
    if pa.types.is_integer(t):
        return "integer"
    if pa.types.is_floating(t):
        return "float"
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_date(t):
        return "date"
    if pa.types.is_timestamp(t):
        return "timestamp"
    return "string"


def _default(value):
    if isinstance(value, decimal.Decimal):
        return orjson.Fragment(str(value))  # exact to the cent: decimals are written as JSON numbers, not floats
    if isinstance(value, dt.date | dt.datetime | dt.time):
        return value.isoformat()
    raise TypeError(f"cannot encode {type(value).__name__}")


def json_body(table: pa.Table, **extra) -> bytes:
    payload = {
        "columns": [{"name": f.name, "type": column_type(f.type)} for f in table.schema],
        "rows": [list(r.values()) for r in table.to_pylist()],
        **extra,
    }
    return orjson.dumps(payload, default=_default, option=orjson.OPT_PASSTHROUGH_DATETIME)


def csv_body(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pacsv.write_csv(table, sink)
    return sink.getvalue().to_pybytes()


def arrow_body(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def encode(table: pa.Table, kind: str, **extra) -> bytes:
    if kind == ARROW:
        return arrow_body(table)
    if kind == CSV:
        return csv_body(table)
    return json_body(table, **extra)
