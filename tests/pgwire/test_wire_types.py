"""Values on the wire, byte for byte against a real PostgreSQL 15: what it sends for a value (text and binary)
is what this server sends for the same value from Arrow, and what it sends decodes to the value here."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid

import psycopg
import pyarrow as pa
import pytest

from server.pgwire import types as T

CASES = [  # (PostgreSQL type, OID, Arrow type, values)
    ("int2", T.INT2, pa.int16(), [0, 1, -1, 32767, -32768]),
    ("int4", T.INT4, pa.int32(), [0, 7, -2147483648, 2147483647]),
    ("int8", T.INT8, pa.int64(), [0, -1, 2**63 - 1, -(2**63), 1234567890123]),
    ("float4", T.FLOAT4, pa.float32(), [0.0, 1.5, -2.25, float("inf"), float("-inf")]),
    ("float8", T.FLOAT8, pa.float64(), [0.0, 0.1, -1e300, 123.456, float("inf"), float("nan")]),
    ("bool", T.BOOL, pa.bool_(), [True, False]),
    ("text", T.TEXT, pa.string(), ["", "héllo", "a'b\"c\\d", "tab\there", "日本語"]),
    ("varchar", T.VARCHAR, pa.string(), ["x", "with space"]),
    ("date", T.DATE, pa.date32(), [dt.date(2000, 1, 1), dt.date(1999, 12, 31), dt.date(2024, 2, 29),
                                   dt.date(1, 1, 1), dt.date(9999, 12, 31)]),
    ("timestamp", T.TIMESTAMP, pa.timestamp("us"),
     [dt.datetime(2000, 1, 1), dt.datetime(2024, 1, 5, 10, 0, 1, 120000), dt.datetime(1970, 1, 1, 0, 0, 0, 1),
      dt.datetime(1900, 6, 30, 23, 59, 59, 999999)]),
    ("timestamptz", T.TIMESTAMPTZ, pa.timestamp("us", "UTC"),
     [dt.datetime(2000, 1, 1, tzinfo=dt.UTC), dt.datetime(2024, 1, 5, 10, 0, 1, 500, tzinfo=dt.UTC)]),
    ("bytea", T.BYTEA, pa.binary(), [b"", b"\x00\xff\x10", b"plain"]),
    ("numeric", T.NUMERIC, pa.decimal128(20, 4), [decimal.Decimal(x) for x in
                                                   ("0.0000", "1.5000", "-1.5000", "12345678.9012", "0.0001",
                                                    "-99999999.9999", "10000.0000", "9999999999999999.0000")]),
    ("numeric", T.NUMERIC, pa.decimal128(38, 0), [decimal.Decimal(x) for x in
                                                   ("0", "1", "-10000", "12345678901234567890123456789")]),
    ("numeric", T.NUMERIC, pa.decimal128(38, 10), [decimal.Decimal("-0.0000012345"),
                                                   decimal.Decimal("1234567890123456789.0000000001")]),
    ("uuid", T.UUID, pa.string(), ["12345678-1234-5678-1234-567812345678"]),
]


def postgres_bytes(conn: psycopg.Connection, typ: str, value, fmt: int) -> bytes:
    """The bytes PostgreSQL itself sends for `value::typ` in format `fmt`."""
    text = value if isinstance(value, str) else repr(value) if isinstance(value, float) else T.text_value(value)
    if isinstance(value, float) and value != value:
        text = "NaN"
    elif isinstance(value, float) and value in (float("inf"), float("-inf")):
        text = "Infinity" if value > 0 else "-Infinity"
    res = conn.pgconn.exec_params(f"SELECT $1::{typ}".encode(), [text.encode()], result_format=fmt)
    assert res.status == psycopg.pq.ExecStatus.TUPLES_OK, res.error_message
    return res.get_value(0, 0)


@pytest.fixture(scope="module")
def postgres(postgres_dsn):
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        conn.execute("SET extra_float_digits = 1")
        yield conn


@pytest.mark.parametrize("typ, oid, arrow, values", CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_binary_results_are_postgres_bytes(postgres, typ, oid, arrow, values):
    ours = T.binary_column(pa.array(values, arrow), oid).to_pylist()  # the vectorized path
    theirs = [postgres_bytes(postgres, typ, v, 1) for v in values]
    assert ours == theirs


FLOATS = {T.FLOAT4, T.FLOAT8}


@pytest.mark.parametrize("typ, oid, arrow, values", CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_text_results_read_as_postgres_text(postgres, typ, oid, arrow, values):
    ours = [v.decode() for v in T.text_column(pa.array(values, arrow), oid).to_pylist()]
    theirs = [postgres_bytes(postgres, typ, v, 0).decode() for v in values]
    if oid in FLOATS:  # shortest round-trip text on both sides, spelled differently at times (1e+15 / 1e15)
        assert [float(x) if x != "NaN" else "NaN" for x in ours] == [float(x) if x != "NaN" else "NaN" for x in theirs]
    elif oid == T.NUMERIC:  # PostgreSQL keeps each value's own scale; Arrow has the column's
        assert [decimal.Decimal(x) for x in ours] == [decimal.Decimal(x) for x in theirs]
    else:
        assert ours == theirs


def cells(data: bytes) -> list[bytes | None]:
    """The values of single-column DataRows."""
    out, pos = [], 0
    while pos < len(data):
        length = int.from_bytes(data[pos + 1:pos + 5], "big")
        size = int.from_bytes(data[pos + 7:pos + 11], "big", signed=True)
        out.append(None if size < 0 else data[pos + 11:pos + 11 + size])
        pos += 1 + length
    return out


@pytest.mark.parametrize("fmt", [0, 1])
@pytest.mark.parametrize("typ, oid, arrow, values", CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_small_results_are_postgres_bytes_exactly(postgres, typ, oid, arrow, values, fmt):
    """A few rows are encoded a value at a time: byte for byte what PostgreSQL sends, floats included."""
    table = pa.table({"c": pa.array(values, arrow)})
    ours = cells(T.encode_small(table, [oid], [fmt]))
    theirs = [postgres_bytes(postgres, typ, v, fmt) for v in values]
    if oid == T.NUMERIC and fmt == 0:  # PostgreSQL keeps each value's own scale; Arrow has the column's
        assert [decimal.Decimal(x.decode()) for x in ours] == [decimal.Decimal(x.decode()) for x in theirs]
    else:
        assert ours == theirs


@pytest.mark.parametrize("fmt", [0, 1])
@pytest.mark.parametrize("typ, oid, arrow, values", CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_both_encoding_paths_agree(typ, oid, arrow, values, fmt):
    table = pa.table({"c": pa.array([*values, None] * 60, arrow)})  # past SMALL_CELLS: the vectorized path
    vectorized = cells(bytes(T.encode_rows(table, [oid], [fmt])))
    small = cells(T.encode_small(table, [oid], [fmt]))
    if oid in FLOATS and fmt == 0:  # both shortest round-trip; Arrow spells some exponents differently
        assert [None if v is None else float(v) for v in vectorized if v not in (b"NaN",)] == \
               [None if v is None else float(v) for v in small if v not in (b"NaN",)]
    else:
        assert vectorized == small


@pytest.mark.parametrize("typ, oid, arrow, values", CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_postgres_binary_parameters_decode_to_the_values(postgres, typ, oid, arrow, values):
    for value in values:
        decoded = T.decode_param(postgres_bytes(postgres, typ, value, 1), oid, 1)
        if oid == T.UUID:
            value = uuid.UUID(value)
        if isinstance(value, float) and value != value:
            assert decoded != decoded
        elif oid == T.FLOAT4:
            assert decoded == pytest.approx(value)
        else:
            assert decoded == value


@pytest.mark.parametrize("typ, oid, arrow, values", CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_postgres_text_parameters_decode_to_the_values(postgres, typ, oid, arrow, values):
    for value in values:
        decoded = T.decode_param(postgres_bytes(postgres, typ, value, 0), oid, 0)
        if oid == T.UUID:
            value = uuid.UUID(value)
        if isinstance(value, float) and value != value:
            assert decoded != decoded
        else:
            assert decoded == value


def test_nulls_and_unspecified_parameters():
    assert T.decode_param(None, T.INT4, 1) is None
    assert T.decode_param(b"2024-01-05 +00", 0, 0) == "2024-01-05 +00"  # pgjdbc setDate: left to the engine
    assert T.decode_param(b"hello", 0, 0) == "hello"  # psycopg str: never a date, never NULL
    assert T.decode_param(b"{1,2,NULL}", 1007, 0) == [1, 2, None]
    with pytest.raises(T.WireValueError) as caught:
        T.decode_param(b"12x", T.INT4, 0)
    assert caught.value.sqlstate == "22P02"
    with pytest.raises(T.WireValueError) as caught:
        T.decode_param(b"70000", T.INT2, 0)
    assert caught.value.sqlstate == "22003"
    with pytest.raises(T.WireValueError) as caught:
        T.decode_param(b"\x00\x00\x01", T.INT4, 1)
    assert caught.value.sqlstate == "22P03"


def test_arrays_binary_match_postgres(postgres):
    for typ, oid, value in [("int4[]", 1007, [1, None, -3]), ("text[]", 1009, ["a", "b c", ""]),
                            ("float8[]", 1022, [1.5]), ("int8[]", 1016, [])]:
        text = "{" + ",".join("NULL" if v is None else f'"{v}"' for v in value) + "}"
        res = postgres.pgconn.exec_params(f"SELECT $1::{typ}".encode(), [text.encode()], result_format=1)
        assert T.binary_value(value, oid) == res.get_value(0, 0)
        assert T.decode_param(res.get_value(0, 0), oid, 1) == value


def test_rows_are_one_buffer_of_datarows():
    table = pa.table({"a": pa.array([1, None], pa.int64()), "b": pa.array(["x", None])})
    data = bytes(T.encode_rows(table, [T.INT8, T.TEXT], [1, 0]))
    first = b"D" + (4 + 2 + 4 + 8 + 4 + 1).to_bytes(4, "big") + (2).to_bytes(2, "big")
    first += (8).to_bytes(4, "big") + (1).to_bytes(8, "big") + (1).to_bytes(4, "big") + b"x"
    second = b"D" + (4 + 2 + 4 + 4).to_bytes(4, "big") + (2).to_bytes(2, "big") + b"\xff" * 8
    assert data == first + second
