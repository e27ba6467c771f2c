"""YAML to plain Python, remembering the line of every key and list item (for errors that point at lines)."""

from __future__ import annotations

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
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        what = (e.problem or e.context or "invalid YAML").strip()
        return None, {}, [Problem(f"YAML syntax error: {what}", file, line, "", _yaml_hint(what))]
    positions: Positions = {(): 1}
    return _plain(raw, (), positions), positions, []


def _yaml_hint(what: str) -> str:
    if "duplicate key" in what:
        return "each key may appear once per mapping; remove or rename the repeated one"
    if "mapping values are not allowed" in what:
        return "a value containing ': ' needs quotes"
    if "tab" in what:
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
