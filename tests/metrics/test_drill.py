"""Adtributor: the reference's worked example (revenue by country) and small hand-computed cases."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from semantic.metrics import drill
from semantic.metrics.segments import Segment

EXAMPLE = next(e for e in yaml.safe_load(
    (Path(__file__).parents[1] / "data" / "metric_trees" / "examples.yaml").read_text())["examples"]
    if e["id"] == "revenue_by_country")
F, A = EXAMPLE["inputs"]["forecast_or_previous"], EXAMPLE["inputs"]["actual_or_current"]
PARAMS = EXAMPLE["inputs"]["adtributor_params"]
WANT = EXAMPLE["expected"]


def test_explanatory_power_surprise_and_deltas_per_country():
    items = {e.value: e for e in drill.additive("country", F, A)}
    for country, want in WANT["segments"].items():
        e = items[country]
        assert e.contribution == pytest.approx(want["delta"]) and e.explanatory_power == pytest.approx(want["ep"])
        assert e.surprise == pytest.approx(want["surprise_log2"], abs=1e-9)
        p, q = F[country] / WANT["totals"]["F"], A[country] / WANT["totals"]["A"]
        assert (p, q) == pytest.approx((want["p"], want["q"]), abs=1e-9)
        assert drill.surprise(p, q, math.e) == pytest.approx(want["surprise_ln"], abs=1e-9)
    assert sum(e.contribution for e in items.values()) == WANT["additive_check"]["sum_of_segment_deltas"]
    assert sum(e.explanatory_power for e in items.values()) == pytest.approx(1.0)
    assert sum(e.value0 for e in items.values()) == WANT["totals"]["F"]
    assert sum(e.value1 for e in items.values()) == WANT["totals"]["A"]


def test_root_cause_search_with_the_reference_thresholds():
    assert (PARAMS["T_EEP"], PARAMS["T_EP"], PARAMS["k"]) == (drill.T_EEP, drill.T_EP, drill.K)
    elements = drill.additive("country", F, A)
    causes = drill.adtributor(elements, PARAMS["T_EEP"], PARAMS["T_EP"], PARAMS["k"])
    want = WANT["adtributor"]["root_cause"]
    assert [(c.dimension, c.elements) for c in causes] == [(want["dimension"], want["elements"])]
    assert causes[0].explanatory_power == pytest.approx(want["explanatory_power"])
    assert causes[0].surprise == pytest.approx(want["surprise"], abs=1e-9)
    order = [e.value for e in sorted(elements, key=lambda e: -e.surprise)]
    assert order == WANT["adtributor"]["order_by_surprise"]
    ranked = drill.ranked(elements, causes)
    assert [e.value for e in ranked] == ["DE", "US", "FR"] and [e.root_cause for e in ranked] == [True, False, False]


def test_sets_rank_by_surprise_and_a_dimension_below_t_ep_has_no_candidate():
    # channel: web explains it all, loudly; device: spread evenly, every element below T_EEP → no candidate
    channel = drill.additive("channel", {"web": 100, "app": 100}, {"web": 40, "app": 100})
    device = drill.additive("device", {f"d{i}": 20 for i in range(10)}, {f"d{i}": 14 for i in range(10)})
    weekday = drill.additive("weekday", {"mon": 150, "tue": 50}, {"mon": 120, "tue": 20})
    causes = drill.adtributor(channel + device + weekday)
    assert [c.dimension for c in causes] == ["channel", "weekday"]  # channel's set is the more surprising
    assert causes[0].elements == ["web"] and causes[1].elements == ["tue", "mon"]
    assert causes[1].explanatory_power == pytest.approx(1.0)
    assert drill.adtributor(channel + weekday, k=1)[0].dimension == "channel"


def test_ratio_segments_split_the_change_into_rate_and_mix():
    # conversion rate by channel (reference example 2): each channel improved, the total fell
    segments = {"organic": Segment(400, 8000, 330, 6000), "paid": Segment(40, 2000, 150, 6000)}
    items = {e.value: e for e in drill.ratio("channel", segments)}
    assert sum(e.contribution for e in items.values()) == pytest.approx(-0.004)
    assert (items["organic"].rate, items["organic"].mix) == pytest.approx((0.0025, -0.0018))
    assert (items["paid"].rate, items["paid"].mix) == pytest.approx((0.0025, -0.0072))
    assert (items["paid"].value0, items["paid"].value1) == pytest.approx((0.02, 0.025))
    # derived-measure EP by hand: organic (−70·10000 + 2000·440) / (10000·8000) = 0.00225,
    # paid (110·10000 − 4000·440) / (10000·14000) = −0.0047142857; normalised by their sum
    organic, paid = 0.00225, -660000 / 1.4e8
    assert items["organic"].explanatory_power == pytest.approx(organic / (organic + paid))
    assert items["paid"].explanatory_power == pytest.approx(paid / (organic + paid))
    assert sum(e.explanatory_power for e in items.values()) == pytest.approx(1.0)
    s = drill.surprise
    assert items["paid"].surprise == pytest.approx(s(40 / 440, 150 / 480) + s(2000 / 10000, 6000 / 12000))


def test_ratio_explanatory_power_by_hand():
    # aov = revenue / orders; F = (1000 / 10), A: a's revenue +500 on +2 orders, b unchanged
    segments = {"a": Segment(600, 6, 1100, 8), "b": Segment(400, 4, 400, 4)}
    items = {e.value: e for e in drill.ratio("segment", segments)}
    assert items["a"].explanatory_power == pytest.approx(1.0) and items["b"].explanatory_power == 0
    assert items["a"].contribution + items["b"].contribution == pytest.approx(1500 / 12 - 100)


def test_negative_values_have_no_surprise():
    items = drill.additive("channel", {"web": 100, "app": -20}, {"web": 50, "app": 10})
    assert all(e.surprise is None for e in items)
    assert sum(e.contribution for e in items) == pytest.approx(-20)
