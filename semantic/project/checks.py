"""Cross-reference checks over a loaded model: every name points at something real, nothing loops."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import sqlglot
from sqlglot import exp

from semantic.errors import Problem, did_you_mean
from semantic.project.model import Append, Column, Dataset, Metric, Stream, View

QUALIFIERS = ("primary", "joined", "feature_json")


def check_model(model, broken: Iterable[tuple[str, str]] = ()) -> list[Problem]:
    """Cross-reference problems; `broken` (kind, name) objects were declared but invalid, so are not "unknown"."""
    c = _Checker(model, set(broken))
    for stream in model.streams.values():
        before = len(c.problems)
        c.stream(stream)
        if len(c.problems) > before:
            c.broken.add(("streams", stream.name))  # its datasets would only repeat the same mistake
    for dataset in model.datasets.values():
        before = len(c.problems)
        c.dataset(dataset)
        if len(c.problems) > before:
            c.broken.add(("datasets", dataset.name))  # its views would only repeat the same mistake
    for name, (stream, append) in model.dataset_columns.items():
        c.dataset_column(name, stream, append)
    for view in model.views.values():
        c.view(view)
    for metric in model.metrics.values():
        c.metric(metric)
    c.metric_cycles()
    c.cumulative_time()
    if model.rollups:
        c.rollups()
    if model.access_policies and not c.problems:  # policies read dimensions: only a sound model can check them
        from semantic.access.policy import problems
        from semantic.query.graph import SemanticGraph

        problems(model, SemanticGraph(model), lambda name, path, message, key, fix="": c.add(
            "access_policies", name, path, message, key, fix))
    return c.problems


def sql_columns(sql: str) -> Iterator[exp.Column]:
    yield from sqlglot.parse_one(sql, read="duckdb").find_all(exp.Column)


class _Checker:
    def __init__(self, model, broken: set[tuple[str, str]]):
        self.model = model
        self.broken = broken
        self.problems: list[Problem] = []

    def add(self, kind: str, name: str, path: tuple, message: str, key: str, suggestion: str = "") -> None:
        origin = self.model.origins.get((kind, name))
        file, line = (origin.file, origin.line(*path)) if origin else ("<model>", None)
        self.problems.append(Problem(message, file, line, key, suggestion))

    def unknown(self, kind, name, path, what, value, choices: Iterable[str], key, of: str = "") -> None:
        if (of, value) in self.broken:
            return  # declared, but invalid: that problem is already reported
        choices = list(choices)
        hint = did_you_mean(value, choices) or (f"known: {', '.join(sorted(choices))}" if choices else
                                                 f"none is declared; declare `{value}` or fix the name")
        head, of, tail = what.partition(" of ")  # "activity of stream `s`" reads: unknown activity `x` of stream `s`
        self.add(kind, name, path, f"unknown {head} `{value}`{' of ' + tail if of else ''}", key, hint)

    # ------------------------------------------------------------ streams

    def stream(self, s: Stream) -> None:
        seen: set[str] = set()
        for i, a in enumerate(s.activities):
            key = f"{s.name}.activities.{a.name}"
            if a.name in seen:
                self.add("streams", s.name, ("activities", i, "name"), f"duplicate activity `{a.name}`", key,
                         "activity names are unique within a stream")
            seen.add(a.name)
            try:
                select = sqlglot.parse_one(a.sql, read="duckdb")
            except sqlglot.errors.ParseError as e:
                first = e.errors[0]["description"] if e.errors else str(e)
                self.add("streams", s.name, ("activities", i, "sql"), f"activity SQL does not parse: {first}",
                         f"{key}.sql", "the SQL must be one SELECT statement")
                continue
            outputs = getattr(select, "named_selects", None)
            if not isinstance(select, exp.Query) or not outputs or "*" in outputs or any(
                isinstance(e, exp.Star) for e in select.selects
            ):
                continue  # `select *`: checked against the warehouse at build time
            # entity and ts are fixed names the SQL must alias to; the others name a column of the SQL
            needed = [("entity", ("sql",), s.entity), ("ts", ("sql",), "ts")]
            needed += [(k, (k,), getattr(a, k)) for k in ("id", "revenue_impact", "link") if getattr(a, k)]
            needed += [(f"features.{f.name}", ("features", k), f.name) for k, f in enumerate(a.features)]
            for what, sub, col in needed:
                if col not in outputs:
                    close = did_you_mean(col, outputs)
                    alias = close.removeprefix("did you mean `").removesuffix("`?") if close else "..."
                    fix = close if sub != ("sql",) and close else f"select `{alias} as {col}`"
                    self.add("streams", s.name, ("activities", i, *sub),
                             f"`{col}` is not produced by activity `{a.name}`'s SQL (it selects {', '.join(outputs)})",
                             f"{key}.{what}", fix)

    # ------------------------------------------------------------ datasets

    def dataset(self, d: Dataset) -> None:
        taken = {s.name for s in self.model.streams.values()} | {
            f"{s.name}__{a.name}" for s in self.model.streams.values() for a in s.activities}
        if d.name in taken:  # datasets, stream views and activity tables share the materialization schema
            self.add("datasets", d.name, ("name",), f"dataset name `{d.name}` is already the name of a stream table",
                     f"{d.name}.name", f"rename the dataset, e.g. `{d.name}_dataset`")
        stream = self.model.streams.get(d.stream)
        if stream is None:
            self.unknown("datasets", d.name, ("stream",), "stream", d.stream, self.model.streams, f"{d.name}.stream",
                         "streams")
            return
        if ("streams", stream.name) in self.broken:
            return  # checked once its stream is fixed
        names = [a.name for a in stream.activities]
        primary = stream.activity(d.primary.activity)
        if primary is None:
            self.unknown("datasets", d.name, ("primary", "activity"), f"activity of stream `{stream.name}`",
                         d.primary.activity, names, f"{d.name}.primary.activity")
            return
        pcols = stream.columns_of(primary)
        for j, f in enumerate(d.primary.filter):
            self.expr(d.name, ("primary", "filter", j), f, {"": pcols, "feature_json": pcols}, f"{d.name}.primary.filter")
        for j, col in enumerate(d.columns):
            self.column(d.name, ("columns", j), col, pcols, f"{d.name}.columns.{col.name}", primary.name)
        for i, ap in enumerate(d.append):
            self.append(d, stream, ("append", i), ap, pcols)
        for i, inc in enumerate(d.include):
            if inc not in self.model.dataset_columns:
                self.unknown("datasets", d.name, ("include", i), "dataset column", inc, self.model.dataset_columns,
                             f"{d.name}.include", "dataset_columns")
            elif self.model.dataset_columns[inc][0] != d.stream:
                self.add("datasets", d.name, ("include", i), f"dataset column `{inc}` is on another stream",
                         f"{d.name}.include", f"use a column of stream `{d.stream}`")
        # each repeat is reported where it is written, naming the line of the first
        outputs = [(c.name, ("columns", j)) for j, c in enumerate(d.columns)]
        outputs += [(c.name, ("append", i, "columns", j)) for i, ap in enumerate(d.append) for j, c in enumerate(ap.columns)]
        outputs += [(n, ("include", i)) for i, n in enumerate(d.include)]
        first: dict[str, tuple] = {}
        for n, path in outputs:
            if n not in first:
                first[n] = path
                continue
            origin = self.model.origins.get(("datasets", d.name))
            at = f" (first on line {origin.line(*first[n])})" if origin else ""
            self.add("datasets", d.name, path, f"output column `{n}` appears more than once{at}",
                     f"{d.name}.columns.{n}", "give each output column a unique `name:`")

    def dataset_column(self, name: str, stream_name: str, ap: Append) -> None:
        stream = self.model.streams.get(stream_name)
        if stream is None:
            self.unknown("dataset_columns", name, ("stream",), "stream", stream_name, self.model.streams, name, "streams")
            return
        if stream.activity(ap.activity) is None:
            self.unknown("dataset_columns", name, ("append", 0, "activity"), f"activity of stream `{stream.name}`",
                         ap.activity, [a.name for a in stream.activities], name)

    def append(self, d: Dataset, stream: Stream, path: tuple, ap: Append, pcols: list[str]) -> None:
        key = f"{d.name}.append.{ap.activity}"
        joined = stream.activity(ap.activity)
        if joined is None:
            self.unknown("datasets", d.name, (*path, "activity"), f"activity of stream `{stream.name}`", ap.activity,
                         [a.name for a in stream.activities], key)
            return
        jcols = stream.columns_of(joined)
        for ki, k in enumerate(ap.join_keys):
            for side, col, cols in (("primary", k.primary, pcols), ("joined", k.joined, jcols)):
                if col not in cols:
                    act = d.primary.activity if side == "primary" else ap.activity
                    self.unknown("datasets", d.name, (*path, "join_keys", ki), f"join key of activity `{act}`", col,
                                 cols, f"{key}.join_keys")
        for j, f in enumerate(ap.filter):
            self.expr(d.name, (*path, "filter", j), f, {"": jcols, "feature_json": jcols}, f"{key}.filter")
        for j, f in enumerate(ap.join):
            self.expr(d.name, (*path, "join", j), f, {"primary": pcols, "joined": jcols}, f"{key}.join")
        for j, col in enumerate(ap.columns):
            self.column(d.name, (*path, "columns", j), col, jcols, f"{key}.columns.{col.name}", ap.activity)

    def column(self, dataset: str, path: tuple, col: Column, cols: list[str], key: str, activity: str) -> None:
        if col.expr is None:
            if col.agg == "count":
                return
            if col.name not in cols:
                self.add("datasets", dataset, path, f"`{col.name}` is not a column of activity `{activity}`", key,
                         did_you_mean(col.name, cols) or "name a feature, or give `expr:` to compute it")
            return
        self.expr(dataset, (*path, "expr"), col.expr, {"": cols, "feature_json": cols, "joined": cols}, key)

    def expr(self, kind_name: str, path: tuple, sql: str, scopes: dict[str, list[str]], key: str,
             kind: str = "datasets") -> None:
        try:
            columns = list(sql_columns(sql))
        except sqlglot.errors.ParseError as e:
            first = e.errors[0]["description"] if e.errors else str(e)
            self.add(kind, kind_name, path, f"SQL `{sql}` does not parse: {first}", key, "check quotes and brackets")
            return
        for c in columns:
            scope = c.table
            if scope not in scopes:
                self.add(kind, kind_name, path, f"`{c.sql()}` uses unknown qualifier `{scope}`", key,
                         did_you_mean(scope, [s for s in scopes if s]) or
                         f"qualify with one of {', '.join(s for s in scopes if s) or 'nothing'}")
            elif c.name not in scopes[scope]:
                self.add(kind, kind_name, path, f"unknown column `{c.name}` in `{sql}`", key,
                         did_you_mean(c.name, scopes[scope]) or f"known: {', '.join(scopes[scope])}")

    # ------------------------------------------------------------ views

    def view(self, v: View) -> None:
        cols: list[str] | None = None
        if v.dataset is not None:
            d = self.model.datasets.get(v.dataset)
            if d is None:
                self.unknown("views", v.name, ("dataset",), "dataset", v.dataset, self.model.datasets, f"{v.name}.dataset",
                             "datasets")
                return
            if ("datasets", d.name) not in self.broken:  # else its columns are uncertain: check once it is fixed
                cols = d.output_columns() + list(d.include) + ["activity_occurrence", "activity_repeated_at"]
        names = [x.name for x in (*v.dimensions, *v.measures, *v.entities)]
        for n in sorted({n for n in names if names.count(n) > 1}):
            self.add("views", v.name, ("dimensions",), f"`{n}` is declared twice in view `{v.name}`", f"{v.name}.{n}",
                     "dimension, measure and entity names are unique within a view")
        if cols is None:
            return  # table or SQL: columns are known only to the warehouse
        scopes = {"": cols}
        for attr in ("primary_key", "time"):
            value = getattr(v, attr)
            if value and value not in cols:
                self.unknown("views", v.name, (attr,), f"column of dataset `{v.dataset}`", value, cols, f"{v.name}.{attr}")
        for i, e in enumerate(v.entities):
            if e.expr not in cols:
                self.unknown("views", v.name, ("entities", i), f"column of dataset `{v.dataset}`", e.expr, cols,
                             f"{v.name}.entities.{e.name}")
        for i, dim in enumerate(v.dimensions):
            self.expr(v.name, ("dimensions", i), dim.expr or dim.name, scopes, f"{v.name}.dimensions.{dim.name}", "views")
        dims = cols + [d.name for d in v.dimensions]
        for i, m in enumerate(v.measures):
            if m.expr or m.agg != "count":
                self.expr(v.name, ("measures", i), m.expr or m.name, scopes, f"{v.name}.measures.{m.name}", "views")
            if m.filter:
                self.expr(v.name, ("measures", i, "filter"), m.filter, {"": dims}, f"{v.name}.measures.{m.name}.filter",
                          "views")

    # ------------------------------------------------------------ metrics

    def measure_views(self, ref: str) -> list[str]:
        """The views holding measure `ref` (`view.measure`, or a bare measure name looked up in every view)."""
        view, _, measure = ref.rpartition(".")
        views = [self.model.views[view]] if view in self.model.views else ([] if view else self.model.views.values())
        return [v.name for v in views for m in v.measures if m.name == measure]

    def metric(self, m: Metric) -> None:
        metrics = self.model.metrics
        found = self.measure_views(m.measure) if m.measure else []
        if m.measure and len(found) > 1:
            self.add("metrics", m.name, ("measure",), f"measure `{m.measure}` is in several views: {', '.join(found)}",
                     f"{m.name}.measure", f"qualify it, e.g. `{found[0]}.{m.measure}`")
        elif m.measure and not found:
            view = m.measure.rpartition(".")[0]
            gone = ("views", view) in self.broken or not view and any(k == "views" for k, _ in self.broken)
            qualified = [f"{v.name}.{x.name}" for v in self.model.views.values() for x in v.measures]
            bare = [x.name for v in self.model.views.values() for x in v.measures]
            if not gone:  # a measure of an invalid view is not "unknown": that view's problem is reported
                self.unknown("metrics", m.name, ("measure",), "measure", m.measure, qualified if view else bare + qualified,
                             f"{m.name}.measure")
        if m.expr:
            try:
                refs = {c.name for c in sql_columns(m.expr)}
            except sqlglot.errors.ParseError:
                self.add("metrics", m.name, ("expr",), f"formula `{m.expr}` does not parse", f"{m.name}.expr",
                         "use metric names with + - * / and parentheses")
                refs = set()
            for ref in sorted(refs - set(m.inputs)):
                if ref not in metrics:
                    self.unknown("metrics", m.name, ("expr",), "metric", ref, metrics, f"{m.name}.expr", "metrics")
            for alias, inp in m.inputs.items():
                if inp.metric not in metrics:
                    self.unknown("metrics", m.name, ("inputs", alias), "metric", inp.metric, metrics,
                                 f"{m.name}.inputs.{alias}", "metrics")
        targets = []
        if m.ratio:
            targets = [("ratio", "numerator", m.ratio.numerator), ("ratio", "denominator", m.ratio.denominator)]
        if m.cumulative:
            targets = [("cumulative", "metric", m.cumulative.metric)]
            if not (m.cumulative.window or m.cumulative.grain_to_date):
                pass  # no window and no grain: running total over all time
        for *path, ref in targets:
            if ref not in metrics:
                self.unknown("metrics", m.name, tuple(path), "metric", ref, metrics, f"{m.name}.{'.'.join(path)}",
                             "metrics")
        if m.conversion:
            cv = m.conversion
            stream = self.model.streams.get(cv.stream)
            if stream is None:
                self.unknown("metrics", m.name, ("conversion", "stream"), "stream", cv.stream, self.model.streams,
                             f"{m.name}.conversion.stream", "streams")
                return
            for attr in ("base", "conversion"):
                act = getattr(cv, attr)
                if stream.activity(act) is None:
                    self.unknown("metrics", m.name, ("conversion", attr), f"activity of stream `{stream.name}`", act,
                                 [a.name for a in stream.activities], f"{m.name}.conversion.{attr}")

    def cumulative_time(self) -> None:
        """A cumulative metric needs time on every measure it accumulates."""
        for m in self.model.metrics.values():
            if not m.cumulative:
                continue
            for leaf in self.leaf_measures(m.cumulative.metric, set()):
                view = self.model.views.get(leaf.rpartition(".")[0])
                if view is not None and not view.time:
                    self.add("metrics", m.name, ("cumulative",), f"`{m.name}` accumulates `{leaf}` over time, but view "
                             f"`{view.name}` has no time column", f"{m.name}.cumulative",
                             f"give view `{view.name}` a `time:` column")

    def leaf_measures(self, name: str, seen: set[str]) -> list[str]:
        m = self.model.metrics.get(name)
        if m is None or name in seen:
            return []
        seen.add(name)
        if m.measure:
            found = self.measure_views(m.measure)
            return [f"{found[0]}.{m.measure.rpartition('.')[2]}"] if len(found) == 1 else []
        return [x for child in metric_inputs(m) for x in self.leaf_measures(child, seen)]

    # ------------------------------------------------------------ rollups

    def rollups(self) -> None:
        """Each rollup names a real view, measures, metrics and reachable dimensions (resolved as queries would)."""
        from semantic.errors import ModelError
        from semantic.query.graph import SemanticGraph
        from semantic.query.rollups import resolve

        if any(kind in ("views", "metrics") for kind, _ in self.broken):
            return  # names would be reported unknown only because their declaration is broken
        try:
            graph = SemanticGraph(self.model)
        except ModelError:
            return  # the join problem is reported by the query layer's own load
        tables = {s.name for s in self.model.streams.values()} | set(self.model.datasets) | {
            f"{s.name}__{a.name}" for s in self.model.streams.values() for a in s.activities}
        for r in self.model.rollups.values():
            _, problems = resolve(self.model, graph, r, tables)
            for p in problems:
                self.add("rollups", r.name, p.path, p.message, ".".join(str(x) for x in (r.name, *p.path[:1])),
                         p.suggestion)

    def metric_cycles(self) -> None:
        deps = {name: set(metric_inputs(m)) & set(self.model.metrics) for name, m in self.model.metrics.items()}
        state: dict[str, int] = {}

        def visit(name: str, trail: list[str]) -> None:
            state[name] = 1
            for dep in sorted(deps[name]):
                if state.get(dep) == 1:
                    loop = " → ".join([*trail[trail.index(dep):], dep]) if dep in trail else f"{name} → {dep}"
                    m = self.model.metrics[name]
                    at = ("expr",) if m.expr else ("ratio",) if m.ratio else ("cumulative", "metric")
                    self.add("metrics", name, at, f"metric cycle: {loop}", name,
                             "a metric cannot depend on itself; break the loop")
                elif dep not in state:
                    visit(dep, [*trail, dep])
            state[name] = 2

        for name in sorted(deps):
            if name not in state:
                visit(name, [name])


def metric_inputs(m: Metric) -> list[str]:
    """The metrics `m` is computed from (its children in the metric tree)."""
    if m.expr:
        try:
            refs = [c.name for c in sql_columns(m.expr)]
        except sqlglot.errors.ParseError:
            return []
        return list(dict.fromkeys(m.inputs[r].metric if r in m.inputs else r for r in refs))
    if m.ratio:
        return [m.ratio.numerator, m.ratio.denominator]
    if m.cumulative:
        return [m.cumulative.metric]
    return []
