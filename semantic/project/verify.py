"""What only the warehouse can tell: every activity, dataset and view compiled against it (nothing is built).

`phloem validate` runs `warehouse_problems` after the static checks, so it refuses what `phloem build` or a
query would. Each SELECT is described, not run (DuckDB binds it; PostgreSQL plans it under `LIMIT 0`), so
validating needs no writes. Two checks read the data: a declared activity `id:` and a view's `primary_key`
must be unique. `phloem build` repeats those and the time-column check on the tables it staged, before
publishing any of them, so a query on a fresh project gets the same model error, not the warehouse's.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
from sqlglot import exp

from semantic.activity.dataset import compile_dataset
from semantic.activity.stream import activity_select, table_name
from semantic.engines import connect, model_sql
from semantic.engines.duckdb import DuckDBEngine
from semantic.errors import ModelError, Problem
from semantic.project.load import Model, load_project
from semantic.project.model import Activity, Column, Dataset, Stream, View
from semantic.query.graph import bind_columns
from semantic.query.sqlparts import agg
from semantic.sqltree import col, ident, parse

CHECK = "_phloem_check_"  # CTE names standing in for the activity tables a build would make
TIME_TYPES = ("TIMESTAMP", "DATE")  # DuckDB's and PostgreSQL's names of them all start so (TIMESTAMP WITH TIME ZONE…)
# a column every dataset can select, named apart from any user column: what each part is checked with
ROW_ID = Column.model_construct(name="_phloem_check_row", expr="activity_id", agg=None, fill=None, type=None)
CAST_FIX = "cast it: `expr: cast({x} as timestamp)` (the text must read as a timestamp, e.g. 2024-01-31 12:00)"


def warehouse_problems(model, engine) -> list[Problem]:
    """Everything the warehouse refuses in the model, each pointing at the file and line that produced it."""
    return _Verifier(model, engine).run()


def staged_problems(model, engine, tables: dict[str, exp.Table]) -> list[Problem]:
    """What a build must not publish, in `tables` (name -> the table it staged): non-unique declared activity
    ids and view primary keys, and view time columns that are not timestamps."""
    v = _Verifier(model, engine)
    tables = {name: v.sql(exp.select(exp.Star()).from_(t.copy())) for name, t in tables.items()}
    for stream in model.streams.values():
        for i, a in enumerate(stream.activities):
            if a.id and table_name(stream, a) in tables:
                v.unique_id(stream, i, a, tables[table_name(stream, a)])
    for view in model.views.values():
        if view.dataset in tables:
            v._relations[view.name] = tables[view.dataset]
            v.time_types(view)
            if view.primary_key:
                v.unique_key(view, tables[view.dataset])
    return v.problems


def clean(message: str) -> str:
    """The warehouse's own words without the SQL it quotes back, our internal names or the engine's prefix."""
    text = message.removeprefix("PostgreSQL: ")
    text = re.split(r"\n\s*LINE \d+:|Candidate (?:functions|bindings):", text)[0]
    text = " ".join(line.strip() for line in text.splitlines() if line.strip())
    # our table aliases (p for the primary rows, j1… for joined ones) mean nothing to the user
    text = re.sub(r'"(?:p|t|a|c|r|src|_q|j\d+(?:_\w+)?)"\.(?=")|\b(?:p|t|src|j\d+(?:_\w+)?)\.(?=\w)', "", text)
    text = text.replace(CHECK, "")
    return text[:300]


def part_key(d: Dataset, path: tuple) -> str:
    """`orders.columns.total`, `orders.append.shipped_order.filter`, `orders.primary.filter`, `orders.include.x`."""
    kind, *at = path
    if kind == "primary":
        return f"{d.name}.primary.filter"
    item = {"columns": d.columns, "append": d.append, "include": d.include}[kind][at[0]]
    key = f"{d.name}.{kind}.{getattr(item, 'name', None) or getattr(item, 'activity', item)}"
    if kind == "append" and len(at) > 1:
        key += f".{at[1]}" + (f".{item.columns[at[2]].name}" if at[1] == "columns" else "")
    return key


def repeats(n: int, value: object, times: int) -> str:
    return f"{n} value{'s repeat' if n != 1 else ' repeats'} (e.g. `{value}` on {times} rows)"


class _Verifier:
    def __init__(self, model, engine):
        self.model, self.engine, self.dialect = model, engine, engine.dialect
        self.problems: list[Problem] = []
        self.bad_streams: set[str] = set()
        self.bad_datasets: set[str] = set()
        self._activities: dict[str, str] = {}
        self._relations: dict[str, str] = {}

    def add(self, kind: str, name: str, path: tuple, message: str, key: str, fix: str) -> None:
        origin = self.model.origins.get((kind, name))
        file, line = (origin.file, origin.line(*path)) if origin else ("<model>", None)
        self.problems.append(Problem(message, file, line, key, fix))

    def sql(self, query: exp.Expression) -> str:
        return query.sql(dialect=self.dialect, identify=True)

    def quote(self, name: str) -> str:
        return ident(name).sql(dialect=self.dialect)

    def refused(self, query: exp.Expression | str) -> str | None:
        """The warehouse's complaint about `query`, or None when it compiles."""
        try:
            self.engine.columns(query)
        except Exception as e:  # noqa: BLE001 — any driver's refusal is the answer we are asking for
            return clean(str(e))
        return None

    # ------------------------------------------------------------ the pass

    def run(self) -> list[Problem]:
        self.engine.rows("select 1")  # an unreachable warehouse is one error, not a refusal of every activity
        for stream in self.model.streams.values():
            for i, a in enumerate(stream.activities):
                self.activity(stream, i, a)
        for d in self.model.datasets.values():
            if d.stream in self.bad_streams:  # its stream's refusal is the one error
                self.bad_datasets.add(d.name)
            else:
                self.dataset(d)
        for view in self.model.views.values():
            if view.dataset not in self.bad_datasets:
                self.view(view)
        return self.problems

    # ------------------------------------------------------------ activities

    def activity(self, stream: Stream, i: int, a: Activity) -> None:
        key = f"{stream.name}.activities.{a.name}"
        query = activity_select(stream, a, self.dialect)
        why = self.refused(query)
        if why is not None:
            self.bad_streams.add(stream.name)
            path = ("activities", i, "sql")
            feature = next((k for k, f in enumerate(a.features) if f.type and f'"{f.name}"' in why), None)
            if feature is not None:
                path = ("activities", i, "features", feature)
            self.add("streams", stream.name, path, f"the warehouse refuses activity `{a.name}`: {why}", f"{key}.sql",
                     "fix the activity's SQL (or the feature `type:`) so it runs on its own")
            return
        if a.id:
            self.unique_id(stream, i, a, self.sql(query))

    def unique_id(self, stream: Stream, i: int, a: Activity, rows: str) -> None:
        found = self.duplicates(rows, "activity_id")
        if found:
            n, value, times = found
            self.add("streams", stream.name, ("activities", i, "id"),
                     f"activity `{a.name}`'s id `{a.id}` is not unique: {repeats(n, value, times)}",
                     f"{stream.name}.activities.{a.name}.id",
                     "declare a column that is unique per event as `id:`, or remove `id:` to use a hash of the row")

    def duplicates(self, rows: str, column: str) -> tuple[int, object, int] | None:
        """(how many values repeat, the most repeated one, its rows) in the SELECT `rows`, or None if unique."""
        key = self.quote(column)
        found = self.engine.rows(
            f'WITH "r" AS ({rows}), "d" AS (SELECT {key} AS "v", count(*) AS "n" FROM "r" WHERE {key} IS NOT NULL '
            f'GROUP BY {key} HAVING count(*) > 1) SELECT count(*) OVER (), "v", "n" FROM "d" ORDER BY "n" DESC LIMIT 1')
        return (int(found[0][0]), found[0][1], int(found[0][2])) if found else None

    # ------------------------------------------------------------ datasets

    def table_of(self) -> Callable[[Stream, Activity], exp.Table]:
        return lambda stream, a: exp.Table(this=ident(CHECK + table_name(stream, a)))

    def activities(self, stream: Stream) -> str:
        """`name AS (SELECT …)` for each activity of the stream, once: what a dataset reads instead of tables."""
        if stream.name not in self._activities:
            self._activities[stream.name] = ", ".join(
                f"{self.quote(CHECK + table_name(stream, a))} AS ({self.sql(activity_select(stream, a, self.dialect))})"
                for a in stream.activities)
        return self._activities[stream.name]

    def dataset_query(self, d: Dataset) -> str:
        """The dataset's SELECT reading its activities' SELECTs instead of the tables a build would make."""
        stream = self.model.streams[d.stream]
        query = self.sql(compile_dataset(stream, d, self.table_of(), self.model.dataset_columns, self.dialect))
        name = self.quote(CHECK + d.name)
        return f"WITH {self.activities(stream)}, {name} AS ({query}) SELECT * FROM {name}"

    def dataset(self, d: Dataset) -> None:
        whole = self.refused(self.dataset_query(d))
        if whole is None:
            return
        self.bad_datasets.add(d.name)
        # the whole SELECT was refused: narrow it down to the one filter, column or join, so the line points at it
        for path, part in self.parts(d):
            why = self.refused(self.dataset_query(part))
            if why is not None:
                self.add("datasets", d.name, path, f"the warehouse refuses dataset `{d.name}`: {why}",
                         part_key(d, path), "fix the expression on this line")
                return
        self.add("datasets", d.name, ("name",), f"the warehouse refuses dataset `{d.name}`: {whole}", d.name,
                 "fix the dataset's expressions")

    def parts(self, d: Dataset) -> Iterator[tuple[tuple, Dataset]]:
        """(key path, a dataset holding only that part) for each part, most basic first."""
        alone = {"columns": (ROW_ID,), "append": (), "include": ()}
        bare = d.model_copy(update={**alone, "primary": d.primary.model_copy(update={"filter": ()})})
        for j, f in enumerate(d.primary.filter):
            yield ("primary", "filter", j), bare.model_copy(update={"primary": d.primary.model_copy(update={"filter": (f,)})})
        for j, c in enumerate(d.columns):
            yield ("columns", j), d.model_copy(update={**alone, "columns": (c,)})
        for i, ap in enumerate(d.append):
            plain = ap.model_copy(update={"filter": (), "join": ()})

            def one(plain=plain, **kw) -> Dataset:
                return d.model_copy(update={**alone, "append": (plain.model_copy(update=kw),)})

            for j, f in enumerate(ap.filter):
                yield ("append", i, "filter", j), one(filter=(f,), columns=ap.columns[:1])
            for j, f in enumerate(ap.join):
                yield ("append", i, "join", j), one(join=(f,), columns=ap.columns[:1])
            for j, c in enumerate(ap.columns):
                yield ("append", i, "columns", j), one(columns=(c,))
            yield ("append", i), d.model_copy(update={**alone, "append": (ap,)})
        for i, n in enumerate(d.include):
            yield ("include", i), d.model_copy(update={**alone, "include": (n,)})

    # ------------------------------------------------------------ views

    def relation(self, view: View) -> str:
        """The view's rows as SQL text (compiled once per view)."""
        if view.name not in self._relations:
            if view.dataset:
                text = self.dataset_query(self.model.datasets[view.dataset])
            else:
                source = exp.to_table(view.table) if view.table else parse(view.sql, self.dialect)
                text = self.sql(exp.select(exp.Star()).from_(source) if view.table else source)
            self._relations[view.name] = text
        return self._relations[view.name]

    def over(self, view: View, *values: exp.Expression) -> str:
        """SELECT values FROM the view's rows, aliased as the view so its bound expressions read them."""
        rows = self.quote(CHECK + view.name)
        outer = exp.select(*values).from_(exp.alias_(exp.Table(this=ident(CHECK + view.name)), view.name, table=True))
        return f"WITH {rows} AS ({self.relation(view)}) {self.sql(outer)}"

    def view(self, view: View) -> None:
        source = "table" if view.table else "sql" if view.sql else "dataset"
        why = self.refused(self.over(view, exp.Star()))
        if why is not None:
            self.add("views", view.name, (source,), f"the warehouse refuses view `{view.name}`'s {source}: {why}",
                     f"{view.name}.{source}", "check the table name or SQL against the warehouse")
            return
        rows = [(("dimensions", i), f"dimensions.{d.name}", bind_columns(d.expr or d.name, view.name))
                for i, d in enumerate(view.dimensions)]
        if view.primary_key:
            rows.append((("primary_key",), "primary_key", col(view.primary_key, view.name)))
        totals = [(("measures", i), f"measures.{m.name}", agg(m, None if m.agg == "count" and not m.expr
                                                              else bind_columns(m.expr or m.name, view.name), self.dialect))
                  for i, m in enumerate(view.measures)]
        refused = set()
        for checks in (rows, totals):  # all at once; one by one only to find which the warehouse refuses
            if not checks or self.refused(self.over(view, *(e for _, _, e in checks))) is None:
                continue
            for path, key, value in checks:
                why = self.refused(self.over(view, value))
                if why is not None:
                    refused.add(path)
                    self.add("views", view.name, path, f"the warehouse refuses `{key}` of view `{view.name}`: {why}",
                             f"{view.name}.{key}", "fix the expression so it reads the view's columns")
        self.time_types(view)
        if view.primary_key and ("primary_key",) not in refused:
            self.unique_key(view, self.relation(view))

    def time_types(self, view: View) -> None:
        """`time:` and `type: time` dimensions must be timestamps or dates, not text the warehouse cannot bucket."""
        times = [(("dimensions", i), f"dimensions.{d.name}", d.name, d.expr or d.name)
                 for i, d in enumerate(view.dimensions) if d.type == "time"]
        if view.time and view.time not in {name for _, _, name, _ in times}:
            dim = next((d for d in view.dimensions if d.name == view.time), None)
            times.append((("time",), "time", view.time, (dim.expr or dim.name) if dim else view.time))
        for path, key, name, expr in times:
            try:
                [(_, kind)] = self.engine.columns(self.over(view, exp.alias_(bind_columns(expr, view.name), "t",
                                                                             quoted=True)))
            except Exception:  # noqa: BLE001 — an expression the warehouse refuses is reported above
                continue
            if not kind.upper().startswith(TIME_TYPES):
                text = kind.upper() in ("VARCHAR", "TEXT") or kind.upper().startswith("CHAR")
                self.add("views", view.name, path, f"time column `{name}` of view `{view.name}` is "
                         f"{'text' if text else kind}, not a timestamp or date", f"{view.name}.{key}",
                         CAST_FIX.format(x=expr) if text else f"cast it: `expr: cast({expr} as timestamp)`")

    def unique_key(self, view: View, rows: str) -> None:
        found = self.duplicates(rows, view.primary_key)
        if found:
            n, value, times = found
            self.add("views", view.name, ("primary_key",),
                     f"primary key `{view.primary_key}` of view `{view.name}` is not unique: {repeats(n, value, times)}",
                     f"{view.name}.primary_key",
                     "name a column that is unique per row, or remove `primary_key:` (joins to this view then "
                     "would multiply its rows)")


@dataclass(frozen=True)
class Validated:
    model: Model
    skipped: str | None = None  # why the warehouse was not asked, when another process holds it


def validate_project(root=None) -> Validated:
    """Load the project, then compile it against its warehouse; raises ModelError listing every problem."""
    model = load_project(root)
    warehouse = model.settings.warehouse
    if warehouse.engine == "duckdb":  # validating never writes to (or creates) the project's database
        on_disk = model.database_path != ":memory:" and Path(model.database_path).exists()
        try:
            engine = DuckDBEngine(model.database_path if on_disk else ":memory:", read_only=on_disk, files=model.root,
                                  reads=model_sql(model))  # locked down as queries are: only the model's files
        except duckdb.IOException as e:  # a running `phloem serve` holds the file: the model files are still checked
            pid = re.search(r"\(PID (\d+)\)", str(e))
            holder = f"PID {pid.group(1)}" if pid else "another process"
            return Validated(model, f"the warehouse checks were skipped: {holder} holds the database; stop it and "
                                    "run `phloem validate` again to compile the model against it")
    else:
        engine = connect(model)
    try:
        problems = warehouse_problems(model, engine)
    finally:
        engine.close()
    if problems:
        raise ModelError(problems)
    return Validated(model)
