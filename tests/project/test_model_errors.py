"""Model-file mistakes: each one is reported with its file, line, key and a fix, all at once."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pytest

from semantic import Project
from semantic.errors import ModelError, Problem
from semantic.project.load import find_project, load_project
from semantic.project.verify import validate_project

SETTINGS = "name: shop\n"

STREAMS = """\
streams:
  - name: customer_stream
    entity: customer
    activities:
      - name: placed_order
        sql: |
          select order_id, customer_id as customer, ordered_at as ts, channel, total
          from raw.orders
        id: order_id
        features: [order_id, channel, total]
      - name: signed_up
        sql: select customer_id as customer, created_at as ts, source from raw.customers
        features: [source]
      - name: shipped_order
        sql: select order_id, customer_id as customer, shipped_at as ts, cost from raw.shipments
        features: [order_id, cost]
"""

DATASETS = """\
datasets:
  - name: orders
    stream: customer_stream
    primary:
      activity: placed_order
      select: all
    columns: [order_id, channel, total, {name: ordered_at, expr: ts}, customer]
    append:
      - {activity: signed_up, relationship: first_ever, columns: [{name: signed_up_at, expr: ts}]}
      - activity: shipped_order
        relationship: aggregate_all_ever
        join_keys: [order_id]
        columns: [{name: shipping_cost, agg: sum, expr: cost}]
"""

VIEWS = """\
views:
  - name: orders
    dataset: orders
    primary_key: order_id
    time: ordered_at
    dimensions: [channel]
    measures:
      - {name: revenue, agg: sum, expr: total}
      - {name: order_count, agg: count}
      - {name: shipping, agg: sum, expr: shipping_cost}
"""

METRICS = """\
metrics:
  - {name: revenue, measure: orders.revenue}
  - {name: orders, measure: orders.order_count}
  - {name: shipping, measure: orders.shipping}
  - {name: aov, expr: revenue / orders}
  - {name: revenue_7d, cumulative: {metric: revenue, window: 7 days}}
"""

BASE = {
    "phloem.yml": SETTINGS,
    "models/streams.yml": STREAMS,
    "models/datasets.yml": DATASETS,
    "models/views.yml": VIEWS,
    "models/metrics.yml": METRICS,
}


def write(root: Path, files: dict[str, str]) -> Path:
    """Write {relative path: text} under root (texts are dedented)."""
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def edit(base: str, old: str, new: str) -> str:
    """`base` with the one occurrence of `old` replaced (fails loudly if the fixture drifted)."""
    assert base.count(old) == 1, f"{old!r} occurs {base.count(old)} times"
    return base.replace(old, new)


def line(text: str, needle: str) -> int:
    """The 1-based line of the only line of `text` containing `needle`."""
    hits = [i for i, row in enumerate(textwrap.dedent(text).splitlines(), 1) if needle in row]
    assert len(hits) == 1, f"{needle!r} is on lines {hits}"
    return hits[0]


def problems(tmp_path: Path, **changes: str) -> list[Problem]:
    """Load the base project with some files replaced (keyword: file stem under models/, or `settings`)."""
    files = dict(BASE)
    for stem, text in changes.items():
        files["phloem.yml" if stem == "settings" else f"models/{stem}.yml"] = text
    write(tmp_path, files)
    with pytest.raises(ModelError) as info:
        load_project(tmp_path)
    return info.value.problems


def only(found: list[Problem]) -> Problem:
    assert len(found) == 1, "\n".join(map(str, found))
    return found[0]


def check(p: Problem, file: str, line_no: int, key: str, message: str, suggestion: str) -> None:
    """Every part of a problem: exact file and line, key contains `key`, message and fix contain the texts."""
    assert (p.file, p.line) == (file, line_no), str(p)
    assert key in p.key, str(p)
    assert message in p.message, str(p)
    assert suggestion in p.suggestion, str(p)
    assert p.suggestion, f"no suggestion: {p}"


# -- the base project is valid -----------------------------------------------------------------


def test_valid_project_loads_and_version_tracks_files(tmp_path):
    write(tmp_path, BASE)
    model = load_project(tmp_path)
    assert set(model.datasets) == {"orders"}
    assert set(model.metrics) == {"revenue", "orders", "shipping", "aov", "revenue_7d"}
    assert model.origin("metrics", "aov").file == "models/metrics.yml"
    assert model.origin("metrics", "aov").line() == line(METRICS, "name: aov")
    assert load_project(tmp_path).version == model.version  # same files, same version
    write(tmp_path, {"models/metrics.yml": METRICS + "  - {name: orders_7d, cumulative: {metric: orders}}\n"})
    changed = load_project(tmp_path)
    assert changed.version != model.version
    assert "orders_7d" in changed.metrics
    write(tmp_path, {"models/metrics.yml": METRICS})
    assert load_project(tmp_path).version == model.version


def test_problem_reads_file_line_key_message_suggestion(tmp_path):
    text = edit(METRICS, "revenue / orders", "revnue / orders")
    p = only(problems(tmp_path, metrics=text))
    assert p.line == 5
    assert str(p) == "models/metrics.yml:5 [aov.expr]: unknown metric `revnue` — did you mean `revenue`?"


# -- YAML syntax ---------------------------------------------------------------------------------


def test_unclosed_bracket_points_at_the_opening_line(tmp_path):
    text = edit(STREAMS, "features: [order_id, channel, total]", "features: [order_id, channel, total")
    p = only(problems(tmp_path, streams=text))
    check(p, "models/streams.yml", line(text, "[order_id, channel, total"), "features", "never closed", "`]`")


def test_tab_indentation(tmp_path):
    text = edit(STREAMS, "    entity: customer", "\tentity: customer")
    p = only(problems(tmp_path, streams=text))
    check(p, "models/streams.yml", line(text, "\tentity"), "entity", "tab", "spaces")


def test_duplicate_yaml_key(tmp_path):
    text = edit(VIEWS, "    time: ordered_at\n", "    time: ordered_at\n    time: signed_up_at\n")
    p = only(problems(tmp_path, views=text))
    check(
        p,
        "models/views.yml",
        line(text, "time: signed_up_at"),
        "time",
        "duplicate key `time`",
        "once per mapping",
    )
    assert f"line {line(text, 'time: ordered_at')}" in p.message  # where the first one is


def test_phloem_yml_syntax_error(tmp_path):
    p = only(problems(tmp_path, settings="name: shop\nwarehouse: {engine: duckdb\n"))
    check(p, "phloem.yml", 2, "warehouse", "never closed", "`}`")


# -- structure: kinds, keys, names -------------------------------------------------------------


def test_unknown_top_level_kind(tmp_path):
    text = edit(STREAMS, "streams:", "stream:")
    p = only(problems(tmp_path, streams=text))
    check(p, "models/streams.yml", 1, "stream", "unknown top-level key `stream`", "did you mean `streams`?")


def test_unknown_key_in_activity(tmp_path):
    text = edit(STREAMS, "features: [source]", "feautres: [source]")
    p = only(problems(tmp_path, streams=text))
    check(
        p,
        "models/streams.yml",
        line(text, "feautres"),
        "customer_stream.activities.signed_up.feautres",
        "unknown key `feautres`",
        "did you mean `features`?",
    )


def test_unknown_setting(tmp_path):
    p = only(problems(tmp_path, settings="name: shop\nwarehose:\n  engine: duckdb\n"))
    check(p, "phloem.yml", 2, "warehose", "unknown key `warehose`", "did you mean `warehouse`?")


def test_duplicate_dataset_across_files_names_both_places(tmp_path):
    p = only(problems(tmp_path, more_datasets=DATASETS))
    check(
        p,
        "models/more_datasets.yml",
        line(DATASETS, "name: orders"),
        "datasets.orders",
        "duplicate dataset name `orders`",
        "rename",
    )
    assert f"models/datasets.yml:{line(DATASETS, 'name: orders')}" in p.message


def test_camel_case_name(tmp_path):
    text = edit(STREAMS, "name: placed_order", "name: PlacedOrder")
    p = only(problems(tmp_path, streams=text))
    check(
        p,
        "models/streams.yml",
        line(text, "PlacedOrder"),
        "activities",
        "`PlacedOrder` is not a valid name",
        "did you mean `placed_order`?",
    )


def test_dataset_over_unknown_stream(tmp_path):
    text = edit(DATASETS, "stream: customer_stream", "stream: customers_stream")
    p = only(problems(tmp_path, datasets=text))
    check(
        p,
        "models/datasets.yml",
        line(text, "customers_stream"),
        "orders.stream",
        "unknown stream `customers_stream`",
        "did you mean `customer_stream`?",
    )


def test_unknown_primary_activity(tmp_path):
    text = edit(DATASETS, "activity: placed_order", "activity: placed_orders")
    p = only(problems(tmp_path, datasets=text))
    check(
        p,
        "models/datasets.yml",
        line(text, "placed_orders"),
        "orders.primary.activity",
        "unknown activity `placed_orders` of stream `customer_stream`",
        "did you mean `placed_order`?",
    )


def test_unknown_appended_activity(tmp_path):
    text = edit(DATASETS, "activity: shipped_order", "activity: shiped_order")
    p = only(problems(tmp_path, datasets=text))
    check(
        p,
        "models/datasets.yml",
        line(text, "shiped_order"),
        "shiped_order",
        "`shiped_order`",
        "did you mean `shipped_order`?",
    )


def test_unknown_relationship(tmp_path):
    text = edit(DATASETS, "relationship: first_ever", "relationship: first_befor")
    p = only(problems(tmp_path, datasets=text))
    check(
        p,
        "models/datasets.yml",
        line(text, "first_befor"),
        "relationship",
        "`first_befor` is not one of",
        "did you mean `first_before`?",
    )


def test_select_nth_without_nth(tmp_path):
    text = edit(DATASETS, "select: all", "select: nth")
    p = only(problems(tmp_path, datasets=text))
    check(
        p,
        "models/datasets.yml",
        line(text, "select: nth"),
        "orders.primary.select",
        "`select: nth` needs `nth",
        "add `nth: 2`",
    )


def test_nth_relationship_without_nth(tmp_path):
    text = edit(DATASETS, "relationship: first_ever", "relationship: nth_ever")
    p = only(problems(tmp_path, datasets=text))
    check(
        p,
        "models/datasets.yml",
        line(text, "nth_ever"),
        "orders.append.signed_up.relationship",
        "`relationship: nth_ever` needs `nth",
        "add `nth:",
    )


def test_aggregate_column_without_agg(tmp_path):
    text = edit(DATASETS, "{name: shipping_cost, agg: sum, expr: cost}", "{name: shipping_cost, expr: cost}")
    p = only(problems(tmp_path, datasets=text))
    check(
        p,
        "models/datasets.yml",
        line(text, "{name: shipping_cost"),
        "shipping_cost",
        "aggregate relationship needs `agg:`",
        "`agg: sum`",
    )


def test_agg_on_non_aggregate_relationship(tmp_path):
    text = edit(DATASETS, "{name: signed_up_at, expr: ts}", "{name: signed_up_at, agg: max, expr: ts}")
    p = only(problems(tmp_path, datasets=text))
    check(
        p,
        "models/datasets.yml",
        line(text, "signed_up_at"),
        "signed_up_at.agg",
        "`agg` only applies to aggregate_* relationships",
        "remove `agg:`",
    )


# -- streams against their SQL -----------------------------------------------------------------


def test_feature_not_produced_by_sql(tmp_path):
    text = edit(
        STREAMS,
        "features: [order_id, channel, total]",
        "features:\n          - order_id\n          - chanel\n          - total",
    )
    p = only(problems(tmp_path, streams=text))
    check(
        p,
        "models/streams.yml",
        line(text, "- chanel"),
        "placed_order.features.chanel",
        "`chanel` is not produced by activity `placed_order`'s SQL",
        "did you mean `channel`?",
    )


def test_entity_not_produced_by_sql(tmp_path):
    text = edit(STREAMS, "select customer_id as customer, created_at", "select customer_id, created_at")
    p = only(problems(tmp_path, streams=text))
    check(
        p,
        "models/streams.yml",
        line(text, "select customer_id, created_at"),
        "signed_up.entity",
        "`customer` is not produced by activity `signed_up`'s SQL",
        "customer_id as customer",
    )


def test_activity_sql_does_not_parse(tmp_path):
    text = edit(STREAMS, "source from raw.customers", "source fromm raw.customers")
    p = only(problems(tmp_path, streams=text))
    check(p, "models/streams.yml", line(text, "fromm"), "signed_up.sql", "does not parse", "SELECT")


# -- dataset columns ---------------------------------------------------------------------------


def test_bare_column_not_a_feature(tmp_path):
    text = edit(DATASETS, "columns: [order_id, channel, total,", "columns: [order_id, chanel, total,")
    p = only(problems(tmp_path, datasets=text))
    check(
        p,
        "models/datasets.yml",
        line(text, "chanel"),
        "orders.columns.chanel",
        "`chanel` is not a column of activity `placed_order`",
        "did you mean `channel`?",
    )


def test_unknown_column_in_filter(tmp_path):
    text = edit(DATASETS, "      select: all\n", '      select: all\n      filter: "totl > 100"\n')
    p = only(problems(tmp_path, datasets=text))
    check(
        p,
        "models/datasets.yml",
        line(text, "totl"),
        "orders.primary.filter",
        "unknown column `totl`",
        "did you mean `total`?",
    )


def test_join_key_not_a_feature_of_one_side(tmp_path):
    text = edit(DATASETS, "join_keys: [order_id]", "join_keys: [{primary: order_id, joined: order}]")
    p = only(problems(tmp_path, datasets=text))
    check(
        p,
        "models/datasets.yml",
        line(text, "joined: order}"),
        "orders.append.shipped_order.join_keys",
        "unknown join key `order` of activity `shipped_order`",
        "did you mean `order_id`?",
    )


def test_duplicate_output_column(tmp_path):
    text = edit(DATASETS, "{name: signed_up_at, expr: ts}", "{name: ordered_at, expr: ts}")
    p = only(problems(tmp_path, datasets=text))
    check(
        p,
        "models/datasets.yml",
        line(text, "first_ever"),
        "orders.columns.ordered_at",
        "`ordered_at` appears more than once",
        "unique `name:`",
    )
    assert f"line {line(text, 'customer]')}" in p.message  # where the first one is


# -- views -------------------------------------------------------------------------------------


def test_view_over_unknown_dataset(tmp_path):
    text = edit(VIEWS, "dataset: orders", "dataset: order")
    p = only(problems(tmp_path, views=text))
    check(
        p,
        "models/views.yml",
        line(text, "dataset: order"),
        "orders.dataset",
        "unknown dataset `order`",
        "did you mean `orders`?",
    )


def test_percentile_without_p(tmp_path):
    text = edit(
        VIEWS, "{name: revenue, agg: sum, expr: total}", "{name: revenue, agg: percentile, expr: total}"
    )
    p = only(problems(tmp_path, views=text))
    check(
        p,
        "models/views.yml",
        line(text, "percentile"),
        "orders.measures.revenue",
        "`agg: percentile` needs `p:`",
        "p: 0.9",
    )


def test_view_time_not_in_dataset(tmp_path):
    text = edit(VIEWS, "time: ordered_at", "time: order_at")
    p = only(problems(tmp_path, views=text))
    check(
        p,
        "models/views.yml",
        line(text, "order_at"),
        "orders.time",
        "unknown column `order_at` of dataset `orders`",
        "did you mean `ordered_at`?",
    )


def test_measure_over_unknown_column(tmp_path):
    text = edit(VIEWS, "expr: shipping_cost", "expr: shiping_cost")
    p = only(problems(tmp_path, views=text))
    check(
        p,
        "models/views.yml",
        line(text, "shiping_cost"),
        "orders.measures.shipping",
        "unknown column `shiping_cost`",
        "did you mean `shipping_cost`?",
    )


# -- metrics -----------------------------------------------------------------------------------


def test_metric_over_unknown_measure(tmp_path):
    text = edit(METRICS, "measure: orders.shipping}", "measure: orders.shiping}")
    p = only(problems(tmp_path, metrics=text))
    check(
        p,
        "models/metrics.yml",
        line(text, "orders.shiping"),
        "shipping.measure",
        "unknown measure `orders.shiping`",
        "did you mean `orders.shipping`?",
    )


def test_metric_over_unqualified_measure_typo(tmp_path):
    text = edit(METRICS, "measure: orders.revenue}", "measure: revenu}")
    p = only(problems(tmp_path, metrics=text))
    check(
        p,
        "models/metrics.yml",
        line(text, "revenu}"),
        "revenue.measure",
        "unknown measure `revenu`",
        "did you mean `revenue`?",
    )


def test_measure_name_in_two_views_must_be_qualified(tmp_path):
    views = VIEWS + "  - {name: refunds, table: raw.refunds, measures: [{name: revenue, agg: sum}]}\n"
    text = edit(METRICS, "measure: orders.revenue}", "measure: revenue}")
    p = only(problems(tmp_path, views=views, metrics=text))
    check(
        p,
        "models/metrics.yml",
        line(text, "measure: revenue}"),
        "revenue.measure",
        "measure `revenue` is in several views: orders, refunds",
        "qualify it, e.g. `orders.revenue`",
    )


def test_derived_metric_with_unknown_metric(tmp_path):
    text = edit(METRICS, "revenue / orders", "revnue / orders")
    p = only(problems(tmp_path, metrics=text))
    check(
        p,
        "models/metrics.yml",
        line(text, "revnue"),
        "aov.expr",
        "unknown metric `revnue`",
        "did you mean `revenue`?",
    )


def test_metric_cycle_shows_the_loop(tmp_path):
    text = METRICS + "  - {name: a, expr: b + 1}\n  - {name: b, expr: a * 2}\n"
    p = only(problems(tmp_path, metrics=text))
    check(p, "models/metrics.yml", line(text, "name: b,"), "b", "metric cycle: a → b → a", "break the loop")


def test_metric_with_measure_and_expr(tmp_path):
    text = edit(
        METRICS,
        "{name: shipping, measure: orders.shipping}",
        "{name: shipping, measure: orders.shipping, expr: revenue - aov}",
    )
    p = only(problems(tmp_path, metrics=text))
    check(
        p,
        "models/metrics.yml",
        line(text, "name: shipping"),
        "shipping",
        "exactly one of `measure`, `expr`",
        "keep one of `measure`, `expr`",
    )


def test_bad_duration(tmp_path):
    text = edit(METRICS, "window: 7 days", "window: 7 dys")
    p = only(problems(tmp_path, metrics=text))
    check(
        p,
        "models/metrics.yml",
        line(text, "7 dys"),
        "revenue_7d.cumulative.window",
        "`7 dys` is not a duration",
        "did you mean `7 days`?",
    )


# -- AQL and the project folder ----------------------------------------------------------------


def test_aql_syntax_error_has_line_and_column(tmp_path):
    aql = "using customer_stream\nselect all placed_order (order_id, channel)\nappend frist ever signed_up (ts as signed_up_at)\n"
    write(tmp_path, {**BASE, "models/firsts.aql": aql})
    with pytest.raises(ModelError) as info:
        load_project(tmp_path)
    p = only(info.value.problems)
    check(p, "models/firsts.aql", 3, "firsts", "AQL syntax error at column 8", "did you mean `first`?")


def test_aql_dataset_with_unknown_activity(tmp_path):
    aql = "using customer_stream\nselect all placed_order (order_id)\nappend first ever signed_upp (ts as signed_up_at)\n"
    write(tmp_path, {**BASE, "models/firsts.aql": aql})
    with pytest.raises(ModelError) as info:
        load_project(tmp_path)
    p = only(info.value.problems)
    check(p, "models/firsts.aql", 3, "firsts.append.signed_upp", "`signed_upp`", "did you mean `signed_up`?")


def test_aql_with_unknown_jinja(tmp_path):
    aql = ("using customer_stream\nselect all placed_order (order_id)\naggregate all shipped_order (\n"
           "  sum(cost) as cost join {{ var('x') }} = joined.order_id)\n")
    write(tmp_path, {**BASE, "models/costs.aql": aql})
    with pytest.raises(ModelError) as info:
        load_project(tmp_path)
    p = only(info.value.problems)
    check(p, "models/costs.aql", 4, "costs", "AQL syntax error at column 26: unsupported Jinja in `join`: "
          "`{{ var('x') }}`", "write `joined.x` or `primary.x`")


def test_aql_with_dbt_aql_jinja_loads(tmp_path):
    aql = ("using customer_stream\nselect all placed_order (order_id)\naggregate all shipped_order (\n"
           "  sum(cost) as cost join {{dbt_aql.json_extract('{joined}.{feature_json}', 'order_id')}} = "
           "{{dbt_aql.json_extract('{primary}.{feature_json}', 'order_id')}})\n")
    write(tmp_path, {**BASE, "models/costs.aql": aql})
    assert load_project(tmp_path).datasets["costs"].append[0].join == ("joined.order_id = primary.order_id",)


def test_missing_phloem_yml(tmp_path):
    (tmp_path / "models").mkdir()
    with pytest.raises(ModelError) as info:
        find_project(tmp_path)
    p = only(info.value.problems)
    assert "no phloem.yml" in p.message and str(tmp_path.resolve()) in p.message
    assert "phloem init" in p.suggestion
    with pytest.raises(ModelError):
        load_project(tmp_path)


# -- every problem at once ---------------------------------------------------------------------


def test_four_mistakes_in_two_files_in_one_error(tmp_path):
    streams = edit(STREAMS, "features: [source]", "feautres: [source]")
    streams += (
        "  - name: WebStream\n    entity: visitor\n    activities:\n      - {name: viewed, sql: select 1}\n"
    )
    metrics = edit(METRICS, "revenue / orders", "revnue / orders")
    metrics = edit(metrics, "window: 7 days", "window: 7 dys")
    found = problems(tmp_path, streams=streams, metrics=metrics)
    assert len(found) == 4, "\n".join(map(str, found))
    where = {(p.file, p.line) for p in found}
    assert where == {
        ("models/streams.yml", line(streams, "feautres")),
        ("models/streams.yml", line(streams, "WebStream")),
        ("models/metrics.yml", line(metrics, "revnue")),
        ("models/metrics.yml", line(metrics, "7 dys")),
    }
    assert all(p.suggestion for p in found)
    # the dataset over the broken stream is not reported as pointing at an unknown stream
    assert not any("unknown stream" in p.message for p in found)
    rendered = str(ModelError(found))
    assert rendered.startswith("4 problems in the project:")
    assert re.search(r"models/metrics\.yml:\d+ \[aov\.expr\]: unknown metric `revnue`", rendered)


def test_cumulative_over_a_view_without_time(tmp_path):
    views = edit(VIEWS, "    time: ordered_at\n", "")
    p = only(problems(tmp_path, views=views))
    check(p, "models/metrics.yml", line(METRICS, "name: revenue_7d"), "revenue_7d.cumulative",
          "accumulates `orders.revenue` over time, but view `orders` has no time column", "give view `orders` a `time:`")


def test_dataset_named_like_a_stream_table(tmp_path):
    datasets = edit(DATASETS, "  - name: orders\n", "  - name: customer_stream\n")
    views = edit(VIEWS, "dataset: orders", "dataset: customer_stream")
    p = only(problems(tmp_path, datasets=datasets, views=views))
    check(p, "models/datasets.yml", line(DATASETS, "- name: orders"), "customer_stream",
          "already the name of a stream table", "rename the dataset")


# -- what only the warehouse can tell (`phloem validate` compiles the model against it) ----------

WAREHOUSE = "name: shop\nwarehouse: {database: warehouse.duckdb}\n"


def with_data(tmp_path: Path, orders: list[tuple] = ((1, 10, "2024-01-01", "web", 25), (2, 10, "2024-01-02", "app", 30),
                                                      (3, 11, "2024-01-02", "web", 15))) -> Path:
    """The base project over a DuckDB file holding its raw tables (`ordered_on` is the order date as text)."""
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    con.execute("create schema raw")
    con.execute("create table raw.orders (order_id int, customer_id int, ordered_at timestamp, ordered_on text, "
                "channel text, total int)")
    for o in orders:
        con.execute("insert into raw.orders values (?, ?, cast(? as timestamp), ?, ?, ?)", [o[0], o[1], o[2], *o[2:]])
    con.execute("create table raw.customers as select 10 as customer_id, timestamp '2023-12-01' as created_at, "
                "'ads' as source")
    con.execute("create table raw.shipments as select 1 as order_id, 10 as customer_id, "
                "timestamp '2024-01-03' as shipped_at, 4 as cost")
    con.close()
    return tmp_path


def warehouse_problems(tmp_path: Path, **changes: str) -> list[Problem]:
    """Like `problems`, but through `validate` against the warehouse (the model files alone are sound)."""
    files = {**BASE, "phloem.yml": WAREHOUSE}
    for stem, text in changes.items():
        files[f"models/{stem}.yml"] = text
    write(with_data(tmp_path), files)
    load_project(tmp_path)  # no static problem: what follows is found by the warehouse
    with pytest.raises(ModelError) as info:
        validate_project(tmp_path)
    return info.value.problems


def test_validate_a_sound_project_without_writing(tmp_path):
    write(with_data(tmp_path), {**BASE, "phloem.yml": WAREHOUSE})
    before = (tmp_path / "warehouse.duckdb").read_bytes()
    assert set(validate_project(tmp_path).model.views) == {"orders"}
    assert (tmp_path / "warehouse.duckdb").read_bytes() == before  # opened read-only: nothing built or staged


def test_text_column_as_view_time(tmp_path):
    views = VIEWS + "  - {name: raw_orders, table: raw.orders, time: ordered_on, measures: [{name: n, agg: count}]}\n"
    p = only(warehouse_problems(tmp_path, views=views))
    check(p, "models/views.yml", line(views, "name: raw_orders"), "raw_orders.time",
          "time column `ordered_on` of view `raw_orders` is text, not a timestamp or date",
          "cast it: `expr: cast(ordered_on as timestamp)`")


def test_text_time_dimension(tmp_path):
    views = edit(VIEWS, "dimensions: [channel]", "dimensions: [channel, {name: channel_day, type: time, expr: channel}]")
    p = only(warehouse_problems(tmp_path, views=views))
    check(p, "models/views.yml", line(views, "channel_day"), "orders.dimensions.channel_day",
          "time column `channel_day` of view `orders` is text", "cast(channel as timestamp)")


def test_non_unique_primary_key(tmp_path):
    views = edit(VIEWS, "primary_key: order_id", "primary_key: channel")
    p = only(warehouse_problems(tmp_path, views=views))
    check(p, "models/views.yml", line(views, "primary_key: channel"), "orders.primary_key",
          "primary key `channel` of view `orders` is not unique: 1 value repeats (e.g. `web` on 2 rows)",
          "name a column that is unique per row")


def test_non_unique_activity_id_is_refused_by_validate_and_build(tmp_path):
    twice = ((1, 10, "2024-01-01", "web", 25), (1, 10, "2024-01-02", "app", 30))
    write(with_data(tmp_path, twice), {**BASE, "phloem.yml": WAREHOUSE})
    with pytest.raises(ModelError) as info:
        validate_project(tmp_path)
    found = info.value.problems
    assert [p.key for p in found] == ["customer_stream.activities.placed_order.id", "orders.primary_key"]
    check(found[0], "models/streams.yml", line(STREAMS, "id: order_id"), "placed_order.id",
          "activity `placed_order`'s id `order_id` is not unique: 1 value repeats (e.g. `1` on 2 rows)",
          "remove `id:` to use a hash of the row")
    check(found[1], "models/views.yml", line(VIEWS, "primary_key: order_id"), "orders.primary_key",
          "not unique", "unique per row")
    project = Project.load(tmp_path)
    try:
        with pytest.raises(ModelError) as built:
            project.build()
        assert not project.engine.table_exists("phloem", "orders")  # refused before anything was published
    finally:
        project.close()
    # the build sees the same data, so it gives the same problems
    assert [str(p) for p in built.value.problems] == [str(p) for p in found]


def test_warehouse_refuses_a_dataset_column(tmp_path):
    datasets = edit(DATASETS, "columns: [order_id, channel, total,", "columns: [order_id, channel, {name: x, expr: total + channel}, total,")
    p = only(warehouse_problems(tmp_path, datasets=datasets))
    check(p, "models/datasets.yml", line(DATASETS, "columns: [order_id"), "orders.columns.x",
          "the warehouse refuses dataset `orders`: Binder Error: No function matches", "fix")
    assert "Candidate" not in p.message and "select" not in p.message.lower()


def test_warehouse_refuses_an_appended_column(tmp_path):
    datasets = edit(DATASETS, "agg: sum, expr: cost", "agg: sum, expr: \"cost || 'x'\"")
    p = only(warehouse_problems(tmp_path, datasets=datasets))
    check(p, "models/datasets.yml", line(DATASETS, "columns: [{name: shipping_cost"),
          "orders.append.shipped_order.columns.shipping_cost", "the warehouse refuses dataset `orders`", "fix")


def test_warehouse_refusals_in_aql_point_at_the_filter_or_join(tmp_path):
    aql = ("using customer_stream\nselect all placed_order (order_id, total\n  filter total > 10)\n"
           "aggregate all shipped_order (\n  sum(cost) as cost\n  filter cost > 0\n"
           "  join joined.cost - 1 > 0)\n")
    write(with_data(tmp_path), {**BASE, "phloem.yml": WAREHOUSE, "models/costs.aql": aql})
    with pytest.raises(ModelError) as info:
        validate_project(tmp_path)
    p = only(info.value.problems)
    check(p, "models/costs.aql", 7, "costs.append.shipped_order.join", "the warehouse refuses dataset `costs`: ",
          "fix the expression")
    write(tmp_path, {"models/costs.aql": aql.replace("total > 10", "total - channel > 10").replace("joined.cost - 1", "joined.cost")})
    with pytest.raises(ModelError) as info:
        validate_project(tmp_path)
    p = only(info.value.problems)
    check(p, "models/costs.aql", 3, "costs.primary.filter", "the warehouse refuses dataset `costs`: ", "fix")


def test_warehouse_refuses_a_measure(tmp_path):
    views = edit(VIEWS, "{name: revenue, agg: sum, expr: total}", "{name: revenue, agg: sum, expr: channel}")
    p = only(warehouse_problems(tmp_path, views=views))
    check(p, "models/views.yml", line(VIEWS, "name: revenue"), "orders.measures.revenue",
          "the warehouse refuses `measures.revenue` of view `orders`", "fix the expression")


def test_warehouse_refuses_activity_sql(tmp_path):
    streams = edit(STREAMS, "from raw.shipments", "from raw.shipment")
    p = only(warehouse_problems(tmp_path, streams=streams))
    check(p, "models/streams.yml", line(STREAMS, "sql: select order_id, customer_id as customer, shipped_at"),
          "customer_stream.activities.shipped_order.sql", "the warehouse refuses activity `shipped_order`: Catalog Error",
          "fix the activity's SQL")


def test_validate_beside_a_process_holding_the_database(tmp_path):
    write(with_data(tmp_path), {**BASE, "phloem.yml": WAREHOUSE})
    holder = subprocess.Popen([sys.executable, "-c", "import duckdb, sys; c = duckdb.connect(sys.argv[1]); "
                               "print('held', flush=True); sys.stdin.read()", str(tmp_path / "warehouse.duckdb")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        validated = validate_project(tmp_path)  # the model files are still checked; the warehouse cannot be asked
        assert set(validated.model.views) == {"orders"}
        assert validated.skipped.startswith(f"the warehouse checks were skipped: PID {holder.pid} holds the database")
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)
