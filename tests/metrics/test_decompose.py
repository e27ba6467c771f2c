"""Every vector of the metric-trees reference (tests/data/metric_trees/examples.yaml), and the edge rules."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from semantic.errors import QueryError
from semantic.metrics import segments as seg
from semantic.metrics import whatif
from semantic.metrics.decompose import (
    METHODS,
    decompose_tree,
    flat_shapley,
    log_mean,
    log_shares,
    split,
    subtree,
)
from semantic.metrics.formula import formula_of
from semantic.metrics.tree import MetricTree
from semantic.project.model import Metric

EXAMPLES = {e["id"]: e for e in yaml.safe_load(
    (Path(__file__).parents[1] / "data" / "metric_trees" / "examples.yaml").read_text())["examples"]}
TOL = 1e-6


def tree_of(formulas: dict[str, str], leaves) -> MetricTree:
    """A metric tree from `name: expr` formulas; every other name is a leaf (a measure)."""
    metrics = {n: Metric(name=n, expr=f) for n, f in formulas.items()}
    metrics.update({n: Metric(name=n, measure=f"v.{n}") for n in leaves if n not in formulas})
    return MetricTree.from_metrics(metrics)


def approx(expected: dict, got: dict, tol: float = TOL) -> None:
    for k, v in expected.items():
        assert got[k] == pytest.approx(v, abs=tol), k


# ------------------------------------------------------------------ example 1: the profit tree

PROFIT = EXAMPLES["profit_tree"]
P0, P1 = PROFIT["inputs"]["period0"], PROFIT["inputs"]["period1"]
PROFIT_TREE = tree_of(PROFIT["tree"], P0)
WANT = PROFIT["expected"]


def values(period: dict) -> dict:
    return whatif.evaluate(PROFIT_TREE, "profit", period)


def node_split(name: str, method: str = "shapley") -> dict:
    f = formula_of(PROFIT_TREE, name)
    return split(f, values(P0), values(P1), method).contributions


def test_values_of_every_node():
    v0, v1 = values(P0), values(P1)
    for name, want in WANT["values"].items():
        assert (v0[name], v1[name], v1[name] - v0[name]) == pytest.approx(
            (want["period0"], want["period1"], want["delta"]), abs=TOL)


def test_additive_splits_flip_the_sign_of_subtracted_children():
    approx(WANT["profit_split"], node_split("profit"))
    approx(WANT["costs_split"], node_split("costs"))
    for method in METHODS:  # every method agrees on a sum
        approx(WANT["profit_split"], node_split("profit", method))


@pytest.mark.parametrize("method", ["shapley", "integrated_gradients", "lmdi", "sequential_volume_first",
                                    "sequential_rate_first"])
def test_product_split_by_method(method):
    want = {k: v for k, v in WANT["revenue_split"][method].items() if k != "log_mean_L"}
    got = node_split("revenue", method)
    approx(want, got)
    assert sum(got.values()) == pytest.approx(WANT["values"]["revenue"]["delta"], abs=1e-9)


def test_lmdi_log_mean_and_log_shares():
    assert log_mean(52800, 50000) == pytest.approx(WANT["revenue_split"]["lmdi"]["log_mean_L"], abs=TOL)
    assert log_mean(7.0, 7.0) == 7.0
    shares = log_shares(formula_of(PROFIT_TREE, "revenue"), values(P0), values(P1))
    approx(WANT["revenue_split"]["log_share"], shares)
    assert sum(shares.values()) == pytest.approx(1.0)


def test_leaf_contributions_chained_to_the_root():
    out = decompose_tree(PROFIT_TREE, "profit", values(P0), values(P1))
    want = dict(WANT["leaf_contributions_to_profit"])
    assert sum(out.contributions[k] for k in P0) == pytest.approx(want.pop("sum"), abs=TOL)
    approx(want, out.contributions)
    assert out.exact and out.residual == 0.0 and out.change == pytest.approx(100)
    assert out.contributions["revenue"] == pytest.approx(2800) and out.contributions["costs"] == pytest.approx(-2700)


def test_flat_shapley_over_the_leaves_agrees_here():
    approx(WANT["flat_shapley_over_leaves"], flat_shapley(PROFIT_TREE, "profit", P0, P1))


def test_regression_costs_hurt_profit():
    out = decompose_tree(PROFIT_TREE, "profit", values(P0), values(P1))
    assert out.shares["costs"] == pytest.approx(WANT["regression_checks"]["relative_impact_of_costs_on_profit"])


@pytest.mark.parametrize("method", METHODS)
def test_every_method_is_exact_down_to_the_leaves_but_leave_one_out(method):
    out = decompose_tree(PROFIT_TREE, "profit", values(P0), values(P1), method)
    total = sum(out.contributions[k] for k in P0)
    if method == "leave_one_out":
        assert not out.exact and total + out.residual == pytest.approx(100)
        assert out.contributions["orders"] == pytest.approx(4800)  # Δprofit − change with orders held at 1,000
    else:
        assert out.exact and total == pytest.approx(100, abs=1e-9)


# ------------------------------------------------------------------ example 2: rate and mix

MIX = EXAMPLES["conversion_rate_mix"]
CHANNELS = {k: seg.Segment(v["conversions0"], v["visits0"], v["conversions1"], v["visits1"])
            for k, v in MIX["inputs"]["segments"].items()}


def test_rate_and_mix_in_both_conventions():
    want = MIX["expected"]
    for convention, key in (("current", "rate_mix_current_weights"), ("symmetric", "rate_mix_symmetric")):
        got = seg.rate_mix(CHANNELS, convention)
        for name in ("organic", "paid"):
            approx(want[key][name], got[name])
            assert got[name]["contribution"] == pytest.approx(got[name]["rate"] + got[name]["mix"])
        total = want[key]["total"]
        approx({"rate": total["rate"], "mix": total["mix"], "contribution": total["sum"]}, got["total"])
    assert seg.old_mix_rate(CHANNELS) == pytest.approx(want["counterfactual_rate1_at_old_mix"])
    overall = want["overall"]
    assert seg.rate_mix(CHANNELS)["total"]["contribution"] == pytest.approx(overall["delta"])
    for name, s in want["segments"].items():
        c = CHANNELS[name]
        assert (c.den0 / 10000, c.den1 / 12000, c.num0 / c.den0, c.num1 / c.den1) == pytest.approx(
            (s["share0"], s["share1"], s["rate0"], s["rate1"]))


def test_leave_one_out_by_segment_is_not_additive():
    want = dict(MIX["expected"]["leave_one_out"])
    got = seg.leave_one_out(CHANNELS)
    assert sum(got.values()) == pytest.approx(want.pop("sum"))
    approx(want, got)
    assert sum(got.values()) != pytest.approx(MIX["expected"]["overall"]["delta"])


def test_a_segment_new_in_the_current_period_is_all_mix():
    grown = {**CHANNELS, "email": seg.Segment(0, 0, 20, 500)}
    got = seg.rate_mix(grown)
    assert got["email"]["rate"] is None and got["email"]["contribution"] == pytest.approx(20 / 12500 - 0.044 * 500 / 12500)
    assert sum(v["contribution"] for k, v in got.items() if k != "total") == pytest.approx(got["total"]["contribution"])


# ------------------------------------------------------------------ example 4: price–volume–mix

PVM = EXAMPLES["price_volume_mix"]
PRODUCTS = {k: (v["price0"], v["units0"], v["price1"], v["units1"]) for k, v in PVM["inputs"]["products"].items()}


def test_price_volume_mix():
    want = PVM["expected"]
    got = seg.price_volume_mix(PRODUCTS)
    for name, w in want["per_product"].items():
        approx({k: w[k] for k in ("volume", "mix", "mix_centred", "rate")}, got[name])
    approx({k: want["totals"][k] for k in ("volume", "mix", "rate")}, got["total"])
    assert got["total"]["mix_centred"] == pytest.approx(want["totals"]["mix"])
    assert sum(got["total"][k] for k in ("volume", "mix", "rate")) == pytest.approx(want["totals"]["sum"])
    revenue0 = sum(p * u for p, u, _, _ in PRODUCTS.values())
    revenue1 = sum(p * u for _, _, p, u in PRODUCTS.values())
    assert (revenue0, revenue1, revenue1 - revenue0) == tuple(want["revenue"][k] for k in ("period0", "period1", "delta"))
    assert revenue0 / want["units"]["period0"] == pytest.approx(want["average_price0"])
    approx(want["accounting_variant"], seg.price_volume_accounting(PRODUCTS))


# ------------------------------------------------------------------ example 5: what-if

SENS = EXAMPLES["sensitivity"]
BASE = SENS["inputs"]["base"]


def test_what_if_with_costs_as_a_fixed_leaf():
    tree = tree_of(SENS["tree"], BASE)
    base = whatif.evaluate(tree, "profit", BASE)
    approx(SENS["expected"]["base_values"], base)
    new = whatif.what_if(tree, "profit", base, {"conversion_rate": 1.0})
    want = SENS["expected"]["costs_as_fixed_leaf"]
    assert new["conversion_rate"] == pytest.approx(0.02222)
    assert new["profit"] == pytest.approx(want["profit_after"])
    assert new["profit"] - base["profit"] == pytest.approx(want["profit_delta"])
    assert new["profit"] / base["profit"] - 1 == pytest.approx(want["profit_pct_change"], abs=1e-9)
    assert whatif.elasticity(tree, "profit", base, "conversion_rate") == pytest.approx(
        want["elasticity_profit_wrt_conversion_rate"], abs=1e-6)
    assert new["costs"] == base["costs"] and new["aov"] == base["aov"]  # not above the change: untouched


def test_what_if_with_variable_costs():
    formulas = {**SENS["tree"], "costs": "cogs + shipping + fees", "cogs": "20 * orders", "shipping": "5 * orders",
                "fees": "revenue * 2700 / 52800"}
    tree = tree_of(formulas, BASE)
    base = whatif.evaluate(tree, "profit", {k: v for k, v in BASE.items() if k != "costs"})
    want = SENS["expected"]["variable_costs"]
    assert base["profit"] == pytest.approx(want["profit_base"])
    new = whatif.what_if(tree, "profit", base, {"conversion_rate": 1.0})
    assert new["profit"] == pytest.approx(want["profit_after"])
    assert new["profit"] - base["profit"] == pytest.approx(want["profit_delta"])
    assert whatif.elasticity(tree, "profit", base, "conversion_rate") == pytest.approx(
        want["elasticity_profit_wrt_conversion_rate"])


def test_what_if_of_an_inner_metric_holds_its_inputs():
    tree = tree_of(SENS["tree"], BASE)
    base = whatif.evaluate(tree, "profit", BASE)
    new = whatif.what_if(tree, "profit", base, {"revenue": -10})
    assert new["revenue"] == pytest.approx(47520) and new["orders"] == base["orders"]
    assert new["profit"] == pytest.approx(47520 - 30200)
    with pytest.raises(QueryError, match="did you mean `revenue`"):
        whatif.what_if(tree, "profit", base, {"revenu": 5})


# ------------------------------------------------------------------ example 6: targets

TARGET = EXAMPLES["target_propagation"]


def test_target_propagation():
    tree = tree_of(SENS["tree"], BASE)
    inputs = {k: TARGET["inputs"]["base"][k] for k in ("sessions", "conversion_rate", "aov", "costs")}
    goal = TARGET["inputs"]["target"]["profit"]
    want = TARGET["expected"]
    assert whatif.solve_for(tree, "profit", inputs, "revenue", goal) == pytest.approx(want["revenue_needed"])
    for name, value in want["solve_one_input_others_fixed"].items():
        assert whatif.solve_for(tree, "profit", inputs, name, goal) == pytest.approx(value, abs=TOL)
    split_ = want["equal_relative_split_across_product_factors"]
    got = whatif.equal_relative_split({"orders": 1100, "aov": 48}, want["revenue_needed"] / 52800)
    assert got["orders"] / 1100 == pytest.approx(split_["growth_factor_each"], abs=1e-9)
    approx({"orders": split_["orders"], "aov": split_["aov"]}, got)
    extra = want["required_growth_per_period"]["extra_vector"]
    assert whatif.required_growth(extra["current"], extra["target"], extra["periods"]) == pytest.approx(
        extra["rate"], abs=1e-9)


# ------------------------------------------------------------------ edge rules


def test_division_by_zero_gives_null_contributions_with_a_reason():
    tree = tree_of({"margin": "profit / revenue"}, ["profit", "revenue"])
    out = decompose_tree(tree, "margin", {"margin": 0.5, "profit": 5, "revenue": 10}, {"margin": None, "profit": 0,
                                                                                      "revenue": 0})
    assert out.change is None and all(v is None for v in out.contributions.values())
    assert "current period" in out.reasons["margin"]
    s = split(formula_of(tree, "margin"), {"profit": 5, "revenue": 0}, {"profit": 5, "revenue": 10})
    assert s.contributions is None and "division by zero (revenue = 0)" in s.reason


def test_a_mixed_period_division_by_zero_stops_only_that_node():
    tree = tree_of({"y": "a + q", "q": "b / (c - d)"}, ["a", "b", "c", "d"])
    x0, x1 = {"a": 1, "b": 1, "c": 2, "d": 1}, {"a": 2, "b": 2, "c": 3, "d": 2}  # c¹ − d⁰ = 2, c⁰ − d¹ = 0
    v0, v1 = whatif.evaluate(tree, "y", x0), whatif.evaluate(tree, "y", x1)
    out = decompose_tree(tree, "y", v0, v1)
    assert out.contributions["a"] == 1 and out.contributions["q"] == pytest.approx(1.0)
    assert out.contributions["b"] is None and "could not be split" in out.reasons["b"]
    assert out.exact  # q keeps its flow: the terminal nodes still sum to the change


def test_shapley_takes_zeros_and_negatives_lmdi_refuses_them():
    tree = tree_of({"revenue": "orders * aov"}, ["orders", "aov"])
    f = formula_of(tree, "revenue")
    x0, x1 = {"orders": 0, "aov": -5}, {"orders": 10, "aov": 3}
    got = split(f, x0, x1).contributions
    assert got == pytest.approx({"orders": 10 * (-5 + 3) / 2, "aov": 8 * (0 + 10) / 2}) and sum(got.values()) == 30
    with pytest.raises(QueryError, match="LMDI needs positive values: `aov` is -5 in the comparison period"):
        split(f, x0, x1, "lmdi")
    with pytest.raises(QueryError, match="unknown decomposition method"):
        split(f, x0, x1, "banzhaf")


def test_quotient_closed_form_and_funnel_sequential():
    tree = tree_of({"r": "a / b", "y": "f1 * f2 * f3"}, ["a", "b", "f1", "f2", "f3"])
    a0, b0, a1, b1 = 10.0, 4.0, 15.0, 5.0
    got = split(formula_of(tree, "r"), {"a": a0, "b": b0}, {"a": a1, "b": b1}).contributions
    assert got["a"] == pytest.approx(((a1 - a0) / b0 + (a1 - a0) / b1) / 2)
    assert got["b"] == pytest.approx(((a0 / b1 - a0 / b0) + (a1 / b1 - a1 / b0)) / 2)
    x0, x1 = {"f1": 100.0, "f2": 0.5, "f3": 0.2}, {"f1": 120.0, "f2": 0.4, "f3": 0.3}
    seq = split(formula_of(tree, "y"), x0, x1, "sequential_volume_first").contributions
    assert seq["f2"] == pytest.approx(x1["f1"] * (x1["f2"] - x0["f2"]) * x0["f3"])  # Π_{j<i} f¹ · Δf_i · Π_{j>i} f⁰


def test_dag_a_child_of_two_parents_gets_both_flows():
    tree = tree_of({"margin": "profit / net", "profit": "net - costs"}, ["net", "costs"])
    x0, x1 = {"net": 100.0, "costs": 60.0}, {"net": 120.0, "costs": 90.0}
    v0, v1 = whatif.evaluate(tree, "margin", x0), whatif.evaluate(tree, "margin", x1)
    for method in ("shapley", "lmdi", "sequential_rate_first", "integrated_gradients"):
        out = decompose_tree(tree, "margin", v0, v1, method)
        assert out.contributions["net"] + out.contributions["costs"] == pytest.approx(v1["margin"] - v0["margin"])
    assert list(subtree(tree, "margin")) == ["margin", "profit", "net", "costs"]


def test_a_node_that_did_not_move_still_shows_its_offsetting_children():
    tree = tree_of({"profit": "revenue - costs", "revenue": "orders * aov"}, ["orders", "aov", "costs"])
    x0, x1 = {"orders": 100.0, "aov": 50.0, "costs": 1000.0}, {"orders": 125.0, "aov": 40.0, "costs": 900.0}
    out = decompose_tree(tree, "profit", whatif.evaluate(tree, "profit", x0), whatif.evaluate(tree, "profit", x1))
    assert out.contributions["revenue"] == 0 and out.contributions["costs"] == pytest.approx(100)
    assert out.contributions["orders"] == pytest.approx(25 * 45) and out.contributions["aov"] == pytest.approx(-10 * 112.5)


def test_offsets_and_cumulatives_are_leaves():
    metrics = {"revenue": Metric(name="revenue", measure="v.revenue"),
               "mom": Metric(name="mom", expr="revenue - prev", inputs={"prev": {"metric": "revenue", "offset": "1 month"}}),
               "mtd": Metric(name="mtd", cumulative={"metric": "revenue", "grain_to_date": "month"}),
               "top": Metric(name="top", expr="mom + mtd")}
    tree = MetricTree.from_metrics(metrics)
    assert list(subtree(tree, "top")) == ["top", "mom", "mtd"]
    out = decompose_tree(tree, "top", {"top": 3, "mom": 1, "mtd": 2}, {"top": 6, "mom": 2, "mtd": 4})
    assert out.contributions == {"top": 3, "mom": 1, "mtd": 2}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-1e4, 1e4, allow_nan=False).filter(lambda x: abs(x) > 1e-3), min_size=10, max_size=10),
       st.sampled_from([m for m in METHODS if m not in ("lmdi", "leave_one_out")]))
def test_property_leaves_sum_to_the_root_change(xs, method):
    tree = tree_of({"y": "(a * b - c) / d + e", "e": "f * g - c"}, "abcdfg")
    x0, x1 = dict(zip("abcdfg", xs[:5] + xs[:1], strict=True)), dict(zip("abcdfg", xs[5:] + xs[5:6], strict=True))
    v0, v1 = whatif.evaluate(tree, "y", x0), whatif.evaluate(tree, "y", x1)
    out = decompose_tree(tree, "y", v0, v1, method)
    if out.exact and all(out.contributions[k] is not None for k in "abcdfg"):
        total = math.fsum(out.contributions[k] for k in "abcdfg")
        assert total == pytest.approx(v1["y"] - v0["y"], rel=1e-7, abs=1e-6)
    elif method != "integrated_gradients":  # only IG may decline (a path through a pole)
        assert any(out.contributions[k] is None for k in "abcdfg")
