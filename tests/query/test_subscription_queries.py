"""Metric queries on the SaaS test project, each checked against hand-written SQL over its raw.* tables.

The project (tests/query/subscription_project) has one stream `account_stream` (entity `account`), datasets
with first_before / last_after / aggregate_after / first_ever / aggregate_all_ever joins, five views (one
over a raw table) joined many-to-one through the `subscription` and `account` entities, and metrics of
every kind. Its raw data is written by SAAS_RAW_SQL in conftest.py.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

# Per-subscription facts restated from the raw tables: the trial before, the last upgrade after, churn.
SUBS = """
with s as (
    select s.subscription_id, s.account_id, s.subscription_no, s.started_at, s.plan, s.mrr,
           a.region, a.segment, a.source,
           (select arg_min(t.plan, t.started_at) from raw.trials t
            where t.account_id = s.account_id and t.started_at < s.started_at) as trial_plan,
           (select arg_max(u.to_plan, u.upgraded_at) from raw.upgrades u
            where u.account_id = s.account_id and u.upgraded_at > s.started_at) as last_upgrade_plan,
           (select count(*) from raw.churns c
            where c.account_id = s.account_id and c.churned_at > s.started_at) as churns_after
    from raw.subscriptions s join raw.accounts a using (account_id)
)
"""

CONVERTED = """
    exists (select 1 from raw.subscriptions s where s.account_id = t.account_id
            and s.started_at > t.started_at and s.started_at <= t.started_at + interval 14 day)
"""


def month(col: str) -> str:
    return f"date_trunc('month', {col})::date"


def test_the_data_has_the_edge_cases_the_tests_rely_on(saas, raw_rows):
    (row,) = raw_rows(saas, """
        select count(*) filter (where s.started_at = t.started_at),
               count(*) filter (where s.started_at = t.started_at + interval 14 day),
               count(*) filter (where s.started_at = t.started_at + interval 14 day + interval 1 second)
        from raw.subscriptions s join raw.trials t using (account_id)
    """)
    assert all(n > 0 for n in row), row


# ------------------------------------------------------------------ simple metrics


def test_new_mrr_and_subscriptions_by_month(saas, check):
    check(saas, f"""
        select {month('started_at')} as metric_time__month, sum(mrr) as new_mrr, count(*) as subscriptions
        from raw.subscriptions group by 1
    """, metrics=["new_mrr", "subscriptions"], dimensions=["metric_time__month"])


def test_signups_by_region_and_segment(saas, check):
    check(saas, """
        select region, segment, count(*) as signups from raw.accounts group by all
    """, metrics=["signups"], dimensions=["region", "segment"])


def test_subscribers_are_counted_distinct(saas, check):
    quarterly = check(saas, """
        select date_trunc('quarter', started_at)::date as metric_time__quarter,
               count(distinct account_id) as subscribers
        from raw.subscriptions group by 1
    """, metrics=["subscribers"], dimensions=["metric_time__quarter"])
    total = check(saas, "select count(distinct account_id) as subscribers from raw.subscriptions",
                  metrics=["subscribers"])
    assert sum(r[1] for r in quarterly) > total[0][0], "returning accounts must make the quarterly sum larger"


def test_avg_and_median_new_mrr_by_plan(saas, check):
    check(saas, """
        select plan, avg(mrr)::double as avg_new_mrr, quantile_cont(mrr, 0.5) as median_new_mrr
        from raw.subscriptions group by 1
    """, metrics=["avg_new_mrr", "median_new_mrr"], dimensions=["plan"])


def test_churns_by_region_and_reason_two_hops_away(saas, check):
    # churns → subscriptions (entity subscription) → accounts (entity account)
    check(saas, """
        select a.region, c.reason, count(*) as churns, sum(c.lost_mrr) as churned_mrr
        from raw.churns c
        join raw.subscriptions s on s.subscription_id = c.subscription_id
        join raw.accounts a on a.account_id = s.account_id
        group by all
    """, metrics=["churns", "churned_mrr"], dimensions=["region", "reason"])


def test_expansion_from_a_table_view_by_segment(saas, check):
    check(saas, """
        select a.segment, u.to_plan, sum(u.mrr_delta) as expansion_mrr, count(*) as upgrades
        from raw.upgrades u
        join raw.subscriptions s on s.subscription_id = u.subscription_id
        join raw.accounts a on a.account_id = s.account_id
        group by all
    """, metrics=["expansion_mrr", "upgrades"], dimensions=["segment", "to_plan"])


def test_metric_filter_on_trials(saas, check):
    check(saas, f"""
        select {month('started_at')} as metric_time__month, count(*) as trials,
               count(*) filter (where plan = 'pro') as pro_trials
        from raw.trials group by 1
    """, metrics=["trials", "pro_trials"], dimensions=["metric_time__month"])


def test_first_ever_dimension_on_accounts(saas, check):
    check(saas, """
        with f as (select account_id, arg_min(plan, started_at) as first_plan from raw.subscriptions group by 1)
        select f.first_plan, a.source, count(*) as signups, count(f.account_id) as paying_accounts
        from raw.accounts a left join f using (account_id) group by all
    """, metrics=["signups", "paying_accounts"], dimensions=["first_plan", "source"])


def test_first_before_dimension_with_a_null_group(saas, check):
    got = check(saas, SUBS + """
        select trial_plan, sum(mrr) as new_mrr, count(*) as subscriptions from s group by 1
    """, metrics=["new_mrr", "subscriptions"], dimensions=["trial_plan"])
    assert any(r[0] is None for r in got), "subscriptions without a trial form their own group"


def test_last_after_dimension_and_a_boolean(saas, check):
    check(saas, SUBS + """
        select last_upgrade_plan, subscription_no > 1 as is_resubscription, count(*) as subscriptions
        from s group by all
    """, metrics=["subscriptions"], dimensions=["last_upgrade_plan", "is_resubscription"])


def test_aggregate_after_in_a_measure_filter_and_a_derived_share(saas, check):
    check(saas, SUBS + """
        select plan, count(*) filter (where churns_after > 0) as churned_later,
               (count(*) filter (where churns_after > 0))::double / count(*) as churned_share
        from s group by 1
    """, metrics=["churned_later", "churned_share"], dimensions=["plan"])


# ------------------------------------------------------------------ derived and ratio


def test_net_new_mrr_over_three_views_fills_missing_inputs_with_zero(saas, check):
    check(saas, f"""
        with n as (select {month('started_at')} as m, sum(mrr) as v from raw.subscriptions group by 1),
             e as (select {month('upgraded_at')} as m, sum(mrr_delta) as v from raw.upgrades group by 1),
             c as (select {month('churned_at')} as m, sum(lost_mrr) as v from raw.churns group by 1),
             m as (select m from n union select m from e union select m from c)
        select m.m as metric_time__month, n.v + coalesce(e.v, 0) - coalesce(c.v, 0) as net_new_mrr
        from m left join n using (m) left join e using (m) left join c using (m)
    """, metrics=["net_new_mrr"], dimensions=["metric_time__month"])


def test_derived_is_null_when_an_input_has_no_data(saas, check):
    got = check(saas, """
        with n as (select date_trunc('week', started_at)::date as w, sum(mrr) as v from raw.subscriptions group by 1),
             e as (select date_trunc('week', upgraded_at)::date as w, sum(mrr_delta) as v from raw.upgrades
                   group by 1)
        select coalesce(n.w, e.w) as metric_time__week, n.v as new_mrr, n.v + e.v as gross_new_mrr
        from n full join e using (w)
        where coalesce(n.w, e.w) between '2024-02-26' and '2024-08-26'
    """, metrics=["new_mrr", "gross_new_mrr"], dimensions=["metric_time__week"],
        time_range={"start": "2024-02-26", "end": "2024-09-01"})
    assert any(r[1] is not None and r[2] is None for r in got), "some week should have no upgrade"


def test_ratio_arpa_by_plan(saas, check):
    check(saas, """
        select plan, sum(mrr)::double / count(distinct account_id) as arpa from raw.subscriptions group by 1
    """, metrics=["arpa"], dimensions=["plan"])


# ------------------------------------------------------------------ cumulative


def test_30_day_window_at_day_grain(saas, check):
    check(saas, """
        with days as (select distinct started_at::date as d from raw.subscriptions
                      where started_at >= '2024-06-01' and started_at < '2024-07-01')
        select d as metric_time__day,
               (select sum(mrr) from raw.subscriptions
                where started_at >= d - interval 29 day and started_at < d + interval 1 day) as new_mrr_30d,
               (select count(distinct account_id) from raw.subscriptions
                where started_at >= d - interval 29 day and started_at < d + interval 1 day) as subscribers_30d
        from days
    """, metrics=["new_mrr_30d", "subscribers_30d"], dimensions=["metric_time__day"],
        time_range={"start": "2024-06-01", "end": "2024-06-30"})


def test_quarter_to_date_at_month_grain_by_plan(saas, check):
    check(saas, f"""
        with p as (select distinct plan, {month('started_at')} as m from raw.subscriptions)
        select m as metric_time__month, plan,
               (select count(*) from raw.subscriptions s where s.plan = p.plan
                and started_at >= date_trunc('quarter', m) and started_at < m + interval 1 month)
                   as subscriptions_qtd
        from p
    """, metrics=["subscriptions_qtd"], dimensions=["metric_time__month", "plan"])


def test_all_time_cumulative_with_a_start_only_range(saas, check):
    # inputs come from all data: the first month of the range already counts every earlier sign-up
    check(saas, f"""
        with p as (select distinct {month('signed_up_at')} as m from raw.accounts where signed_up_at >= '2024-07-01')
        select m as metric_time__month,
               (select count(*) from raw.accounts where signed_up_at < m + interval 1 month) as signups_to_date
        from p
    """, metrics=["signups_to_date"], dimensions=["metric_time__month"], time_range={"start": "2024-07-01"})


# ------------------------------------------------------------------ offset


def test_month_over_month_growth_with_a_time_range(saas, check):
    got = check(saas, f"""
        with m as (select {month('started_at')} as m, sum(mrr) as v from raw.subscriptions group by 1)
        select a.m as metric_time__month, a.v::double / nullif(b.v, 0) - 1 as new_mrr_growth
        from m a left join m b on b.m = a.m - interval 1 month
        where a.m between '2024-04-01' and '2024-12-01'
    """, metrics=["new_mrr_growth"], dimensions=["metric_time__month"],
        time_range={"start": "2024-04-01", "end": "2024-12-31"})
    assert got[0][0] == dt.date(2024, 4, 1) and got[0][1] is not None


# ------------------------------------------------------------------ conversion


def test_trial_to_paid_by_month(saas, check):
    # strictly after the trial, and at most 14 days after (the 14-days-and-1-second ones do not convert)
    check(saas, f"""
        select {month('started_at')} as metric_time__month,
               (count(*) filter (where {CONVERTED}))::double / count(*) as trial_to_paid
        from raw.trials t group by 1
    """, metrics=["trial_to_paid"], dimensions=["metric_time__month"])


def test_trial_to_paid_by_trial_plan_and_account_region(saas, check):
    # `plan` is a feature of the base activity; `region` is reached through the account entity
    check(saas, f"""
        select t.plan, a.region, (count(*) filter (where {CONVERTED}))::double / count(*) as trial_to_paid
        from raw.trials t join raw.accounts a using (account_id) group by all
    """, metrics=["trial_to_paid"], dimensions=["plan", "region"])


def test_trial_conversions_count_with_a_filter_and_a_range(saas, check):
    check(saas, f"""
        select date_trunc('quarter', t.started_at)::date as metric_time__quarter,
               count(*) filter (where {CONVERTED}) as trial_conversions
        from raw.trials t join raw.accounts a using (account_id)
        where a.segment = 'smb' and t.started_at >= '2024-04-01' and t.started_at < '2024-10-01'
        group by 1
    """, metrics=["trial_conversions"], dimensions=["metric_time__quarter"],
        filters=[{"dimension": "segment", "op": "=", "values": ["smb"]}],
        time_range={"start": "2024-04-01", "end": "2024-09-30"})


def test_conversion_next_to_a_simple_metric_of_another_view(saas, check):
    got = check(saas, f"""
        with c as (select {month('started_at')} as m,
                          (count(*) filter (where {CONVERTED}))::double / count(*) as trial_to_paid
                   from raw.trials t group by 1),
             n as (select {month('started_at')} as m, sum(mrr) as new_mrr from raw.subscriptions group by 1)
        select coalesce(c.m, n.m) as metric_time__month, c.trial_to_paid, n.new_mrr
        from c full join n using (m)
    """, metrics=["trial_to_paid", "new_mrr"], dimensions=["metric_time__month"])
    assert any(r[1] is None for r in got) and all(r[2] is None or r[2] > Decimal(0) for r in got)


# ------------------------------------------------------------------ more aggregates, fills and kinds


def test_percentiles_continuous_and_discrete_and_max(saas, check):
    check(saas, """
        select segment, quantile_cont(mrr, 0.9) as p90_new_mrr, quantile_disc(mrr, 0.9) as p90_new_mrr_discrete,
               max(mrr) as max_new_mrr
        from raw.subscriptions join raw.accounts using (account_id) group by 1
    """, metrics=["p90_new_mrr", "p90_new_mrr_discrete", "max_new_mrr"], dimensions=["segment"])


def test_fill_nulls_with_on_a_simple_metric(saas, check):
    got = check(saas, f"""
        with n as (select {month('started_at')} as m, sum(mrr) as v from raw.subscriptions group by 1),
             c as (select {month('churned_at')} as m, count(*) as v from raw.churns group by 1)
        select coalesce(n.m, c.m) as metric_time__month, n.v as new_mrr, coalesce(c.v, 0) as churns_or_zero
        from n full join c using (m)
    """, metrics=["new_mrr", "churns_or_zero"], dimensions=["metric_time__month"])
    assert (dt.date(2024, 1, 1), Decimal("0") + got[0][1], 0) == got[0], "no churn in January 2024: 0, not NULL"


def test_cumulative_of_a_ratio_accumulates_numerator_and_denominator(saas, check):
    check(saas, """
        with days as (select distinct started_at::date as d from raw.subscriptions
                      where started_at >= '2024-09-01' and started_at < '2024-10-01')
        select d as metric_time__day, (
                   select sum(mrr)::double / count(distinct account_id) from raw.subscriptions
                   where started_at >= d - interval 29 day and started_at < d + interval 1 day) as arpa_30d
        from days
    """, metrics=["arpa_30d"], dimensions=["metric_time__day"],
        time_range={"start": "2024-09-01", "end": "2024-09-30"})


def test_period_agg_first_is_the_value_on_the_first_day_of_the_period(saas, check):
    check(saas, f"""
        with p as (select distinct {month('started_at')} as m from raw.subscriptions
                   where started_at >= '2024-04-01' and started_at < '2024-10-01')
        select m as metric_time__month, (
                   select sum(mrr) from raw.subscriptions
                   where started_at >= m - interval 29 day and started_at < m + interval 1 day) as new_mrr_30d_at_start
        from p
    """, metrics=["new_mrr_30d_at_start"], dimensions=["metric_time__month"],
        time_range={"start": "2024-04-01", "end": "2024-09-30"})


def test_period_agg_avg_is_the_mean_of_the_daily_values_of_the_period(saas, check):
    check(saas, f"""
        with days as (select d::date as d
                      from range(date '2024-04-01', date '2024-10-01', interval 1 day) t(d)),
             daily as (select d, coalesce((select sum(mrr) from raw.subscriptions
                                           where started_at >= d - interval 29 day
                                             and started_at < d + interval 1 day), 0) as v
                       from days)
        select {month('d')} as metric_time__month, avg(v)::double as new_mrr_30d_avg
        from daily group by 1
    """, metrics=["new_mrr_30d_avg"], dimensions=["metric_time__month"],
        time_range={"start": "2024-04-01", "end": "2024-09-30"})


def test_quarter_offset_at_quarter_grain(saas, check):
    got = check(saas, """
        with q as (select date_trunc('quarter', started_at)::date as q, sum(mrr) as v
                   from raw.subscriptions group by 1)
        select a.q as metric_time__quarter, a.v - b.v as new_mrr_qoq
        from q a left join q b on b.q = a.q - interval 3 month
    """, metrics=["new_mrr_qoq"], dimensions=["metric_time__quarter"])
    assert got[0][1] is None and all(r[1] is not None for r in got[1:])


def test_offset_of_a_ratio_with_a_count_distinct(saas, check):
    check(saas, f"""
        with m as (select {month('started_at')} as m, sum(mrr)::double / count(distinct account_id) as arpa
                   from raw.subscriptions group by 1)
        select a.m as metric_time__month, a.arpa - b.arpa as arpa_change
        from m a left join m b on b.m = a.m - interval 1 month
    """, metrics=["arpa_change"], dimensions=["metric_time__month"])


LOCAL = "timezone('America/New_York', timezone('UTC', {}))"


def test_project_timezone_converts_before_bucketing(saas_new_york, check):
    check(saas_new_york, f"""
        select {LOCAL.format('signed_up_at')}::date as metric_time__day, count(*) as signups
        from raw.accounts group by 1
    """, metrics=["signups"], dimensions=["metric_time__day"])
