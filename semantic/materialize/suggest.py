"""Rollup recommendations from the query log: the rollups that would answer the queries seen so far.

Logged leaves that no declared rollup covers are grouped by view and dimensions (query dimensions plus filter
dimensions); each group becomes one proposal holding every measure asked for, at the coarsest grain that
still serves every grain asked for (day when queries had time ranges). Its size is estimated by counting the
distinct keys in the warehouse, its speedup as the rows a query scans today over the rows it would scan.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from sqlglot import exp

from semantic.errors import ModelError
from semantic.project.model import GRAINS, Rollup, serves
from semantic.query.rollup_sql import rollup_select
from semantic.query.rollups import PARTS, resolve


@dataclass
class Suggestion:
    rollup: Rollup
    queries: int  # logged leaves it would answer
    rows: int  # estimated rows of the rollup
    source_rows: int  # rows of the view those leaves scan today

    @property
    def speedup(self) -> float:
        return self.source_rows / max(self.rows, 1)

    def as_yaml(self) -> dict:
        r = self.rollup
        out = {"name": r.name, "view": r.view, "measures": list(r.measures)}
        if r.dimensions:
            out["dimensions"] = list(r.dimensions)
        out["grain"] = r.grain
        return out


def _split(text: str) -> tuple[str, str | None]:
    """`orders.ordered_at__month` → (`orders.ordered_at`, `month`); `orders.channel` → (`orders.channel`, None)."""
    head, sep, tail = text.rpartition("__")
    return (head, tail) if sep and tail in GRAINS else (text, None)


def _covered(specs, leaf: dict, grain: str | None) -> bool:
    """Whether a declared rollup already holds this logged leaf's measures, dimensions and grain."""
    for spec in specs:
        if spec.view != leaf["view"] or not set(leaf["measures"]) <= set(spec.measures):
            continue
        if grain and not serves(spec.grain, grain):
            continue
        stored = {f"{d.view}.{d.name}": d.grain for d in spec.dims}
        wanted = [_split(t) for t in {*leaf["dims"], *leaf["filters"]}]
        if all(base in stored and (g is None or (stored[base] is not None and serves(stored[base], g)))
               for base, g in wanted):
            return True
    return False


def _grain(grains: Counter, ranged: bool) -> str:
    """The coarsest grain every observed grain can be made from (day or finer when ranges were used)."""
    wanted = [g for g in grains if g]
    options = [g for g in reversed(GRAINS) if all(serves(g, w) for w in wanted)]
    if ranged:
        options = [g for g in options if g in ("hour", "day")]
    return options[0] if options else "day"


def _name(view: str, grain: str, dims: list[str], taken: set[str]) -> str:
    words = [re.sub(r"^.*\.", "", d).split("__")[0] for d in dims]
    base = f"{view}_{grain}" + (f"_by_{'_'.join(words)}" if words else "")
    base = re.sub(r"[^a-z0-9_]", "_", base.lower())[:50].rstrip("_")
    name, i = base, 2
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    taken.add(name)
    return name


def suggest(project, entries: list[dict] | None = None, limit: int = 5) -> list[Suggestion]:
    """Proposals for the logged queries no rollup answers yet, most queries served first."""
    entries = project.query_log.entries() if entries is None else entries
    compiler = project.compiler
    model, graph, specs = project.model, compiler.graph, list(compiler.rollups.values())
    groups: dict[tuple, dict] = {}
    for e in entries:
        for leaf in e.get("leaves", []):
            if leaf.get("kind") == "conversion" or leaf.get("view") not in graph.views:
                continue
            if _covered(specs, leaf, e.get("grain")):
                continue
            key = (leaf["view"], tuple(sorted({*leaf["dims"], *leaf["filters"]})))
            g = groups.setdefault(key, {"measures": Counter(), "grains": Counter(), "count": 0, "ranged": False})
            g["measures"].update(leaf["measures"])
            g["grains"][e.get("grain")] += 1
            g["count"] += 1
            g["ranged"] |= bool(e.get("time_range"))
    taken = set(model.rollups) | set(model.datasets) | set(model.views)
    out: list[Suggestion] = []
    source_rows: dict[str, int] = {}
    for (view, dims), g in sorted(groups.items(), key=lambda kv: -kv[1]["count"]):
        grain = _grain(g["grains"], g["ranged"])
        single_grain = len([x for x in g["grains"] if x]) == 1 and grain in g["grains"]
        measures = [m for m in g["measures"] if m in graph.measures[view] and graph.measures[view][m].agg in PARTS
                    and (graph.measures[view][m].agg != "count_distinct" or single_grain)]
        if not measures:
            continue
        own = [d.removeprefix(f"{view}.") for d in dims]  # the view's own dimensions need no qualifier
        rollup = Rollup(name=_name(view, grain, list(dims), taken), view=view, measures=tuple(sorted(measures)),
                        dimensions=tuple(own), grain=grain)
        spec, problems = resolve(model, graph, rollup)
        if spec is None:
            continue
        keys = rollup_select(graph, dataclasses.replace(spec, measures={}, columns={}), project.engine.dialect)
        rows = project.engine.rows(exp.select(exp.Count(this=exp.Star())).from_(keys.subquery("k")))[0][0]
        if view not in source_rows:
            relation = exp.alias_(graph.relation(view), view, table=True)
            source_rows[view] = project.engine.rows(exp.select(exp.Count(this=exp.Star())).from_(relation))[0][0]
        out.append(Suggestion(rollup, g["count"], int(rows), int(source_rows[view])))
        if len(out) >= limit:
            break
    return out


def write(root: Path, suggestions: list[Suggestion]) -> Path:
    """Append the suggestions to models/rollups.yml (comments kept); the project must still load, else undone."""
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    from semantic.project.load import load_project

    path = Path(root) / "models" / "rollups.yml"
    before = path.read_text() if path.exists() else None
    yaml = YAML()
    yaml.width = 110
    yaml.indent(mapping=2, sequence=4, offset=2)  # `  - name: …`, as the files Phloem ships are written
    data = yaml.load(before) if before else None
    data = data if isinstance(data, dict) else CommentedMap()
    items = data.setdefault("rollups", CommentedSeq())
    for s in suggestions:
        item = CommentedMap()
        for k, v in s.as_yaml().items():
            if isinstance(v, list):
                v = CommentedSeq(v)
                v.fa.set_flow_style()
            item[k] = v
        items.append(item)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        yaml.dump(data, f)
    try:
        load_project(root)
    except ModelError:
        if before is None:
            path.unlink()
        else:
            path.write_text(before)
        raise
    return path
