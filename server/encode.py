"""Arrow answers to HTTP bodies: JSON (typed columns + rows), CSV or Arrow IPC, by the Accept header.

Decimal columns keep every digit: JSON writes a decimal's exact digits as a JSON number (never through a float),
or as a JSON string with `decimals="string"`, for clients whose JSON parser reads every number as a double.

`encode` makes a whole body at once (small answers); `chunks` makes the same bytes batch by batch, for a
StreamingResponse, so a large answer is never encoded (nor, read from the warehouse, held) whole.
"""

from __future__ import annotations

import datetime as dt
import decimal
import io
from collections.abc import Callable, Iterable, Iterator

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

ARROW = "application/vnd.apache.arrow.stream"
CSV = "text/csv"
JSON = "application/json"
PIECE_ROWS = 8192  # rows per piece of a streamed body: each is made in a few ms, so the GIL is never held long


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


def _digits(value: decimal.Decimal) -> str:
    return format(value, "f")  # plain digits, no exponent: 0.0000000001, not 1E-10


def _default(value):
    if isinstance(value, decimal.Decimal):  # a decimal inside a nested value
        return orjson.Fragment(_digits(value))
    if isinstance(value, dt.date | dt.datetime | dt.time):
        return value.isoformat()
    if isinstance(value, bytes):  # a BLOB, written as PostgreSQL writes bytea: \x and hex
        return "\\x" + value.hex()
    if isinstance(value, pa.MonthDayNano):  # an INTERVAL, as an ISO 8601 duration
        seconds = decimal.Decimal(value.nanoseconds) / 1_000_000_000
        return f"P{value.months}M{value.days}DT{seconds.normalize():f}S"
    raise TypeError(f"cannot encode {type(value).__name__}")


def decimal_texts(column: pa.ChunkedArray | pa.Array) -> list[str | None]:
    """A decimal column's exact digits, by Arrow's cast (which writes tiny values with an exponent: fixed here)."""
    texts = pc.cast(column, pa.string()).to_pylist()
    return [t if t is None or "E" not in t else _digits(decimal.Decimal(t)) for t in texts]


def json_values(column: pa.ChunkedArray | pa.Array, decimals: str = "number") -> list:
    """One column's values for orjson; a decimal is its exact digits as a JSON number (or string), never a float."""
    if not pa.types.is_decimal(column.type):
        return column.to_pylist()
    texts = decimal_texts(column)
    if decimals == "string":
        return texts
    return [None if t is None else orjson.Fragment(t) for t in texts]


def json_body(table: pa.Table, decimals: str = "number", **extra) -> bytes:
    columns = [json_values(c, decimals) for c in table.columns]
    payload = {
        "columns": _columns(table.schema),
        "rows": [list(r) for r in zip(*columns, strict=True)] if columns else [[] for _ in range(table.num_rows)],
        **extra,
    }
    return dumps(payload)


def _columns(schema: pa.Schema) -> list[dict]:
    return [{"name": f.name, "type": column_type(f.type)} for f in schema]


def dumps(value) -> bytes:
    """JSON as the answers write it: decimals exact, dates ISO."""
    return orjson.dumps(value, default=_default, option=orjson.OPT_PASSTHROUGH_DATETIME)


def json_chunks(schema: pa.Schema, batches: Iterable[pa.RecordBatch], failed: Callable[[Exception], dict] | None = None,
                decimals: str = "number", **extra) -> Iterator[bytes]:
    """The JSON body of `json_body`, a batch of rows at a time. An error raised by `batches` once rows were sent
    (`failed` makes it a dict) ends the body with `"truncated": true` and that error, so it stays valid JSON."""
    yield dumps({"columns": _columns(schema)})[:-1] + b',"rows":['
    sep = b""
    try:
        for batch in batches:
            for start in range(0, batch.num_rows, PIECE_ROWS):
                piece = batch.slice(start, PIECE_ROWS)
                yield sep + dumps(list(zip(*(json_values(c, decimals) for c in piece.columns), strict=True)))[1:-1]
                sep = b","
    except Exception as e:
        if failed is None:
            raise
        yield b'],"truncated":true,' + dumps({**extra, **failed(e)})[1:]
        return
    yield b"]" + (b"," + dumps(extra)[1:] if extra else b"}")


class _Sink(io.RawIOBase):
    """What a pyarrow writer wrote since the last `take()`."""

    def __init__(self):
        self.parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data, self.parts = b"".join(self.parts), []
        return data


def _written(schema: pa.Schema, batches: Iterable[pa.RecordBatch], writer) -> Iterator[bytes]:
    sink = _Sink()
    with writer(sink, schema) as w:
        for batch in batches:
            for start in range(0, batch.num_rows, PIECE_ROWS):
                w.write_batch(batch.slice(start, PIECE_ROWS))
                yield sink.take()
    yield sink.take()


def chunks(schema: pa.Schema, batches: Iterable[pa.RecordBatch], kind: str,
           failed: Callable[[Exception], dict] | None = None, decimals: str = "number", **extra) -> Iterator[bytes]:
    """The body of `encode` for answers arriving as record batches, one piece per batch."""
    if kind == ARROW:
        return _written(schema, batches, pa.ipc.new_stream)
    if kind == CSV:
        return _written(_csv_schema(schema), (_csv_ready(b) for b in batches), pacsv.CSVWriter)
    return json_chunks(schema, batches, failed, decimals, **extra)


def _as_text(t: pa.DataType) -> bool:
    """Types Arrow's CSV writer cannot write (INTERVAL, DuckDB's BIGNUM): written as text, as in JSON."""
    return pa.types.is_interval(t) or isinstance(t, pa.BaseExtensionType)


def _csv_schema(schema: pa.Schema) -> pa.Schema:
    return pa.schema([pa.field(f.name, pa.string()) if _as_text(f.type) else f for f in schema])


def _csv_ready(batch):
    if not any(_as_text(t) for t in batch.schema.types):
        return batch
    columns = [pa.array([None if v is None else _default(v) for v in c.to_pylist()], pa.string())
               if _as_text(c.type) else c for c in batch.columns]
    kind = pa.Table if isinstance(batch, pa.Table) else pa.RecordBatch
    return kind.from_arrays(columns, schema=_csv_schema(batch.schema))


def csv_body(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pacsv.write_csv(_csv_ready(table), sink)
    return sink.getvalue().to_pybytes()


def arrow_body(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def encode(table: pa.Table, kind: str, decimals: str = "number", **extra) -> bytes:
    if kind == ARROW:
        return arrow_body(table)
    if kind == CSV:
        return csv_body(table)
    return json_body(table, decimals, **extra)
