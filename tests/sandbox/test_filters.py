"""The one filter check (semantic/query/filters.py): what a client may write, and what it may not."""

from __future__ import annotations

import pytest
from sqlglot import exp

from semantic.errors import QueryError
from semantic.query.filters import MAX_DEPTH, MAX_LENGTH, FilterError, check_filter, parse_filter

DIMENSIONS = {"country", "channel", "ordered_at", "orders.country", "metric_time__month", "total"}


def resolve(text: str) -> str:
    if text not in DIMENSIONS:
        raise QueryError(f"unknown dimension `{text}`", "see /api/v1/meta")
    return text


ALLOWED = [
    "country = 'US'", "country in ('US', 'CA')", "country not in ('US')", "total between 10 and 20",
    "country is null", "country is not null", "channel like 'w%'", "channel ilike '%EB'", "not channel = 'web'",
    "country = 'US' and (channel = 'web' or channel is null)", "upper(country) = 'US'", "lower(channel) <> 'app'",
    "length(country) = 2", "substring(country, 1, 1) = 'U'", "trim(channel) = 'web'", "strpos(channel, 'e') > 0",
    "starts_with(channel, 'w')", "contains(channel, 'e')", "regexp_matches(channel, '^w')", "country || channel = 'x'",
    "coalesce(country, '?') = '?'", "nullif(country, '') is null", "total + 1 > 2 * 3", "total % 2 = 0",
    "abs(total) > round(1.5)", "cast(total as integer) > 1", "total::decimal(10, 2) > 1", "try_cast(country as int) = 1",
    "ordered_at >= '2024-01-01'", "ordered_at >= date '2024-01-01'", "ordered_at < timestamp '2024-01-01 10:00'",
    "date_trunc('month', ordered_at) = '2024-02-01'", "extract(year from ordered_at) = 2024", "year(ordered_at) = 2024",
    "date_part('dow', ordered_at) = 1", "ordered_at >= current_date - interval 30 day",
    "ordered_at >= now() - interval '7 days'", "strftime(ordered_at, '%Y') = '2024'",
    "case when country = 'US' then true else false end", "orders.country = 'US'",
    "metric_time__month >= '2024-01-01'", "country = 'it''s'", "true", "country is distinct from channel",
    "channel like 'a\\_%' escape '\\'", "(country, channel) in (('US', 'web'))", "greatest(total, 1) > 1",
]


@pytest.mark.parametrize("text", ALLOWED)
def test_conditions_over_dimensions_pass_unchanged(text):
    tree = parse_filter(text, resolve)
    assert isinstance(tree, exp.Expression)
    assert parse_filter(tree.sql("duckdb"), resolve).sql("duckdb") == tree.sql("duckdb")  # it renders as it parsed


REFUSED = [
    ("read_csv('/etc/passwd') is not null", "read_csv", "42501"),
    ("read_text('/proc/self/environ') is not null", "read_text", "42501"),
    ("read_parquet('https://example.com/x.parquet') is not null", "read_parquet", "42501"),
    ("read_json_auto('x.json') is not null", "read_json_auto", "42501"),
    ("glob('/etc/*') is not null", "glob", "42501"),
    ("getenv('HOME') = 'x'", "getenv", "42501"),
    ("current_setting('threads') = 1", "current_setting", "42501"),
    ("duckdb_settings() is not null", "duckdb_settings", "42501"),
    ("pragma_database_list() is not null", "pragma_database_list", "42501"),
    ("version() = 'x'", "version", "42501"),
    ("current_user = 'x'", "current_user", "42501"),
    ("query('select 1') is null", "query", "42501"),
    ("country = (select content from read_text('/etc/passwd'))", "subquery", "42501"),
    ("exists (select 1)", "subquery", "42501"),
    ("country in (select table_name from information_schema.tables)", "subquery", "42501"),
    ("select 1", "subquery", "42501"),
    ("information_schema.tables.table_name = 'x'", "information_schema", "42501"),
    ("pg_catalog.pg_class.relname = 'x'", "pg_catalog", "42501"),
    ("duckdb_tables.table_name = 'x'", "duckdb_tables", "42501"),
    ("_phloem_builds.name = 'x'", "_phloem_builds", "42501"),
    ("raw.orders.total > 0", "raw", "42501"),
    ("raw.orders = 1", "raw", "42501"),
    ("main.x.y.z = 1", "main", "42501"),
    ("a.b.c = 1", "names a table or schema", "42P01"),
    ("install httpfs", "statement", "42501"),
    ("drop table phloem.orders", "statement", "42501"),
    ("pragma version", "statement", "42501"),
    ("1=1; drop table phloem.orders", "`;`", "42601"),
    ("country = 'US' -- ' or 1=1", "comments", "42601"),
    ("country = /* */ 'US'", "comments", "42601"),
    ("'", "quote", "42601"),
    ("country = 'US", "quote", "42601"),
    ("country = ", "does not parse", "42601"),
    ("country = $1", "parameter", "42601"),
    ("country = ?", "parameter", "42601"),
    ("country = :name", "parameter", "42601"),
    ("sum(total) > 1", "aggregate `sum`", "42803"),
    ("count(*) > 1", "aggregate", "42803"),
    ("row_number() over () = 1", "window", "42P20"),
    ("*", "`*`", "42601"),
    ("no_such_fn(country) = 1", "no_such_fn", "42883"),
    ("hash(country) = 1", "hash", "42883"),
    ("sleep_ms(1000) is null", "sleep_ms", "42501"),
    ("country = [1, 2]", "a list", "42601"),
    ("country['a'] = 1", "subscript", "42601"),
    ("cast(country as struct(a int)) is null", "cast", "42846"),
    ("country glob 'U*'", "GLOB", "42601"),
    ("1", "not a condition", "42804"),
    ("1 + 1", "not a condition", "42804"),
    ("", "empty", "42601"),
]


@pytest.mark.parametrize(("text", "named", "state"), REFUSED, ids=[r[0][:40] or "empty" for r in REFUSED])
def test_anything_else_is_refused_naming_it(text, named, state):
    with pytest.raises(FilterError) as caught:
        parse_filter(text, resolve)
    e = caught.value
    assert isinstance(e, QueryError) and named in e.message and e.suggestion, e
    assert e.sqlstate == state, e
    text_out = str(e)
    for leak in ("sqlglot", "<class", "Expression", "/etc/passwd", "/proc/self", "Traceback"):
        assert leak not in text_out, text_out


def test_an_unknown_dimension_is_the_models_own_error():
    with pytest.raises(QueryError, match="unknown dimension `passwd`"):
        parse_filter("passwd = 'x'", resolve)


def test_nesting_and_length_are_bounded_without_exhausting_the_stack():
    for text in ["(" * 5000 + "country = 'US'" + ")" * 5000, "not " * 2400 + "country = 'US'",
                 "(" * 100 + "country = 'US'" + ")" * 100]:
        with pytest.raises(FilterError) as caught:
            parse_filter(text, resolve)
        assert caught.value.sqlstate in ("54000", "54001"), caught.value
        assert "nests too deeply" in caught.value.message or "characters long" in caught.value.message
    assert f"limit is {MAX_LENGTH:,}" in str(pytest.raises(FilterError, parse_filter, "x" * (MAX_LENGTH + 1)).value)
    deep: exp.Expression = exp.column("country").eq("US")
    for _ in range(5000):  # a tree no text made (a door's own): checked iteratively
        deep = exp.Not(this=deep)
    with pytest.raises(FilterError, match=f"more than {MAX_DEPTH} levels"):
        check_filter(deep)


def test_long_in_lists_and_chains_of_and_are_fine():
    parse_filter("country in (" + ", ".join(f"'c{i}'" for i in range(1000)) + ")", resolve)
    parse_filter(" and ".join(f"channel <> 'c{i}'" for i in range(400)), resolve).sql("duckdb")


def test_built_trees_are_checked_too():
    """Doors that build trees (GraphQL `contains`, semantic SQL's WHERE) pass the same check."""
    check_filter(exp.GT(this=exp.StrPosition(this=exp.column("country"), substr=exp.convert("x")),
                        expression=exp.Literal.number(0)))
    with pytest.raises(FilterError, match="read_text"):
        check_filter(exp.column("country").eq(exp.func("read_text", exp.convert("/etc/passwd"))))
    with pytest.raises(FilterError, match="subquery"):
        check_filter(exp.column("country").isin(query=exp.select("1")))
