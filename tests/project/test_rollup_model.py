"""Rollup declarations: a valid one loads typed; each mistake is reported with file, line, key and a fix."""

from __future__ import annotations

from tests.project.test_model_errors import BASE, check, line, load_project, only, problems, write

ROLLUPS = """\
rollups:
  - name: orders_daily
    view: orders
    measures: [revenue, order_count]
    metrics: [shipping]
    dimensions: [channel]
    grain: day
    partition: month
    incremental: 2 months
    refresh: 1 hour
    freshness: dataset
"""
FILE = "models/rollups.yml"


def rollups(tmp_path, text: str):
    return problems(tmp_path, rollups=text)


def test_a_rollup_loads_typed(tmp_path):
    write(tmp_path, {**BASE, FILE: ROLLUPS})
    r = load_project(tmp_path).rollups["orders_daily"]
    assert (r.view, r.measures, r.metrics, r.dimensions) == ("orders", ("revenue", "order_count"), ("shipping",),
                                                             ("channel",))
    assert (r.grain, r.partition, r.incremental, r.refresh, r.freshness) == ("day", "month", "2 months", "1 hour",
                                                                             "dataset")


def test_unknown_view(tmp_path):
    p = only(rollups(tmp_path, ROLLUPS.replace("view: orders", "view: order")))
    check(p, FILE, line(ROLLUPS, "view: orders"), "orders_daily.view", "unknown view `order`", "did you mean `orders`?")


def test_unknown_measure(tmp_path):
    p = only(rollups(tmp_path, ROLLUPS.replace("[revenue, order_count]", "[revenue, order_cnt]")))
    check(p, FILE, line(ROLLUPS, "measures:"), "orders_daily.measures", "unknown measure `order_cnt` of view `orders`",
          "did you mean `order_count`?")


def test_unknown_metric(tmp_path):
    p = only(rollups(tmp_path, ROLLUPS.replace("metrics: [shipping]", "metrics: [shiping]")))
    check(p, FILE, line(ROLLUPS, "metrics:"), "orders_daily.metrics", "unknown metric `shiping`",
          "did you mean `shipping`?")


def test_unknown_dimension(tmp_path):
    p = only(rollups(tmp_path, ROLLUPS.replace("dimensions: [channel]", "dimensions: [chanel]")))
    check(p, FILE, line(ROLLUPS, "dimensions:"), "orders_daily.dimensions", "unknown dimension `chanel`",
          "did you mean `channel`?")


def test_metric_time_is_not_a_dimension(tmp_path):
    p = only(rollups(tmp_path, ROLLUPS.replace("dimensions: [channel]", "dimensions: [metric_time__week]")))
    check(p, FILE, line(ROLLUPS, "dimensions:"), "orders_daily.dimensions", "the rollup's own time", "set `grain:`")


def test_grain_invalid(tmp_path):
    p = only(rollups(tmp_path, ROLLUPS.replace("grain: day", "grain: dya")))
    check(p, FILE, line(ROLLUPS, "grain: day"), "orders_daily.grain", "`dya` is not one of", "did you mean `day`?")


def test_partition_must_hold_whole_buckets(tmp_path):
    text = ROLLUPS.replace("grain: day", "grain: week")
    p = only(rollups(tmp_path, text))
    check(p, FILE, line(ROLLUPS, "partition: month"), "orders_daily.partition",
          "partition `month` does not hold whole `week` buckets", "remove `partition`")


def test_incremental_needs_a_partition(tmp_path):
    text = ROLLUPS.replace("    partition: month\n", "")
    p = only(rollups(tmp_path, text))
    check(p, FILE, line(text, "incremental:"), "orders_daily.incremental", "needs `partition:`", "partition: month")


def test_incremental_is_a_duration(tmp_path):
    p = only(rollups(tmp_path, ROLLUPS.replace("2 months", "2 monts")))
    check(p, FILE, line(ROLLUPS, "incremental:"), "orders_daily.incremental", "`2 monts` is not a duration",
          "did you mean `2 months`?")


def test_unknown_freshness(tmp_path):
    p = only(rollups(tmp_path, ROLLUPS.replace("freshness: dataset", "freshness: datset")))
    check(p, FILE, line(ROLLUPS, "freshness:"), "orders_daily.freshness", "`datset` is not one of",
          "did you mean `dataset`?")


def test_a_rollup_needs_measures(tmp_path):
    text = ROLLUPS.replace("    measures: [revenue, order_count]\n    metrics: [shipping]\n", "")
    p = only(rollups(tmp_path, text))
    check(p, FILE, line(text, "name: orders_daily"), "orders_daily", "stores at least one measure", "measures: [a, b]")


def test_measures_that_cannot_be_re_aggregated(tmp_path):
    views = BASE["models/views.yml"] + "      - {name: median_total, agg: median, expr: total}\n"
    text = ROLLUPS.replace("[revenue, order_count]", "[revenue, median_total]")
    p = only(problems(tmp_path, views=views, rollups=text))
    check(p, FILE, line(ROLLUPS, "measures:"), "orders_daily.measures",
          "measure `median_total` (median) cannot be stored in a rollup", "count_distinct (exact only at the rollup")


def test_count_distinct_may_be_stored(tmp_path):
    views = BASE["models/views.yml"] + "      - {name: buyers, agg: count_distinct, expr: customer}\n"
    write(tmp_path, {**BASE, "models/views.yml": views, FILE: ROLLUPS.replace("[revenue, order_count]",
                                                                             "[revenue, buyers]")})
    assert "buyers" in load_project(tmp_path).rollups["orders_daily"].measures


def test_unknown_time_zone(tmp_path):
    p = only(rollups(tmp_path, ROLLUPS + "    timezone: Mars/Olympus\n"))
    check(p, FILE, 12, "orders_daily.timezone", "unknown time zone `Mars/Olympus`", "IANA name")


def test_a_rollup_time_is_the_view_time(tmp_path):
    p = only(rollups(tmp_path, ROLLUPS + "    time: signed_up_at\n"))
    check(p, FILE, 12, "orders_daily.time", "not `signed_up_at`", "signed_up_at__day")


def test_name_taken_by_a_dataset(tmp_path):
    p = only(rollups(tmp_path, ROLLUPS.replace("name: orders_daily", "name: orders")))
    check(p, FILE, line(ROLLUPS, "name: orders_daily"), "orders.name", "already the name of a table", "orders_rollup")


def test_every_problem_at_once(tmp_path):
    text = ROLLUPS.replace("[revenue, order_count]", "[revenu, order_count]").replace("[channel]", "[chanel]")
    found = rollups(tmp_path, text + "  - {name: bad, view: ordrs, measures: [revenue]}\n")
    assert [p.message for p in found] == ["unknown measure `revenu` of view `orders`", "unknown dimension `chanel`",
                                          "unknown view `ordrs`"]
