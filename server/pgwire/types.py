"""PostgreSQL types on the wire: Bind parameters decoded to Python values, Arrow results encoded to DataRows.

Rows are encoded a batch at a time with Arrow compute and numpy: each column becomes one binary array of
its wire values (text: a cast to string; binary: big-endian numpy buffers), a second array holds each
value's 4-byte length, and `binary_join_element_wise` glues header, lengths and values into one DataRow per
row, whose data buffer is exactly the bytes to send. Python runs per value only for types without a
vectorized form (bytea text, uuid, interval, arrays, numeric outside int64 range).
"""

from __future__ import annotations

import datetime as dt
import decimal
import functools
import json
import math
import re
import struct
import uuid
from collections.abc import Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# --------------------------------------------------------------------------------------------------- OIDs

BOOL, BYTEA, CHAR, NAME, INT8, INT2, INT2VECTOR, INT4, REGPROC, TEXT, OID = 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26
OIDVECTOR, JSON, FLOAT4, FLOAT8, UNKNOWN, BPCHAR, VARCHAR = 30, 114, 700, 701, 705, 1042, 1043
DATE, TIME, TIMESTAMP, TIMESTAMPTZ, INTERVAL, TIMETZ, NUMERIC = 1082, 1083, 1114, 1184, 1186, 1266, 1700
REGCLASS, REGTYPE, UUID, JSONB, REGNAMESPACE = 2205, 2206, 2950, 3802, 4089

# name and typlen (RowDescription's type size) of the types this server speaks
TYPES: dict[int, tuple[str, int]] = {
    BOOL: ("bool", 1), BYTEA: ("bytea", -1), CHAR: ("char", 1), NAME: ("name", 64), INT8: ("int8", 8),
    INT2: ("int2", 2), INT2VECTOR: ("int2vector", -1), INT4: ("int4", 4), REGPROC: ("regproc", 4),
    TEXT: ("text", -1), OID: ("oid", 4), OIDVECTOR: ("oidvector", -1), JSON: ("json", -1),
    FLOAT4: ("float4", 4), FLOAT8: ("float8", 8), UNKNOWN: ("unknown", -2), BPCHAR: ("bpchar", -1),
    VARCHAR: ("varchar", -1), DATE: ("date", 4), TIME: ("time", 8), TIMESTAMP: ("timestamp", 8),
    TIMESTAMPTZ: ("timestamptz", 8), INTERVAL: ("interval", 16), TIMETZ: ("timetz", 12),
    NUMERIC: ("numeric", -1), REGCLASS: ("regclass", 4), REGTYPE: ("regtype", 4), UUID: ("uuid", 16),
    JSONB: ("jsonb", -1), REGNAMESPACE: ("regnamespace", 4),
}
# array type OID -> element type OID
ARRAYS: dict[int, int] = {
    1000: BOOL, 1001: BYTEA, 1002: CHAR, 1003: NAME, 1005: INT2, 1006: INT2VECTOR, 1007: INT4, 1008: REGPROC,
    1009: TEXT, 1014: BPCHAR, 1015: VARCHAR, 1016: INT8, 1021: FLOAT4, 1022: FLOAT8, 1028: OID, 199: JSON,
    1115: TIMESTAMP, 1182: DATE, 1183: TIME, 1185: TIMESTAMPTZ, 1187: INTERVAL, 1231: NUMERIC, 2951: UUID,
    3807: JSONB, 2210: REGCLASS, 2211: REGTYPE,
}
ARRAY_OF = {element: array for array, element in ARRAYS.items()}
INTEGERS = {INT2: (np.dtype(">i2"), pa.int16()), INT4: (np.dtype(">i4"), pa.int32()),
            INT8: (np.dtype(">i8"), pa.int64()), OID: (np.dtype(">u4"), pa.uint32()),
            REGPROC: (np.dtype(">u4"), pa.uint32()), REGCLASS: (np.dtype(">u4"), pa.uint32()),
            REGTYPE: (np.dtype(">u4"), pa.uint32()), REGNAMESPACE: (np.dtype(">u4"), pa.uint32())}
FLOATS = {FLOAT4: (np.dtype(">f4"), pa.float32()), FLOAT8: (np.dtype(">f8"), pa.float64())}
TEXTS = {TEXT, VARCHAR, BPCHAR, NAME, CHAR, UNKNOWN, JSON, 0}

POSTGRES_EPOCH = dt.datetime(2000, 1, 1)
POSTGRES_EPOCH_DATE = dt.date(2000, 1, 1)
_EPOCH_DAYS = 10957  # 1970-01-01 -> 2000-01-01
_EPOCH_MICROS = _EPOCH_DAYS * 86_400_000_000
_UTC = dt.UTC


def type_size(oid: int) -> int:
    return TYPES.get(oid, ("", -1))[1]


def type_name(oid: int) -> str:
    if oid in ARRAYS:
        return "_" + type_name(ARRAYS[oid])
    return TYPES.get(oid, (str(oid), -1))[0]


class WireValueError(Exception):
    """A parameter or result value that does not fit its type; answered as ErrorResponse with `sqlstate`."""

    def __init__(self, sqlstate: str, message: str):
        super().__init__(message)
        self.sqlstate = sqlstate


def type_label(oid: int) -> str:
    """The type's name as PostgreSQL's error messages spell it ('integer', not 'int4')."""
    return {INT2: "smallint", INT4: "integer", INT8: "bigint", FLOAT4: "real", FLOAT8: "double precision",
            BOOL: "boolean", NUMERIC: "numeric", DATE: "date", TIMESTAMP: "timestamp without time zone",
            TIMESTAMPTZ: "timestamp with time zone", UUID: "uuid", BYTEA: "bytea"}.get(oid, type_name(oid))


# --------------------------------------------------------------------------------------------- parameters

def decode_param(value: bytes | None, oid: int, fmt: int):
    """One Bind parameter as a Python value, by its type OID (0: unspecified, passed on as text)."""
    if value is None:
        return None
    if fmt == 0:
        if oid in INT_RANGE and value.isdigit() and len(value) < 19:  # plain ASCII digits: the common case
            n = int(value)
            lo, hi = INT_RANGE[oid]
            if lo <= n <= hi:
                return n
        try:
            text = value.decode()
        except UnicodeDecodeError:
            raise WireValueError("22021", 'invalid byte sequence for encoding "UTF8"') from None
        return decode_text(text, oid)
    if fmt == 1:
        return decode_binary(value, oid)
    raise WireValueError("08P01", f"unsupported format code: {fmt}")


_TRUE = {"t", "true", "y", "yes", "on", "1"}
_FALSE = {"f", "false", "n", "no", "off", "0"}
INT_RANGE = {INT2: (-(2**15), 2**15 - 1), INT4: (-(2**31), 2**31 - 1), INT8: (-(2**63), 2**63 - 1),
             OID: (0, 2**32 - 1)}


def int_in_range(value, oid: int):
    """`value` (an int or Decimal), or 22003 as PostgreSQL's input function says when it does not fit the
    integer type `oid`."""
    lo, hi = INT_RANGE[oid]
    if not lo <= value < hi + 1:
        raise WireValueError("22003", f'value "{value}" is out of range for type {type_label(oid)}')
    return value


def decode_text(text: str, oid: int):
    """A text-format parameter. Formats this parser does not know (dates like 'Jan 5 2024') stay strings, for
    the engine to cast from context; values that are plainly wrong (an integer 'abc') are errors, as in
    PostgreSQL."""
    if oid in TEXTS or oid == JSONB:
        return text
    s = text.strip()
    if oid == BOOL:
        low = s.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise WireValueError("22P02", f'invalid input syntax for type boolean: "{text}"')
    if oid in INT_RANGE:
        return parse_int(text, oid)
    if oid in FLOATS:
        try:
            return float(s)
        except ValueError:
            raise WireValueError("22P02", f'invalid input syntax for type {type_label(oid)}: "{text}"') from None
    if oid == NUMERIC:
        try:
            return decimal.Decimal(s)
        except decimal.InvalidOperation:
            raise WireValueError("22P02", f'invalid input syntax for type numeric: "{text}"') from None
    if oid == UUID:
        try:
            return uuid.UUID(s)
        except ValueError:
            raise WireValueError("22P02", f'invalid input syntax for type uuid: "{text}"') from None
    if oid == BYTEA:
        return _bytea_from_text(text)
    try:
        if oid == DATE:
            return dt.date.fromisoformat(s)
        if oid == TIMESTAMP:
            return dt.datetime.fromisoformat(s).replace(tzinfo=None)  # PostgreSQL ignores a zone here too
        if oid == TIMESTAMPTZ:
            value = dt.datetime.fromisoformat(s)
            return (value if value.tzinfo else value.replace(tzinfo=_UTC)).astimezone(_UTC)
        if oid == TIME:
            return dt.time.fromisoformat(s)
    except ValueError:
        return text  # 'epoch', 'Jan 5 2024', '2024-01-05 +00' for a date: the engine casts those
    if oid in ARRAYS:
        items = _parse_array_literal(text)
        if items is None:
            return text
        return [None if v is None else decode_text(v, ARRAYS[oid]) for v in items]
    return text


_INT_SYNTAX = re.compile(r"[ \t\n\r\f\v]*[+-]?[0-9]+[ \t\n\r\f\v]*")  # int4in's: no '1_000', no non-ASCII digits


def parse_int(text: str, oid: int) -> int:
    """int2in / int4in / int8in / oidin: 22P02 for text that is not an integer, 22003 for one out of range."""
    if not _INT_SYNTAX.fullmatch(text):
        raise WireValueError("22P02", f'invalid input syntax for type {type_label(oid)}: "{text}"')
    n = int(text)
    lo, hi = INT_RANGE[oid]
    if not lo <= n <= hi:
        raise WireValueError("22003", f'value "{text}" is out of range for type {type_label(oid)}')
    return n


def _bytea_from_text(text: str) -> bytes:
    if text.startswith("\\x"):
        try:
            return bytes.fromhex(text[2:])
        except ValueError:
            raise WireValueError("22P02", "invalid hexadecimal data") from None
    out = bytearray()  # escape format: \\ and \ooo
    i = 0
    raw = text.encode()
    while i < len(raw):
        c = raw[i]
        if c == 0x5C:
            if raw[i + 1:i + 2] == b"\\":
                out.append(0x5C)
                i += 2
                continue
            octal = raw[i + 1:i + 4]
            if len(octal) == 3 and all(0x30 <= b <= 0x37 for b in octal):
                out.append(int(octal, 8))
                i += 4
                continue
            raise WireValueError("22P02", "invalid input syntax for type bytea")
        out.append(c)
        i += 1
    return bytes(out)


def _parse_array_literal(text: str) -> list[str | None] | None:
    """A one-dimensional array literal `{a,"b c",NULL}`; None for anything else (passed on as text)."""
    s = text.strip()
    if not (s.startswith("{") and s.endswith("}")):
        return None
    body = s[1:-1]
    if "{" in body:
        return None
    items: list[str | None] = []
    if not body.strip():
        return items
    i, n = 0, len(body)
    while i <= n:
        while i < n and body[i] == " ":
            i += 1
        if i < n and body[i] == '"':
            i += 1
            chars = []
            while i < n and body[i] != '"':
                if body[i] == "\\" and i + 1 < n:
                    i += 1
                chars.append(body[i])
                i += 1
            i += 1
            items.append("".join(chars))
            while i < n and body[i] != ",":
                i += 1
        else:
            j = body.find(",", i)
            j = n if j < 0 else j
            raw = body[i:j].strip()
            items.append(None if raw.upper() == "NULL" else raw)
            i = j
        i += 1
    return items


_be = {fmt: struct.Struct("!" + fmt) for fmt in "hiqfdI"}


def decode_binary(data: bytes, oid: int):
    """A binary-format parameter, by its type OID."""
    try:
        return _decode_binary(data, oid)
    except (struct.error, IndexError, ValueError, decimal.InvalidOperation, OverflowError):
        raise WireValueError("22P03", f'incorrect binary data format in bind parameter of type '
                                      f'{type_label(oid)}') from None


def _decode_binary(data: bytes, oid: int):
    if oid in TEXTS or oid == 0:
        return data.decode()
    if oid == BOOL:
        if len(data) != 1:
            raise ValueError
        return data != b"\0"
    if oid == INT2:
        return _be["h"].unpack(data)[0]
    if oid == INT4:
        return _be["i"].unpack(data)[0]
    if oid == INT8:
        return _be["q"].unpack(data)[0]
    if oid in (OID, REGPROC, REGCLASS, REGTYPE, REGNAMESPACE):
        return _be["I"].unpack(data)[0]
    if oid == FLOAT4:
        return _be["f"].unpack(data)[0]
    if oid == FLOAT8:
        return _be["d"].unpack(data)[0]
    if oid == NUMERIC:
        return numeric_from_binary(data)
    if oid == DATE:
        days = _be["i"].unpack(data)[0]
        if days in (2**31 - 1, -(2**31)):
            return "infinity" if days > 0 else "-infinity"
        return POSTGRES_EPOCH_DATE + dt.timedelta(days=days)
    if oid in (TIMESTAMP, TIMESTAMPTZ):
        micros = _be["q"].unpack(data)[0]
        if micros in (2**63 - 1, -(2**63)):
            return "infinity" if micros > 0 else "-infinity"
        value = POSTGRES_EPOCH + dt.timedelta(microseconds=micros)
        return value.replace(tzinfo=_UTC) if oid == TIMESTAMPTZ else value
    if oid == TIME:
        micros = _be["q"].unpack(data)[0]
        return (dt.datetime.min + dt.timedelta(microseconds=micros)).time()
    if oid == INTERVAL:
        micros, days, months = struct.unpack("!qii", data)
        if months:
            return f"{months} mons {days} days {micros} microseconds"
        return dt.timedelta(days=days, microseconds=micros)
    if oid == UUID:
        return uuid.UUID(bytes=data)
    if oid == BYTEA:
        return bytes(data)
    if oid == JSONB:
        if not data or data[0] != 1:
            raise ValueError
        return data[1:].decode()
    if oid in ARRAYS:
        return _array_from_binary(data)
    raise WireValueError("0A000", f"binary format is not supported for parameters of type {type_name(oid)}")


def _array_from_binary(data: bytes) -> list:
    ndim, _flags, elem = struct.unpack_from("!iiI", data, 0)
    pos = 12
    if ndim == 0:
        return []
    if not 0 < ndim <= 6:
        raise ValueError
    dims = []
    for _ in range(ndim):
        size, _lbound = struct.unpack_from("!ii", data, pos)
        if size < 0:
            raise ValueError
        dims.append(size)
        pos += 8
    flat = []
    for _ in range(math.prod(dims)):
        (length,) = struct.unpack_from("!i", data, pos)
        pos += 4
        if length < 0:
            flat.append(None)
            continue
        if pos + length > len(data):
            raise ValueError
        flat.append(_decode_binary(data[pos:pos + length], elem))
        pos += length
    if pos != len(data):
        raise ValueError
    for size in reversed(dims[1:]):
        flat = [flat[i:i + size] for i in range(0, len(flat), size)]
    return flat


# ---------------------------------------------------------------------------------------- numeric binary

_NUMERIC_POS, _NUMERIC_NEG, _NUMERIC_NAN, _NUMERIC_PINF, _NUMERIC_NINF = 0x0000, 0x4000, 0xC000, 0xD000, 0xF000
_WIDE = decimal.Context(prec=4000, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN)


def numeric_from_binary(data: bytes) -> decimal.Decimal:
    ndigits, weight, sign, dscale = struct.unpack_from("!hhHh", data, 0)
    if len(data) != 8 + 2 * ndigits or ndigits < 0 or dscale < 0:
        raise ValueError
    if sign == _NUMERIC_NAN:
        return decimal.Decimal("NaN")
    if sign in (_NUMERIC_PINF, _NUMERIC_NINF):
        return decimal.Decimal("Infinity" if sign == _NUMERIC_PINF else "-Infinity")
    if sign not in (_NUMERIC_POS, _NUMERIC_NEG):
        raise ValueError
    digits = struct.unpack_from(f"!{ndigits}h", data, 8)
    if any(not 0 <= d < 10000 for d in digits):
        raise ValueError
    coefficient = "".join(f"{d:04d}" for d in digits) or "0"
    exponent = (weight - ndigits + 1) * 4
    value = decimal.Decimal(f"{'-' if sign == _NUMERIC_NEG else ''}{coefficient}E{exponent}")
    return value.quantize(decimal.Decimal(1).scaleb(-dscale, _WIDE), context=_WIDE)


def numeric_to_binary(value) -> bytes:
    """PostgreSQL's binary numeric: ndigits, weight, sign, dscale, then base-10000 digits."""
    if not isinstance(value, decimal.Decimal):
        value = decimal.Decimal(repr(value)) if isinstance(value, float) else decimal.Decimal(value)
    if value.is_nan():
        return struct.pack("!hhHh", 0, 0, _NUMERIC_NAN, 0)
    if value.is_infinite():
        return struct.pack("!hhHh", 0, 0, _NUMERIC_NINF if value < 0 else _NUMERIC_PINF, 0)
    sign, digits, exponent = value.as_tuple()
    dscale = max(0, -exponent)
    pad = exponent % 4  # shift so the exponent is a multiple of 4 (a base-10000 boundary)
    coefficient = int("".join(map(str, digits)) or "0") * 10**pad
    exponent -= pad
    groups = []
    while coefficient:
        coefficient, digit = divmod(coefficient, 10000)
        groups.append(digit)
    low_weight = exponent // 4
    while groups and groups[0] == 0:  # trailing zero groups carry no information
        groups.pop(0)
        low_weight += 1
    if not groups:
        return struct.pack("!hhHh", 0, 0, _NUMERIC_POS, dscale)
    groups.reverse()
    weight = low_weight + len(groups) - 1
    return struct.pack(f"!hhHh{len(groups)}h", len(groups), weight, _NUMERIC_NEG if sign else _NUMERIC_POS,
                       dscale, *groups)


def _numeric_binary_column(arr: pa.Array) -> pa.Array:
    """Decimals that fit int64 unscaled values, vectorized; anything else a value at a time."""
    t = arr.type
    if pa.types.is_integer(t):
        arr, t = arr.cast(pa.decimal128(20, 0)), pa.decimal128(20, 0)
    if pa.types.is_decimal(t) and t.bit_width == 128 and len(arr):
        words = np.frombuffer(arr.buffers()[1], dtype="<i8", count=2 * (arr.offset + len(arr)))
        words = words[2 * arr.offset:].reshape(-1, 2)
        low, high = words[:, 0], words[:, 1]
        valid = np.ones(len(arr), bool) if arr.null_count == 0 else arr.is_valid().to_numpy(zero_copy_only=False)
        fits = (high == (low >> 63)) & (low > -(10**15)) & (low < 10**15)  # |v| * 10**3 fits in uint64
        if bool(np.all(fits | ~valid)):
            return _numeric_vectorized(np.where(valid, low, 0), t.scale, valid)
    return _per_value(arr, numeric_to_binary)


def _numeric_vectorized(unscaled: np.ndarray, scale: int, valid: np.ndarray) -> pa.Array:
    n = len(unscaled)
    pad = (-scale) % 4
    exponent = -scale - pad  # a multiple of 4
    magnitude = np.abs(unscaled).astype(np.uint64) * np.uint64(10**pad)
    groups = np.empty((n, 6), dtype=np.int64)  # 10000**6 > 2**64: enough groups for any uint64
    rest = magnitude.copy()
    for k in range(6):  # k = 0 is the least significant group
        groups[:, k] = (rest % np.uint64(10000)).astype(np.int64)
        rest //= np.uint64(10000)
    nonzero = groups != 0
    any_nonzero = nonzero.any(axis=1)
    low = np.where(any_nonzero, nonzero.argmax(axis=1), 0)  # first nonzero group from the bottom
    high = np.where(any_nonzero, 5 - nonzero[:, ::-1].argmax(axis=1), -1)
    ndigits = np.where(any_nonzero, high - low + 1, 0)
    weight = np.where(any_nonzero, exponent // 4 + high, 0)
    sign = np.where(unscaled < 0, _NUMERIC_NEG, _NUMERIC_POS)
    # a row's bytes: 8 header bytes then its digits from the most significant, in a fixed 20-byte row
    rows = np.zeros((n, 20), dtype=np.uint8)
    header = np.empty(n, dtype=[("nd", ">i2"), ("w", ">i2"), ("s", ">u2"), ("ds", ">i2")])
    header["nd"], header["w"], header["s"], header["ds"] = ndigits, weight, sign, max(scale, 0)
    rows[:, :8] = header.view(np.uint8).reshape(n, 8)
    idx = np.clip(high[:, None] - np.arange(6)[None, :], 0, 5)
    ordered = np.take_along_axis(groups, idx, axis=1).astype(">i2")
    rows[:, 8:] = ordered[:, :6].view(np.uint8).reshape(n, 12)
    lengths = 8 + 2 * ndigits
    mask = np.arange(20)[None, :] < lengths[:, None]
    data = rows[mask]
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    validity = None if valid.all() else pa.array(valid).buffers()[1]
    return pa.Array.from_buffers(pa.binary(), n, [validity, pa.py_buffer(offsets), pa.py_buffer(data)])


# ---------------------------------------------------------------------------------------- result values

def _per_value(arr: pa.Array, encode: Callable) -> pa.Array:
    return pa.array([None if v is None else encode(v) for v in arr.to_pylist()], pa.binary())


def _fixed(values: np.ndarray, nulls_from: pa.Array | None) -> pa.Array:
    """Big-endian fixed-width values as a binary array (nulls where `nulls_from` has them)."""
    values = np.ascontiguousarray(values)
    validity = nulls_from.is_valid().buffers()[1] if nulls_from is not None and nulls_from.null_count else None
    fixed = pa.FixedSizeBinaryArray.from_buffers(pa.binary(values.dtype.itemsize), len(values),
                                                 [validity, pa.py_buffer(values)])
    return fixed.cast(pa.binary())


def _cast(arr: pa.Array, target: pa.DataType, oid: int) -> pa.Array:
    if arr.type == target:
        return arr
    try:
        return arr.cast(target)
    except pa.ArrowInvalid:
        raise WireValueError("22003", f"value out of range for type {type_label(oid)}") from None
    except pa.ArrowNotImplementedError:
        raise WireValueError("42804", f"cannot send a {arr.type} column as {type_label(oid)}") from None


def _numpy(arr: pa.Array, fill=0) -> np.ndarray:
    if arr.null_count:
        arr = arr.fill_null(fill)
    return arr.to_numpy(zero_copy_only=False)


def _naive_utc_micros(arr: pa.Array) -> pa.Array:
    """Timestamps of any unit and zone as naive UTC microseconds."""
    t = arr.type
    if t.tz is not None:
        arr = arr.cast(pa.timestamp(t.unit))  # keeps the UTC instant, drops the zone
    if t.unit != "us":
        arr = arr.cast(pa.timestamp("us"), safe=False)
    return arr


def _strip_fraction(strings: pa.Array, micros: pa.Array) -> pa.Array:
    """'10:00:00.000000' -> '10:00:00', '10:00:00.120000' -> '10:00:00.12', as PostgreSQL prints them."""
    strings = pc.replace_substring(strings, ".000000", "")
    fraction = _numpy(micros) % 1_000_000
    if np.any((fraction != 0) & (fraction % 10 == 0)):  # the regex is slow: only when some value needs it
        strings = pc.replace_substring_regex(strings, r"(\.\d*[1-9])0+$", r"\1")
    return strings


def text_column(arr: pa.Array, oid: int) -> pa.Array:
    """Text-format wire values of a column (binary array, nulls kept)."""
    t = arr.type
    if isinstance(t, pa.ExtensionType):
        return text_column(arr.storage, oid)
    if pa.types.is_dictionary(t):
        return text_column(arr.dictionary_decode(), oid)
    if pa.types.is_null(t):
        return pa.nulls(len(arr), pa.binary())
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return arr.cast(pa.binary())  # already text, whatever the column's declared type
    if oid == BOOL or pa.types.is_boolean(t):
        flags = arr if pa.types.is_boolean(t) else _cast(arr, pa.bool_(), oid)
        return pc.if_else(flags, b"t", b"f")
    if oid == BYTEA or (pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t)):
        if oid == UUID and pa.types.is_fixed_size_binary(t) and t.byte_width == 16:
            return _per_value(arr, lambda b: str(uuid.UUID(bytes=b)).encode())
        return _per_value(arr, lambda b: b"\\x" + (b.encode() if isinstance(b, str) else b).hex().encode())
    if pa.types.is_timestamp(t):
        arr = _naive_utc_micros(arr)
        strings = _strip_fraction(arr.cast(pa.string()), arr.cast(pa.int64()))
        if oid == TIMESTAMPTZ:
            strings = pc.binary_join_element_wise(strings, "+00", "")
        return strings.cast(pa.binary())
    if pa.types.is_date(t):
        if oid == TIMESTAMPTZ:
            return text_column(arr.cast(pa.timestamp("us", "UTC")), oid)
        return arr.cast(pa.string()).cast(pa.binary())
    if pa.types.is_time(t):
        arr = arr.cast(pa.time64("us"))
        return _strip_fraction(arr.cast(pa.string()), arr.cast(pa.int64())).cast(pa.binary())
    if pa.types.is_floating(t):
        strings = arr.cast(pa.string())
        if not pc.all(pc.is_finite(arr)).as_py() and (len(arr) - arr.null_count):
            strings = pc.replace_substring_regex(strings, "^inf$", "Infinity")
            strings = pc.replace_substring_regex(strings, "^-inf$", "-Infinity")
            strings = pc.replace_substring_regex(strings, "^nan$", "NaN")
        return strings.cast(pa.binary())
    if pa.types.is_integer(t) or pa.types.is_decimal(t):
        return arr.cast(pa.string()).cast(pa.binary())
    return _per_value(arr, lambda v: text_value(v).encode())


def text_value(v, oid: int = 0) -> str:
    """A Python value in PostgreSQL's text output format (for `oid`, when given: a naive timestamp sent as
    timestamptz gets its +00)."""
    kind = type(v)
    if kind is int:  # the common cases first: one type check, not ten
        return str(v)
    if kind is str:
        return v
    if isinstance(v, bool):
        return "t" if v else "f"
    if isinstance(v, float):
        return float_text(v, oid == FLOAT4)
    if isinstance(v, decimal.Decimal):
        return format(v, "f") if v.is_finite() else ("NaN" if v.is_nan() else ("Infinity" if v > 0 else "-Infinity"))
    if isinstance(v, bytes):
        if oid == UUID and len(v) == 16:
            return str(uuid.UUID(bytes=v))
        return "\\x" + v.hex()
    if isinstance(v, dt.datetime):
        if v.tzinfo is not None:
            v = v.astimezone(_UTC).replace(tzinfo=None)
            oid = oid or TIMESTAMPTZ
        text = _trim_fraction(v.isoformat(sep=" "))
        return text + "+00" if oid == TIMESTAMPTZ else text
    if isinstance(v, dt.date):
        return f"{v.isoformat()} 00:00:00+00" if oid == TIMESTAMPTZ else v.isoformat()
    if isinstance(v, dt.time):
        return _trim_fraction(v.isoformat())
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, dt.timedelta):
        return _interval_text(0, v.days, v.seconds * 1_000_000 + v.microseconds)
    if isinstance(v, pa.MonthDayNano):
        return _interval_text(v.months, v.days, v.nanoseconds // 1000)
    if isinstance(v, list | tuple):
        return _array_text(v)
    if isinstance(v, dict):
        return json.dumps(v, default=str)
    return str(v)


def _trim_fraction(text: str) -> str:
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def float_text(v: float, single: bool = False) -> str:
    """float8out / float4out (extra_float_digits >= 1): the shortest round-trip digits, in exponent form below
    1e-4 and from 1e15 (float4: 1e6)."""
    if v != v:
        return "NaN"
    if v in (math.inf, -math.inf):
        return "Infinity" if v > 0 else "-Infinity"
    text = np.format_float_scientific(np.float32(v), unique=True) if single else repr(v)
    limit = 6 if single else 15
    mantissa, _, exponent = text.partition("e")
    sign = "-" if mantissa.startswith("-") else ""
    digits_part = mantissa.lstrip("-")
    whole, _, fraction = digits_part.partition(".")
    digits = (whole + fraction).lstrip("0")
    if not digits:
        return sign + "0"
    # decimal exponent of the first significant digit
    point = len(whole) + (int(exponent) if exponent else 0)
    lead_zeros = len(whole + fraction) - len((whole + fraction).lstrip("0"))
    exp10 = point - lead_zeros - 1
    digits = digits.rstrip("0")
    if -4 <= exp10 < limit:
        if exp10 >= len(digits) - 1:
            return sign + digits + "0" * (exp10 - len(digits) + 1)
        if exp10 >= 0:
            return sign + digits[:exp10 + 1] + "." + digits[exp10 + 1:]
        return sign + "0." + "0" * (-exp10 - 1) + digits
    body = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{sign}{body}e{'-' if exp10 < 0 else '+'}{abs(exp10):02d}"


def _interval_text(months: int, days: int, micros: int) -> str:
    parts = []
    years, mons = int(months / 12), months - int(months / 12) * 12
    for n, unit in ((years, "year"), (mons, "mon"), (days, "day")):
        if n:
            parts.append(f"{n} {unit}{'' if abs(n) == 1 else 's'}")
    if micros or not parts:
        sign = "-" if micros < 0 else ""
        micros = abs(micros)
        seconds, frac = divmod(micros, 1_000_000)
        clock = f"{sign}{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        if frac:
            clock += f".{frac:06d}".rstrip("0")
        parts.append(clock)
    return " ".join(parts)


_NEEDS_QUOTES = re.compile(r'[{},"\\\s]')


def _array_text(items) -> str:
    out = []
    for v in items:
        if v is None:
            out.append("NULL")
        elif isinstance(v, list | tuple):
            out.append(_array_text(v))
        else:
            s = text_value(v)
            if s == "" or s.upper() == "NULL" or _NEEDS_QUOTES.search(s):
                s = '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
            out.append(s)
    return "{" + ",".join(out) + "}"


def binary_column(arr: pa.Array, oid: int) -> pa.Array:
    """Binary-format wire values of a column (binary array, nulls kept)."""
    t = arr.type
    if isinstance(t, pa.ExtensionType):
        return binary_column(arr.storage, oid)
    if pa.types.is_dictionary(t):
        return binary_column(arr.dictionary_decode(), oid)
    if pa.types.is_null(t):
        return pa.nulls(len(arr), pa.binary())
    if oid in INTEGERS:
        dtype, target = INTEGERS[oid]
        return _fixed(_numpy(_cast(arr, target, oid)).astype(dtype), arr)
    if oid in FLOATS:
        dtype, target = FLOATS[oid]
        return _fixed(_numpy(_cast(arr, target, oid)).astype(dtype), arr)
    if oid == BOOL:
        return _fixed(_numpy(_cast(arr, pa.bool_(), oid), False).astype(np.uint8), arr)
    if oid == DATE:
        if pa.types.is_timestamp(t):
            arr = arr.cast(pa.date32())
        days = _numpy(_cast(arr, pa.date32(), oid).cast(pa.int32())).astype(np.int64) - _EPOCH_DAYS
        return _fixed(days.astype(">i4"), arr)
    if oid in (TIMESTAMP, TIMESTAMPTZ):
        if pa.types.is_date(t):
            arr = arr.cast(pa.timestamp("us"))
        elif not pa.types.is_timestamp(t):
            arr = _cast(arr, pa.timestamp("us"), oid)
        micros = _numpy(_naive_utc_micros(arr).cast(pa.int64())) - _EPOCH_MICROS
        return _fixed(micros.astype(">i8"), arr)
    if oid == TIME and pa.types.is_time(t):
        return _fixed(_numpy(arr.cast(pa.time64("us")).cast(pa.int64())).astype(">i8"), arr)
    if oid == NUMERIC:
        return _numeric_binary_column(arr)
    if oid == BYTEA:
        if pa.types.is_binary(t):
            return arr
        if pa.types.is_string(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
            return arr.cast(pa.binary())
        return text_column(arr, oid)
    if oid == JSONB:
        return pc.binary_join_element_wise(b"\x01", text_column(arr, TEXT), b"")
    if oid in ARRAYS or oid in (UUID, INTERVAL, TIME):
        return _per_value(arr, lambda v: binary_value(v, oid))
    return text_column(arr, oid)


_PACK = {INT2: struct.Struct("!h"), INT4: struct.Struct("!i"), INT8: struct.Struct("!q"), FLOAT4: struct.Struct("!f"),
         FLOAT8: struct.Struct("!d")}
_PACK_OID = struct.Struct("!I")


def binary_value(v, oid: int) -> bytes:
    """One Python value in its type's binary format."""
    try:
        return _binary_value(v, oid)
    except (struct.error, OverflowError):
        raise WireValueError("22003", f"value out of range for type {type_label(oid)}") from None
    except (TypeError, ValueError, AttributeError):
        raise WireValueError("42804", f"cannot send {type(v).__name__} as {type_label(oid)}") from None


def _binary_value(v, oid: int) -> bytes:
    if oid in _PACK:
        if oid in FLOATS:
            return _PACK[oid].pack(float(v))
        return _PACK[oid].pack(v if isinstance(v, int) else int(v))
    if oid in INTEGERS:
        return _PACK_OID.pack(int(v))
    if oid in ARRAYS:
        return _array_binary(v, ARRAYS[oid])
    if oid == BOOL:
        return b"\x01" if v else b"\x00"
    if oid == NUMERIC:
        return numeric_to_binary(v)
    if oid == UUID:
        return (v if isinstance(v, uuid.UUID) else uuid.UUID(bytes=v) if isinstance(v, bytes) else uuid.UUID(v)).bytes
    if oid == INTERVAL:
        if isinstance(v, pa.MonthDayNano):
            return struct.pack("!qii", v.nanoseconds // 1000, v.days, v.months)
        return struct.pack("!qii", v.seconds * 1_000_000 + v.microseconds, v.days, 0)
    if oid == DATE:
        if isinstance(v, dt.datetime):
            v = v.date()
        return _PACK[INT4].pack((v - POSTGRES_EPOCH_DATE).days)
    if oid in (TIMESTAMP, TIMESTAMPTZ):
        if not isinstance(v, dt.datetime):
            v = dt.datetime.combine(v, dt.time())
        if v.tzinfo is not None:
            v = v.astimezone(_UTC).replace(tzinfo=None)
        delta = v - POSTGRES_EPOCH
        return _PACK[INT8].pack((delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds)
    if oid == TIME:
        return _PACK[INT8].pack(((v.hour * 60 + v.minute) * 60 + v.second) * 1_000_000 + v.microsecond)
    if oid == BYTEA:
        return bytes(v) if isinstance(v, bytes | bytearray | memoryview) else str(v).encode()
    if oid == JSONB:
        return b"\x01" + text_value(v, oid).encode()
    return text_value(v, oid).encode()


def _array_binary(items: list, elem: int) -> bytes:
    dims = []
    level = items
    while isinstance(level, list):
        dims.append(len(level))
        level = level[0] if level else None
    flat = items
    for _ in dims[1:]:
        flat = [x for sub in flat for x in sub]
    if not dims or dims[0] == 0:
        return struct.pack("!iiI", 0, 0, elem)
    has_null = any(v is None for v in flat)
    parts = [struct.pack("!iiI", len(dims), int(has_null), elem)]
    parts += [struct.pack("!ii", d, 1) for d in dims]
    for v in flat:
        if v is None:
            parts.append(b"\xff\xff\xff\xff")
        else:
            data = binary_value(v, elem)
            parts.append(struct.pack("!i", len(data)) + data)
    return b"".join(parts)


# ------------------------------------------------------------------------------------------------ DataRows

_HEADER = np.dtype([("kind", "S1"), ("length", ">i4"), ("count", ">i2")])
SMALL_CELLS = 256  # below this many values, a Python loop beats the fixed cost of Arrow compute calls
_LENGTH = struct.Struct("!i")
_ROW_HEADER = struct.Struct("!cih")


def encode_small(table: pa.Table, oids: Sequence[int], formats: Sequence[int]) -> bytes:
    """The DataRows of a few rows, a value at a time (the same bytes as the vectorized path)."""
    return encode_values(zip(*[_pylist(column) for column in table.columns], strict=True), oids, formats)


def encode_values(rows, oids: Sequence[int], formats: Sequence[int]) -> bytes:
    """The DataRows of rows of Python values (what the door computed itself needs no Arrow to be sent)."""
    columns = _encoders(tuple(oids), tuple(formats))
    out = []
    count = len(oids)
    for values in rows:
        cells = []
        for v, (encode, oid) in zip(values, columns, strict=True):
            if v is None:
                cells.append(b"\xff\xff\xff\xff")
            else:
                v = encode(v, oid)
                cells.append(_LENGTH.pack(len(v)) + v)
        body = b"".join(cells)
        out.append(_ROW_HEADER.pack(b"D", 6 + len(body), count) + body)
    return b"".join(out)


@functools.lru_cache(maxsize=256)
def _encoders(oids: tuple[int, ...], formats: tuple[int, ...]) -> tuple:
    return tuple(zip([binary_value if fmt == 1 else _text_bytes for fmt in formats], oids, strict=True))


def _text_bytes(v, oid: int) -> bytes:
    if oid == BOOL and not isinstance(v, bool) and isinstance(v, int):
        v = bool(v)
    return text_value(v, oid).encode()


def _pylist(column) -> list:
    t = column.type
    if isinstance(t, pa.ExtensionType):
        column = column.storage if isinstance(column, pa.Array) else pa.chunked_array(
            [c.storage for c in column.chunks], t.storage_type)
    elif pa.types.is_dictionary(t):
        column = column.cast(t.value_type)
    return column.to_pylist()


def encode_rows(table: pa.Table, oids: Sequence[int], formats: Sequence[int]) -> memoryview:
    """The DataRow messages of every row of `table`, as one buffer ready to write."""
    n = table.num_rows
    if n == 0:
        return memoryview(b"")
    if n * max(1, table.num_columns) <= SMALL_CELLS:
        return memoryview(encode_small(table, oids, formats))
    parts: list[pa.Array] = []
    lengths = np.full(n, 4 + 2, dtype=np.int64)
    for column, oid, fmt in zip(table.columns, oids, formats, strict=True):
        arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        values = binary_column(arr, oid) if fmt == 1 else text_column(arr, oid)
        if values.null_count:
            valid = values.is_valid().to_numpy(zero_copy_only=False)
            values = values.fill_null(b"")
        else:
            valid = None
        size = pc.binary_length(values).to_numpy(zero_copy_only=False).astype(np.int64)
        lengths += 4 + size
        prefix = size if valid is None else np.where(valid, size, -1)
        parts.append(_fixed(prefix.astype(">i4"), None))
        parts.append(values)
    header = np.empty(n, dtype=_HEADER)
    header["kind"], header["length"], header["count"] = b"D", lengths, len(oids)
    rows = pc.binary_join_element_wise(_fixed(header.view("S7"), None), *parts, b"")
    offsets = np.frombuffer(rows.buffers()[1], dtype=np.int32, count=rows.offset + n + 1)[rows.offset:]
    return memoryview(rows.buffers()[2])[offsets[0]:offsets[-1]]
