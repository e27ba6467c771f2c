"""AQL parser: the 66 dbt-aql reference cases, hand-checked translations, and one test per error kind."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
import yaml

from semantic.activity.aql import parse_aql
from semantic.errors import AqlSyntaxError

PACK = Path(__file__).resolve().parents[1] / "data" / "activity_schema"
REFERENCE = yaml.safe_load((PACK / "cases.yaml").read_text())
CASES = {case["name"]: case for case in REFERENCE["cases"]}
DATASET_COLUMN = REFERENCE["dataset_columns"][0]

# The pack spells relationships the dbt-aql way; the parser emits MODEL.md names.
PACK_NAME = {
    "aggregate_all_ever": "aggregate_all",
    "aggregate_in_between": "aggregate_between",
    "first_in_between": "first_between",
    "last_in_between": "last_between",
    "nth_in_between": "nth_between",
}


def output_columns(dataset: dict) -> list[str]:
    names = [c if isinstance(c, str) else c["name"] for c in dataset.get("columns", [])]
    names += [c["name"] for item in dataset.get("append", []) for c in item["columns"]]
    return names + dataset.get("include", [])


# -- the reference pack ------------------------------------------------------------------


def test_pack_has_all_cases():
    assert len(CASES) == 66


@pytest.mark.parametrize("name", sorted(CASES))
def test_reference_case(name):
    case = CASES[name]
    dataset, positions = parse_aql(case["aql"], source=name)
    assert dataset["stream"] == "customer_stream"
    assert dataset["primary"]["select"] == case["selector"]
    assert dataset["primary"].get("nth") == case.get("nth")
    # `include` counts as aggregate_after in the pack; it lists each relationship once, in order.
    used = [PACK_NAME.get(a["relationship"], a["relationship"]) for a in dataset.get("append", [])]
    used += ["aggregate_after"] * len(dataset.get("include", []))
    assert list(dict.fromkeys(used)) == case["relationship"]
    for item in dataset.get("append", []):
        assert ("nth" in item) == item["relationship"].startswith("nth_")
    # Every expected CSV header holds exactly the output columns (one file puts `include` first).
    with open(PACK / "expected" / case["expected"], newline="") as f:
        header = next(csv.reader(f))
    assert sorted(output_columns(dataset)) == sorted(header)
    assert positions[("stream",)] == 1 and positions[("primary",)] == 2


def test_dataset_column():
    dataset, positions = parse_aql(DATASET_COLUMN["aql"])
    assert dataset == {
        "stream": "customer_stream",
        "append": [
            {
                "activity": "bought_something",
                "relationship": "aggregate_after",
                "columns": [
                    {
                        "name": "bought_something_aggregate_after_sum_total_items_purchased",
                        "agg": "sum",
                        "expr": "total_items_purchased",
                    }
                ],
            }
        ],
    }
    assert positions[("append", 0)] == 2 and positions[("append", 0, "columns", 0)] == 3


PRIMARY_COLUMNS = [
    "activity_id",
    {"name": "customer_id", "expr": "entity_uuid"},
    {"name": "first_visited_google_at", "expr": "ts"},
]
GOOGLE = {
    "activity": "visited_page",
    "select": "first",
    "filter": ["feature_json.referrer_url = 'google.com'"],
}


def test_filtered_case_exactly():
    dataset, positions = parse_aql(CASES["aql_syntax__filtered"]["aql"])
    assert dataset == {
        "stream": "customer_stream",
        "primary": GOOGLE,
        "columns": PRIMARY_COLUMNS,
        "append": [
            {
                "activity": "visited_page",
                "relationship": "first_ever",
                "filter": ["feature_json.referrer_url = 'yahoo.com'"],
                "columns": [{"name": "first_visited_yahoo_at", "expr": "ts"}],
            },
            {
                "activity": "bought_something",
                "relationship": "aggregate_all_ever",
                "filter": [
                    "nullif(feature_json.total_sales, '')::int > 100",
                    "nullif(feature_json.total_items_purchased, '')::int > 3",
                ],
                "columns": [{"name": "total_large_purchases_after", "agg": "count", "expr": "activity_id"}],
            },
        ],
        "include": ["total_items_purchased_after"],
    }
    assert positions == {
        ("stream",): 1,
        ("primary",): 2,
        ("primary", "activity"): 2,
        ("columns", 0): 3,
        ("columns", 1): 4,
        ("columns", 2): 5,
        ("primary", "filter", 0): 6,
        ("append", 0): 8,
        ("append", 0, "activity"): 8,
        ("append", 0, "columns", 0): 9,
        ("append", 0, "filter", 0): 10,
        ("append", 1): 12,
        ("append", 1, "activity"): 12,
        ("append", 1, "columns", 0): 13,
        ("append", 1, "filter", 0): 14,
        ("append", 1, "filter", 1): 15,
        ("include", 0): 18,
    }


def test_joined_case_exactly():
    dataset, _ = parse_aql(CASES["aql_syntax__joined"]["aql"])
    assert dataset == {
        "stream": "customer_stream",
        "primary": GOOGLE,
        "columns": PRIMARY_COLUMNS,
        "append": [
            {
                "activity": "bought_something",
                "relationship": "aggregate_after",
                "join": ["nullif(joined.total_sales, '')::int > 100"],
                "columns": [{"name": "total_large_purchases_after", "agg": "count", "expr": "activity_id"}],
            }
        ],
        "include": ["total_items_purchased_after"],
    }


SIGNED_UP_COLUMNS = [
    "activity_id",
    {"name": "customer_id", "expr": "entity_uuid"},
    {"name": "signed_up_at", "expr": "ts"},
]


def test_nth_case_exactly():
    dataset, _ = parse_aql(CASES["primary__nth__select_nth_append_nth_between"]["aql"])
    assert dataset == {
        "stream": "customer_stream",
        "primary": {"activity": "signed_up", "select": "nth", "nth": 1},
        "columns": SIGNED_UP_COLUMNS,
        "append": [
            {
                "activity": "visited_page",
                "relationship": "nth_in_between",
                "nth": 2,
                "columns": [
                    {"name": "first_between_referrer_url", "expr": "referrer_url"},
                    {"name": "second_pageview_at", "expr": "ts"},
                ],
            }
        ],
    }


def test_aggregate_after_case_exactly():
    dataset, _ = parse_aql(CASES["primary__all__select_all_aggregate_after"]["aql"])
    assert dataset == {
        "stream": "customer_stream",
        "primary": {"activity": "signed_up", "select": "all"},
        "columns": SIGNED_UP_COLUMNS,
        "append": [
            {
                "activity": "visited_page",
                "relationship": "aggregate_after",
                "columns": [{"name": "pages_visited_after", "agg": "count", "expr": "activity_id"}],
            },
            {
                "activity": "bought_something",
                "relationship": "aggregate_after",
                "columns": [
                    {"name": "total_sales_after", "agg": "sum", "expr": "total_sales"},
                    {"name": "total_purchases_after", "agg": "count", "expr": "activity_id"},
                ],
            },
        ],
        "include": ["total_items_purchased_after"],
    }


# -- grammar details -----------------------------------------------------------------------


def test_default_aliases_prefix_case_and_comments():
    dataset, _ = parse_aql(
        """USING customer_stream  -- keywords are case-insensitive
        Select First customer__visited_page(ts, activity_id AS activity_id)
        APPEND nth(3) Between customer__bought_something(ts)
        append last before signed_up (ts) -- trailing comment
        Aggregate Between bought_something (SUM(total_sales), Count_Distinct(activity_id))
        aggregate all bought_something (median(total_sales))
        """
    )
    assert dataset["primary"] == {"activity": "visited_page", "select": "first"}
    assert dataset["columns"] == ["ts", "activity_id"]
    appended = [
        (a["activity"], a["relationship"], [c["name"] for c in a["columns"]]) for a in dataset["append"]
    ]
    assert appended == [
        ("bought_something", "nth_in_between", ["bought_something_append_nth3_between_ts"]),
        ("signed_up", "last_before", ["signed_up_append_last_before_ts"]),
        (
            "bought_something",
            "aggregate_in_between",
            [
                "bought_something_aggregate_between_sum_total_sales",
                "bought_something_aggregate_between_count_distinct_activity_id",
            ],
        ),
        ("bought_something", "aggregate_all_ever", ["bought_something_aggregate_all_median_total_sales"]),
    ]
    assert dataset["append"][2]["columns"][1]["agg"] == "count_distinct"


def test_raw_sql_is_captured_whole():
    text = """using s
    select all a (ts
        filter x = 'it''s ) filter join' and "odd ) col" > 1   -- a comment ) filter
        filter coalesce(nullif(y, ''), ')') in ('a', 'b')
    )
    append first after b (ts as b_at join joined.k = (select max(k) from t where z = 'join')
        filter
          f(1)
          > 2)
    """
    dataset, positions = parse_aql(text)
    assert dataset["primary"]["filter"] == [
        """x = 'it''s ) filter join' and "odd ) col" > 1""",
        "coalesce(nullif(y, ''), ')') in ('a', 'b')",
    ]
    assert dataset["append"][0]["join"] == ["joined.k = (select max(k) from t where z = 'join')"]
    assert dataset["append"][0]["filter"] == ["f(1)\n          > 2"]
    assert positions[("primary", "filter", 1)] == 4
    assert positions[("append", 0, "filter", 0)] == 8


def test_include_lists_several_columns():
    dataset, positions = parse_aql("using s select all a (ts) include (x, y) include (z)")
    assert dataset["include"] == ["x", "y", "z"]
    assert positions[("include", 2)] == 1


# -- errors: exact line, column, message and suggestion ------------------------------------

HEAD = "using s\nselect all a (ts)\n"


def error(text: str) -> AqlSyntaxError:
    with pytest.raises(AqlSyntaxError) as info:
        parse_aql(text, source="q.aql")
    return info.value


def check(text, line, column, message, suggestion=""):
    err = error(text)
    assert (err.line, err.column, err.message, err.suggestion) == (line, column, message, suggestion)
    assert str(err).startswith(f"q.aql:{line}:{column}: ")


def test_missing_using():
    check("select all a (ts)", 1, 1, "expected `using <stream>`, found `select`")
    check(
        "\n  usng s select all a (ts)",
        2,
        3,
        "expected `using <stream>`, found `usng`",
        "did you mean `using`?",
    )
    check("using", 1, 6, "expected a stream name after `using`, found end of query")


def test_unknown_verb():
    check(
        HEAD + "apend first ever b (ts)",
        3,
        1,
        "expected `append`, `aggregate`, `include` or end of query, found `apend`",
        "did you mean `append`?",
    )
    check(
        "using s\n  selct all a (ts)",
        2,
        3,
        "expected `select`, `append`, `aggregate` or `include`, found `selct`",
        "did you mean `select`?",
    )


def test_unknown_selector():
    check(
        "using s\nselect frist a (ts)",
        2,
        8,
        "expected `all`, `first`, `last` or `nth(n)` after `select`, found `frist`",
        "did you mean `first`?",
    )
    check(
        HEAD + "append lats ever b (ts)",
        3,
        8,
        "expected `first`, `last` or `nth(n)` after `append`, found `lats`",
        "did you mean `last`?",
    )


def test_append_all_is_refused():
    check(
        HEAD + "append all ever b (ts)",
        3,
        8,
        "append needs first, last or nth(n); `all` is only for select and aggregate",
    )


def test_nth_needs_a_positive_integer():
    check("using s\nselect nth(x) a (ts)", 2, 12, "expected a positive integer in `nth(n)`, found `x`")
    check(HEAD + "append nth(0) ever b (ts)", 3, 12, "expected a positive integer in `nth(n)`, found `0`")
    check("using s\nselect nth 2 a (ts)", 2, 12, "expected `(` after `nth`, found `2`")
    check("using s\nselect nth(2 a (ts)", 2, 14, "expected `)` after `nth(2`, found `a`")


def test_unknown_time_window():
    check(
        HEAD + "append first befor b (ts)",
        3,
        14,
        "expected `ever`, `before`, `after` or `between` after `append first`, found `befor`",
        "did you mean `before`?",
    )
    check(
        HEAD + "aggregate ever b (count(ts))",
        3,
        11,
        "expected `all`, `before`, `after` or `between` after `aggregate`, found `ever`",
        "did you mean `all`?",
    )


def test_missing_open_paren():
    check(HEAD + "append first ever b ts", 3, 21, "expected `(` after activity `b`, found `ts`")
    check(HEAD + "include x", 3, 9, "expected `(` after `include`, found `x`")


def test_unclosed_paren_points_at_it():
    check(HEAD + "append first ever b (ts", 3, 21, "unclosed `(`: expected `)` before end of query")
    check(
        HEAD + "append first ever b (ts\n  filter f(x = 1\n",
        3,
        21,
        "unclosed `(`: expected `)` before end of query",
    )
    check(
        HEAD + "append first ever b (ts as b_at\nappend first ever c (ts)",
        4,
        1,
        "expected `,`, `filter`, `join` or `)`, found `append`",
    )


def test_unclosed_string():
    check(
        HEAD + "append first ever b (ts\n  filter x = 'it''s\n)",
        4,
        14,
        "unclosed string: expected a closing `'`, found end of query",
    )


def test_empty_column_list():
    check(
        HEAD + "append first ever b ()",
        3,
        22,
        "expected at least one column (the column list is empty), found `)`",
    )
    check(
        "using s\nselect all a (filter x = 1)",
        2,
        15,
        "expected at least one column (the column list is empty), found `filter`",
    )


def test_unknown_aggregate():
    err = error(HEAD + "aggregate all b (summ(x))")
    assert (err.line, err.column, err.suggestion) == (3, 18, "did you mean `sum`?")
    assert err.message.startswith("unknown aggregate function `summ`; expected one of `count`, ")


def test_aggregate_column_needs_fn_of_col():
    check(
        HEAD + "aggregate all b (total_sales as t)",
        3,
        18,
        "expected an aggregate such as `sum(total_sales)`, found bare column `total_sales`",
    )
    check(HEAD + "aggregate all b (sum total)", 3, 22, "expected `(` after `sum`, found `total`")
    check(HEAD + "aggregate all b (sum())", 3, 22, "expected a column inside `sum(`, found `)`")
    check(HEAD + "aggregate all b (sum(x y))", 3, 24, "expected `)` after `sum(x`, found `y`")


def test_as_without_alias():
    check(HEAD + "append first ever b (ts as)", 3, 27, "expected an alias after `as`, found `)`")
    check("using s\nselect all a (ts as filter x)", 2, 21, "expected an alias after `as`, found `filter`")


def test_trailing_garbage():
    check(HEAD + ") x", 3, 1, "expected `append`, `aggregate`, `include` or end of query, found `)`")
    check(HEAD + "include (a b)", 3, 12, "expected `,` or `)`, found `b`")


def test_two_selects():
    check(HEAD + "select all b (ts)", 3, 1, "expected one `select` per query, found a second `select`")


def test_missing_select():
    form = "without `select` the query is a dataset column: one `append` or `aggregate` with one column"
    check("using s\n", 1, 8, "expected `select`, `append` or `aggregate`, found end of query")
    check("using s\naggregate all b (sum(x), count(y))", 2, 26, f"expected one column; {form}")
    check(
        "using s\nappend first ever b (ts)\nappend last ever b (ts)",
        3,
        1,
        f"expected `select` before `append`; {form}",
    )
    check(
        "using s\naggregate all b (sum(x))\ninclude (y)", 3, 1, f"expected `select` before `include`; {form}"
    )
    check(
        "using s\naggregate all b (sum(x))\nselect all a (ts)",
        3,
        1,
        "expected `select` right after `using <stream>`, found it after other clauses",
    )


def test_join_only_on_joined_activities_and_sql_not_empty():
    check(
        "using s\nselect all a (ts join x = 1)",
        2,
        18,
        "expected `filter` or `)`, found `join`: only `append` and `aggregate` take `join`",
    )
    check(
        HEAD + "append first ever b (ts filter )", 3, 32, "expected a SQL condition after `filter`, found `)`"
    )


# -- dbt-aql's Jinja helpers in filter and join clauses ----------------------------------------

def upstream(aql: str) -> str:
    """A pack case spelled as upstream wrote it (the pack's NOTICE: its Jinja was rewritten to `joined.x`)."""
    aql = re.sub(r"\bjoined\.(\w+)", r"{{dbt_aql.json_extract('{joined}.{feature_json}', '\1')}}", aql)
    return re.sub(r"\bfeature_json\.(\w+)", r"{{dbt_aql.json_extract('{feature_json}', '\1')}}", aql)


@pytest.mark.parametrize("name", ["aql_syntax__filtered", "aql_syntax__joined"])
def test_upstream_jinja_parses_as_the_pack_spelling(name):
    text = upstream(CASES[name]["aql"])
    assert "{{dbt_aql.json_extract(" in text
    assert parse_aql(text) == parse_aql(CASES[name]["aql"])


@pytest.mark.parametrize("jinja", [
    "{{dbt_aql.json_extract('{joined}.{feature_json}', 'total')}}",
    '{{ dbt_aql.json_extract("{joined}.{feature_json}", "total") }}',
    "{{-  dbt_aql . json_extract (\n  '{ joined }.{ feature_json }' ,\t'total'  )  -}}",
    "{{dbt_aql.json_extract('{joined}.{feature_json}', \"total\")}}",
])
def test_jinja_spacing_and_quotes(jinja):
    dataset, _ = parse_aql(f"using s\nselect all a (ts)\naggregate all b (count(activity_id) as n join {jinja} > 1)")
    assert dataset["append"][0]["join"] == ["joined.total > 1"]


def test_jinja_for_the_primary_row_and_strings_left_alone():
    text = ("using s\nselect all a (ts)\nappend first after b (ts as b_at\n"
            "  join {{dbt_aql.json_extract('{primary}.{feature_json}', 'k')}} = joined.k and joined.note <> '{{x}}')")
    dataset, positions = parse_aql(text)
    assert dataset["append"][0]["join"] == ["primary.k = joined.k and joined.note <> '{{x}}'"]
    assert positions[("append", 0, "join", 0)] == 4


@pytest.mark.parametrize(("sql", "column", "message", "suggestion"), [
    ("filter {{ ref('orders') }} > 1", 10,
     "unsupported Jinja in `filter`: `{{ ref('orders') }}` — only `{{dbt_aql.json_extract('{feature_json}', 'x')}}` "
     "is understood", "write `feature_json.x`"),
    ("filter {{dbt_aql.json_extract('{joined}.{feature_json}', 'k')}} > 1", 10,
     "unsupported Jinja in `filter`: `joined` features in a `filter` clause", "write `feature_json.x`"),
    ("filter {{dbt_aql.json_extract('{feature_json}', 'k') > 1", 10,
     "unclosed `{{`: expected `}}` in the same condition", ""),
])
def test_other_jinja_is_a_clear_error(sql, column, message, suggestion):
    with pytest.raises(AqlSyntaxError) as info:
        parse_aql(f"using s\nselect all a (ts\n  {sql})", source="models/x.aql")
    e = info.value
    assert (e.source, e.line, e.column) == ("models/x.aql", 3, column)
    assert message in e.message
    assert suggestion in e.suggestion


def test_jinja_in_join_names_both_forms():
    with pytest.raises(AqlSyntaxError) as info:
        parse_aql("using s\nselect all a (ts)\naggregate all b (count(activity_id) as n\n"
                  "  join {{ dbt_aql.json_extract('{feature_json}', 'k') }} > 1)")
    e = info.value
    assert (e.line, e.column) == (4, 8)
    assert "`{{dbt_aql.json_extract('{joined}.{feature_json}', 'x')}}` or " \
           "`{{dbt_aql.json_extract('{primary}.{feature_json}', 'x')}}` are understood" in e.message
    assert e.suggestion.startswith("write `joined.x` or `primary.x`")
