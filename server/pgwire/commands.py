"""Statements the door answers itself: transaction control, SET/RESET/SHOW, DISCARD, DEALLOCATE, cursors.

The door is read-only, so a transaction only tracks PostgreSQL's status ('I' idle, 'T' in a block, 'E' failed)
and its savepoints. Settings are per session; the ones PostgreSQL reports to clients (ParameterStatus) are
listed in REPORTED.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from server.pgwire import pg15
from server.pgwire.binder import error

SERVER_VERSION = pg15.VERSION
_MAJOR, _, _MINOR = SERVER_VERSION.partition(".")

# name → (value, description); the spelling of the name is the one SHOW prints
DEFAULTS: dict[str, str] = {
    "application_name": "", "bytea_output": "hex", "client_encoding": "UTF8", "client_min_messages": "notice",
    "DateStyle": "ISO, MDY", "default_table_access_method": "heap", "default_transaction_isolation": "read committed",
    "default_transaction_read_only": "on", "default_transaction_deferrable": "off", "extra_float_digits": "1",
    "idle_in_transaction_session_timeout": "0", "in_hot_standby": "off", "integer_datetimes": "on",
    "IntervalStyle": "postgres", "is_superuser": "off", "lc_collate": "C.UTF-8", "lc_ctype": "C.UTF-8",
    "lc_messages": "C.UTF-8", "lc_monetary": "C.UTF-8", "lc_numeric": "C.UTF-8", "lc_time": "C.UTF-8",
    "lock_timeout": "0", "max_identifier_length": "63", "max_index_keys": "32", "max_connections": "100",
    "block_size": "8192", "row_security": "on", "search_path": '"$user", public', "server_encoding": "UTF8",
    "server_version": SERVER_VERSION, "server_version_num": f"{int(_MAJOR) * 10000 + int(_MINOR or 0)}",
    "session_authorization": "", "standard_conforming_strings": "on", "statement_timeout": "0",
    "TimeZone": "UTC", "timezone_abbreviations": "Default", "transaction_isolation": "read committed",
    "transaction_read_only": "on", "transaction_deferrable": "off", "escape_string_warning": "on",
    "jit": "off", "work_mem": "4MB", "xmloption": "content", "default_with_oids": "off",
    "synchronous_commit": "on", "cursor_tuple_fraction": "0.1", "enable_seqscan": "on",
}
# the settings PostgreSQL sends in ParameterStatus (at startup, and again whenever SET changes them)
REPORTED = ("application_name", "client_encoding", "DateStyle", "default_transaction_read_only", "in_hot_standby",
            "integer_datetimes", "IntervalStyle", "is_superuser", "server_encoding", "server_version",
            "session_authorization", "standard_conforming_strings", "TimeZone")
_CANONICAL = {name.lower(): name for name in DEFAULTS}
_SPELLED = {"transaction isolation level": "transaction_isolation", "time zone": "TimeZone",
            "session authorization": "session_authorization", "names": "client_encoding"}
FIXED = {  # settings a session cannot change
    "server_version", "server_version_num", "server_encoding", "integer_datetimes", "max_identifier_length",
    "max_index_keys", "block_size", "lc_collate", "lc_ctype", "in_hot_standby", "is_superuser", "max_connections"}


def canonical(name: str) -> str:
    name = name.strip().lower()
    name = _SPELLED.get(name, name)
    return _CANONICAL.get(name.lower(), name)


@dataclass
class Cursor:
    """A DECLAREd cursor: its answer, and how far FETCH has read."""

    columns: list
    table: object  # pyarrow.Table
    hold: bool
    position: int = 0


# ------------------------------------------------------------------ reading a statement


@dataclass(frozen=True)
class Token:
    kind: str  # word, string, ident (quoted name), number, param ($1), op
    text: str  # strings and quoted names: their value
    start: int
    end: int  # exclusive


_LEX = re.compile(r"""
    (?P<space>\s+) | (?P<line>--[^\n]*) | (?P<block>/\*) |
    (?P<estring>[eE]'(?:[^'\\]|\\.|'')*') | (?P<string>'(?:[^']|'')*') |
    (?P<dollar>\$(?P<tag>[A-Za-z_][A-Za-z0-9_]*)?\$) |
    (?P<ident>"(?:[^"]|"")*") | (?P<param>\$[0-9]+) |
    (?P<number>[0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?|\.[0-9]+) |
    (?P<word>[A-Za-z_\x80-\uffff][A-Za-z0-9_$\x80-\uffff]*) |
    (?P<op>::|<=|>=|<>|!=|\|\||.)""", re.VERBOSE | re.DOTALL)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "\\": "\\", "'": "'"}


def lex(sql: str) -> list[Token]:
    """PostgreSQL's tokens, enough to split statements and read commands (comments and quotes handled)."""
    out, i = [], 0
    while i < len(sql):
        m = _LEX.match(sql, i)
        kind = m.lastgroup if m.lastgroup != "tag" else "dollar"
        if kind == "block":  # nested /* */ comments
            depth, j = 1, m.end()
            while depth and j < len(sql):
                if sql.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif sql.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            i = j
            continue
        if kind == "dollar":
            tag = m.group(0)
            close = sql.find(tag, m.end())
            end = len(sql) if close < 0 else close + len(tag)
            out.append(Token("string", sql[m.end():close if close >= 0 else len(sql)], i, end))
            i = end
            continue
        text = m.group(0)
        if kind == "string":
            out.append(Token("string", text[1:-1].replace("''", "'"), i, m.end()))
        elif kind == "estring":
            body = re.sub(r"\\(.)", lambda x: _ESCAPES.get(x.group(1), x.group(1)), text[2:-1].replace("''", "'"))
            out.append(Token("string", body, i, m.end()))
        elif kind == "ident":
            out.append(Token("ident", text[1:-1].replace('""', '"'), i, m.end()))
        elif kind not in ("space", "line"):
            out.append(Token(kind, text, i, m.end()))
        i = m.end()
    return out


def split(sql: str) -> list[tuple[str, list[Token]]]:
    """The statements of a simple-protocol query string, each with its tokens (empty statements dropped)."""
    tokens = lex(sql)
    statements, current, start = [], [], None
    for t in tokens:
        if t.kind == "op" and t.text == ";":
            if current:
                statements.append((sql[start:t.start], current))
            current, start = [], None
            continue
        if start is None:
            start = t.start
        current.append(t)
    if current:
        statements.append((sql[start:current[-1].end], current))
    return statements


def words(tokens: list[Token]) -> list[str]:
    """Keywords and names upper-cased; strings and quoted names as written, quoted."""
    out = []
    for t in tokens:
        if t.kind == "string":
            out.append("'" + t.text + "'")
        elif t.kind == "ident":
            out.append('"' + t.text + '"')
        else:
            out.append(t.text.upper())
    return out


def value_text(tokens: list[Token]) -> str:
    """A SET value as PostgreSQL keeps it: strings unquoted, names lower-cased unless quoted, lists joined."""
    parts, current = [], []
    for t in tokens:
        if t.kind == "op" and t.text == ",":
            parts.append("".join(current))
            current = []
        elif t.kind == "string":
            current.append(t.text)
        elif t.kind == "ident":
            current.append(t.text if re.fullmatch(r"[a-z_][a-z0-9_$]*", t.text) else '"' + t.text + '"')
        elif t.kind == "word":
            current.append(t.text.lower() if not current else " " + t.text.lower())
        else:
            current.append(t.text)
    parts.append("".join(current))
    return ", ".join(p.strip() for p in parts if p.strip() != "")


def set_statement(tokens: list[Token], settings: dict[str, str]) -> dict[str, str]:
    """SET … → the settings it changes (the door accepts every setting; some are fixed, as in PostgreSQL)."""
    upper = words(tokens)
    body = tokens[1:]
    if upper[1:2] in (["SESSION"], ["LOCAL"]) and upper[2:3] != ["CHARACTERISTICS"] and upper[2:3] != ["AUTHORIZATION"]:
        body = body[1:]
        upper = [upper[0], *upper[2:]]
    head = upper[1:]
    if not head:
        raise error("syntax error at end of input", "42601")
    if head[0] == "TRANSACTION" or head[:2] == ["SESSION", "CHARACTERISTICS"]:
        return {}  # isolation levels and read/write modes: every statement here reads a consistent snapshot
    if head[:2] == ["TIME", "ZONE"]:
        value = value_text(body[2:])
        return {"TimeZone": "UTC" if value.upper() in ("LOCAL", "DEFAULT") else value}
    if head[0] == "NAMES":
        return {"client_encoding": value_text(body[1:]) or "UTF8"}
    if head[:2] == ["SESSION", "AUTHORIZATION"] or head[0] == "ROLE":
        return {}
    name = canonical(body[0].text)
    rest = body[1:]
    if rest and (rest[0].text == "=" or rest[0].text.upper() == "TO"):
        rest = rest[1:]
    if not rest:
        raise error(f'syntax error at end of input: SET {name} needs a value', "42601")
    value = value_text(rest)
    if name in FIXED:
        raise error(f'parameter "{name}" cannot be changed', "55P02")
    if value.upper() == "DEFAULT":
        return {name: DEFAULTS.get(name, "")}
    if name == "client_encoding" and value.upper().replace("-", "") not in ("UTF8", "UNICODE"):
        raise error(f'invalid value for parameter "client_encoding": "{value}"', "22023", "the door speaks UTF8 only")
    return {name: value}


def show_statement(tokens: list[Token], settings: dict[str, str]) -> tuple[list[str], list[list[str]]]:
    """SHOW … → (column names, rows)."""
    spelled = " ".join(w.lower() for w in words(tokens)[1:])
    if spelled == "all":
        return ["name", "setting", "description"], [[k, v, ""] for k, v in sorted(settings.items(),
                                                                                    key=lambda kv: kv[0].lower())]
    name = canonical(spelled.strip('"'))
    if name not in settings:
        raise error(f'unrecognized configuration parameter "{spelled}"', "42704")
    column = {"transaction_isolation": "transaction_isolation"}.get(name, name)
    return [column], [[settings[name]]]


def search_path(settings: dict[str, str], user: str) -> list[str]:
    """The schemas of search_path, `$user` resolved, as a list of names."""
    names = []
    for part in settings.get("search_path", "").split(","):
        part = part.strip()
        if not part:
            continue
        if part.startswith('"') and part.endswith('"'):
            part = part[1:-1]
        else:
            part = part.lower()
        names.append(user if part == "$user" else part)
    return names
