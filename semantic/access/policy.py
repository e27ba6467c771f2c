"""Access policies (docs/access.md): per role, which rows of which views and which members one may see.

A policy's `rows` is a condition over dimensions in which `{{ user.x }}` stands for a value of the security
context. It is parsed once, when the model loads, with each `{{ … }}` as a placeholder; for a context the
placeholders become literals in the tree (never text pasted into SQL), so a claim cannot change the condition.

For one context: the policies whose roles it holds apply. A view's rows are those any applying policy that
governs it grants (their conditions OR-ed; one without `rows` grants every row); a view no applying policy
governs is not row-filtered. A member is visible when an applying policy includes it and does not exclude it.
No applying policy: nothing is visible.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from cachetools import LRUCache
from sqlglot import exp

from semantic.access.context import SecurityContext
from semantic.errors import Forbidden, QueryError, did_you_mean
from semantic.project.model import AccessPolicy, Members
from semantic.query.filters import column_text, parse_filter

TEMPLATE = re.compile(r"\{\{\s*user\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
IN_TEMPLATE = re.compile(r"(\bin\s*)(\{\{\s*user\.[A-Za-z_][A-Za-z0-9_]*\s*\}\})", re.IGNORECASE)
PLACEHOLDER = "phloem_user__"  # a column named so stands for a context value in a parsed condition


def template_tree(text: str, resolve: Callable[[str], Any]) -> exp.Expression:
    """A policy condition as a checked tree over `"dimension"` columns and placeholder columns."""
    text = IN_TEMPLATE.sub(lambda m: f"{m.group(1)}({m.group(2)})", text)  # `in {{ user.list }}` is a list
    text = TEMPLATE.sub(lambda m: PLACEHOLDER + m.group(1), text)

    def known(name: str):
        return None if name.startswith(PLACEHOLDER) else resolve(name)

    tree = parse_filter(text, known)
    return tree.transform(lambda n: exp.column(column_text(n), quoted=True) if isinstance(n, exp.Column) else n)


def dimensions_of(tree: exp.Expression) -> list[str]:
    """The dimension texts a condition reads (placeholders aside)."""
    names = (c.name for c in tree.find_all(exp.Column))
    return list(dict.fromkeys(n for n in names if not n.startswith(PLACEHOLDER)))


def bind(tree: exp.Expression, context: SecurityContext) -> exp.Expression:
    """The condition with the context's values as literals; an absent value (or a list where one value is
    expected) makes the whole condition false: a missing claim never widens access."""
    denied = False

    def literal(node: exp.Expression) -> exp.Expression:
        nonlocal denied
        if isinstance(node, exp.In):
            items = []
            for item in node.expressions:
                value = _value(item, context)
                if value is _NOT_PLACEHOLDER:
                    items.append(item)
                elif isinstance(value, list | tuple) and value and all(_scalar(v) for v in value):
                    items += [exp.convert(v) for v in value]
                elif _scalar(value):
                    items.append(exp.convert(value))
                else:
                    denied = True
            node.set("expressions", items or [exp.Null()])
            return node
        if isinstance(node, exp.Column):
            value = _value(node, context)
            if value is _NOT_PLACEHOLDER:
                return node
            if _scalar(value):
                return exp.convert(value)
            denied = True
            return exp.Null()
        return node

    bound = tree.copy().transform(literal, copy=False)
    return exp.false() if denied else bound


_NOT_PLACEHOLDER = object()


def _value(node: exp.Expression, context: SecurityContext) -> Any:
    if isinstance(node, exp.Column) and node.name.startswith(PLACEHOLDER):
        return context.value(node.name[len(PLACEHOLDER):])
    return _NOT_PLACEHOLDER


def _scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool) and value is not None


@dataclass(frozen=True)
class Access:
    """What one security context may see: a row condition per governed view, and the visible members."""

    key: str  # a digest of all of the below: plans and answers are cached per key
    unrestricted: bool
    rows: dict[str, exp.Expression]  # view → condition over `"dimension"` columns (absent: every row)
    metrics: frozenset[str] | None  # None: every metric
    members: frozenset[tuple[str, str]] | None  # (view, dimension or measure); None: every one
    granted: bool = True  # some policy applies to the context

    def metric_visible(self, name: str) -> bool:
        return self.metrics is None or name in self.metrics

    def member_visible(self, view: str, name: str) -> bool:
        return self.members is None or (view, name) in self.members

    def view_visible(self, view: str) -> bool:
        return self.members is None or any(v == view for v, _ in self.members)


UNRESTRICTED = Access("unrestricted", True, {}, None, None)


class Policies:
    """A model's access policies, parsed once; `access(context)` is cached per context."""

    def __init__(self, model, graph):
        self.model, self.graph = model, graph
        self.policies: list[AccessPolicy] = list(model.access_policies.values())
        self.conditions = {p.name: template_tree(p.rows, graph.resolve) for p in self.policies if p.rows}
        self._cache: LRUCache = LRUCache(maxsize=4096)
        self._lock = threading.Lock()

    def access(self, context: SecurityContext | None) -> Access:
        if context is None or context.unrestricted or not self.policies:
            return UNRESTRICTED
        key = context.key()
        with self._lock:
            hit = self._cache.get(key)
        if hit is None:
            hit = self._access(context)
            with self._lock:
                self._cache[key] = hit
        return hit

    def _access(self, context: SecurityContext) -> Access:
        applying = [p for p in self.policies if any(context.has_role(r) for r in p.roles)]
        rows: dict[str, exp.Expression] = {}
        open_views: set[str] = set()  # an applying policy governs these without a condition: every row
        for p in applying:
            bound = bind(self.conditions[p.name], context) if p.name in self.conditions else None
            for view in p.views if p.views is not None else self.graph.views:
                if view in open_views:
                    continue
                if bound is None:
                    open_views.add(view)
                    rows.pop(view, None)
                    continue
                cond = bound.copy()  # each view's tree is its own: OR-ing must not share nodes
                rows[view] = exp.or_(rows[view], cond) if view in rows else cond
        metrics, members = self._members(applying)
        digest = hashlib.sha256(repr((sorted((v, c.sql()) for v, c in rows.items()),
                                      sorted(metrics) if metrics is not None else None,
                                      sorted(members) if members is not None else None,
                                      bool(applying))).encode()).hexdigest()[:24]
        if not applying:
            rows = {view: exp.false() for view in self.graph.views}
        return Access(digest, False, rows, metrics, members, granted=bool(applying))

    def _members(self, applying: list[AccessPolicy]) -> tuple[frozenset | None, frozenset | None]:
        every_metric = set(self.model.metrics)
        every_member = {(v, n) for v in self.graph.views for n in (*self.graph.dims[v], *self.graph.measures[v])}
        metrics: set[str] = set()
        members: set[tuple[str, str]] = set()
        for p in applying:
            inc, exc = p.include, p.exclude
            got_metrics = set(inc.metrics) if inc is not None and inc.metrics else set(every_metric)
            if inc is not None and (inc.views or inc.dimensions or inc.measures):
                got_members = self._view_members(inc)
            else:
                got_members = set(every_member)
            metrics |= got_metrics - set(exc.metrics)
            members |= got_members - self._view_members(exc)
        for view, v in self.graph.views.items():  # metric_time reads each view's time: it stays visible
            if v.time and any(x == view for x, _ in members):
                members.add((view, v.time))
        return (None if metrics >= every_metric else frozenset(metrics),
                None if members >= every_member else frozenset(members))

    def _view_members(self, m: Members) -> set[tuple[str, str]]:
        out = {(v, n) for v in m.views for n in (*self.graph.dims.get(v, {}), *self.graph.measures.get(v, {}))}
        for ref in (*m.dimensions, *m.measures):
            view, _, name = ref.partition(".")
            out.add((view, name))
        return out


def check_granted(access: Access) -> None:
    """Forbidden when no access policy applies to the context (before any member is judged unknown)."""
    if not access.unrestricted and not access.granted:
        raise Forbidden("no access policy grants your roles anything in this model",
                        "ask the model's owner for a role an `access_policies:` entry names")


def check_metric(access: Access, name: str, model) -> None:
    """Refuse a metric or `view.measure` the context may not see, reported as unknown: its name is not revealed
    to whom it is hidden from (suggestions come only from what is visible)."""
    if access.unrestricted:
        return
    check_granted(access)
    if "." in name and name not in model.metrics:
        view, _, measure = name.partition(".")
        if not access.member_visible(view, measure):
            raise QueryError(f"unknown measure `{name}`", "see /api/v1/meta for what you may ask")
    elif not access.metric_visible(name):
        visible = [m for m in model.metrics if access.metric_visible(m)]
        raise QueryError(f"unknown metric `{name}`", did_you_mean(name, visible) or "see /api/v1/meta for what you may ask")


def check_dimension(access: Access, ref) -> None:
    """Refuse grouping or filtering by a dimension the context may not see (metric_time is always visible)."""
    if access.unrestricted:
        return
    check_granted(access)
    if ref.view is None:
        return
    if not any(access.member_visible(v, ref.name) for v in ref.candidates or (ref.view,)):
        raise QueryError(f"unknown dimension `{ref.text}`", "see /api/v1/meta for what you may ask")


def problems(model, graph, add: Callable[..., None]) -> None:
    """Model checks of `access_policies:`: conditions parse over known dimensions, each governed view reaches
    them, and every named member exists. `add(name, path, message, key, suggestion)` records one."""
    for p in model.access_policies.values():
        if p.rows:
            try:
                tree = template_tree(p.rows, graph.resolve)
            except QueryError as e:
                add(p.name, ("rows",), f"access policy `{p.name}`: {e.message}", f"access_policies.{p.name}.rows",
                    e.suggestion or "write a condition over dimensions, e.g. country = {{ user.country }}")
                continue
            for view in p.views if p.views is not None else graph.views:
                if view not in graph.views:
                    continue
                for text in dimensions_of(tree):
                    ref = graph.resolve(text)
                    if ref.view is None:
                        continue
                    try:
                        graph.nearest(view, ref)
                    except QueryError:
                        add(p.name, ("views",) if p.views is not None else ("rows",),
                            f"access policy `{p.name}` filters view `{view}` on `{text}`, which `{view}` cannot reach",
                            f"access_policies.{p.name}",
                            "list the views it governs in `views:` (the others are not filtered by it)")
        for where, names in (("views", p.views or ()), *_member_lists(p)):
            for name in names:
                if not _exists(where, name, model, graph):
                    add(p.name, _path(where), f"access policy `{p.name}` names unknown {where.split('.')[-1][:-1]} "
                        f"`{name}`", f"access_policies.{p.name}.{where}", did_you_mean(name, _known(where, model, graph)))


def _member_lists(p: AccessPolicy) -> Iterable[tuple[str, tuple[str, ...]]]:
    for side, m in (("include", p.include), ("exclude", p.exclude)):
        if m is not None:
            for kind in ("views", "dimensions", "measures", "metrics"):
                yield f"{side}.{kind}", getattr(m, kind)


def _path(where: str) -> tuple:
    return tuple(where.split("."))


def _known(where: str, model, graph) -> list[str]:
    kind = where.split(".")[-1]
    if kind == "views":
        return list(graph.views)
    if kind == "metrics":
        return list(model.metrics)
    index = graph.dims if kind == "dimensions" else graph.measures
    return [f"{v}.{n}" for v, names in index.items() for n in names]


def _exists(where: str, name: str, model, graph) -> bool:
    return name in _known(where, model, graph)
