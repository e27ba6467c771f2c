"""Queries the model cannot answer raise `QueryError` with a message that names the problem and a fix."""

from __future__ import annotations

import pytest

from semantic.errors import QueryError


def error_of(project, **query) -> QueryError:
    with pytest.raises(QueryError) as info:
        project.query(**query)
    assert info.value.message, "a QueryError always says what is wrong"
    return info.value


def test_unknown_metric_suggests_the_closest_name(demo):
    e = error_of(demo, metrics=["revnue"], dimensions=["channel"])
    assert "unknown metric `revnue`" in e.message
    assert "did you mean `revenue`" in e.suggestion


def test_unknown_metric_far_from_any_name_lists_the_known_ones(demo):
    e = error_of(demo, metrics=["zzzz"])
    assert "unknown metric `zzzz`" in e.message
    assert "profit" in e.suggestion and "revenue" in e.suggestion


def test_unknown_dimension(demo):
    e = error_of(demo, metrics=["revenue"], dimensions=["chanel"])
    assert "unknown dimension `chanel`" in e.message
    assert "did you mean `channel`" in e.suggestion


def test_unknown_view_in_a_qualified_dimension(demo):
    e = error_of(demo, metrics=["revenue"], dimensions=["order.channel"])
    assert "unknown view `order`" in e.message
    assert "`orders`" in e.suggestion


def test_unknown_dimension_of_a_named_view(demo):
    e = error_of(demo, metrics=["revenue"], dimensions=["orders.contry"])
    assert "no dimension `contry`" in e.message
    assert "`country`" in e.suggestion


def test_unknown_time_grain(demo):
    e = error_of(demo, metrics=["revenue"], dimensions=["metric_time__mnth"])
    assert "unknown time grain `mnth`" in e.message
    assert "did you mean `month`" in e.suggestion


def test_unknown_grain_of_a_view_time_dimension(demo):
    e = error_of(demo, metrics=["revenue"], dimensions=["orders.ordered_at__weak"])
    assert "`weak`" in e.message and "`week`" in e.suggestion


def test_grain_on_a_non_time_dimension(demo):
    e = error_of(demo, metrics=["revenue"], dimensions=["channel__month"])
    assert "`channel` is not a time dimension" in e.message
    assert "`channel`" in e.suggestion and "without a grain" in e.suggestion


def test_order_by_something_not_requested(demo):
    e = error_of(demo, metrics=["revenue"], dimensions=["channel"], order_by=["-profit"])
    assert "cannot order by `profit`" in e.message
    assert "revenue" in e.suggestion and "channel" in e.suggestion


def test_order_by_a_misspelled_requested_metric(demo):
    e = error_of(demo, metrics=["revenue"], dimensions=["channel"], order_by=["revenu:desc"])
    assert "cannot order by `revenu`" in e.message
    assert "did you mean `revenue`" in e.suggestion


def test_unknown_sort_direction(demo):
    e = error_of(demo, metrics=["revenue"], dimensions=["channel"], order_by=["revenue:down"])
    assert "`down`" in e.message
    assert "name:desc" in e.suggestion and "-name" in e.suggestion


def test_filter_on_a_dimension_a_metric_cannot_reach(demo):
    # signups live in the customers view, which has no path to the orders' channel
    e = error_of(demo, metrics=["revenue", "signups"], filters=["channel = 'web'"])
    assert "channel" in e.message and "signups" in e.message
    assert e.suggestion


def test_structured_filter_on_an_unreachable_dimension_of_a_view_without_entities(demo):
    e = error_of(demo, metrics=["visits"], filters=[{"dimension": "country", "op": "=", "values": ["US"]}])
    assert "country" in e.message and "visits" in e.message
    assert e.suggestion


def test_group_by_a_dimension_a_metric_cannot_reach(demo):
    e = error_of(demo, metrics=["signups"], dimensions=["category"])
    assert "category" in e.message and "signups" in e.message


def test_filter_on_an_unknown_dimension(demo):
    e = error_of(demo, metrics=["revenue"], filters=[{"dimension": "contry", "op": "=", "values": ["US"]}])
    assert "unknown dimension `contry`" in e.message
    assert "did you mean `country`" in e.suggestion


def test_filter_that_does_not_parse(demo):
    e = error_of(demo, metrics=["revenue"], filters=["country in ('US',"])
    assert "does not parse" in e.message
    assert e.suggestion


def test_between_needs_two_values(demo):
    e = error_of(demo, metrics=["revenue"], filters=[{"dimension": "country", "op": "between", "values": ["A"]}])
    assert "`between`" in e.message and "two values" in e.message


def test_offset_metric_without_metric_time(demo):
    e = error_of(demo, metrics=["revenue_mom"], dimensions=["channel"])
    assert "metric_time" in e.message and "revenue" in e.message
    assert "metric_time__month" in e.suggestion


def test_offset_finer_than_the_grain(demo):
    # revenue_wow reads the week before: at month grain that has no meaning
    e = error_of(demo, metrics=["revenue_wow"], dimensions=["metric_time__month"])
    assert "`1 week`" in e.message and "finer than the query's grain `month`" in e.message
    assert "metric_time__week" in e.suggestion


def test_month_offset_at_quarter_grain(demo):
    e = error_of(demo, metrics=["revenue_mom"], dimensions=["metric_time__quarter"])
    assert "finer than the query's grain `quarter`" in e.message


def test_conversion_by_a_dimension_the_stream_cannot_reach(demo):
    e = error_of(demo, metrics=["signup_to_order"], dimensions=["channel"])
    assert "channel" in e.message and "signup_to_order" in e.message
    assert "acquisition_channel" in e.suggestion


def test_a_query_needs_metrics(demo):
    e = error_of(demo, metrics=[], dimensions=["channel"])
    assert "metrics" in e.message
    assert "metrics" in e.suggestion


def test_unknown_query_field(demo):
    e = error_of(demo, metrics=["revenue"], dimension=["channel"])
    assert "dimension" in e.message


def test_explain_raises_the_same_errors(demo):
    with pytest.raises(QueryError, match="unknown metric `revnue`"):
        demo.explain(metrics=["revnue"])


def test_errors_of_the_subscription_project(saas):
    e = error_of(saas, metrics=["trial_to_paid"], dimensions=["reason"])
    assert "reason" in e.message and "trial_to_paid" in e.message
    e = error_of(saas, metrics=["new_mrr_growth"])
    assert "metric_time" in e.message
    e = error_of(saas, metrics=["new_mrr_qoq"], dimensions=["metric_time__year"])
    assert "finer than the query's grain `year`" in e.message
