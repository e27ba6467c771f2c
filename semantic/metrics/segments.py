"""A metric's change broken down by the segments of one dimension: rate and mix, price–volume–mix.

A ratio `R = Σ_j s_j · r_j` (segment share of the denominator `s_j = d_j / Σd`, segment rate `r_j = n_j / d_j`)
changes by a rate effect and a mix effect. Current weights (centred on `C = R⁰`):
`rate_j = s_j¹ (r_j¹ − r_j⁰)`, `mix_j = (s_j¹ − s_j⁰)(r_j⁰ − R⁰)`. Symmetric: `rate_j = (s_j⁰ + s_j¹)/2 · (r_j¹ − r_j⁰)`,
`mix_j = (s_j¹ − s_j⁰)((r_j⁰ + r_j¹)/2 − (R⁰ + R¹)/2)`. Both sum to `R¹ − R⁰`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Segment:
    num0: float
    den0: float
    num1: float
    den1: float


def _totals(segments: Mapping[str, Segment]) -> tuple[float, float, float, float]:
    n0 = sum(s.num0 for s in segments.values())
    d0 = sum(s.den0 for s in segments.values())
    n1 = sum(s.num1 for s in segments.values())
    d1 = sum(s.den1 for s in segments.values())
    return n0, d0, n1, d1


def rate_mix(segments: Mapping[str, Segment], convention: str = "current") -> dict[str, dict[str, float | None]]:
    """Each segment's rate and mix effect, and `total` (current weights, or `symmetric`).

    A segment absent from one period has no rate there: its whole effect is then mix, with
    `contribution = n_j¹/D¹ − n_j⁰/D⁰ − R⁰ (s_j¹ − s_j⁰)` (current weights), which is defined regardless.
    """
    n0, d0, n1, d1 = _totals(segments)
    big_r0, big_r1 = n0 / d0, n1 / d1
    out: dict[str, dict[str, float | None]] = {}
    for name, s in segments.items():
        s0, s1 = s.den0 / d0, s.den1 / d1
        r0 = s.num0 / s.den0 if s.den0 else None
        r1 = s.num1 / s.den1 if s.den1 else None
        if convention == "symmetric":
            if r0 is None or r1 is None:
                rate, mix = None, None
                total = s.num1 / d1 - s.num0 / d0 - (big_r0 + big_r1) / 2 * (s1 - s0)
            else:
                rate = (s0 + s1) / 2 * (r1 - r0)
                mix = (s1 - s0) * ((r0 + r1) / 2 - (big_r0 + big_r1) / 2)
                total = rate + mix
        else:
            total = s.num1 / d1 - s.num0 / d0 - big_r0 * (s1 - s0)
            rate = None if r0 is None or r1 is None else s1 * (r1 - r0)
            mix = None if rate is None else total - rate
        out[name] = {"rate": rate, "mix": mix, "contribution": total}
    out["total"] = {"rate": sum(v["rate"] or 0.0 for v in out.values()),
                    "mix": sum(v["mix"] or 0.0 for v in out.values()),
                    "contribution": big_r1 - big_r0}
    return out


def old_mix_rate(segments: Mapping[str, Segment]) -> float:
    """The counterfactual ratio: current segment rates at the comparison period's mix, `Σ s_j⁰ r_j¹`."""
    _, d0, _, _ = _totals(segments)
    return sum(s.den0 / d0 * (s.num1 / s.den1) for s in segments.values())


def leave_one_out(segments: Mapping[str, Segment]) -> dict[str, float]:
    """Overall change minus the change without segment j (numerator and denominator). NOT additive."""
    n0, d0, n1, d1 = _totals(segments)
    delta = n1 / d1 - n0 / d0
    return {name: delta - ((n1 - s.num1) / (d1 - s.den1) - (n0 - s.num0) / (d0 - s.den0))
            for name, s in segments.items()}


def price_volume_mix(products: Mapping[str, tuple[float, float, float, float]]) -> dict[str, dict[str, float]]:
    """Revenue `Σ Q · s_j · p_j` split in the order volume, mix, rate; `products` maps to (p0, q0, p1, q1).

    Volume `(Q¹ − Q⁰) s_j⁰ p_j⁰`, mix `Q¹ (s_j¹ − s_j⁰) p_j⁰` (centred: `… (p_j⁰ − P̄⁰)`), rate `q_j¹ (p_j¹ − p_j⁰)`.
    """
    q0 = sum(p[1] for p in products.values())
    q1 = sum(p[3] for p in products.values())
    avg0 = sum(p[0] * p[1] for p in products.values()) / q0
    out = {}
    for name, (p0, u0, p1, u1) in products.items():
        s0, s1 = u0 / q0, u1 / q1
        out[name] = {"volume": (q1 - q0) * s0 * p0, "mix": q1 * (s1 - s0) * p0,
                     "mix_centred": q1 * (s1 - s0) * (p0 - avg0), "rate": u1 * (p1 - p0)}
    out["total"] = {k: sum(v[k] for v in out.values()) for k in ("volume", "mix", "mix_centred", "rate")}
    return out


def price_volume_accounting(products: Mapping[str, tuple[float, float, float, float]]) -> dict[str, float]:
    """The accounting variant (a different, order-dependent convention): price `Σ (p¹ − p⁰) q⁰`,
    volume `Σ (q¹ − q⁰) p⁰`, mix = whatever is left."""
    price = sum((p1 - p0) * u0 for p0, u0, p1, _ in products.values())
    volume = sum((u1 - u0) * p0 for p0, u0, _, u1 in products.values())
    total = sum(p1 * u1 - p0 * u0 for p0, u0, p1, u1 in products.values())
    return {"price": price, "volume": volume, "residual_mix": total - price - volume}
