"""Prepared statements, portals, and the SQL cursor commands that are portals by another name.

A portal holds its statement's whole answer (the frontend returns a materialized Arrow table) and a
position in it, so Execute with a row limit, FETCH and MOVE in any direction are slices of that table.
`DECLARE name CURSOR FOR query` makes a named portal (as in PostgreSQL, where cursors and protocol portals
share one namespace), which `FETCH`, `MOVE`, `CLOSE` and protocol Describe/Execute all reach.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

import pyarrow as pa


@dataclass
class LocalResult:
    """A Result this layer makes itself (cursor commands), shaped like frontend.Result."""

    tag: str
    columns: list | None = None
    table: pa.Table | None = None


@dataclass(frozen=True)
class Declare:
    name: str
    query: str
    binary: bool
    hold: bool


@dataclass(frozen=True)
class Fetch:
    name: str
    direction: str  # forward | backward | absolute | relative
    count: int | None  # None: ALL
    move: bool  # MOVE: position only, no rows


@dataclass(frozen=True)
class CloseCursor:
    name: str | None  # None: CLOSE ALL


@dataclass(frozen=True)
class Deallocate:
    name: str | None  # None: DEALLOCATE ALL


CursorCommand = Declare | Fetch | CloseCursor | Deallocate


@dataclass
class Statement:
    sql: str
    param_oids: list[int]  # as given by Parse; 0 = let the server infer
    command: CursorCommand | None = None
    described: tuple[list[int], list | None] | None = None  # (parameter OIDs, columns) once described

    @cached_property
    def empty(self) -> bool:  # read at every Bind and Execute: the text never changes
        return self.command is None and is_empty(self.sql)

    def parameter_oids(self, count: int) -> list[int]:
        """The OID of each of `count` parameters: Parse's where given, else the described one, else 0."""
        given = self.param_oids
        if count == len(given) and 0 not in given:  # every type declared at Parse (psycopg, pgjdbc): as given
            return given
        described = self.described[0] if self.described else []
        return [(self.param_oids[i] if i < len(self.param_oids) else 0)
                or (described[i] if i < len(described) else 0) for i in range(count)]


@dataclass(slots=True)
class Portal:
    statement: Statement
    params: list
    formats: list[int]  # result format codes as Bind gave them (0, 1 or one per column)
    result: object | None = None  # frontend.Result or LocalResult, once run
    columns: list | None = None  # the row description sent for it
    pos: int = 0  # rows before the cursor: 0 before the first, n + 1 after the last
    holdable: bool = False  # survives the end of its transaction (WITH HOLD)
    is_cursor: bool = False  # made by DECLARE
    done: bool = False  # a command portal that has completed
    raw: tuple | None = None  # (values, formats) of binary parameters still to be read by the statement's types

    def column_formats(self, count: int) -> list[int]:
        if not self.formats:
            return [0] * count
        if len(self.formats) == 1:
            return self.formats * count
        if len(self.formats) != count:
            from server.pgwire.types import WireValueError

            raise WireValueError("08P01", f"bind message has {len(self.formats)} result formats "
                                          f"but query has {count} columns")
        return list(self.formats)

    @property
    def rows(self) -> int:
        rows = getattr(self.result, "rows", None)
        if rows is not None:  # Python rows (frontend.RowResult): no table to make
            return len(rows)
        table = getattr(self.result, "table", None)
        return 0 if table is None else table.num_rows

    def fetch(self, direction: str, count: int | None) -> tuple[int, int, int]:
        """Move as FETCH would; returns (start, stop, step) of the rows passed over (0-based, stop exclusive)."""
        n, pos = self.rows, self.pos
        if count is None and direction == "forward":  # Execute without a row limit: all that is left
            self.pos = n + 1
            return min(pos, n), n, 1
        if direction == "forward" and count == 0:
            direction = "relative"
        if direction == "backward" and count == 0:
            direction = "relative"
        if direction == "forward" and count is not None and count < 0:
            direction, count = "backward", -count
        if direction == "backward" and count is not None and count < 0:
            direction, count = "forward", -count
        if direction == "forward":
            k = n + 1 if count is None else count
            start, stop = min(pos, n), min(pos + k, n)
            self.pos = pos + k if pos + k <= n else n + 1
            return start, stop, 1
        if direction == "backward":
            k = n + 1 if count is None else count
            first = max(pos - k, 1)  # 1-based rows pos-1 down to first
            start, stop = min(pos, n + 1) - 2, first - 2
            self.pos = pos - k if pos - k >= 1 else 0
            return (start, stop, -1) if start > stop else (0, 0, 1)
        target = (count if count >= 0 else n + 1 + count) if direction == "absolute" else pos + count
        self.pos = max(0, min(target, n + 1))
        if 1 <= self.pos <= n:
            return self.pos - 1, self.pos, 1
        return 0, 0, 1


def fetch_rows(table: pa.Table, start: int, stop: int, step: int) -> pa.Table:
    if step == 1:
        return table.slice(start, max(0, stop - start))
    return table.take(pa.array(range(start, stop, step), pa.int64()))


# ------------------------------------------------------------------------------------------ parsing SQL

_LEADING = re.compile(r"\A(?:\s+|--[^\n]*(?:\n|\Z)|/\*.*?\*/)*", re.S)
_IDENT = r'(?:"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)'
_DECLARE = re.compile(
    rf"DECLARE\s+(?P<name>{_IDENT})\s+(?P<opts>(?:(?:BINARY|INSENSITIVE|ASENSITIVE|NO\s+SCROLL|SCROLL)\s+)*)"
    rf"CURSOR\s+(?:(?P<hold>WITH|WITHOUT)\s+HOLD\s+)?FOR\s+(?P<query>.*)\Z", re.I | re.S)
_COUNT = r"[+-]?\d+"
_FETCH = re.compile(
    rf"(?P<cmd>FETCH|MOVE)\s+(?:(?P<dir>NEXT|PRIOR|FIRST|LAST|ABSOLUTE\s+{_COUNT}|RELATIVE\s+{_COUNT}"
    rf"|FORWARD(?:\s+(?:ALL|{_COUNT}))?|BACKWARD(?:\s+(?:ALL|{_COUNT}))?|ALL|{_COUNT})\s+)?"
    rf"(?:(?:FROM|IN)\s+)?(?P<name>{_IDENT})\s*;?\s*\Z", re.I | re.S)
_CLOSE = re.compile(rf"CLOSE\s+(?P<name>{_IDENT})\s*;?\s*\Z", re.I | re.S)
_DEALLOCATE = re.compile(rf"DEALLOCATE\s+(?:PREPARE\s+)?(?P<name>{_IDENT})\s*;?\s*\Z", re.I | re.S)


def strip_leading(sql: str) -> str:
    return sql[_LEADING.match(sql).end():]


def is_empty(sql: str) -> bool:
    """Only whitespace, comments and semicolons: PostgreSQL answers EmptyQueryResponse."""
    rest = sql
    while True:
        rest = strip_leading(rest)
        if rest.startswith(";"):
            rest = rest[1:]
            continue
        return rest == ""


def identifier(text: str) -> str:
    if text.startswith('"'):
        return text[1:-1].replace('""', '"')
    return text.lower()


def parse_cursor_command(sql: str) -> CursorCommand | None:
    """DECLARE / FETCH / MOVE / CLOSE / DEALLOCATE statements, or None for anything else."""
    text = strip_leading(sql)
    head = text[:8].upper()
    if head.startswith("DECLARE"):
        m = _DECLARE.match(text)
        if m is None:
            return None
        query = m["query"].rstrip().rstrip(";")
        return Declare(identifier(m["name"]), query, "BINARY" in m["opts"].upper(),
                       (m["hold"] or "").upper() == "WITH")
    if head.startswith(("FETCH", "MOVE")):
        m = _FETCH.match(text)
        if m is None:
            return None
        direction, count = _direction(m["dir"])
        return Fetch(identifier(m["name"]), direction, count, m["cmd"].upper() == "MOVE")
    if head.startswith("DEALLOCA"):
        m = _DEALLOCATE.match(text)
        if m is None:
            return None
        name = m["name"]
        return Deallocate(None if name.upper() == "ALL" else identifier(name))
    if head.startswith("CLOSE"):
        m = _CLOSE.match(text)
        if m is None:
            return None
        name = m["name"]
        return CloseCursor(None if name.upper() == "ALL" else identifier(name))
    return None


def _direction(text: str | None) -> tuple[str, int | None]:
    if not text:
        return "forward", 1
    words = text.upper().split()
    word = words[0]
    arg = words[1] if len(words) > 1 else None
    if word == "NEXT":
        return "forward", 1
    if word == "PRIOR":
        return "backward", 1
    if word == "FIRST":
        return "absolute", 1
    if word == "LAST":
        return "absolute", -1
    if word in ("ABSOLUTE", "RELATIVE"):
        return word.lower(), int(arg)
    if word in ("FORWARD", "BACKWARD"):
        if arg is None:
            return word.lower(), 1
        return word.lower(), None if arg == "ALL" else int(arg)
    if word == "ALL":
        return "forward", None
    return "forward", int(word)
