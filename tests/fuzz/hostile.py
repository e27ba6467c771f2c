"""What the fuzz tests send (hostile filter text, semantic SQL, GraphQL `where`s built from the model's real
names) and what every answer must satisfy."""

from __future__ import annotations

import os
import re
from collections import Counter

import orjson

SCALE = float(os.environ.get("PHLOEM_FUZZ_SCALE", "1"))  # 0.1 while developing; CI runs the full budgets


def scaled(budget: int) -> int:
    return max(1, round(budget * SCALE))


CASES: Counter[str] = Counter()  # endpoint -> cases answered, printed at the end of the run
CPU: Counter[str] = Counter()  # test -> CPU seconds

# what a client must never read in an error: tracebacks, paths, Python/driver class names, internal SQL and schemas
LEAKS = re.compile("|".join([
    r"Traceback", r'File "', r"/work/", r"/tmp/", r"/home/", r"/usr/", r"site-packages", r"\.py\b",
    r"sqlglot", r"duckdb\.", r"psycopg", r"strawberry", r"pydantic", r"\bexp\.[A-Z]", r"<class ", r"object at 0x",
    r"\b[A-Z][a-z]+(?:[A-Z][a-z]*)*(?:Error|Exception)\b",  # TypeError, ParseError, BinderException …
    r"\b(?:Binder|Catalog|Parser|Conversion|Invalid Input|Internal|Out of Range) Error\b",  # DuckDB's prefixes
    r'\bSELECT\b[\s\S]{0,400}?\bFROM\s+"', r'\bWITH "leaf_', r'"phloem"\.', r"\bphloem\.[a-z_]+", r"_phloem_", r'"raw"\.', r"\braw\.[a-z_]+",
    r"\bLINE \d+:",
]))


def leaks(text: str, sent: str = "") -> list[str]:
    """The internal details in `text`, ignoring what the client sent itself (echoed back in messages)."""
    for piece in sorted({p for p in re.split(r"[\s'\"`]+", sent) if len(p) > 2}, key=len, reverse=True):
        text = text.replace(piece, " ")
    return [m.group(0) for m in LEAKS.finditer(text)]


def check_rest(endpoint: str, response, sent: str = "") -> None:
    """REST: never a 5xx except a timeout; a 4xx is a typed error with a message and a suggestion, no internals."""
    CASES[endpoint] += 1
    assert response.status_code < 500 or response.status_code == 504, (response.status_code, response.text[:500], sent[:300])
    if response.status_code >= 400:
        error = orjson.loads(response.content)["error"]
        assert error["message"] and error["suggestion"], error
        assert not leaks(response.text, sent), (leaks(response.text, sent), response.text[:800], sent[:300])


def check_graphql(endpoint: str, response, sent: str = "") -> None:
    """GraphQL: bad input is a 400 or an error with a client code, never INTERNAL_SERVER_ERROR; no internals."""
    CASES[endpoint] += 1
    assert response.status_code < 500, (response.status_code, response.text[:500], sent[:300])
    out = orjson.loads(response.content)
    for error in out.get("errors") or ():
        assert error["extensions"]["code"] != "INTERNAL_SERVER_ERROR", (error, sent[:300])
        assert not leaks(error["message"], sent), (leaks(error["message"], sent), error, sent[:300])
    if "explain" not in sent:  # the generated SQL is shown only when asked for
        assert "sql" not in orjson.dumps(out.get("extensions") or {}).decode()




# ------------------------------------------------------------------ what is sent

from dataclasses import dataclass  # noqa: E402

from hypothesis import strategies as st  # noqa: E402

GRAINS = ("hour", "day", "week", "month", "quarter", "year")
# pieces of attacks and mistakes; none spells a word the leak check looks for, so an echo is never mistaken for a leak
HOSTILE_TOKENS = (
    "'", '"', "`", ";", "--", "/*", "*/", "(", ")", "((", "))", ",", "*", "$1", "?", ":x", "::int", "[", "]", "{", "}",
    "\\", "\x00", "\u202e", "é", "𝔘", "\ufeff", "1=1", "or 1=1", "; drop table x", "union select 1", "select 1",
    "drop table x", "delete from x", "having", "group by 1", "order by 1", "limit 1", "from", "where", "and", "or",
    "not", "is", "null", "in", "like", "between", "case when", "end", "exists", "any", "all", "interval", "lambda",
    "x -> x", "->>", "||", "%", "/", "1/0", "-", "+", "~", "!", "@", "#", "=", "==", "<>", "!=", ">=", "<=", ">", "<",
    "nosuch_fn(", "read_csv('/etc/passwd')", "read_text('/proc/self/environ')", "getenv('HOME')", "glob('*')",
    "current_setting('x')", "pg_sleep(1)", "duckdb_tables()", "information_schema.tables", "main.orders",
    "1e999", "-1e999", "9" * 60, "0x7fffffffffffffff", "-9223372036854775809", "1e-400", "NaN", "'inf'",
    "true", "false", "date '2024-13-45'", "timestamp 'x'", "'2024-02-30'", "'2024-01-01'", "'US'", "'app'", "''",
    "' OR ''='", "'it''s'", "e'\\x00'", "$$x$$", "u&'\\0041'",
)
FUNCTIONS = ("lower", "upper", "length", "abs", "round", "coalesce", "date_trunc", "nosuch_fn", "read_csv",
             "getenv", "sum", "count", "max", "row_number", "unnest", "range", "strftime", "regexp_matches")


@dataclass(frozen=True)
class Names:
    """The model's real names, the raw material of every hostile input."""

    dimensions: tuple[str, ...]  # bare and qualified, plus metric_time and its grains
    typed: dict[str, str]  # dimension -> categorical | number | boolean | time
    metrics: tuple[str, ...]
    views: tuple[str, ...]
    fields: tuple[str, ...]  # GraphQL Where fields


def names_of(meta: dict, where_fields: tuple[str, ...]) -> Names:
    typed = {}
    for view in meta["views"]:
        for d in view["dimensions"]:
            typed.setdefault(d["name"], d["type"])
            typed[d["qualified"]] = d["type"]
    typed["metric_time"] = "time"
    for g in GRAINS:
        typed[f"metric_time__{g}"] = "time"
    return Names(tuple(typed), typed, tuple(m["name"] for m in meta["metrics"]),
                 tuple(v["name"] for v in meta["views"]), where_fields)


def literals() -> st.SearchStrategy[str]:
    """Literals of every type, well- and ill-formed: quotes inside strings, huge numbers, dates that are not."""
    text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
    return st.one_of(
        text.map(lambda s: "'" + s.replace("'", "''") + "'"),  # a well-quoted string of anything, NUL included
        text.map(lambda s: "'" + s + "'"),  # quotes that may not close
        st.integers().map(str),
        st.integers(min_value=10**18, max_value=10**80).map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.dates().map(lambda d: f"'{d.isoformat()}'"),
        st.dates().map(lambda d: f"date '{d.isoformat()}'"),
        st.sampled_from(["true", "false", "null", "'2024-13-45'", "'abc'", "1e999", "-0", "1e-400", "interval 1 day",
                         "interval 'x' day", "[1, 2]", "{'a': 1}", "$1", "?"]),
    )


def filters(names: Names) -> st.SearchStrategy[str]:
    """Filter text: model dimensions under real and hostile operators and functions, nested, plus token soup."""
    column = st.one_of(st.sampled_from(names.dimensions), st.sampled_from(names.metrics),
                       st.sampled_from(["nosuch", "orders.nosuch", "nosuch.country", '"country"', "`country`",
                                        "metric_time__decade", "Country", "ordered_at__month"]))
    atom = st.one_of(column, literals())
    comparison = st.builds(lambda a, op, b: f"{a} {op} {b}", column,
                           st.sampled_from(["=", "!=", "<>", ">", ">=", "<", "<=", "like", "ilike", "is", "is not",
                                            "==", "<=>", "~", "similar to", "glob"]), atom)
    special = st.one_of(
        st.builds(lambda a, vs: f"{a} in ({', '.join(vs)})", column, st.lists(literals(), max_size=4)),
        st.builds(lambda a, lo, hi: f"{a} between {lo} and {hi}", column, literals(), literals()),
        st.builds(lambda a: f"{a} is null", column),
        st.builds(lambda f, args, b: f"{f}({', '.join(args)}) = {b}", st.sampled_from(FUNCTIONS),
                  st.lists(atom, max_size=3), literals()),
        st.builds(lambda a, t: f"cast({a} as {t}) > 1", column, st.sampled_from(["int", "date", "varchar", "blob",
                                                                                 "nosuchtype"])),
    )
    boolean = st.recursive(st.one_of(comparison, special), lambda inner: st.one_of(
        st.builds(lambda a, op, b: f"{a} {op} {b}", inner, st.sampled_from(["and", "or", "AND", "Or"]), inner),
        inner.map(lambda a: f"not {a}"),
        inner.map(lambda a: f"({a})"),
    ), max_leaves=6)
    soup = st.lists(st.one_of(st.sampled_from(HOSTILE_TOKENS), column, literals()), min_size=1, max_size=8).map(" ".join)
    # mostly shallow (cheap); now and then the 1,000s that once overflowed the parser's stack
    depth = st.sampled_from([*range(1, 40), 100, 300, 1000, 5000])
    deep = st.builds(lambda n, a: "(" * n + a + ")" * n, depth, comparison)
    unbalanced = st.builds(lambda n, m, a: "(" * n + a + ")" * m, st.integers(0, 300), st.integers(0, 300), comparison)
    mangled = st.builds(lambda a, tok, pos: a[:pos] + tok + a[pos:], boolean, st.sampled_from(HOSTILE_TOKENS),
                        st.integers(0, 40))
    return st.one_of(boolean, boolean, boolean, soup, soup, mangled, deep, unbalanced,
                     st.text(max_size=30), st.sampled_from(HOSTILE_TOKENS))


def structured_filters(names: Names) -> st.SearchStrategy[dict]:
    """{dimension, op, values} with values of the wrong type, wrong counts and unknown dimensions."""
    value = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10),
                      st.dates().map(str), st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3),
                                                                                                 st.integers(),
                                                                                                 max_size=2))
    return st.fixed_dictionaries(
        {"dimension": st.one_of(st.sampled_from(names.dimensions), st.text(max_size=10)),
         "op": st.sampled_from(["=", "!=", "<>", ">", ">=", "<", "<=", "in", "not in", "between", "like", "is null",
                                "is not null"])},
        optional={"values": st.one_of(value, st.lists(value, max_size=4))})


def time_ranges() -> st.SearchStrategy:
    day = st.one_of(st.dates().map(str), st.datetimes().map(lambda t: t.isoformat()),
                    st.sampled_from(["2024-13-45", "yesterday", "", "2024-01-01T25:00:00"]), st.integers())
    return st.one_of(st.none(), st.fixed_dictionaries({}, optional={"start": day, "end": day}))


def metric_queries(names: Names) -> st.SearchStrategy[dict]:
    """REST query bodies: real metrics and dimensions, hostile filters, odd orders and limits."""
    metric = st.one_of(st.sampled_from(names.metrics), st.sampled_from(names.metrics).map(lambda m: m + "x"))
    dimension = st.one_of(st.sampled_from(names.dimensions), st.sampled_from(["nosuch", "metric_time__decade"]))
    return st.fixed_dictionaries(
        {"metrics": st.lists(metric, min_size=1, max_size=3),
         "filters": st.lists(st.one_of(filters(names), structured_filters(names)), min_size=1, max_size=3)},
        optional={"dimensions": st.lists(dimension, max_size=2),
                  "time_range": time_ranges(),
                  "order_by": st.lists(st.one_of(metric, dimension, metric.map(lambda m: "-" + m),
                                                 metric.map(lambda m: m + ":sideways")), max_size=2),
                  "limit": st.integers(min_value=0, max_value=10**12)})


def semantic_sql(names: Names) -> st.SearchStrategy[str]:
    """Semantic SQL statements over the model's views and `metrics`: filters, aggregates, clauses, stacked."""
    table = st.one_of(st.sampled_from(names.views), st.just("metrics"),
                      st.sampled_from(["nosuch", "phloem.orders", "raw.orders", "information_schema.tables",
                                       "pg_catalog.pg_class", "read_csv('/etc/passwd')", "(select 1)"]))
    measure = st.one_of(st.sampled_from(names.metrics).map(lambda m: f"measure({m})"),
                        st.sampled_from(["measure(gross_revenue)", "sum(gross_revenue)", "count(*)",
                                         "count(distinct customer)", "avg(total)", "measure(nosuch)", "measure(*)",
                                         "max(ordered_at)", "percentile_cont(0.5) within group (order by total)"]))
    column = st.sampled_from(names.dimensions)
    select = st.lists(st.one_of(measure, column, st.just("*"), literals()), min_size=1, max_size=3).map(", ".join)
    statement = st.builds(
        lambda s, t, w, g, o, lim: f"select {s} from {t}{w}{g}{o}{lim}",
        select, table,
        st.one_of(st.just(""), filters(names).map(lambda f: f" where {f}")),
        st.one_of(st.just(""), st.just(" group by 1"), st.just(" group by all"), column.map(lambda c: f" group by {c}"),
                  st.just(" group by rollup(1)")),
        st.one_of(st.just(""), st.just(" order by 1 desc"), st.just(" order by 99")),
        st.one_of(st.just(""), st.integers(-5, 10**20).map(lambda n: f" limit {n}"), st.just(" limit 'x'")),
    )
    stacked = st.builds(lambda a, b: f"{a}; {b}", statement, st.sampled_from(
        ["drop table x", "select 1", "copy orders to '/tmp/x'", "attach '/tmp/x.db'", "set threads = 1", ""]))
    other = st.sampled_from(["show tables", "begin", "insert into orders values (1)", "create table x (a int)",
                             "with recursive t as (select 1) select * from t", "explain select 1", "pragma version",
                             "select * from metrics", "values (1)", "select", "", " ", ";;", "select 1 +", "*"])
    return st.one_of(statement, statement, stacked, other, st.text(max_size=40),
                     st.builds(lambda n, s: "select " + "(" * n + s + ")" * n,
                               st.sampled_from([*range(1, 30), 300, 5000]), st.just("1")))


@dataclass(frozen=True)
class WhereFields:
    """The GraphQL `Where` input's fields by kind (from introspection) and the `Row` fields of metrics."""

    by_kind: dict[str, str]  # field -> the input type of its operators (StringFilter, TimeFilter, …)
    metrics: tuple[str, ...]
    dimensions: tuple[str, ...]


def graphql_values() -> st.SearchStrategy[str]:
    """GraphQL literals of every type, including out-of-range Ints and strings that are not dates."""
    string = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=10).map(
        lambda s: orjson.dumps(s).decode())
    scalar = st.one_of(string, st.integers(-(2**40), 2**40).map(str), st.integers(10**20, 10**30).map(str),
                       st.floats(allow_nan=False, allow_infinity=False).map(repr), st.sampled_from(
                           ["true", "false", "null", '"2024-01-01"', '"2024-13-45"', '"2024-01-01T10:00:00"',
                            '"US"', '"app"', "US", '"\\u0000"', '"\'"', '"; drop table x"']))
    return st.one_of(scalar, st.lists(scalar, max_size=3).map(lambda xs: f"[{', '.join(xs)}]"))


def graphql_wheres(fields: WhereFields) -> st.SearchStrategy[str]:
    """`Where` input text: real fields and operators, wrong-typed values, unknown names, and/or/not, deep nesting."""
    ops = st.sampled_from(["equals", "notEquals", "in", "notIn", "gt", "gte", "lt", "lte", "between", "contains",
                           "isNull", "nosuch"])
    condition = st.builds(lambda o, v: f"{{{o}: {v}}}", ops, graphql_values())
    time_condition = st.builds(lambda g, c: f"{{{g}: {c}}}", st.sampled_from([*GRAINS, "decade"]), condition)
    field = st.sampled_from(sorted(fields.by_kind) + ["nosuch"])
    leaf = st.builds(lambda f, c, tc: f"{{{f}: {tc if fields.by_kind.get(f) == 'time' else c}}}", field, condition,
                     time_condition)
    where = st.recursive(leaf, lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(lambda ws: f"{{and: [{', '.join(ws)}]}}"),
        st.lists(inner, max_size=3).map(lambda ws: f"{{or: [{', '.join(ws)}]}}"),
        inner.map(lambda w: f"{{not: {w}}}"),
        st.builds(lambda a, b: a[:-1] + ", " + b[1:] if len(a) > 2 and len(b) > 2 else a, inner, inner),
    ), max_leaves=6)
    deep = st.builds(lambda n, w: "{not: " * n + w + "}" * n, st.sampled_from([*range(1, 30), 200, 3000]), leaf)
    return st.one_of(where, where, deep, graphql_values())


def graphql_operations(fields: WhereFields) -> st.SearchStrategy[str]:
    """Whole operations: metric queries and metric trees filtered by hostile `Where`s."""
    metric = st.sampled_from(fields.metrics)
    selection = st.lists(st.one_of(metric, st.sampled_from(fields.dimensions)), min_size=1, max_size=3).map(" ".join)
    limit = st.one_of(st.just(""), st.integers(-(2**33), 2**33).map(lambda n: f", limit: {n}"))
    query = st.builds(lambda w, lim, m, sel: f"{{ query(where: {w}{lim}) {{ {m} {sel} }} }}",
                      graphql_wheres(fields), limit, metric, selection)
    period = '{start: "2024-01-01", end: "2024-01-31"}'
    tree = st.builds(lambda w, root: f'{{ metricTree(root: "{root}", period: {period}, where: {w}) '
                                     f'{{ nodes {{ name value }} }} }}',
                     graphql_wheres(fields), st.sampled_from(["profit", "margin", "nosuch"]))
    return st.one_of(query, query, query, tree)


def graphql_variables(fields: WhereFields) -> st.SearchStrategy[dict]:
    """`Where` as a JSON variable: any JSON shape under real field and operator names."""
    json_value = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                                        st.text(max_size=8)),
                              lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                      st.dictionaries(st.sampled_from(
                                                          ["equals", "in", "gte", "between", "month", "nosuch"]),
                                                          inner, max_size=2)), max_leaves=5)
    keys = st.sampled_from(sorted(fields.by_kind) + ["and", "or", "not", "nosuch"])
    return st.dictionaries(keys, json_value, max_size=3)
