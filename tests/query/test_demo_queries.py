"""Metric queries on the demo shop, each checked against a hand-written SQL answer over raw.* tables.

The expected SQL never reads phloem.* tables nor our output: it restates MODEL.md §4–6 and §8 directly
on the generator's tables (orders, order_lines, refunds, shipments, payments, customers).
"""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

# Per-order facts straight from the raw tables: what the `orders` dataset should hold.
ORDERS = """
with o as (
    select o.order_id, o.customer_id, o.ordered_at, o.channel, o.country, o.total, o.discount,
           c.acquisition_channel, c.country as customer_country, c.signed_up_at,
           coalesce(r.amount, 0) as refunded, coalesce(s.cost, 0) as shipping, coalesce(p.fee, 0) as fees,
           row_number() over (partition by o.customer_id order by o.ordered_at, o.order_id::varchar) = 1
               as is_first_order
    from raw.orders o
    join raw.customers c on c.customer_id = o.customer_id
    left join (select order_id, sum(amount) as amount from raw.refunds group by 1) r on r.order_id = o.order_id
    left join (select order_id, sum(shipping_cost) as cost from raw.shipments group by 1) s
        on s.order_id = o.order_id
    left join (select order_id, sum(fee) as fee from raw.payments group by 1) p on p.order_id = o.order_id
),
l as (
    select l.order_line_id, l.order_id, l.ordered_at, l.category, l.quantity,
           l.quantity * l.unit_cost as cost, l.quantity * l.unit_price as line_revenue,
           o.channel, o.country
    from raw.order_lines l join raw.orders o on o.order_id = l.order_id
)
"""


def month(col: str) -> str:
    return f"date_trunc('month', {col})::date"


# ------------------------------------------------------------------ simple and multi-view metrics


def test_revenue_by_month(demo, check):
    check(demo, f"""
        select {month('ordered_at')} as metric_time__month, sum(total) as revenue
        from raw.orders group by 1
    """, metrics=["revenue"], dimensions=["metric_time__month"])


def test_refunds_are_attributed_to_the_orders_time_and_dimensions(demo, check):
    # a refund counts in the month and channel of its order, not in the month it was paid back
    check(demo, ORDERS + f"""
        select channel, {month('ordered_at')} as metric_time__month, sum(refunded) as refunds
        from o group by all
    """, metrics=["refunds"], dimensions=["channel", "metric_time__month"])


def test_cogs_from_order_lines_by_the_orders_channel(demo, check):
    check(demo, f"""
        select o.channel, {month('l.ordered_at')} as metric_time__month, sum(l.quantity * l.unit_cost) as cogs
        from raw.order_lines l join raw.orders o on o.order_id = l.order_id
        group by all
    """, metrics=["cogs"], dimensions=["channel", "metric_time__month"])


def test_profit_and_margin_by_channel_and_month(demo, check):
    check(demo, ORDERS + f"""
        , ob as (
            select channel, {month('ordered_at')} as m,
                   sum(total) - sum(discount) - sum(refunded) as net_revenue,
                   sum(shipping) as shipping, sum(fees) as fees
            from o group by all
        ), lb as (
            select channel, {month('ordered_at')} as m, sum(cost) as cogs from l group by all
        ), x as (
            select ob.channel, ob.m, ob.net_revenue, ob.net_revenue - (lb.cogs + ob.shipping + ob.fees) as profit
            from ob full join lb on lb.channel = ob.channel and lb.m = ob.m
        )
        select channel, m as metric_time__month, profit, profit::double / nullif(net_revenue, 0) as margin
        from x
    """, metrics=["profit", "margin"], dimensions=["channel", "metric_time__month"])


def test_every_metric_of_the_tree_without_dimensions(demo, check):
    check(demo, ORDERS + """
        , t as (
            select sum(total) as revenue, sum(discount) as discounts, sum(refunded) as refunds,
                   sum(shipping) as shipping, sum(fees) as payment_fees, count(*) as orders,
                   count(distinct customer_id) as buyers, (select sum(cost) from l) as cogs
            from o
        )
        select revenue, discounts, refunds, revenue - discounts - refunds as net_revenue, cogs, shipping,
               payment_fees, cogs + shipping + payment_fees as costs,
               (revenue - discounts - refunds) - (cogs + shipping + payment_fees) as profit,
               orders, buyers, revenue::double / orders as aov
        from t
    """, metrics=["revenue", "discounts", "refunds", "net_revenue", "cogs", "shipping", "payment_fees", "costs",
                  "profit", "orders", "buyers", "aov"])


def test_units_and_revenue_by_channel_come_from_two_views(demo, check):
    check(demo, """
        select o.channel, sum(o.total) as revenue,
               (select sum(quantity) from raw.order_lines l join raw.orders o2 using (order_id)
                where o2.channel = o.channel) as units
        from raw.orders o group by 1
    """, metrics=["revenue", "units"], dimensions=["channel"])


def test_groups_in_one_view_only_get_null_for_the_other(demo, check):
    # days in January 2024 with sign-ups but no order (and the other way round): an outer join
    got = check(demo, """
        with r as (select ordered_at::date as d, sum(total) as revenue from raw.orders
                   where ordered_at >= '2024-01-01' and ordered_at < '2024-02-01' group by 1),
             s as (select signed_up_at::date as d, count(*) as signups from raw.customers
                   where signed_up_at >= '2024-01-01' and signed_up_at < '2024-02-01' group by 1)
        select coalesce(r.d, s.d) as metric_time__day, r.revenue, s.signups
        from r full join s on s.d = r.d
    """, metrics=["revenue", "signups"], dimensions=["metric_time__day"],
        time_range={"start": "2024-01-01", "end": "2024-01-31"})
    assert any(r[1] is None for r in got) and any(r[2] is None for r in got), "the month should exercise both sides"


def test_dimension_of_a_joined_view_as_a_time_cohort(demo, check):
    # revenue by the quarter the customer signed up in (a time dimension of the customers view)
    check(demo, """
        select date_trunc('quarter', c.signed_up_at)::date as signed_up_at__quarter, sum(o.total) as revenue
        from raw.orders o join raw.customers c on c.customer_id = o.customer_id
        group by 1
    """, metrics=["revenue"], dimensions=["customers.signed_up_at__quarter"])


def test_two_dimensions_with_the_same_name_are_prefixed_with_their_view(demo, check):
    check(demo, """
        select o.country as orders__country, c.country as customers__country, count(*) as orders
        from raw.orders o join raw.customers c on c.customer_id = o.customer_id
        group by all
    """, metrics=["orders"], dimensions=["orders.country", "customers.country"])


def test_a_dataset_written_in_aql(demo, check):
    check(demo, """
        select referrer, count(*) as visits from raw.visits group by 1
    """, metrics=["visits"], dimensions=["referrer"])


def test_join_to_timespine_shows_every_period_for_every_combination_seen(demo, check):
    got = check(demo, """
        with days as (select d::date as d from range(date '2024-03-01', date '2024-04-01', interval 1 day) t(d)),
             seen as (select distinct channel from raw.orders
                      where ordered_at >= '2024-03-01' and ordered_at < '2024-04-01'),
             sums as (select ordered_at::date as d, channel, sum(total) as revenue from raw.orders group by all)
        select days.d as metric_time__day, seen.channel, coalesce(sums.revenue, 0) as revenue_every_day
        from days cross join seen left join sums on sums.d = days.d and sums.channel = seen.channel
    """, metrics=["revenue_every_day"], dimensions=["metric_time__day", "channel"],
        time_range={"start": "2024-03-01", "end": "2024-03-31"})
    assert len(got) == 31 * 3


def test_join_to_timespine_at_hour_grain_covers_the_whole_end_day(demo, check):
    check(demo, """
        with hours as (select h as metric_time__hour
                       from range(timestamp '2024-01-01', timestamp '2024-01-02', interval 1 hour) t(h))
        select metric_time__hour, coalesce(sum(o.total), 0) as revenue_every_day
        from hours left join raw.orders o on date_trunc('hour', o.ordered_at) = metric_time__hour
        group by 1
    """, metrics=["revenue_every_day"], dimensions=["metric_time__hour"],
        time_range={"start": "2024-01-01", "end": "2024-01-01"})


# ------------------------------------------------------------------ filters


def test_string_filter(demo, check):
    check(demo, ORDERS + """
        select country, sum(total) - sum(discount) - sum(refunded) as net_revenue
        from o where country in ('US', 'CA') group by 1
    """, metrics=["net_revenue"], dimensions=["country"], filters=["country in ('US','CA')"])


def test_structured_filters_are_anded(demo, check):
    check(demo, """
        select country, sum(total) as revenue, count(*) as orders
        from raw.orders where channel != 'web' and country in ('US', 'GB', 'DE') group by 1
    """, metrics=["revenue", "orders"], dimensions=["country"],
        filters=[{"dimension": "channel", "op": "!=", "values": ["web"]},
                 {"dimension": "country", "op": "in", "values": ["US", "GB", "DE"]}])


def test_boolean_dimension_filter(demo, check):
    check(demo, ORDERS + """
        select channel, sum(total) as revenue, count(distinct customer_id) as buyers
        from o where is_first_order group by 1
    """, metrics=["revenue", "buyers"], dimensions=["channel"],
        filters=[{"dimension": "is_first_order", "op": "=", "values": [True]}])


def test_boolean_dimension_as_a_bare_string_filter(demo, check):
    check(demo, ORDERS + """
        select channel, sum(total) as revenue from o where not is_first_order group by 1
    """, metrics=["revenue"], dimensions=["channel"], filters=["not is_first_order"])


def test_filter_through_a_join_on_a_metric_of_another_view(demo, check):
    # cogs lives in order_lines; channel is reached through orders (many-to-one)
    check(demo, """
        select l.category, sum(l.quantity * l.unit_cost) as cogs
        from raw.order_lines l join raw.orders o on o.order_id = l.order_id
        where o.channel = 'app' group by 1
    """, metrics=["cogs"], dimensions=["category"], filters=["channel = 'app'"])


def test_filter_like_and_between_on_metric_time(demo, check):
    check(demo, f"""
        select {month('ordered_at')} as metric_time__month, sum(total) as revenue
        from raw.orders
        where country like '%S' and {month('ordered_at')} between '2024-03-01' and '2024-05-01'
        group by 1
    """, metrics=["revenue"], dimensions=["metric_time__month"],
        filters=[{"dimension": "country", "op": "like", "values": ["%S"]},
                 {"dimension": "metric_time__month", "op": "between", "values": ["2024-03-01", "2024-05-01"]}])


# ------------------------------------------------------------------ time ranges and grains


def test_time_range_start_only(demo, check):
    check(demo, """
        select date_trunc('quarter', ordered_at)::date as metric_time__quarter, sum(total) as revenue,
               count(*) as orders
        from raw.orders where ordered_at >= '2025-04-01' group by 1
    """, metrics=["revenue", "orders"], dimensions=["metric_time__quarter"], time_range={"start": "2025-04-01"})


def test_time_range_end_only_includes_the_whole_end_day(demo, check):
    got = check(demo, """
        select date_trunc('year', ordered_at)::date as metric_time__year, sum(total) as revenue
        from raw.orders where ordered_at < '2023-07-01' group by 1
    """, metrics=["revenue"], dimensions=["metric_time__year"], time_range={"end": "2023-06-30"})
    assert [r[0] for r in got] == [dt.date(2023, 1, 1)]


def test_time_range_at_day_grain_over_a_leap_day(demo, check):
    got = check(demo, """
        select ordered_at::date as metric_time__day, sum(total) as revenue, count(*) as orders
        from raw.orders where ordered_at >= '2024-02-25' and ordered_at < '2024-03-06' group by 1
    """, metrics=["revenue", "orders"], dimensions=["metric_time__day"],
        time_range={"start": "2024-02-25", "end": "2024-03-05"})
    assert dt.date(2024, 2, 29) in [r[0] for r in got] and max(r[0] for r in got) == dt.date(2024, 3, 5)


def test_time_range_with_a_timestamp_end_is_inclusive_of_that_instant(demo, check):
    check(demo, """
        select channel, sum(total) as revenue from raw.orders
        where ordered_at >= '2024-03-01 06:00:00' and ordered_at <= '2024-03-05 12:00:00' group by 1
    """, metrics=["revenue"], dimensions=["channel"],
        time_range={"start": "2024-03-01 06:00:00", "end": "2024-03-05 12:00:00"})


def test_hour_grain_returns_timestamps(demo, check):
    # the demo's timestamps carry a time of day, so hour is a meaningful grain
    result = demo.query(metrics=["orders"], dimensions=["metric_time__hour"],
                        time_range={"start": "2024-11-29", "end": "2024-11-29"})
    assert result.schema.field("metric_time__hour").type == pa.timestamp("us")
    check(demo, """
        select date_trunc('hour', ordered_at) as metric_time__hour, count(*) as orders
        from raw.orders where ordered_at::date = '2024-11-29' group by 1
    """, metrics=["orders"], dimensions=["metric_time__hour"],
        time_range={"start": "2024-11-29", "end": "2024-11-29"})


def test_week_grain_starts_on_monday(demo, check):
    got = check(demo, """
        select date_trunc('week', ordered_at)::date as metric_time__week, sum(total) as revenue
        from raw.orders where ordered_at >= '2024-02-01' and ordered_at < '2024-04-01' group by 1
    """, metrics=["revenue"], dimensions=["metric_time__week"], time_range={"start": "2024-02-01", "end": "2024-03-31"})
    # 2024-02-01 is a Thursday: its week is labelled Monday 2024-01-29 and holds only rows from the 1st on
    assert got[0][0] == dt.date(2024, 1, 29)
    assert all(r[0].isoweekday() == 1 for r in got)


def test_day_and_year_grains_return_dates(demo, check):
    result = demo.query(metrics=["revenue"], dimensions=["metric_time__day"], time_range={"end": "2023-01-31"})
    assert result.schema.field("metric_time__day").type == pa.date32()
    check(demo, """
        select date_trunc('year', ordered_at)::date as metric_time__year, sum(total) as revenue, count(*) as orders
        from raw.orders group by 1
    """, metrics=["revenue", "orders"], dimensions=["metric_time__year"])


def test_two_grains_of_metric_time_in_one_query(demo, check):
    check(demo, """
        select date_trunc('year', ordered_at)::date as metric_time__year,
               date_trunc('quarter', ordered_at)::date as metric_time__quarter, sum(total) as revenue
        from raw.orders group by all
    """, metrics=["revenue"], dimensions=["metric_time__year", "metric_time__quarter"])


# ------------------------------------------------------------------ ordering and limits


def test_order_by_minus_and_limit(demo, check):
    check(demo, """
        select country, sum(total) as revenue, count(*) as orders from raw.orders
        group by 1 order by revenue desc limit 3
    """, ordered=True, metrics=["revenue", "orders"], dimensions=["country"], order_by=["-revenue"], limit=3)


def test_order_by_colon_desc_on_a_dimension_then_a_metric(demo, check):
    check(demo, """
        select date_trunc('year', ordered_at)::date as metric_time__year, channel, count(*) as orders
        from raw.orders group by all order by metric_time__year desc, orders asc
    """, ordered=True, metrics=["orders"], dimensions=["metric_time__year", "channel"],
        order_by=["metric_time__year:desc", "orders"])


# ------------------------------------------------------------------ ratio, division by zero, median, distinct


def test_ratio_aov_by_channel(demo, check):
    check(demo, """
        select channel, sum(total)::double / count(*) as aov from raw.orders group by 1
    """, metrics=["aov"], dimensions=["channel"])


def test_derived_division_by_zero_is_null(demo, check):
    got = check(demo, ORDERS + """
        select ordered_at::date as metric_time__day,
               sum(refunded)::double / nullif(sum(discount), 0) as refunds_per_discount
        from o where ordered_at >= '2024-05-01' and ordered_at < '2024-06-01' group by 1
    """, metrics=["refunds_per_discount"], dimensions=["metric_time__day"],
        time_range={"start": "2024-05-01", "end": "2024-05-31"})
    assert any(r[1] is None for r in got), "some May day should have no discount at all"


def test_median_measure(demo, check):
    check(demo, """
        select channel, date_trunc('quarter', ordered_at)::date as metric_time__quarter,
               quantile_cont(total::double, 0.5) as median_order_value  -- continuous: interpolated, not rounded to cents
        from raw.orders group by all
    """, metrics=["median_order_value"], dimensions=["channel", "metric_time__quarter"])


def test_count_distinct_is_not_summed_over_groups(demo, check):
    monthly = check(demo, f"""
        select {month('ordered_at')} as metric_time__month, count(distinct customer_id) as buyers
        from raw.orders group by 1
    """, metrics=["buyers"], dimensions=["metric_time__month"])
    total = check(demo, "select count(distinct customer_id) as buyers from raw.orders", metrics=["buyers"])
    assert sum(r[1] for r in monthly) > total[0][0], "repeat buyers must make the monthly sum larger"


def test_count_distinct_with_a_measure_filter(demo, check):
    check(demo, ORDERS + f"""
        select {month('ordered_at')} as metric_time__month, count(distinct customer_id) filter (where is_first_order)
               as new_buyers
        from o where ordered_at >= '2024-01-01' and ordered_at < '2025-01-01' group by 1
    """, metrics=["new_buyers"], dimensions=["metric_time__month"],
        time_range={"start": "2024-01-01", "end": "2024-12-31"})


def test_metric_filter(demo, check):
    check(demo, """
        select country, sum(total) filter (where channel = 'web') as web_revenue, sum(total) as revenue
        from raw.orders group by 1
    """, metrics=["web_revenue", "revenue"], dimensions=["country"])


# ------------------------------------------------------------------ cumulative


def test_cumulative_with_two_grains_of_metric_time(demo, check):
    check(demo, f"""
        select {month('ordered_at')} as metric_time__month, date_trunc('year', ordered_at)::date as metric_time__year,
               sum(total) as revenue_mtd
        from raw.orders where ordered_at >= '2024-01-01' and ordered_at < '2024-04-01' group by all
    """, metrics=["revenue_mtd"], dimensions=["metric_time__month", "metric_time__year"],
        time_range={"start": "2024-01-01", "end": "2024-03-31"})


def test_revenue_mtd_at_day_grain_resets_each_month(demo, check):
    # inputs come from all data: 20 February already holds 1..19 February
    got = check(demo, """
        with days as (select distinct ordered_at::date as d from raw.orders
                      where ordered_at >= '2024-02-20' and ordered_at < '2024-03-11')
        select d as metric_time__day,
               (select sum(total) from raw.orders
                where ordered_at >= date_trunc('month', d) and ordered_at < d + interval 1 day) as revenue_mtd
        from days
    """, metrics=["revenue_mtd"], dimensions=["metric_time__day"],
        time_range={"start": "2024-02-20", "end": "2024-03-10"})
    first_in_march = min(r for r in got if r[0].month == 3)
    assert first_in_march[1] < max(r[1] for r in got if r[0].month == 2), "the total restarts in March"


def test_revenue_7d_at_day_grain_covers_the_six_days_before(demo, check):
    check(demo, """
        with days as (select distinct ordered_at::date as d from raw.orders
                      where ordered_at >= '2024-03-01' and ordered_at < '2024-04-01')
        select d as metric_time__day, d2.revenue, (
                   select sum(total) from raw.orders
                   where ordered_at >= d - interval 6 day and ordered_at < d + interval 1 day) as revenue_7d
        from days join (select ordered_at::date as d, sum(total) as revenue from raw.orders group by 1) d2 using (d)
    """, metrics=["revenue", "revenue_7d"], dimensions=["metric_time__day"],
        time_range={"start": "2024-03-01", "end": "2024-03-31"})


def test_cumulative_at_month_grain_is_the_value_at_the_end_of_the_month(demo, check):
    check(demo, f"""
        with months as (select distinct {month('ordered_at')} as m from raw.orders
                        where ordered_at >= '2024-01-01' and ordered_at < '2025-01-01')
        select m as metric_time__month,
               (select sum(total) from raw.orders
                where ordered_at >= m and ordered_at < m + interval 1 month) as revenue_mtd,
               (select sum(total) from raw.orders
                where ordered_at >= m + interval 1 month - interval 7 day
                  and ordered_at < m + interval 1 month) as revenue_7d
        from months
    """, metrics=["revenue_mtd", "revenue_7d"], dimensions=["metric_time__month"],
        time_range={"start": "2024-01-01", "end": "2024-12-31"})


def test_cumulative_at_month_grain_stops_at_the_end_of_the_time_range(demo, check):
    # time_range cuts June at the 15th: the value at the end of June's part of the range is the one of the
    # 15th (MTD = 1..15 June, 7d = 9..15 June)
    check(demo, f"""
        with months as (select distinct {month('ordered_at')} as m from raw.orders
                        where ordered_at >= '2024-04-01' and ordered_at < '2024-06-16'),
             ends as (select m, least(m + interval 1 month, timestamp '2024-06-16') as e from months)
        select m as metric_time__month,
               (select sum(total) from raw.orders where ordered_at >= m and ordered_at < e) as revenue_mtd,
               (select sum(total) from raw.orders where ordered_at >= e - interval 7 day and ordered_at < e)
                   as revenue_7d
        from ends
    """, metrics=["revenue_mtd", "revenue_7d"], dimensions=["metric_time__month"],
        time_range={"start": "2024-04-01", "end": "2024-06-15"})


def test_cumulative_without_metric_time_is_the_value_at_the_end_of_the_range(demo, check):
    check(demo, """
        select sum(total) filter (where ordered_at >= '2024-06-24') as revenue_7d,
               sum(total) filter (where ordered_at >= '2024-06-01') as revenue_mtd
        from raw.orders where ordered_at < '2024-07-01'
    """, metrics=["revenue_7d", "revenue_mtd"], time_range={"end": "2024-06-30"})


def test_cumulative_count_distinct_is_recomputed_over_the_window(demo, check):
    check(demo, """
        with days as (select distinct ordered_at::date as d from raw.orders
                      where ordered_at >= '2024-07-01' and ordered_at < '2024-08-01')
        select d as metric_time__day, (
                   select count(distinct customer_id) from raw.orders
                   where ordered_at >= d - interval 6 day and ordered_at < d + interval 1 day) as buyers_7d
        from days
    """, metrics=["buyers_7d"], dimensions=["metric_time__day"],
        time_range={"start": "2024-07-01", "end": "2024-07-31"})


def test_cumulative_of_a_derived_metric_applies_its_formula_to_cumulative_inputs(demo, check):
    check(demo, ORDERS + """
        , days as (select distinct ordered_at::date as d from raw.orders
                   where ordered_at >= '2024-09-25' and ordered_at < '2024-10-08')
        select d as metric_time__day, (
                   select sum(total) - sum(discount) - sum(refunded) from o
                   where ordered_at >= date_trunc('month', d) and ordered_at < d + interval 1 day) as net_revenue_mtd
        from days
    """, metrics=["net_revenue_mtd"], dimensions=["metric_time__day"],
        time_range={"start": "2024-09-25", "end": "2024-10-07"})


def test_year_to_date_at_quarter_grain_by_channel(demo, check):
    check(demo, """
        with periods as (select distinct channel, date_trunc('quarter', ordered_at)::date as q from raw.orders)
        select q as metric_time__quarter, channel, (
                   select sum(total) from raw.orders o
                   where o.channel = p.channel and ordered_at >= date_trunc('year', q)
                     and ordered_at < q + interval 3 month) as revenue_ytd
        from periods p
    """, metrics=["revenue_ytd"], dimensions=["metric_time__quarter", "channel"])


# ------------------------------------------------------------------ offsets


def test_offset_looks_up_a_previous_month_outside_the_time_range(demo, check):
    got = check(demo, f"""
        with m as (select {month('ordered_at')} as m, sum(total) as revenue from raw.orders group by 1)
        select a.m as metric_time__month, a.revenue, a.revenue - b.revenue as revenue_mom
        from m a left join m b on b.m = a.m - interval 1 month
        where a.m between '2024-01-01' and '2024-06-01'
    """, metrics=["revenue", "revenue_mom"], dimensions=["metric_time__month"],
        time_range={"start": "2024-01-01", "end": "2024-06-30"})
    assert got[0][0] == dt.date(2024, 1, 1) and got[0][2] is not None, "January 2024 compares with December 2023"


def test_offset_is_null_where_the_previous_period_has_no_data(demo, check):
    got = check(demo, f"""
        with m as (select {month('ordered_at')} as m, sum(total) as revenue from raw.orders group by 1)
        select a.m as metric_time__month, a.revenue - b.revenue as revenue_mom
        from m a left join m b on b.m = a.m - interval 1 month
    """, metrics=["revenue_mom"], dimensions=["metric_time__month"])
    assert got[0] == (dt.date(2023, 1, 1), None)


def test_month_offset_at_day_grain_uses_calendar_arithmetic(demo, check):
    # 31 and 30 March 2024 read 29 February
    check(demo, """
        with d as (select ordered_at::date as d, sum(total) as revenue from raw.orders group by 1)
        select a.d as metric_time__day, a.revenue - b.revenue as revenue_mom
        from d a left join d b on b.d = (a.d - interval 1 month)::date
        where a.d between '2024-03-25' and '2024-03-31'
    """, metrics=["revenue_mom"], dimensions=["metric_time__day"],
        time_range={"start": "2024-03-25", "end": "2024-03-31"})


def test_month_offset_at_day_grain_reads_a_leap_day_at_the_end_of_the_range(demo, check):
    check(demo, """
        with d as (select ordered_at::date as d, sum(total) as revenue from raw.orders group by 1)
        select a.d as metric_time__day, a.revenue - b.revenue as revenue_mom
        from d a left join d b on b.d = (a.d - interval 1 month)::date
        where a.d between '2024-03-29' and '2024-03-30'
    """, metrics=["revenue_mom"], dimensions=["metric_time__day"],
        time_range={"start": "2024-03-29", "end": "2024-03-30"})


def test_month_offset_at_week_grain(demo, check):
    check(demo, """
        with w as (select date_trunc('week', ordered_at)::date as w, sum(total) as revenue from raw.orders group by 1)
        select a.w as metric_time__week, a.revenue - b.revenue as revenue_mom
        from w a left join w b on b.w = date_trunc('week', a.w - interval 1 month)::date
        where a.w between '2024-03-04' and '2024-03-25'
    """, metrics=["revenue_mom"], dimensions=["metric_time__week"],
        time_range={"start": "2024-03-04", "end": "2024-03-31"})


def test_week_offset_at_week_grain_by_channel(demo, check):
    check(demo, """
        with w as (select date_trunc('week', ordered_at)::date as w, channel, sum(total) as revenue
                   from raw.orders group by all)
        select a.w as metric_time__week, a.channel, a.revenue - b.revenue as revenue_wow
        from w a left join w b on b.w = a.w - 7 and b.channel = a.channel
        where a.w >= '2024-06-03' and a.w < '2024-09-02'
    """, metrics=["revenue_wow"], dimensions=["metric_time__week", "channel"],
        time_range={"start": "2024-06-03", "end": "2024-09-01"})  # whole weeks, Monday to Sunday


@pytest.mark.parametrize("dims", [["metric_time__month", "metric_time__year"],
                                  ["metric_time__year", "metric_time__month"]])
def test_offset_with_two_grains_of_metric_time(demo, check, dims):
    check(demo, f"""
        with m as (select {month('ordered_at')} as m, sum(total) as revenue from raw.orders group by 1)
        select {', '.join(f"date_trunc('{d.split('__')[1]}', a.m)::date as {d}" for d in dims)},
               a.revenue - b.revenue as revenue_mom
        from m a left join m b on b.m = a.m - interval 1 month
        where a.m between '2024-01-01' and '2024-03-01'
    """, metrics=["revenue_mom"], dimensions=dims, time_range={"start": "2024-01-01", "end": "2024-03-31"})


# ------------------------------------------------------------------ conversion


CONVERTED = """
    exists (select 1 from raw.orders o where o.customer_id = c.customer_id
            and o.ordered_at > c.signed_up_at and o.ordered_at <= c.signed_up_at + interval 7 day)
"""


def test_signup_to_order_by_month(demo, check):
    check(demo, f"""
        select {month('signed_up_at')} as metric_time__month,
               (count(*) filter (where {CONVERTED}))::double / count(*) as signup_to_order
        from raw.customers c group by 1
    """, metrics=["signup_to_order"], dimensions=["metric_time__month"])


def test_signup_to_order_by_acquisition_channel_counts_conversions_after_the_range(demo, check):
    # sign-ups of the last days of March convert in April, outside the range: they still count
    check(demo, f"""
        select acquisition_channel,
               (count(*) filter (where {CONVERTED}))::double / count(*) as signup_to_order
        from raw.customers c
        where signed_up_at >= '2024-03-01' and signed_up_at < '2024-04-01' group by 1
    """, metrics=["signup_to_order"], dimensions=["acquisition_channel"],
        time_range={"start": "2024-03-01", "end": "2024-03-31"})


def test_every_kind_of_metric_in_one_query(demo, check):
    # simple, multi-view, cumulative, offset and conversion, merged on (month, acquisition_channel)
    check(demo, ORDERS + f"""
        , ob as (select {month('ordered_at')} as m, acquisition_channel as a, sum(total) as revenue from o
                 group by all),
          lb as (select {month('l.ordered_at')} as m, c.acquisition_channel as a, sum(l.cost) as cogs
                 from l join raw.orders o2 on o2.order_id = l.order_id
                 join raw.customers c on c.customer_id = o2.customer_id group by all),
          cb as (select {month('signed_up_at')} as m, acquisition_channel as a,
                        (count(*) filter (where {CONVERTED}))::double / count(*) as signup_to_order
                 from raw.customers c group by all),
          g as (select m, a from ob union select m, a from lb union select m, a from cb)
        select g.m as metric_time__month, g.a as acquisition_channel, ob.revenue,
               ob.revenue as revenue_mtd, ob.revenue - prev.revenue as revenue_mom, lb.cogs, cb.signup_to_order
        from g left join ob using (m, a) left join lb using (m, a) left join cb using (m, a)
        left join ob prev on prev.a = g.a and prev.m = g.m - interval 1 month
        where g.m between '2024-01-01' and '2024-02-01'
    """, metrics=["revenue", "revenue_mtd", "revenue_mom", "cogs", "signup_to_order"],
        dimensions=["metric_time__month", "acquisition_channel"], time_range={"start": "2024-01-01", "end": "2024-02-29"})


def test_conversion_by_a_dimension_of_the_entity_view_with_a_filter(demo, check):
    check(demo, f"""
        select c.country, (count(*) filter (where {CONVERTED}))::double / count(*) as signup_to_order
        from raw.customers c where c.acquisition_channel in ('email', 'affiliate') group by 1
    """, metrics=["signup_to_order"], dimensions=["customers.country"],
        filters=["customers.acquisition_channel in ('email', 'affiliate')"])


def test_conversion_count_by_country_and_quarter(demo, check):
    check(demo, f"""
        select country, date_trunc('quarter', signed_up_at)::date as metric_time__quarter,
               count(*) filter (where {CONVERTED}) as signup_conversions
        from raw.customers c group by all
    """, metrics=["signup_conversions"], dimensions=["country", "metric_time__quarter"])
