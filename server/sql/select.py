"""One semantic SELECT (over one view's table or `metrics`, no joins) → a metric Query and the outer SELECT.

The Query's answer is registered under `name` with columns `__d0…` (dimensions) and `__m0…` (metrics); the
outer SELECT is the original one with every dimension and aggregate replaced by those columns, so arithmetic,
CASE, window functions, HAVING, ORDER BY and LIMIT run over the answer (in DuckDB) exactly as written.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlglot import exp

from semantic.errors import QueryError
from semantic.project.model import GRAINS
from semantic.query.query import Query, make_query
from server.sql import aggregates
from server.sql.statement import output_name
from server.sql.tables import SemanticTable, TableColumn
from server.sql.where import split

DIM, VAL = "__dim", "__val"  # marker qualifiers of resolved columns inside a normalized tree
TRUNCS = (exp.TimestampTrunc, exp.DateTrunc)
DIMENSION_AGGREGATES = {"min", "max", "count_distinct", "any_value"}
# a coarser time bucket can be computed from a finer one, except months, quarters and years from weeks
DERIVABLE = {g: set(GRAINS[i:]) - ({"month", "quarter", "year"} if g == "week" else set()) for i, g in
             enumerate(GRAINS)}
INJECTIVE_CASTS = {exp.DataType.Type.DATE, exp.DataType.Type.TIMESTAMP, exp.DataType.Type.TEXT,
                   exp.DataType.Type.VARCHAR}


def written(node: exp.Expression) -> str:
    """A normalized tree as the user wrote it (markers back to plain column names), for messages."""
    plain = node.copy().transform(lambda n: exp.column(n.name) if isinstance(n, exp.Column) and n.table in (DIM, VAL)
                                  else n, copy=False)
    return plain.sql("postgres")


@dataclass
class SemanticSelect:
    name: str  # the answer's table in the outer step
    table: str
    source: str  # the SELECT as written (explain)
    query: Query
    columns: list[str]  # the answer's column names: dimensions, then metrics
    outer: exp.Select  # the SELECT over the answer that replaces the original
    direct: list[tuple[int, str]] | None = None  # the outer SELECT only picks (answer column, output name)


@dataclass
class _Slots:
    dims: dict[str, tuple[str, TableColumn]] = field(default_factory=dict)  # ref → (answer column, column)
    metrics: dict[str, str] = field(default_factory=dict)  # metric ref → answer column


class SelectRewriter:
    def __init__(self, table: SemanticTable, select: exp.Select, name: str, project):
        self.table, self.select, self.name, self.project = table, select, name, project
        source = select.args["from_"].this
        self.qualifiers = {source.alias_or_name, source.name}
        self.slots = _Slots()
        self.grain: list[str] | None = None  # dimension refs the answer is grouped by (None: still collecting)
        self.collected: list[str] = []  # without GROUP BY: the dimensions the SELECT names, which become the grain
        self.detail: list[TableColumn] = []  # dimensions only aggregated (MIN(ordered_at)): grouped in the outer step
        self.has_windows = False
        self.fields: dict[str, TableColumn] = {}
        self.group_keys: list[exp.Expression] = []  # GROUP BY as normalized expressions
        self.regroup = False  # GROUP BY an expression of dimensions: the outer step groups and re-aggregates

    # ------------------------------------------------------------ resolving names

    def normalize(self, e: exp.Expression, aliases: dict[str, exp.Expression] | None = None) -> exp.Expression:
        """Columns → markers (`__dim.ordered_at__month`, `__val.revenue`); DATE_TRUNC of a time dimension → its grain."""

        def resolve(node: exp.Expression) -> exp.Expression:
            if isinstance(node, exp.Column) and not isinstance(node.this, exp.Star):
                return self.column(node, aliases)  # markers it returns are not visited again
            if isinstance(node, exp.Subquery | exp.Select):
                raise QueryError(f"a subquery inside a SELECT over `{self.table.name}` is not supported: "
                                 f"`{written(node)}`", "filter on dimension values directly, or join two "
                                 "aggregated subqueries in an outer SELECT")
            return node

        return e.copy().transform(resolve, copy=False).transform(self._truncate, copy=False)

    def column(self, node: exp.Column, aliases: dict[str, exp.Expression] | None) -> exp.Expression:
        qualifier = node.table
        if qualifier and qualifier not in self.qualifiers:
            raise QueryError(f"unknown table or alias `{qualifier}` in `{node.sql('postgres')}`",
                             f"this SELECT reads `{self.table.name}`" + (
                                 f" (as `{next(iter(self.qualifiers - {self.table.name}))}`)"
                                 if len(self.qualifiers) > 1 else ""))
        found = self.table.column(node.name)
        if found is None:
            if aliases is not None and not qualifier and node.name in aliases:
                return aliases[node.name].copy()
            raise self.table.unknown(node.name)
        return self.marker(found)

    def marker(self, c: TableColumn) -> exp.Column:
        self.fields[c.name] = c
        return exp.column(c.name, table=DIM if c.kind == "dimension" else VAL, quoted=True)

    def _truncate(self, node: exp.Expression) -> exp.Expression:
        unit, value = None, None
        if isinstance(node, TRUNCS):
            unit, value = node.args.get("unit"), node.this
        elif isinstance(node, exp.Anonymous) and str(node.this).lower() == "date_trunc" and len(node.expressions) == 2:
            unit, value = node.expressions
        if unit is None:
            return node
        while isinstance(value, exp.Cast):
            value = value.this
        while isinstance(unit, exp.Cast):  # SQLAlchemy sends date_trunc('month'::VARCHAR, …)
            unit = unit.this
        c = self.field_of(value, DIM)
        if c is None or not c.is_time:
            return node
        grain = unit.name.lower() if isinstance(unit, exp.Var | exp.Literal) else None
        if grain not in GRAINS:
            raise QueryError(f"`{written(node)}`: time grain `{unit.sql()}` is not offered",
                             f"grains: {', '.join(GRAINS)}")
        if c.grain != "day" and grain not in DERIVABLE[c.grain]:
            raise QueryError(f"`{written(node)}`: `{c.name}` buckets cannot be cut into {grain}s",
                             f"truncate the time dimension itself: DATE_TRUNC('{grain}', {c.base})")
        return self.marker(c.at(grain))

    def field_of(self, node: exp.Expression, kind: str | None = None) -> TableColumn | None:
        if isinstance(node, exp.Column) and node.table in ((kind,) if kind else (DIM, VAL)):
            return self.fields[node.name]
        return None

    # ------------------------------------------------------------ the rewrite

    def rewrite(self) -> SemanticSelect:
        s = self.select
        if s.args.get("qualify") or s.args.get("connect") or s.args.get("prewhere"):
            raise QueryError(f"this clause is not supported over `{self.table.name}`", "use WHERE, GROUP BY, HAVING")
        items = self.items()
        normalized = [(self.normalize(e), name) for e, name in items]
        aliases = {name: e for e, name in normalized}
        time_range, filters = self.where()
        self.group(s.args.get("group"), normalized, aliases)
        outputs = [exp.alias_(self.translate(e), name, quoted=True) for e, name in normalized]
        if self.grain is None:
            self.grain = self.collected
        outer = exp.Select(expressions=outputs).from_(exp.to_table(self.name), copy=False)
        for key in ("distinct", "windows", "with_", "limit", "offset"):
            if s.args.get(key):
                outer.set(key, s.args[key].copy())
        on = outer.args["distinct"].args.get("on") if outer.args.get("distinct") else None
        if on is not None:  # DISTINCT ON (…): output names and positions stay, the rest reads the answer
            on.set("expressions", [self.outer_key(k, aliases) for k in on.expressions])
        having = s.args.get("having")
        if having is not None:
            outer = outer.where(self.translate(self.normalize(having.this, aliases)), copy=False)
        outer.set("order", self.order(s.args.get("order"), aliases))
        if self.regroup:
            outer = outer.group_by(*(self.translate(k) for k in self.group_keys), copy=False)
        elif self.detail and self.grain:
            outer = outer.group_by(*(exp.column(self.slots.dims[r][0], quoted=True) for r in self.grain), copy=False)
        if self.detail and self.slots.metrics:
            raise QueryError(f"aggregates over dimensions ({', '.join(c.name for c in self.detail)}) cannot be "
                             "combined with measures in one SELECT",
                             "compute them in two SELECTs, or in an outer SELECT over a grouped subquery")
        dims = list(self.slots.dims)  # every slot is known now: the answer's columns are fixed
        metrics = list(self.slots.metrics) or [self.table.listing_measure(
            [c for _, c in self.slots.dims.values()], self.project.compiler.graph)]
        columns = [f"__d{i}" for i in range(len(dims))] + [f"__m{j}" for j in range(len(metrics))]
        query = make_query(metrics=metrics, dimensions=dims, time_range=time_range,
                           filters=[self.filter_sql(f) for f in filters])
        result = SemanticSelect(self.name, self.table.name, s.sql("postgres"), query, columns, outer)
        self.push_down(result, having is not None)
        return result

    def items(self) -> list[tuple[exp.Expression, str]]:
        items = []
        for p in self.select.expressions:
            star = isinstance(p, exp.Star) or (isinstance(p, exp.Column) and isinstance(p.this, exp.Star))
            if star:
                if isinstance(p, exp.Column) and p.table and p.table not in self.qualifiers:
                    raise QueryError(f"unknown table or alias `{p.table}` in `{p.sql('postgres')}`",
                                     f"this SELECT reads `{self.table.name}`")
                items += [(exp.column(c.name, quoted=True), c.name) for c in self.table.star(self.project)]
            else:
                items.append((p.this if isinstance(p, exp.Alias) else p, output_name(p)))
        return items

    def where(self):
        where = self.select.args.get("where")
        if where is None:
            return None, []
        tree = self.normalize(where.this)
        for node in tree.walk():
            if aggregates.is_aggregate(node):
                raise QueryError(f"aggregate `{written(node)}` in WHERE", "filter on aggregates with HAVING")
            c = self.field_of(node, VAL)
            if c is not None:
                raise QueryError(f"WHERE cannot filter on {c.kind} `{c.name}`: WHERE applies to rows, before "
                                 "aggregation", f"use HAVING MEASURE({c.name}) …")
        return split(tree, lambda n: (c := self.field_of(n, DIM)) is not None and c.name == self.table.time)

    def filter_sql(self, cond: exp.Expression) -> str:
        """A filter as the metric query takes it: SQL over dimension names (`orders.channel = 'web'`)."""

        def ref(node):
            c = self.field_of(node, DIM)
            if c is None:
                return node
            view, _, name = c.ref.rpartition(".")
            return exp.column(name, table=view or None, quoted=True)

        return cond.copy().transform(ref, copy=False).sql("duckdb")

    def group(self, group: exp.Group | None, items, aliases) -> None:
        if group is None:
            return
        if any(group.args.get(k) for k in ("rollup", "cube", "grouping_sets")) or any(
                isinstance(g, exp.Rollup | exp.Cube | exp.GroupingSets) for g in group.expressions):
            raise QueryError("ROLLUP, CUBE and GROUPING SETS are not supported", "send one query per grouping")
        self.grain = []
        for g in group.expressions:
            if isinstance(g, exp.Literal) and not g.is_string:
                k = int(g.this)
                if not 1 <= k <= len(items):
                    raise QueryError(f"GROUP BY position {k} is not in the select list",
                                     f"positions run from 1 to {len(items)}")
                key = items[k - 1][0]
            elif isinstance(g, exp.Column) and not g.table and self.table.column(g.name) is None and g.name in aliases:
                key = aliases[g.name]
            else:
                key = self.normalize(g)
            if isinstance(key, exp.Literal | exp.Boolean | exp.Null):
                continue
            self.group_keys.append(key)
            c = self.group_key(key)
            for dim in [c] if c is not None else self.expression_dims(key):
                ref, _ = self.dim_slot(dim)
                if ref not in self.grain:
                    self.grain.append(ref)

    def group_key(self, key: exp.Expression) -> TableColumn | None:
        inner = key
        while isinstance(inner, exp.Cast | exp.Paren):
            c = self.field_of(inner.this, DIM)
            if isinstance(inner, exp.Cast) and (inner.to.this not in INJECTIVE_CASTS or (
                    c is not None and c.grain == "hour" and inner.to.this == exp.DataType.Type.DATE)):
                break
            inner = inner.this
        c = self.field_of(inner)
        if c is not None and c.kind != "dimension":
            raise QueryError(f"cannot GROUP BY {c.kind} `{c.name}`", "group by dimensions; aggregate measures")
        return c

    def expression_dims(self, key: exp.Expression) -> list[TableColumn]:
        """GROUP BY upper(channel): the answer is grouped by `channel`, then again by the expression."""
        dims = []
        for node in key.walk():
            c = self.field_of(node)
            if aggregates.is_aggregate(node) or (c is not None and c.kind != "dimension"):
                raise QueryError(f"cannot GROUP BY `{written(key)}`: it uses an aggregate or a measure",
                                 "group by dimensions; aggregate measures")
            if c is not None and c not in dims:
                dims.append(c)
        if not dims:
            raise QueryError(f"cannot GROUP BY `{written(key)}`: it uses no dimension", "group by dimensions")
        self.regroup = True
        return dims

    def reaggregate(self, c: TableColumn, value: exp.Expression) -> exp.Expression:
        """Under GROUP BY an expression, an additive value is summed (min, max kept) over the finer groups."""
        agg = c.measure.agg if c.measure is not None else None
        if agg in ("sum", "count"):
            total = exp.Sum(this=value)
            return exp.cast(total, "bigint") if agg == "count" else total
        if agg in ("min", "max"):
            return (exp.Min if agg == "min" else exp.Max)(this=value)
        what = f"a {agg} measure" if agg else "not a simple sum, count, min or max"
        raise QueryError(f"GROUP BY `{written(next(k for k in self.group_keys if self.group_key(k) is None))}` "
                         f"groups the answer again, which `{c.name}` ({what}) cannot be",
                         "group by dimensions or DATE_TRUNC of a time dimension only, and compute the expression "
                         "in an outer SELECT")

    # ------------------------------------------------------------ slots

    def dim_slot(self, c: TableColumn) -> tuple[str, str]:
        if c.ref not in self.slots.dims:
            self.slots.dims[c.ref] = (f"__d{len(self.slots.dims)}", c)
        return c.ref, self.slots.dims[c.ref][0]

    def metric_slot(self, ref: str) -> str:
        if ref not in self.slots.metrics:
            self.slots.metrics[ref] = f"__m{len(self.slots.metrics)}"
        return self.slots.metrics[ref]

    def value(self, c: TableColumn) -> exp.Expression:
        column = exp.column(self.metric_slot(c.ref), quoted=True)
        return self.reaggregate(c, column) if self.regroup else column

    def dimension(self, c: TableColumn) -> exp.Expression:
        """A dimension used outside aggregates: an answer column (it must be in GROUP BY when there is one)."""
        if self.grain is None or c.ref in self.grain:
            ref, name = self.dim_slot(c)
            if self.grain is None and ref not in self.collected:
                self.collected.append(ref)
            return exp.column(name, quoted=True)
        if c.is_time:  # DATE_TRUNC('month', x) over GROUP BY x: truncate the finer bucket, as PostgreSQL would
            for ref in self.grain:
                g = self.slots.dims[ref][1]
                if g.is_time and g.base_ref == c.base_ref and c.grain in DERIVABLE[g.grain]:
                    trunc = exp.TimestampTrunc(this=exp.column(self.slots.dims[ref][0], quoted=True),
                                               unit=exp.var(c.grain.upper()))
                    return trunc if c.grain == "hour" else exp.cast(trunc, "date")
        raise QueryError(f"column `{c.name}` must appear in GROUP BY or be used in an aggregate",
                         f"add `{c.name}` to GROUP BY")

    def translate(self, e: exp.Expression) -> exp.Expression:
        """Dimensions and aggregates → answer columns; everything else stays for the outer step."""

        def visit(node: exp.Expression) -> exp.Expression:
            if isinstance(node, exp.Window):
                self.has_windows = True
                window, fn = node.copy(), node.this.copy()
                for key, value in list(fn.args.items()):
                    if isinstance(value, exp.Expression):
                        fn.set(key, self.translate(value))
                    elif isinstance(value, list):
                        fn.set(key, [self.translate(v) if isinstance(v, exp.Expression) else v for v in value])
                window.set("this", fn)
                for key in ("partition_by", "order"):
                    value = node.args.get(key)
                    if isinstance(value, list):
                        window.set(key, [self.translate(v) for v in value])
                    elif value is not None:
                        window.set(key, self.translate(value))
                return window
            if isinstance(node, exp.Filter) and aggregates.is_aggregate(node.this):
                raise QueryError(f"`{written(node)}`: FILTER on an aggregate is not supported",
                                 "use WHERE, or a metric with a `filter:`")
            if aggregates.is_aggregate(node):
                return self.aggregate(node)
            c = self.field_of(node)
            if c is None:
                return node
            if c.kind == "dimension":
                return self.dimension(c)
            return self.value(c)  # a bare measure or metric: at the grain

        return e.transform(visit)

    def aggregate(self, node: exp.Expression) -> exp.Expression:
        c = aggregates.call(node, written(node))
        arg = c.argument
        while isinstance(arg, exp.Paren):
            arg = arg.this
        if c.form == "count" and isinstance(arg, exp.Literal | exp.Boolean):
            arg = exp.Star()  # COUNT(1): rows, as COUNT(*)
        if isinstance(arg, exp.Star):
            if c.form != "count":
                raise QueryError(f"`{c.text}` is not valid", "write COUNT(*)")
            return self.value(self.table.count_star())
        column = self.field_of(arg)
        if column is None:
            raise QueryError(f"`{c.text}`: semantic SQL aggregates one measure or metric at a time",
                             "aggregate each column on its own and combine the results, e.g. SUM(a) - SUM(b)")
        if column.kind != "dimension":
            aggregates.check(c, column)
            return self.value(column)
        if c.form not in DIMENSION_AGGREGATES:
            raise QueryError(f"`{c.text}`: `{column.name}` is a dimension; a semantic table has one row per "
                             "group, not per source row", "MIN, MAX and COUNT(DISTINCT …) apply to dimensions; "
                             "count rows with a count measure")
        if column.ref not in [d.ref for d in self.detail]:
            self.detail.append(column)
        value = exp.column(self.dim_slot(column)[1], quoted=True)
        if c.form == "count_distinct":
            return exp.Count(this=exp.Distinct(expressions=[value]))
        return {"min": exp.Min, "max": exp.Max, "any_value": exp.AnyValue}[c.form](this=value)

    # ------------------------------------------------------------ ORDER BY, LIMIT

    def order(self, order: exp.Order | None, aliases) -> exp.Order | None:
        if order is None:
            return None
        out = order.copy()
        for o in out.expressions:
            o.set("this", self.outer_key(o.this, aliases))
        return out

    def outer_key(self, key: exp.Expression, aliases) -> exp.Expression:
        """An ORDER BY / DISTINCT ON key: a position or output name stays (PostgreSQL looks those up first)."""
        if isinstance(key, exp.Literal) and not key.is_string:
            return key  # a position in the outer select list, which mirrors this one
        if isinstance(key, exp.Column) and not key.table and key.name in aliases:
            return key
        return self.translate(self.normalize(key))

    def push_down(self, result: SemanticSelect, having: bool) -> None:
        """ORDER BY / LIMIT into the metric query when that gives the same rows; mark a pure projection direct."""
        s, outer = self.select, result.outer
        plain = [self._answer_column(item.this) for item in outer.expressions]
        distinct = s.args.get("distinct")
        # DISTINCT changes nothing only when the select list holds every grouped dimension (rows are unique)
        unique = distinct is None or (distinct.args.get("on") is None and None not in plain and {
            self.slots.dims[ref][0] for ref in self.grain} <= set(plain))
        if having or self.detail or self.regroup or self.has_windows or not unique:
            return
        order_by = []
        order = outer.args.get("order")
        for o in order.expressions if order else []:
            column = self._order_column(o.this, outer)
            if column is None or o.args.get("nulls_first"):
                return  # an expression, or NULLS FIRST (the metric query sorts NULLs last)
            order_by.append(("-" if o.args.get("desc") else "") + column)
        limit, offset = s.args.get("limit"), s.args.get("offset")
        counts = [self._count(x) for x in (limit, offset) if x is not None]
        if None in counts:
            return
        if order_by or counts:
            outputs = self._outputs(result)
            fields = result.query.model_dump(exclude_defaults=True)
            fields["order_by"] = [("-" if c.startswith("-") else "") + outputs[c.lstrip("-")] for c in order_by]
            if limit is not None:
                fields["limit"] = self._count(limit)
            if offset is not None:
                fields["offset"] = self._count(offset)
            result.query = make_query(**fields)
            outer.set("limit", None)
            outer.set("offset", None)
        if None not in plain and not s.args.get("with_"):
            result.direct = [(result.columns.index(c), item.alias) for c, item in zip(plain, outer.expressions,
                                                                                     strict=True)]

    @staticmethod
    def _answer_column(e: exp.Expression) -> str | None:
        return e.name if isinstance(e, exp.Column) and e.name.startswith(("__d", "__m")) else None

    def _order_column(self, key: exp.Expression, outer: exp.Select) -> str | None:
        if isinstance(key, exp.Literal) and not key.is_string:
            k = int(key.this)
            return self._answer_column(outer.expressions[k - 1].this) if 1 <= k <= len(outer.expressions) else None
        if isinstance(key, exp.Column) and not key.name.startswith("__"):
            item = next((i for i in outer.expressions if i.alias == key.name), None)
            return self._answer_column(item.this) if item is not None else None
        return self._answer_column(key)

    @staticmethod
    def _count(node: exp.Expression) -> int | None:
        value = node.args.get("expression")
        if isinstance(value, exp.Literal) and not value.is_string and value.this.isdigit():
            return int(value.this)
        return None

    def _outputs(self, result: SemanticSelect) -> dict[str, str]:
        """Answer column → the metric query's output name (what its order_by takes)."""
        plan = self.project.compile(result.query).plan
        names = [d.output for d in plan.dims] + list(plan.metrics)
        return dict(zip(result.columns, names, strict=True))
