"""A bound PostgreSQL catalog query → DuckDB SQL over the catalog database (catalog.py).

Small rewrites, each where PostgreSQL and DuckDB differ, decided by the PostgreSQL types the binder put on
every node: relations move to the catalog's schemas; catalog functions become the catalog's `pgw_*` macros or
the session's constants; `::regclass` and friends resolve names to OIDs (and back to names when read as text);
int2vector/oidvector subscripts start at 0; `OPERATOR(pg_catalog.~)` is `~`.
"""

from __future__ import annotations

import decimal
import re
from dataclasses import dataclass, field

from sqlglot import exp

from server.pgwire import pgtypes as T
from server.pgwire.binder import cast_type, error, function_name
from server.pgwire.catalog import NAMESPACES, SCHEMAS, Catalog
from server.pgwire.types import INT_RANGE, WireValueError, int_in_range, parse_int, type_label

VERSION = "PostgreSQL {version} (Phloem) on x86_64-pc-linux-gnu, compiled by Phloem, 64-bit"


@dataclass
class Context:
    """The session facts a catalog query may read."""

    user: str
    database: str
    search_path: list[str] = field(default_factory=lambda: ["public"])  # existing schemas, in order
    pid: int = 0
    server_version: str = "15"

    @property
    def visible(self) -> list[int]:
        implicit = [] if "pg_catalog" in self.search_path else [NAMESPACES["pg_catalog"]]
        return [*implicit, *(NAMESPACES[s] for s in self.search_path if s in NAMESPACES)]


def _type(e: exp.Expression) -> T.PgType:
    return e.meta.get("pgtype", T.UNKNOWN)


def _call(name: str, *args: exp.Expression) -> exp.Expression:
    return exp.Anonymous(this=name, expressions=list(args))


def _text(value: str | None) -> exp.Expression:
    return exp.cast(exp.null(), "VARCHAR") if value is None else exp.Literal.string(value)


def _null(duck_type: str) -> exp.Expression:
    return exp.cast(exp.null(), duck_type)


def _string_list(values: list[str]) -> exp.Expression:
    return exp.cast(exp.Array(expressions=[exp.Literal.string(v) for v in values]), "VARCHAR[]")


def _int_list(values: list[int]) -> exp.Expression:
    return exp.cast(exp.Array(expressions=[exp.Literal.number(v) for v in values]), "BIGINT[]")


_NULL_TEXT = {"pg_get_viewdef", "pg_get_serial_sequence", "pg_get_function_result", "pg_get_function_arguments",
              "pg_get_function_identity_arguments", "pg_get_statisticsobjdef_columns", "pg_get_partkeydef",
              "pg_get_triggerdef", "pg_get_ruledef", "pg_get_functiondef", "shobj_description",
              "pg_tablespace_location"}
_TRUE = {"has_table_privilege", "has_schema_privilege", "has_database_privilege", "has_column_privilege",
         "has_any_column_privilege", "has_function_privilege", "has_sequence_privilege", "has_type_privilege",
         "pg_has_role", "pg_opclass_is_visible", "pg_operator_is_visible", "pg_conversion_is_visible",
         "pg_ts_config_is_visible"}
_ZERO = {"pg_table_size", "pg_relation_size", "pg_total_relation_size", "pg_indexes_size", "pg_database_size"}
_VISIBLE = {"pg_table_is_visible": "pgw_relation_visible", "pg_type_is_visible": "pgw_type_visible",
            "pg_function_is_visible": "pgw_function_visible", "pg_collation_is_visible": "pgw_collation_visible"}
_OUT = {T.REGCLASS: "pgw_regclass_out", T.REGTYPE: "pgw_regtype_out", T.REGNAMESPACE: "pgw_regnamespace_out",
        T.REGROLE: "pgw_regrole_out"}
_INTEGERS = (T.INT2, T.INT4, T.INT8)
_FLOAT_WORDS = {"inf": "Infinity", "nan": "NaN"}  # a bound inf / NaN parameter as sqlglot prints it (not SQL)
_OPERATORS = {"~": exp.RegexpLike, "~*": exp.RegexpILike, "=": exp.EQ, "<>": exp.NEQ, "<": exp.LT, ">": exp.GT,
              "<=": exp.LTE, ">=": exp.GTE, "~~": exp.Like, "~~*": exp.ILike}


_TYPED_ARGUMENTS = {exp.Format: ("this", "expressions"), exp.CurrentSchemas: ("this",),
                    exp.ArraySize: ("this", "expression")}


def _arguments(e: exp.Expression, keys: tuple[str, ...]) -> list[exp.Expression]:
    out: list[exp.Expression] = []
    for key in keys:
        value = e.args.get(key)
        if isinstance(value, list):
            out.extend(value)
        elif value is not None:
            out.append(value)
    return out


class Translator:
    def __init__(self, catalog: Catalog, context: Context):
        self.catalog = catalog
        self.context = context

    def sql(self, statement: exp.Expression) -> str:
        return self.generate(self.translate(statement))

    def generate(self, translated: exp.Expression) -> str:
        """DuckDB's SQL for a statement `translate` returned."""
        self._outputs(translated)
        return translated.sql(dialect="duckdb")

    def translate(self, e: exp.Expression) -> exp.Expression:
        for key, value in list(e.args.items()):
            if isinstance(value, exp.Expression):
                new = self.translate(value)
                if new is not value:
                    e.set(key, new)
            elif isinstance(value, list):
                e.set(key, [self.translate(v) if isinstance(v, exp.Expression) else v for v in value])
        new = self.rewrite(e)
        if new is not e:
            new.meta["pgtype"] = _type(e)
        return new

    def _outputs(self, statement: exp.Expression) -> None:
        """Values whose PostgreSQL text differs from DuckDB's (regclass …) leave as text; char(n) padded."""
        if isinstance(statement, exp.SetOperation):
            self._outputs(statement.this)
            self._outputs(statement.expression)
            return
        if not isinstance(statement, exp.Select):
            return
        typmods = statement.meta.get("pgtypmods") or []
        items = []
        for i, item in enumerate(statement.expressions):
            t = _type(item)
            target = item.this if isinstance(item, exp.Alias) else item
            width = typmods[i] - 4 if t == T.BPCHAR and len(typmods) == len(statement.expressions) else -1
            wrapped = self._as_text(target, t) or _padded(target, width)
            if wrapped is not None:
                name = item.alias if isinstance(item, exp.Alias) else (
                    item.name if isinstance(item, exp.Column) else None)
                item = exp.alias_(wrapped, name, quoted=True) if name else wrapped
            items.append(item)
        statement.set("expressions", items)

    def _as_text(self, e: exp.Expression, t: T.PgType) -> exp.Expression | None:
        if t in T.VECTORS:  # int2vector / oidvector print as '1 2', not as an array
            return _call("pgw_vector_out", e)
        if t == T.REGCLASS:
            return _call("pgw_regclass_out", e, _int_list(self.context.visible))
        if t in _OUT:
            return _call(_OUT[t], e)
        return None

    # -------------------------------------------------------------- one node

    def rewrite(self, e: exp.Expression) -> exp.Expression:  # noqa: C901 — one case per node kind
        if isinstance(e, exp.Table):
            return self._table(e)
        if isinstance(e, exp.Column):
            if e.args.get("db") is not None:
                e.set("db", None)
            if e.args.get("catalog") is not None:
                e.set("catalog", None)
            return e
        if isinstance(e, exp.Dot):
            if isinstance(e.this, exp.Identifier) and e.this.name in SCHEMAS:
                return e.expression  # pg_catalog.f(x) → f(x), already translated
            return e
        if isinstance(e, exp.Collate):
            return e.this
        if isinstance(e, exp.Literal) and not e.is_string and e.this in _FLOAT_WORDS:
            special = exp.cast(exp.Literal.string(_FLOAT_WORDS[e.this]), "DOUBLE")
            special.meta["nan"] = e.this == "nan"
            return special
        if isinstance(e, exp.Neg) and e.this.meta.get("nan"):
            return e.this  # a NaN parameter is bound as -(nan): keep the NaN the client sent
        if isinstance(e, exp.Literal | exp.Neg) and _type(e) in _INTEGERS:
            _check_parameter(e, _type(e))
        if isinstance(e, exp.ByteString | exp.RawString | exp.National):
            return exp.Literal.string(e.this)
        if isinstance(e, exp.Operator):
            op = str(e.args.get("operator", "")).rpartition(".")[2].strip()
            negated = op.startswith("!")
            cls = _OPERATORS.get(op.removeprefix("!"))
            if cls is None:
                raise error(f"operator {op} is not supported", "42883")
            node = cls(this=e.this, expression=e.expression)
            return exp.Not(this=node) if negated else node
        if isinstance(e, exp.Cast | exp.TryCast):
            return self._cast(e)
        if isinstance(e, exp.Bracket):
            base = _type(e.this)
            if base in T.VECTORS and e.expressions:
                e.set("expressions", [exp.Add(this=exp.Paren(this=e.expressions[0]), expression=exp.Literal.number(1)),
                                      *e.expressions[1:]])
            return e
        if isinstance(e, exp.EQ | exp.NEQ) and _type(e.this) in (T.REGCLASS, T.REGTYPE):
            if isinstance(e.expression, exp.Literal) and e.expression.is_string:
                e.set("expression", self._reg_literal(e.expression.this, _type(e.this)))
            return e
        if isinstance(e, exp.DPipe) and (T.is_array(_type(e.this)) or T.is_array(_type(e.expression))):
            return _call("list_concat", e.this, e.expression)  # NULL || array is the array, as in PostgreSQL
        if isinstance(e, exp.Func):
            return self._function(e)
        return e

    def _table(self, e: exp.Table) -> exp.Expression:
        relation = e.meta.get("relation")
        if relation is not None:
            schema = SCHEMAS.get(relation.schema)
            if schema is None:
                raise error(f'relation "{relation.schema}.{relation.name}" is not a catalog relation', "0A000")
            e.set("db", exp.to_identifier(schema))
            e.set("catalog", None)
            if e.args.get("alias") is None:  # keep `pg_catalog.pg_class.relname` → `pg_class.relname` resolvable
                e.set("alias", exp.TableAlias(this=exp.to_identifier(relation.name)))
            return e
        if isinstance(e.this, exp.Func | exp.Expression) and not isinstance(e.this, exp.Identifier):
            e.set("db", None)
            e.set("catalog", None)
            alias = e.args.get("alias")
            function = e.this
            if isinstance(function, exp.Anonymous) and str(function.this).lower() == "pg_get_keywords":
                e.set("this", exp.to_identifier("pgw_keywords"))
                e.set("db", exp.to_identifier("pgcat"))
                if alias is None:
                    e.set("alias", exp.TableAlias(this=exp.to_identifier("pg_get_keywords")))
                return e
            if isinstance(function, exp.Anonymous) and str(function.this).lower() == "unnest":
                e.set("this", exp.Unnest(expressions=function.expressions))
            if alias is not None and not alias.columns and not isinstance(_type(function), T.Record):
                alias.set("columns", [exp.to_identifier(alias.name)])
        return e

    def _reg_literal(self, text: str, t: int) -> exp.Expression:
        """'pg_class'::regclass and friends: resolved now, to the OID (regproc: the bare name)."""
        if t == T.REGCLASS:
            value = text.strip()
            if value.isdigit():
                return exp.Literal.number(int(value))
            schema, _, name = value.rpartition(".")
            schema, name = _unquote(schema) if schema else None, _unquote(name)
            relation = self.catalog.relation(schema, name, self.context.search_path)
            if relation is None:
                raise error(f'relation "{value}" does not exist', "42P01")
            return exp.Literal.number(relation.oid)
        if t == T.REGTYPE:
            value = text.strip()
            if value.isdigit():
                return exp.Literal.number(int(value))
            oid = T.named(value) if value not in ("char",) else T.BPCHAR
            if oid is None:
                raise error(f'type "{value}" does not exist', "42704")
            return exp.Literal.number(oid)
        if t == T.REGNAMESPACE:
            name = _unquote(text)
            if name not in NAMESPACES:
                raise error(f'schema "{name}" does not exist', "3F000")
            return exp.Literal.number(NAMESPACES[name])
        if t == T.REGPROC:
            return exp.Literal.string(text.strip().rpartition(".")[2])
        return exp.Literal.string(text)

    def _cast(self, e: exp.Cast) -> exp.Expression:
        target, typmod = cast_type(e.to)
        source = _type(e.this)
        value = e.this
        literal = isinstance(value, exp.Literal) and value.is_string
        if target in _INTEGERS:
            value = _integer_constant(value, target)
        if target in T.REG_TYPES:
            if literal:
                return self._reg_literal(value.this, target)
            if T.is_string(source):
                visible = _int_list(self.context.visible)
                if target == T.REGCLASS:
                    return _call("pgw_regclass", value, visible)
                if target == T.REGTYPE:
                    return _call("pgw_regtype", value)
                if target == T.REGNAMESPACE:
                    return _call("pgw_regnamespace", value)
                if target == T.REGPROC:
                    return _call("regexp_replace", value, exp.Literal.string("^.*\\."), exp.Literal.string(""))
            if source == T.REGPROC or target == T.REGPROC:
                return value
            return exp.cast(value, "BIGINT")
        if source in T.REG_TYPES:
            if T.is_string(target):
                return _bounded(self._as_text(value, source) or exp.cast(value, "VARCHAR"), target, typmod)
            return exp.cast(value, "BIGINT") if source != T.REGPROC else value
        if T.is_string(target) and target not in (T.JSON, T.JSONB):
            if source in T.VECTORS:
                return _bounded(_call("pgw_vector_out", value), target, typmod)
            if T.is_array(source):
                return _bounded(_call("pgw_array_out", value), target, typmod)
            return _bounded(exp.cast(value, "VARCHAR"), target, typmod)
        if target in (T.JSON, T.JSONB):
            return exp.cast(value, "JSON")
        return exp.cast(value, T.duckdb_type(target))

    # -------------------------------------------------------------- functions

    def _function(self, e: exp.Func) -> exp.Expression:  # noqa: C901 — one case per function
        name = function_name(e)
        args = list(e.expressions) if isinstance(e, exp.Anonymous) else None
        if type(e) in _TYPED_ARGUMENTS:  # functions sqlglot parses into their own nodes
            args = _arguments(e, _TYPED_ARGUMENTS[type(e)])
        ctx = self.context
        if name in ("current_user", "session_user", "current_role", "user"):
            return exp.Literal.string(ctx.user)
        if name in ("current_database", "current_catalog"):
            return exp.Literal.string(ctx.database)
        if name == "current_schema":
            return _text(ctx.search_path[0] if ctx.search_path else None)
        if name == "version":
            return exp.Literal.string(VERSION.format(version=ctx.server_version))
        if name == "pg_backend_pid":
            return exp.Literal.number(ctx.pid)
        if name == "pg_advisory_unlock_all":  # asyncpg's pool reset; the door takes no locks. void prints ''
            return exp.Literal.string("")
        if args is None:
            return e
        n = len(args)
        if name == "pg_sleep" and n == 1:
            return _sleep(args[0])
        if name == "current_schemas":
            implicit = args and not (isinstance(args[0], exp.Boolean) and not args[0].this)
            implicit = implicit and "pg_catalog" not in ctx.search_path  # named in the path: it stands there
            return _string_list((["pg_catalog"] if implicit else []) + list(ctx.search_path))
        if name == "current_setting":
            lookup = exp.select("setting").from_("pgcat.pg_settings").where(
                exp.EQ(this=_call("lower", exp.column("name")), expression=_call("lower", args[0]))).limit(1)
            return exp.Subquery(this=lookup)
        if name == "format_type":
            return _call("pgw_format_type", args[0], args[1] if n > 1 else exp.null())
        if name == "pg_get_userbyid":
            return _call("pgw_get_userbyid", args[0])
        if name == "pg_get_expr":
            return exp.cast(args[0], "VARCHAR")
        if name == "pg_get_indexdef":
            return _call("pgw_get_indexdef", args[0], args[1] if n > 1 else exp.Literal.number(0))
        if name == "pg_get_constraintdef":
            return _call("pgw_get_constraintdef", args[0])
        if name in _VISIBLE:
            return _call(_VISIBLE[name], args[0], _int_list(ctx.visible))
        if name in _NULL_TEXT:
            return _null("VARCHAR")
        if name in _TRUE:
            return exp.true()
        if name in _ZERO:
            return exp.cast(exp.Literal.number(0), "BIGINT")
        if name == "pg_relation_is_publishable" or name == "pg_is_in_recovery":
            return exp.false()
        if name == "col_description":
            return _call("pgw_col_description", *args[:2])
        if name == "obj_description":
            return _call("pgw_obj_description", args[0], args[1] if n > 1 else _null("VARCHAR"))
        if name == "pg_encoding_to_char":
            return _call("pgw_encoding_to_char", args[0])
        if name == "pg_size_pretty":
            return _call("pgw_size_pretty", args[0])
        if name in ("to_regtype", "to_regclass", "to_regnamespace"):
            if name == "to_regclass":
                return _call("pgw_regclass", args[0], _int_list(ctx.visible))
            return _call("pgw_regtype" if name == "to_regtype" else "pgw_regnamespace", args[0])
        if name == "quote_ident":
            return _call("pgw_quote_ident", args[0])
        if name == "quote_literal":
            return _call("pgw_quote_literal", exp.cast(args[0], "VARCHAR"))
        if name == "format" and args and isinstance(args[0], exp.Literal) and args[0].is_string:
            return _format(args[0].this, args[1:])
        if name == "json_build_object":
            return exp.cast(_call("json_object", *args), "VARCHAR")
        if name in ("array_upper", "array_length", "array_lower", "cardinality"):
            return self._array_bound(name, args)
        if name == "generate_subscripts":
            start = 0 if _type(args[0]) in T.VECTORS else 1
            stop = exp.Add(this=_call("len", args[0]), expression=exp.Literal.number(start))
            return exp.Unnest(expressions=[_call("range", exp.Literal.number(start), stop)])
        if name == "_pg_expandarray":
            array = args[0]
            index = exp.to_identifier("i")
            element = exp.Bracket(this=array.copy(), expressions=[
                exp.Add(this=exp.column("i"), expression=exp.Literal.number(1))])
            record = _call("struct_pack", exp.PropertyEQ(this=exp.to_identifier("x"), expression=element),
                           exp.PropertyEQ(this=exp.to_identifier("n"), expression=exp.Add(
                               this=exp.column("i"), expression=exp.Literal.number(1))))
            lam = exp.Lambda(this=record, expressions=[index])
            return exp.Unnest(expressions=[_call("list_transform", _call("range", _call("len", array)), lam)])
        if name in ("pg_postmaster_start_time",):
            return exp.CurrentTimestamp()
        if name == "txid_current":
            return exp.cast(exp.Literal.number(1), "BIGINT")
        if name in ("pg_client_encoding", "getdatabaseencoding"):
            return exp.Literal.string("UTF8")
        return e

    def _array_bound(self, name: str, args: list[exp.Expression]) -> exp.Expression:
        array = args[0]
        length = _call("len", array)
        if name == "cardinality":
            return _call("coalesce", length, exp.Literal.number(0))
        vector = _type(array) in T.VECTORS
        empty = exp.EQ(this=_call("coalesce", length.copy(), exp.Literal.number(0)), expression=exp.Literal.number(0))
        if name == "array_lower":
            value: exp.Expression = exp.Literal.number(0 if vector else 1)
        elif name == "array_upper":
            value = exp.Sub(this=length, expression=exp.Literal.number(1)) if vector else length
        else:
            value = length
        return exp.Case(ifs=[exp.If(this=empty, true=exp.null())], default=value)


def _bounded(text: exp.Expression, target: int, typmod: int) -> exp.Expression:
    """An explicit cast to varchar(n) or char(n) cuts to n characters, as in PostgreSQL. char(n) is held without
    its trailing blanks, which PostgreSQL ignores in comparisons and drops as text; it is padded as an output."""
    if typmod < 0 or target not in (T.VARCHAR, T.BPCHAR):
        return text
    cut = _call("left", text, exp.Literal.number(typmod - 4))
    return cut if target == T.VARCHAR else _call("rtrim", cut, exp.Literal.string(" "))


def _padded(e: exp.Expression, width: int) -> exp.Expression | None:
    """A char(n) output (`width` n, else -1), padded with blanks to n; None for any other."""
    return None if width < 0 else _call("rpad", e, exp.Literal.number(width), exp.Literal.string(" "))


def _sleep(seconds: exp.Expression) -> exp.Expression:
    """pg_sleep(s): sleeps (DuckDB's pg_sleep, which a cancel interrupts), then void, which prints ''; NULL for a
    NULL argument (the function is strict)."""
    seconds = exp.cast(seconds, "DOUBLE")
    slept = _call("coalesce", exp.cast(_call("pg_sleep", seconds.copy()), "VARCHAR"), exp.Literal.string(""))
    return exp.Case(ifs=[exp.If(this=exp.Is(this=seconds, expression=exp.null()), true=exp.null())], default=slept)


def _number(e: exp.Expression) -> decimal.Decimal | None:
    """The value of a numeric constant (`5`, `-1.5`, `(2e9)`), None for anything else."""
    negative = False
    while isinstance(e, exp.Paren | exp.Neg):
        negative ^= isinstance(e, exp.Neg)
        e = e.this
    if not (isinstance(e, exp.Literal) and not e.is_string and re.fullmatch(r"[0-9.eE+-]+", str(e.this))):
        return None
    try:
        value = decimal.Decimal(e.this)
    except decimal.InvalidOperation:
        return None
    return -value if negative else value


def _check_parameter(e: exp.Expression, t: int) -> None:
    """A bound integer parameter must fit its type (PostgreSQL's input function checks it at Bind)."""
    value = _number(e)
    if value is not None:
        try:
            int_in_range(value, t)
        except WireValueError as err:
            raise error(str(err), err.sqlstate) from None


def _integer_constant(value: exp.Expression, target: int) -> exp.Expression:
    """A constant cast to an integer type fails now, as PostgreSQL's does (DuckDB says "Conversion Error" for
    both kinds): text that is not an integer is 22P02, a value out of range 22003. Text becomes the number."""
    lo, hi = INT_RANGE[target]
    if isinstance(value, exp.Literal) and value.is_string:
        try:
            number = parse_int(value.this, target)
        except WireValueError as e:
            raise error(str(e), e.sqlstate) from None
        return exp.Literal.number(number) if number >= 0 else exp.Neg(this=exp.Literal.number(-number))
    number = _number(value)
    if number is not None and not lo <= number.to_integral_value(decimal.ROUND_HALF_UP) <= hi:
        raise error(f"{type_label(target)} out of range", "22003")  # numeric rounds half away from zero, as here
    return value


def _format(template: str, args: list[exp.Expression]) -> exp.Expression:
    """PostgreSQL's format(): %s as text, %I as an identifier, %L as a literal, %% a percent sign."""
    parts: list[exp.Expression] = []
    position, text, i = 0, "", 0
    while i < len(template):
        ch = template[i]
        if ch == "%" and i + 1 < len(template):
            spec = template[i + 1]
            i += 2
            if spec == "%":
                text += "%"
                continue
            if text:
                parts.append(exp.Literal.string(text))
                text = ""
            value = exp.cast(args[position] if position < len(args) else exp.null(), "VARCHAR")
            position += 1
            if spec == "I":
                parts.append(_call("pgw_quote_ident", value))
            elif spec == "L":
                parts.append(_call("coalesce", _call("pgw_quote_literal", value), exp.Literal.string("NULL")))
            else:
                parts.append(_call("coalesce", value, exp.Literal.string("")))
            continue
        text += ch
        i += 1
    if text or not parts:
        parts.append(exp.Literal.string(text))
    return _call("concat", *parts)


def _unquote(name: str) -> str:
    name = name.strip()
    if name.startswith('"') and name.endswith('"'):
        return name[1:-1].replace('""', '"')
    return name.lower()
