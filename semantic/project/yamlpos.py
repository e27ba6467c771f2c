"""YAML to plain Python, remembering the line of every key and list item (for errors that point at lines)."""

from __future__ import annotations

import re
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError

from semantic.errors import Problem

Positions = dict[tuple, int]


def load_yaml(text: str, file: str) -> tuple[Any, Positions, list[Problem]]:
    """Parse one YAML document; returns (data, positions, problems). positions[path] is a 1-based line."""
    try:
        raw = YAML(typ="rt", pure=True).load(text)
    except MarkedYAMLError as e:
        return None, {}, [_syntax_problem(e, text.splitlines(), file)]
    positions: Positions = {(): 1}
    return _plain(raw, (), positions), positions, []


_OPENERS = {"flow sequence": ("[", "]"), "flow mapping": ("{", "}"), "quoted scalar": ("quote", "quote")}
_KEY_ON_LINE = re.compile(r"^\s*(?:-\s+)*([^\s:#'\"{}\[\],-][^:#{}\[\],]*?)\s*:(?:\s|$)")


def _syntax_problem(e: MarkedYAMLError, rows: list[str], file: str) -> Problem:
    mark = e.problem_mark or e.context_mark
    line = mark.line + 1 if mark else None
    what = (e.problem or e.context or "invalid YAML").strip()
    message, hint = f"YAML syntax error: {what}", _yaml_hint(what)
    context = (e.context or "").removeprefix("while scanning a ").removeprefix("while parsing a ")
    dup = re.match(r'found duplicate key "(.*?)"', what)
    if context in _OPENERS and e.context_mark:
        # the mistake is where the bracket or quote was opened, not where the parser gave up
        opener, closer = _OPENERS[context]
        shown = "a quote" if opener == "quote" else f"`{opener}`"
        message = f"YAML syntax error: {shown} opened here is never closed ({what} on line {line})"
        hint = "close the quote" if closer == "quote" else f"close it with `{closer}` (or quote the value)"
        line = e.context_mark.line + 1
    elif dup and e.problem_mark and e.context_mark:
        first = _first_key_line(rows, dup.group(1), e.context_mark.line, e.problem_mark)
        message = f"YAML syntax error: duplicate key `{dup.group(1)}`" + (
            f" (first on line {first})" if first else ""
        )
        return Problem(message, file, line, dup.group(1), hint)
    if _is_tab(what):
        message = "YAML syntax error: a tab character where YAML expects spaces"
    key = _KEY_ON_LINE.match(rows[line - 1]) if line and 0 < line <= len(rows) else None
    return Problem(message, file, line, key.group(1).strip() if key else "", hint)


def _first_key_line(rows: list[str], key: str, start: int, dup) -> int | None:
    """The line of the first `key:` in the mapping holding the duplicate (same column as the duplicate)."""
    for i in range(start, dup.line):
        if re.match(rf"{re.escape(key)}\s*:", rows[i][dup.column :]):
            return i + 1
    return None


def _is_tab(what: str) -> bool:
    # ruamel says "found character '\\t' that cannot start any token" (a backslash and a t)
    return "\\t" in what


def _yaml_hint(what: str) -> str:
    if "duplicate key" in what:
        return "each key may appear once per mapping; remove or rename the repeated one"
    if "mapping values are not allowed" in what:
        return "a value containing ': ' needs quotes"
    if _is_tab(what):
        return "indent with spaces, not tabs"
    return "check indentation, brackets and quotes on this line"


def _plain(node: Any, path: tuple, positions: Positions) -> Any:
    if isinstance(node, CommentedMap):
        out = {}
        for key, value in node.items():
            line, _col = node.lc.key(key)
            positions[(*path, key)] = line + 1
            out[str(key)] = _plain(value, (*path, key), positions)
        return out
    if isinstance(node, CommentedSeq):
        out_list = []
        for i, value in enumerate(node):
            line, _col = node.lc.item(i)
            positions[(*path, i)] = line + 1
            out_list.append(_plain(value, (*path, i), positions))
        return out_list
    if hasattr(node, "value") and type(node).__module__.startswith("ruamel"):
        return node.value if not isinstance(node, str) else str(node)
    if isinstance(node, str):
        return str(node)
    return node


def line_of(positions: Positions, path: tuple) -> int | None:
    """The line of `path`, or of its nearest ancestor that has one."""
    path = tuple(path)
    while path:
        if path in positions:
            return positions[path]
        path = path[:-1]
    return positions.get(())
