"""What PostgreSQL would answer: the name and type of every column a statement returns, and of its parameters.

One pass over a parsed (PostgreSQL dialect) statement, scope by scope, like PostgreSQL's parse analysis: it
resolves relations (pg_catalog first, then the search path) and columns, types every expression (kept in
`node.meta["pgtype"]` for the translator), names every output column the way PostgreSQL's FigureColname does
(`count`, `?column?`, `case`, `btrim` …), and infers the type of each `$n` from where it is used.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlglot import exp

from semantic.errors import QueryError
from server.pgwire import pgtypes as T
from server.pgwire.catalog import Catalog
from server.pgwire.pgtypes import PgType, Record

UNNAMED = "?column?"


def error(message: str, sqlstate: str, suggestion: str = "") -> QueryError:
    e = QueryError(message, suggestion)
    e.sqlstate = sqlstate
    return e


# ------------------------------------------------------------------ functions: PostgreSQL names and result types

_CLASS_NAMES = {
    exp.Count: "count", exp.Sum: "sum", exp.Avg: "avg", exp.Min: "min", exp.Max: "max", exp.ArrayAgg: "array_agg",
    exp.GroupConcat: "string_agg", exp.Explode: "unnest", exp.Unnest: "unnest", exp.Coalesce: "coalesce",
    exp.Nullif: "nullif", exp.Greatest: "greatest", exp.Least: "least", exp.Substring: "substring",
    exp.Replace: "replace", exp.Lower: "lower", exp.Upper: "upper", exp.Length: "length",
    exp.CurrentSchema: "current_schema", exp.CurrentSchemas: "current_schemas", exp.CurrentUser: "current_user", exp.SessionUser: "session_user",
    exp.CurrentDatabase: "current_database", exp.CurrentCatalog: "current_catalog", exp.CurrentVersion: "version",
    exp.RowNumber: "row_number", exp.ExplodingGenerateSeries: "generate_series",
    exp.GenerateSeries: "generate_series", exp.LogicalAnd: "bool_and", exp.LogicalOr: "bool_or",
    exp.ArrayToString: "array_to_string", exp.Format: "format", exp.Concat: "concat", exp.ConcatWs: "concat_ws",
    exp.CurrentTimestamp: "now", exp.CurrentDate: "current_date", exp.CurrentTime: "current_time",
    exp.Extract: "extract", exp.Round: "round", exp.Abs: "abs", exp.Floor: "floor", exp.Ceil: "ceil",
    exp.StrPosition: "strpos", exp.Left: "left", exp.Right: "right", exp.Split: "string_to_array",
    exp.ArraySize: "array_length", exp.Stddev: "stddev", exp.Variance: "variance", exp.Quantile: "percentile_cont",
    exp.ToChar: "to_char", exp.Pad: "lpad", exp.Initcap: "initcap", exp.RegexpReplace: "regexp_replace",
    exp.MD5: "md5", exp.Trim: "btrim", exp.DateTrunc: "date_trunc", exp.TimestampTrunc: "date_trunc",
    exp.JSONObject: "json_build_object", exp.ArrayContains: "array_contains", exp.Rand: "random",
}
_CALLED_AS = {"CURRENT_USER": "current_user", "SESSION_USER": "session_user", "USER": "current_user",
              "CURRENT_ROLE": "current_role", "CURRENT_CATALOG": "current_catalog", "CURRENT_SCHEMA": "current_schema"}

_RETURNS: dict[str, int] = {
    "format_type": T.TEXT, "pg_get_expr": T.TEXT, "pg_get_indexdef": T.TEXT, "pg_get_constraintdef": T.TEXT,
    "pg_get_viewdef": T.TEXT, "pg_get_userbyid": T.NAME, "pg_get_function_result": T.TEXT,
    "pg_get_function_arguments": T.TEXT, "pg_get_function_identity_arguments": T.TEXT,
    "pg_get_statisticsobjdef_columns": T.TEXT, "pg_get_serial_sequence": T.TEXT, "pg_get_partkeydef": T.TEXT,
    "pg_get_triggerdef": T.TEXT, "pg_get_ruledef": T.TEXT, "pg_get_functiondef": T.TEXT,
    "pg_table_is_visible": T.BOOL, "pg_type_is_visible": T.BOOL, "pg_function_is_visible": T.BOOL,
    "pg_collation_is_visible": T.BOOL, "pg_opclass_is_visible": T.BOOL, "pg_operator_is_visible": T.BOOL,
    "pg_conversion_is_visible": T.BOOL, "pg_ts_config_is_visible": T.BOOL, "pg_relation_is_publishable": T.BOOL,
    "has_table_privilege": T.BOOL, "has_schema_privilege": T.BOOL, "has_database_privilege": T.BOOL,
    "has_column_privilege": T.BOOL, "has_any_column_privilege": T.BOOL, "has_function_privilege": T.BOOL,
    "has_sequence_privilege": T.BOOL, "has_type_privilege": T.BOOL, "pg_has_role": T.BOOL,
    "col_description": T.TEXT, "obj_description": T.TEXT, "shobj_description": T.TEXT,
    "pg_encoding_to_char": T.NAME, "array_to_string": T.TEXT, "current_schema": T.NAME,
    "current_schemas": T.NAME_ARRAY, "current_database": T.NAME, "current_catalog": T.NAME,
    "current_user": T.NAME, "session_user": T.NAME, "current_role": T.NAME, "user": T.NAME, "version": T.TEXT,
    "current_setting": T.TEXT, "set_config": T.TEXT, "to_regtype": T.REGTYPE, "to_regclass": T.REGCLASS,
    "to_regproc": T.REGPROC, "to_regnamespace": T.REGNAMESPACE, "to_regrole": T.REGROLE,
    "pg_size_pretty": T.TEXT, "pg_table_size": T.INT8, "pg_relation_size": T.INT8,
    "pg_total_relation_size": T.INT8, "pg_indexes_size": T.INT8, "pg_database_size": T.INT8,
    "json_build_object": T.JSON, "json_object": T.JSON, "to_json": T.JSON, "quote_ident": T.TEXT,
    "quote_literal": T.TEXT, "format": T.TEXT, "btrim": T.TEXT, "ltrim": T.TEXT, "rtrim": T.TEXT,
    "substring": T.TEXT, "replace": T.TEXT, "lower": T.TEXT, "upper": T.TEXT, "initcap": T.TEXT,
    "concat": T.TEXT, "concat_ws": T.TEXT, "string_agg": T.TEXT, "left": T.TEXT, "right": T.TEXT, "lpad": T.TEXT,
    "rpad": T.TEXT, "md5": T.TEXT, "to_char": T.TEXT, "regexp_replace": T.TEXT, "split_part": T.TEXT,
    "string_to_array": T.TEXT_ARRAY, "length": T.INT4, "char_length": T.INT4, "strpos": T.INT4,
    "octet_length": T.INT4, "count": T.INT8, "row_number": T.INT8, "rank": T.INT8, "dense_rank": T.INT8,
    "ntile": T.INT4, "percent_rank": T.FLOAT8, "cume_dist": T.FLOAT8, "bool_and": T.BOOL, "bool_or": T.BOOL,
    "every": T.BOOL, "generate_subscripts": T.INT4, "array_upper": T.INT4, "array_lower": T.INT4,
    "array_length": T.INT4, "array_ndims": T.INT4, "cardinality": T.INT4, "pg_backend_pid": T.INT4,
    "pg_is_in_recovery": T.BOOL, "txid_current": T.INT8, "now": T.TIMESTAMPTZ, "statement_timestamp": T.TIMESTAMPTZ,
    "transaction_timestamp": T.TIMESTAMPTZ, "clock_timestamp": T.TIMESTAMPTZ,
    "pg_postmaster_start_time": T.TIMESTAMPTZ, "current_date": T.DATE, "current_time": 1266,
    "inet_server_port": T.INT4, "inet_server_addr": 869, "inet_client_addr": 869, "random": T.FLOAT8,
    "pg_sleep": 2278, "pg_advisory_unlock_all": 2278, "stddev": T.FLOAT8, "variance": T.FLOAT8, "extract": T.NUMERIC, "date_part": T.FLOAT8,
    "pg_get_keywords": T.RECORD, "array_contains": T.BOOL, "regexp_matches": T.TEXT_ARRAY,
    "pg_tablespace_location": T.TEXT, "pg_encoding_max_length": T.INT4, "getdatabaseencoding": T.NAME,
    "pg_client_encoding": T.NAME, "obj_description_legacy": T.TEXT, "percentile_cont": T.FLOAT8,
    "pg_get_constraintdef_legacy": T.TEXT, "age": T.INTERVAL, "json_agg": T.JSON, "jsonb_build_object": T.JSONB,
}
_ARGUMENTS: dict[str, tuple[int, ...]] = {  # parameter types where a `$n` is an argument
    "pg_get_constraintdef": (T.OID, T.BOOL), "pg_get_indexdef": (T.OID, T.INT4, T.BOOL),
    "pg_get_expr": (194, T.OID, T.BOOL), "pg_get_viewdef": (T.OID, T.BOOL), "format_type": (T.OID, T.INT4),
    "generate_subscripts": (T.TEXT, T.INT4), "to_regtype": (T.TEXT,),
    "to_regclass": (T.TEXT,), "current_setting": (T.TEXT, T.BOOL), "pg_get_userbyid": (T.OID,),
    "col_description": (T.OID, T.INT4), "obj_description": (T.OID, T.NAME), "pg_table_is_visible": (T.OID,),
    "pg_type_is_visible": (T.OID,), "pg_get_serial_sequence": (T.TEXT, T.TEXT), "generate_series": (T.INT4, T.INT4),
    "array_upper": (T.TEXT, T.INT4), "quote_ident": (T.TEXT,), "has_table_privilege": (T.TEXT, T.TEXT, T.TEXT),
    "has_schema_privilege": (T.TEXT, T.TEXT, T.TEXT), "pg_encoding_to_char": (T.INT4,), "pg_sleep": (T.FLOAT8,),
}
_SAME_AS_ARGUMENT = {"min", "max", "coalesce", "nullif", "greatest", "least", "any_value", "first_value",
                     "last_value", "lag", "lead", "abs", "round", "floor", "ceil", "mode", "nth_value"}


def function_name(e: exp.Expression) -> str:
    """A function call's name as PostgreSQL knows it (lowercase, unqualified)."""
    if isinstance(e, exp.Anonymous):
        return str(e.this).lower()
    if isinstance(e, exp.Trim):
        position = str(e.args.get("position") or "").upper()
        return {"LEADING": "ltrim", "TRAILING": "rtrim"}.get(position, "btrim")
    for cls, name in _CLASS_NAMES.items():
        if type(e) is cls:
            return name
    return e.sql_name().lower() if isinstance(e, exp.Func) else e.key


def cast_type(to: exp.DataType) -> tuple[int, int]:
    """The (OID, typmod) a CAST / `::` names."""
    text = to.sql(dialect="postgres")
    base, _, args = text.partition("(")
    suffix = "[]" if text.endswith("[]") else ""
    base = base.removesuffix("[]").strip()
    oid = T.named(base + suffix)
    if oid is None:
        oid = T.named(str(to.this.value if hasattr(to.this, "value") else to.this).lower()) or T.TEXT
    typmod = -1
    numbers = [int(x) for x in args.rstrip(")[]").replace(" ", "").split(",") if x.isdigit()] if args else []
    if oid == T.NUMERIC and numbers:
        typmod = T.numeric_typmod(numbers[0], numbers[1] if len(numbers) > 1 else 0)
    elif oid in (T.VARCHAR, T.BPCHAR) and numbers:
        typmod = numbers[0] + 4
    elif oid == T.BPCHAR and to.this in (exp.DataType.Type.CHAR, exp.DataType.Type.NCHAR):
        typmod = 1 + 4  # `char` alone is char(1); only `bpchar` is unbounded
    return oid, typmod


def typmod(e: exp.Expression) -> int:
    """An output's type modifier as PostgreSQL's exprTypmod finds it: a cast's (varchar(n): n + 4) or a column's,
    else -1."""
    while isinstance(e, exp.Alias | exp.Paren):
        e = e.this
    return e.meta.get("typmod", -1) if isinstance(e, exp.Cast | exp.TryCast | exp.Column) else -1


def _typmods(node: exp.Expression) -> list[int]:
    while isinstance(node, exp.Subquery):
        node = node.this
    return node.meta.get("pgtypmods", [])


# ------------------------------------------------------------------ scopes


@dataclass
class Source:
    name: str
    columns: list[tuple[str, PgType]]
    typmods: list[int] = field(default_factory=list)  # the columns' type modifiers (missing ones are -1)

    def typmod(self, i: int) -> int:
        return self.typmods[i] if i < len(self.typmods) else -1


@dataclass
class Scope:
    parent: Scope | None = None
    sources: list[Source] = field(default_factory=list)
    ctes: dict[str, Source] = field(default_factory=dict)
    outputs: list[tuple[str, PgType]] = field(default_factory=list)

    def cte(self, name: str) -> Source | None:
        scope: Scope | None = self
        while scope is not None:
            if name in scope.ctes:
                return scope.ctes[name]
            scope = scope.parent
        return None

    def column(self, name: str, table: str | None) -> PgType | None:
        found = self.lookup(name, table)
        return None if found is None else found[0]

    def lookup(self, name: str, table: str | None) -> tuple[PgType, int] | None:
        """A column's type and type modifier."""
        scope: Scope | None = self
        while scope is not None:
            for source in scope.sources:
                if table is not None and source.name != table:
                    continue
                for i, (n, t) in enumerate(source.columns):
                    if n == name:
                        return t, source.typmod(i)
                if table is not None and name == source.name and len(source.columns) == 1:
                    return source.columns[0][1], source.typmod(0)
            if table is None:  # a whole-row reference to a one-column function source: `FROM unnest(a) x` → x
                for source in scope.sources:
                    if source.name == name and len(source.columns) == 1:
                        return source.columns[0][1], source.typmod(0)
            scope = scope.parent
        return None


# ------------------------------------------------------------------ the binder


class Binder:
    """Binds one statement: `outputs` (name, type) of its result, `params` the type of each `$n`."""

    def __init__(self, catalog: Catalog, search_path: list[str], declared: list[int] | None = None):
        self.catalog = catalog
        self.search_path = search_path
        self.declared = list(declared or [])
        self.inferred: dict[int, int] = {}
        self.semantic: set[str] = set()  # semantic tables the statement reads
        self.catalog_relations: set[str] = set()
        self.outputs: list[tuple[str, PgType]] = []
        self.typmods: list[int] = []  # each output's type modifier (RowDescription's atttypmod), -1 for none

    def bind(self, statement: exp.Expression) -> list[tuple[str, PgType]]:
        self.outputs = self.query(statement, Scope())
        found = _typmods(statement)
        self.typmods = found if len(found) == len(self.outputs) else [-1] * len(self.outputs)
        return self.outputs

    def params(self, count: int) -> list[int]:
        """The type of $1 … $count: as declared by the client, else as the statement uses it, else text."""
        out = []
        for n in range(1, count + 1):
            given = self.declared[n - 1] if n <= len(self.declared) else 0
            out.append(given or self.inferred.get(n) or T.TEXT)
        return out

    # -------------------------------------------------------------- queries

    def query(self, node: exp.Expression, parent: Scope) -> list[tuple[str, PgType]]:
        if isinstance(node, exp.Subquery):
            return self.query(node.this, parent)
        if isinstance(node, exp.SetOperation):
            left = self.query(node.this, parent)
            right = self.query(node.expression, parent)
            outputs = [(name, t if t != T.UNKNOWN else (right[i][1] if i < len(right) else t))
                       for i, (name, t) in enumerate(left)]
            outputs = [(name, T.TEXT if t == T.UNKNOWN else t) for name, t in outputs]
            scope = Scope(parent, outputs=outputs)
            scope.sources.append(Source("", outputs))
            self._modifiers(node, scope)
            node.meta["pgoutputs"] = outputs
            # a UNION column keeps a type modifier only where every branch has the same one
            node.meta["pgtypmods"] = [a if a == b else -1 for a, b in zip(_typmods(node.this),
                                                                          _typmods(node.expression), strict=False)]
            return outputs
        if isinstance(node, exp.Values):
            rows = node.expressions
            first = rows[0].expressions if rows and isinstance(rows[0], exp.Tuple) else rows[:1]
            types = [self.expr(v, parent) for v in first]
            for row in rows[1:]:
                for v in (row.expressions if isinstance(row, exp.Tuple) else [row]):
                    self.expr(v, parent)
            outputs = [(f"column{i}", T.TEXT if t == T.UNKNOWN else t) for i, t in enumerate(types, 1)]
            node.meta["pgoutputs"] = outputs
            return outputs
        if not isinstance(node, exp.Select):
            raise error(f"{node.key.upper()} is not a query", "42601")
        scope = Scope(parent)
        with_ = node.args.get("with_")
        if with_ is not None:
            for cte in with_.expressions:
                columns = self.query(cte.this, scope)
                names = [c.name for c in cte.args["alias"].columns] if cte.args.get("alias") else []
                columns = [(names[i] if i < len(names) else n, t) for i, (n, t) in enumerate(columns)]
                scope.ctes[cte.alias_or_name] = Source(cte.alias_or_name, columns, _typmods(cte.this))
        from_ = node.args.get("from_")
        if from_ is not None:
            self._source(from_.this, scope)
        for join in node.args.get("joins") or []:
            self._source(join.this, scope)
            if join.args.get("on") is not None:
                self.expr(join.args["on"], scope)
        outputs: list[tuple[str, PgType]] = []
        typmods: dict[int, int] = {}  # output position → its type modifier, where it may have one
        for item in node.expressions:
            if isinstance(item, exp.Star):
                for source in scope.sources:
                    typmods.update((len(outputs) + i, source.typmod(i)) for i in range(len(source.columns)))
                    outputs.extend(source.columns)
                continue
            if isinstance(item, exp.Column) and isinstance(item.this, exp.Star):
                source = next((s for s in scope.sources if s.name == item.table), None)
                if source is None:
                    raise error(f'missing FROM-clause entry for table "{item.table}"', "42P01")
                typmods.update((len(outputs) + i, source.typmod(i)) for i in range(len(source.columns)))
                outputs.extend(source.columns)
                continue
            t = self.expr(item, scope)
            typmods[len(outputs)] = typmod(item)
            outputs.append((output_name(item), t))
        scope.outputs = outputs
        node.meta["pgtypmods"] = [typmods.get(i, -1) for i in range(len(outputs))]
        for key in ("where", "having", "qualify"):
            if node.args.get(key) is not None:
                self.expr(node.args[key].this, scope)
        group = node.args.get("group")
        if group is not None:
            for g in group.expressions:
                if not (isinstance(g, exp.Literal) and g.is_int):
                    self.expr(g, scope)
        self._modifiers(node, scope)
        outputs = [(name, T.TEXT if t == T.UNKNOWN else t) for name, t in outputs]
        node.meta["pgoutputs"] = outputs
        return outputs

    def _modifiers(self, node: exp.Expression, scope: Scope) -> None:
        order = node.args.get("order")
        if order is not None:
            for o in order.expressions:
                target = o.this
                if isinstance(target, exp.Literal) and target.is_int:
                    continue
                self.expr(target, scope)
        for key in ("limit", "offset"):
            part = node.args.get(key)
            if part is not None:
                value = part.args.get("expression") or part.this
                if value is not None:
                    self._param_hint(value, T.INT8)
                    self.expr(value, scope)

    def _source(self, node: exp.Expression, scope: Scope) -> None:
        alias = node.args.get("alias")
        alias_name = alias.name if alias is not None else ""
        alias_columns = [c.name for c in alias.columns] if alias is not None and alias.columns else []
        if isinstance(node, exp.Table) and isinstance(node.this, exp.Func):
            name, t = self._table_function(node.this, scope)
            columns = [(alias_columns[0] if alias_columns else (alias_name or name), t)]
            if isinstance(t, Record):
                columns = [(alias_columns[i] if i < len(alias_columns) else n, ft)
                           for i, (n, ft) in enumerate(t.fields)]
            scope.sources.append(Source(alias_name or name, columns))
            return
        if isinstance(node, exp.Table):
            name, schema = node.name, node.db or None
            cte = scope.cte(name) if schema is None else None
            if cte is not None:
                node.meta["cte"] = True
                columns, typmods = cte.columns, cte.typmods
            else:
                relation = self.catalog.relation(schema, name, self.search_path)
                if relation is None:
                    full = f"{schema}.{name}" if schema else name
                    raise error(f'relation "{full}" does not exist', "42P01")
                node.meta["relation"] = relation
                (self.semantic if relation.schema == "public" else self.catalog_relations).add(relation.name)
                columns = [(c, t) for c, t, _ in relation.columns]
                typmods = [m for _, _, m in relation.columns]
            if alias_columns:
                columns = [(alias_columns[i] if i < len(alias_columns) else n, t) for i, (n, t) in enumerate(columns)]
            scope.sources.append(Source(alias_name or name, columns, typmods))
            return
        if isinstance(node, exp.Subquery | exp.Lateral):
            inner = node.this
            if isinstance(inner, exp.Func):  # LATERAL f(x)
                name, t = self._table_function(inner, scope)
                scope.sources.append(Source(alias_name or name, [(alias_columns[0] if alias_columns else name, t)]))
                return
            columns = self.query(inner, scope)  # sees its siblings too: LATERAL or not, harmless for typing
            if alias_columns:
                columns = [(alias_columns[i] if i < len(alias_columns) else n, t) for i, (n, t) in enumerate(columns)]
            scope.sources.append(Source(alias_name, columns, _typmods(inner)))
            return
        if isinstance(node, exp.Unnest | exp.Explode):
            name, t = self._table_function(node, scope)
            scope.sources.append(Source(alias_name or name, [(alias_columns[0] if alias_columns else
                                                              (alias_name or name), t)]))
            return
        if isinstance(node, exp.Values):
            columns = self.query(node, scope)
            if alias_columns:
                columns = [(alias_columns[i] if i < len(alias_columns) else n, t) for i, (n, t) in enumerate(columns)]
            scope.sources.append(Source(alias_name, columns))
            return
        raise error(f"unsupported FROM item: {node.sql(dialect='postgres')[:80]}", "0A000")

    def _table_function(self, func: exp.Expression, scope: Scope) -> tuple[str, PgType]:
        return function_name(func), self.expr(func, scope)

    # -------------------------------------------------------------- expressions

    def expr(self, e: exp.Expression, scope: Scope) -> PgType:
        t = self._expr(e, scope)
        e.meta["pgtype"] = t
        return t

    def _children(self, e: exp.Expression, scope: Scope) -> list[PgType]:
        types = []
        for child in e.iter_expressions():
            if isinstance(child, exp.Query):
                self.query(child, scope)
                types.append(T.UNKNOWN)
            else:
                types.append(self.expr(child, scope))
        return types

    def _expr(self, e: exp.Expression, scope: Scope) -> PgType:  # noqa: C901 — one case per node kind
        if isinstance(e, exp.Column):
            if isinstance(e.this, exp.Star):
                return T.RECORD
            name, table = e.name, e.table or None
            found = scope.lookup(name, table)
            t = None if found is None else found[0]
            if found is not None:
                e.meta["typmod"] = found[1]
            if t is None and table is None:
                t = next((ot for on, ot in scope.outputs if on == name), None)
                if t is None and name in ("user", "current_user", "session_user", "current_role"):
                    return T.NAME
            if t is None:
                full = f"{table}.{name}" if table else name
                raise error(f'column "{full}" does not exist', "42703")
            return t
        if isinstance(e, exp.Literal):
            if e.is_string:
                return T.UNKNOWN
            text = e.this
            if text.lstrip("-").isdigit():
                value = int(text)
                return T.INT4 if -2**31 <= value < 2**31 else T.INT8 if -2**63 <= value < 2**63 else T.NUMERIC
            return T.NUMERIC
        if isinstance(e, exp.ByteString | exp.RawString | exp.National):
            return T.UNKNOWN
        if isinstance(e, exp.HexString):
            return T.INT4
        if isinstance(e, exp.Boolean):
            return T.BOOL
        if isinstance(e, exp.Null):
            return T.UNKNOWN
        if isinstance(e, exp.Parameter | exp.Placeholder):
            n = _param_number(e)
            if n is not None and n <= len(self.declared) and self.declared[n - 1]:
                return self.declared[n - 1]
            return self.inferred.get(n, T.UNKNOWN) if n is not None else T.UNKNOWN
        if isinstance(e, exp.Cast | exp.TryCast):
            oid, typmod = cast_type(e.to)
            self.expr(e.this, scope)
            self._param_hint(e.this, oid)
            e.meta["typmod"] = typmod
            return oid
        if isinstance(e, exp.Alias | exp.Paren | exp.Collate):
            return self.expr(e.this, scope)
        if isinstance(e, exp.Subquery):
            outputs = self.query(e.this, scope)
            return outputs[0][1] if outputs else T.UNKNOWN
        if isinstance(e, exp.Exists):
            self.query(e.this, scope)
            return T.BOOL
        if isinstance(e, exp.Array):
            if e.expressions and isinstance(e.expressions[0], exp.Query):
                outputs = self.query(e.expressions[0], scope)
                return T.array_of(outputs[0][1] if outputs else T.TEXT)
            types = [self.expr(x, scope) for x in e.expressions]
            known = next((t for t in types if t != T.UNKNOWN), T.TEXT)
            for x in e.expressions:
                self._param_hint(x, known)
            return T.array_of(known)
        if isinstance(e, exp.Bracket):
            base = self.expr(e.this, scope)
            for index in e.expressions:
                self.expr(index, scope)
                self._param_hint(index, T.INT4)
            inner = T.element(base)
            return inner if inner is not None else T.UNKNOWN
        if isinstance(e, exp.Dot):
            return self._dot(e, scope)
        if isinstance(e, exp.Window):
            self._window(e, scope)
            return self.expr(e.this, scope)
        if isinstance(e, exp.Case):
            subject = self.expr(e.this, scope) if e.this is not None else None
            branches = []
            for when in e.args.get("ifs") or []:
                self.expr(when.this, scope)
                if subject is not None:  # CASE x WHEN $1: the parameter has x's type
                    self._param_hint(when.this, subject)
                branches.append(self.expr(when.args["true"], scope))
            if e.args.get("default") is not None:
                branches.append(self.expr(e.args["default"], scope))
            return next((t for t in branches if t != T.UNKNOWN), T.TEXT)
        if isinstance(e, exp.If):
            self.expr(e.this, scope)
            branches = [self.expr(x, scope) for x in (e.args.get("true"), e.args.get("false")) if x is not None]
            return next((t for t in branches if t != T.UNKNOWN), T.TEXT)
        if isinstance(e, exp.In):
            left = self.expr(e.this, scope)
            if e.args.get("query") is not None:
                self.query(e.args["query"], scope)
            for x in e.expressions:
                self.expr(x, scope)
                self._param_hint(x, left)
                self._param_hint(e.this, x.meta.get("pgtype", T.UNKNOWN))
            if e.args.get("field") is not None:
                self.expr(e.args["field"], scope)
            return T.BOOL
        if isinstance(e, exp.Between):
            left = self.expr(e.this, scope)
            for key in ("low", "high"):
                self.expr(e.args[key], scope)
                self._param_hint(e.args[key], left)
            return T.BOOL
        if isinstance(e, exp.Any | exp.All):
            inner = self.expr(e.this, scope) if not isinstance(e.this, exp.Query) else None
            if isinstance(e.this, exp.Query):
                outputs = self.query(e.this, scope)
                return outputs[0][1] if outputs else T.UNKNOWN
            return T.element(inner) or T.UNKNOWN
        if isinstance(e, exp.Like | exp.ILike | exp.RegexpLike | exp.RegexpILike | exp.SimilarTo):
            self.expr(e.this, scope)
            self.expr(e.expression, scope)
            self._param_hint(e.expression, T.TEXT)
            self._param_hint(e.this, T.TEXT)
            return T.BOOL
        if isinstance(e, exp.Escape):
            self._children(e, scope)
            return T.BOOL
        if isinstance(e, exp.Operator):
            self.expr(e.this, scope)
            self.expr(e.expression, scope)
            self._param_hint(e.expression, T.TEXT)
            op = str(e.args.get("operator", "")).rpartition(".")[2]
            return T.BOOL if op in ("~", "!~", "~*", "!~*", "=", "<>", "<", ">", "<=", ">=", "~~", "!~~") else T.TEXT
        if isinstance(e, exp.Binary) and not isinstance(e, exp.Dot):
            left = self.expr(e.this, scope)
            right = self.expr(e.expression, scope)
            self._param_hint(e.this, right)
            self._param_hint(e.expression, left)
            if isinstance(e, exp.Predicate | exp.Connector | exp.Is):
                return T.BOOL
            if isinstance(e, exp.DPipe):
                if T.is_array(left) or T.is_array(right):
                    return left if T.is_array(left) else right
                return T.TEXT
            return _arithmetic(left, right)
        if isinstance(e, exp.Not):
            self.expr(e.this, scope)
            return T.BOOL
        if isinstance(e, exp.Neg | exp.BitwiseNot):
            return self.expr(e.this, scope)
        if isinstance(e, exp.Distinct):
            types = [self.expr(x, scope) for x in e.expressions]
            return types[0] if types else T.UNKNOWN
        if isinstance(e, exp.Order):
            t = self.expr(e.this, scope)
            for o in e.expressions:
                self.expr(o.this, scope)
            return t
        if isinstance(e, exp.Ordered):
            return self.expr(e.this, scope)
        if isinstance(e, exp.Interval):
            return T.INTERVAL
        if isinstance(e, exp.Tuple):
            self._children(e, scope)
            return T.RECORD
        if isinstance(e, exp.Star):
            return T.UNKNOWN
        if isinstance(e, exp.Func):
            return self._function(e, scope)
        if isinstance(e, exp.Identifier):
            t = scope.column(e.name, None)
            return t if t is not None else T.UNKNOWN
        if isinstance(e, exp.Var):
            return T.TEXT
        self._children(e, scope)
        return T.UNKNOWN

    def _window(self, e: exp.Window, scope: Scope) -> None:
        for x in e.args.get("partition_by") or []:
            self.expr(x, scope)
        order = e.args.get("order")
        if order is not None:
            for o in order.expressions:
                self.expr(o.this, scope)

    def _dot(self, e: exp.Dot, scope: Scope) -> PgType:
        if isinstance(e.this, exp.Identifier) and isinstance(e.expression, exp.Func):
            return self.expr(e.expression, scope)  # pg_catalog.f(x)
        if isinstance(e.expression, exp.Identifier | exp.Var):  # (record).field
            base = self.expr(e.this, scope)
            if isinstance(base, Record):
                found = base.field(e.expression.name)
                if found is not None:
                    return found
            if isinstance(e.this, exp.Identifier | exp.Column):  # schema.table.column read as a dot chain
                return T.UNKNOWN
            raise error(f'could not identify column "{e.expression.name}" in record data type', "42703")
        self._children(e, scope)
        return T.UNKNOWN

    def _function(self, e: exp.Func, scope: Scope) -> PgType:
        name = function_name(e)
        if isinstance(e, exp.Trim):
            self.expr(e.this, scope)
            if e.expression is not None:
                self.expr(e.expression, scope)
            return T.TEXT
        args = [a for a in e.iter_expressions()]
        types = []
        for a in args:
            if isinstance(a, exp.Query):
                self.query(a, scope)
                types.append(T.UNKNOWN)
            else:
                types.append(self.expr(a, scope))
        hints = _ARGUMENTS.get(name)
        if hints:
            for a, h in zip(args, hints, strict=False):
                self._param_hint(a, h)
        if name == "count":
            return T.INT8
        if name in ("sum",):
            base = types[0] if types else T.NUMERIC
            return {T.INT2: T.INT8, T.INT4: T.INT8, T.INT8: T.NUMERIC, T.FLOAT4: T.FLOAT4,
                    T.FLOAT8: T.FLOAT8}.get(base, T.NUMERIC)
        if name == "avg":
            base = types[0] if types else T.NUMERIC
            return T.FLOAT8 if base in (T.FLOAT4, T.FLOAT8) else T.NUMERIC
        if name in _SAME_AS_ARGUMENT:
            return next((t for t in types if t != T.UNKNOWN), T.TEXT)
        if name == "array_agg":
            base = types[0] if types else T.TEXT
            return T.array_of(base)
        if name == "unnest":
            base = types[0] if types else T.TEXT
            inner = T.element(base)
            return inner if inner is not None else T.TEXT
        if name == "generate_series":
            known = [t for t in types if t != T.UNKNOWN]
            if any(t in (T.TIMESTAMP, T.TIMESTAMPTZ, T.DATE) for t in known):
                return T.TIMESTAMPTZ if T.TIMESTAMPTZ in known else T.TIMESTAMP
            if any(t == T.NUMERIC for t in known):
                return T.NUMERIC
            return T.INT8 if T.INT8 in known else T.INT4
        if name == "pg_get_keywords":
            return Record((("word", T.TEXT), ("catcode", T.CHAR), ("barelabel", T.BOOL), ("catdesc", T.TEXT),
                           ("baredesc", T.TEXT)))
        if name == "_pg_expandarray":
            inner = T.element(types[0]) if types else None
            return Record((("x", inner or T.TEXT), ("n", T.INT4)))
        if name in _RETURNS:
            return _RETURNS[name]
        if name in ("date_trunc",):
            return T.TIMESTAMP
        return T.TEXT

    # -------------------------------------------------------------- parameters

    def _param_hint(self, node: exp.Expression | None, t: PgType) -> None:
        """`node` is `$n` (or `$n` in parentheses): record the type its context gives it."""
        while isinstance(node, exp.Paren):
            node = node.this
        if not isinstance(node, exp.Parameter | exp.Placeholder) or not isinstance(t, int) or t == T.UNKNOWN:
            return
        n = _param_number(node)
        if n is None or n in self.inferred:
            return
        self.inferred[n] = t  # as in PostgreSQL: an untyped parameter takes the type of what it meets
        node.meta["pgtype"] = t


def _param_number(e: exp.Expression) -> int | None:
    value = e.this
    if isinstance(value, exp.Literal) and not value.is_string:
        return int(value.this)
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


_RANK = {T.INT2: 1, T.INT4: 2, T.INT8: 3, T.NUMERIC: 4, T.FLOAT4: 5, T.FLOAT8: 6}


def _arithmetic(left: PgType, right: PgType) -> PgType:
    if left == T.UNKNOWN:
        return right if right != T.UNKNOWN else T.INT4
    if right == T.UNKNOWN:
        return left
    if left in _RANK and right in _RANK:
        return left if _RANK[left] >= _RANK[right] else right
    if left in (T.DATE, T.TIMESTAMP, T.TIMESTAMPTZ):
        return left
    if left == T.OID or right == T.OID:
        return T.INT8
    return left


# ------------------------------------------------------------------ output names (FigureColname)

_VALUE_FUNCTIONS = {exp.CurrentUser: "current_user", exp.SessionUser: "session_user",
                    exp.CurrentCatalog: "current_catalog", exp.CurrentDate: "current_date",
                    exp.CurrentTimestamp: "now", exp.CurrentTime: "current_time"}


def output_name(e: exp.Expression) -> str:
    return _figure(e)[0]


def _figure(e: exp.Expression) -> tuple[str, int]:
    """(name, strength) as PostgreSQL's FigureColnameInternal: 2 a real name, 1 a fallback, 0 none."""
    if isinstance(e, exp.Alias):
        return e.alias, 2
    if isinstance(e, exp.Column):
        return (e.name, 2) if not isinstance(e.this, exp.Star) else (UNNAMED, 0)
    if isinstance(e, exp.Paren | exp.Collate | exp.Window | exp.Bracket):
        return _figure(e.this)
    if isinstance(e, exp.Dot):
        if isinstance(e.this, exp.Identifier) and isinstance(e.expression, exp.Func):
            return _figure(e.expression)
        return e.expression.name, 2
    if isinstance(e, exp.Cast | exp.TryCast):
        name, strength = _figure(e.this)
        if strength > 1:
            return name, strength
        oid, _ = cast_type(e.to)
        element = T.element(oid) if oid not in T.VECTORS else None
        return T.typname(element if element is not None else oid), 1
    if isinstance(e, exp.Case):
        default = e.args.get("default")
        name, strength = _figure(default) if default is not None else (UNNAMED, 0)
        return (name, strength) if strength > 1 else ("case", 1)
    if isinstance(e, exp.Array):
        return "array", 2
    if isinstance(e, exp.Exists):
        return "exists", 2
    if isinstance(e, exp.Subquery):
        outputs = e.this.meta.get("pgoutputs")
        return (outputs[0][0], 2) if outputs else (UNNAMED, 0)
    for cls, name in _VALUE_FUNCTIONS.items():
        if type(e) is cls:
            return name, 2
    if isinstance(e, exp.Func) and not isinstance(e, exp.Binary | exp.Connector | exp.Predicate | exp.Not):
        return function_name(e), 2
    return UNNAMED, 0
