"""PostgreSQL protocol 3.0 message bytes: backend messages built, frontend messages read with bounds checks.

Every read goes through `Body`, which raises `ProtocolViolation` instead of IndexError or struct.error, so a
malformed packet is one exception type the connection answers by closing (never by crashing the server).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

PROTOCOL_3_0 = 196608  # 3 << 16
SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102

_i16 = struct.Struct("!h")
_i32 = struct.Struct("!i")
_u32 = struct.Struct("!I")
_ii = struct.Struct("!ii")


class ProtocolViolation(Exception):
    """The client broke the protocol (SQLSTATE 08P01); the connection is closed after saying so."""

    sqlstate = "08P01"


class Body:
    """A cursor over one message's payload."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def _take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ProtocolViolation("insufficient data left in message")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def byte(self) -> int:
        return self._take(1)[0]

    def int16(self) -> int:
        return _i16.unpack(self._take(2))[0]

    def int32(self) -> int:
        return _i32.unpack(self._take(4))[0]

    def uint32(self) -> int:
        return _u32.unpack(self._take(4))[0]

    def raw(self, n: int) -> bytes:
        return self._take(n)

    def cstring_bytes(self) -> bytes:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise ProtocolViolation("invalid string in message")
        chunk = self.data[self.pos:end]
        self.pos = end + 1
        return chunk

    def skip_empty(self) -> str:
        """An empty string (its terminator already checked by the caller): the unnamed portal or statement."""
        self.pos += 1
        return ""

    def cstring(self) -> str:
        raw = self.cstring_bytes()
        try:
            return raw.decode()
        except UnicodeDecodeError:
            raise InvalidEncoding() from None

    def rest(self) -> bytes:
        chunk = self.data[self.pos:]
        self.pos = len(self.data)
        return chunk

    def end(self) -> None:
        if self.pos != len(self.data):
            raise ProtocolViolation("invalid message format")


class InvalidEncoding(Exception):
    """Text that is not UTF-8 (SQLSTATE 22021): an error for the statement, not for the connection."""

    sqlstate = "22021"

    def __str__(self) -> str:
        return 'invalid byte sequence for encoding "UTF8"'


# ------------------------------------------------------------------------------------------------ backend

def message(kind: bytes, payload: bytes = b"") -> bytes:
    return kind + _i32.pack(len(payload) + 4) + payload


def cstr(text: str) -> bytes:
    return text.replace("\0", "").encode() + b"\0"


def authentication(code: int, data: bytes = b"") -> bytes:
    return message(b"R", _i32.pack(code) + data)


AUTH_OK = authentication(0)
AUTH_SASL = 10
AUTH_SASL_CONTINUE = 11
AUTH_SASL_FINAL = 12


def parameter_status(name: str, value: str) -> bytes:
    return message(b"S", cstr(name) + cstr(value))


def backend_key_data(pid: int, secret: int) -> bytes:
    return message(b"K", _ii.pack(pid, secret))


def ready_for_query(status: str) -> bytes:
    return message(b"Z", status.encode())


def negotiate_protocol_version(newest: int, unsupported: Sequence[str]) -> bytes:
    return message(b"v", _ii.pack(newest, len(unsupported)) + b"".join(cstr(o) for o in unsupported))


PARSE_COMPLETE = message(b"1")
BIND_COMPLETE = message(b"2")
CLOSE_COMPLETE = message(b"3")
NO_DATA = message(b"n")
PORTAL_SUSPENDED = message(b"s")
EMPTY_QUERY = message(b"I")


def command_complete(tag: str) -> bytes:
    return message(b"C", cstr(tag))


def parameter_description(oids: Sequence[int]) -> bytes:
    return message(b"t", _i16.pack(len(oids)) + b"".join(_u32.pack(o & 0xFFFFFFFF) for o in oids))


_field = struct.Struct("!ihIhih")  # table oid, column number, type oid, type size, type modifier, format


def row_description(columns: Iterable, formats: Sequence[int]) -> bytes:
    """`columns` have name, type_oid, type_size, type_modifier (frontend.Column); table OID and attnum are 0."""
    parts = []
    for col, fmt in zip(columns, formats, strict=True):
        size = col.type_size
        parts.append(cstr(col.name) + _field.pack(0, 0, col.type_oid & 0xFFFFFFFF, size, col.type_modifier, fmt))
    return message(b"T", _i16.pack(len(parts)) + b"".join(parts))


def error_fields(severity: str, sqlstate: str, text: str, detail: str = "", hint: str = "",
                 position: int | None = None) -> bytes:
    fields = [(b"S", severity), (b"V", severity), (b"C", sqlstate), (b"M", text)]
    if detail:
        fields.append((b"D", detail))
    if hint:
        fields.append((b"H", hint))
    if position:
        fields.append((b"P", str(position)))
    return b"".join(code + cstr(value) for code, value in fields) + b"\0"


def error_response(severity: str, sqlstate: str, text: str, detail: str = "", hint: str = "",
                   position: int | None = None) -> bytes:
    return message(b"E", error_fields(severity, sqlstate, text, detail, hint, position))


def notice_response(sqlstate: str, text: str, severity: str = "NOTICE", detail: str = "", hint: str = "") -> bytes:
    return message(b"N", error_fields(severity, sqlstate, text, detail, hint))
