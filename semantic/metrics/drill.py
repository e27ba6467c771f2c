"""Which values of which dimension drove a metric's change: Adtributor (Bhagwan et al., NSDI 2014).

For a dimension with elements `j`, comparison values `F` and current values `A`:

- explanatory power `EP_j = (A_j − F_j) / (A − F)`; EPs over a dimension sum to 1, an element that moved
  against the total has a negative EP;
- surprise `S_j = ½ [p log₂(2p/(p+q)) + q log₂(2q/(p+q))]` with `p = F_j/F`, `q = A_j/A` (a zero `p` or `q` drops
  its term; undefined, and ranked last, when a share is negative);
- search: per dimension, elements by surprise descending; an element with `EP > T_EEP` joins the candidate
  set; the set is kept once its total EP exceeds `T_EP`. Sets are ranked by total surprise, top `k`.

The metric decides how segments are compared (`kind` in the answer):

- `additive` (a sum or count, or a difference of them): `contribution = A_j − F_j`, summing to the change;
- `ratio` (`a / b` of additive metrics): `contribution` is the segment's rate + mix effect (current
  weights, `semantic.metrics.segments`), summing to the change; EP is Adtributor's derived-measure EP
  `[(ΔA_j(a)) F(b) − (ΔA_j(b)) F(a)] / [F(b) (F(b) + ΔA_j(b))]` normalised to sum to 1; surprise is the sum
  of the numerator's and the denominator's;
- `non_additive` (averages, distinct counts, products): `contribution = A_j − F_j` per segment, which does
  not sum to the change; EP is normalised over the segments.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from semantic.metrics.segments import Segment, rate_mix

T_EEP, T_EP, K = 0.1, 0.67, 3


@dataclass
class Element:
    dimension: str
    value: object
    value0: float | None
    value1: float | None
    contribution: float | None
    explanatory_power: float | None
    surprise: float | None
    rate: float | None = None
    mix: float | None = None
    root_cause: bool = False

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class RootCause:
    dimension: str
    elements: list
    explanatory_power: float
    surprise: float


def surprise(p: float, q: float, base: float = 2.0) -> float | None:
    """The Jensen–Shannon term of one element; None for a negative share."""
    if p < 0 or q < 0:
        return None
    m = (p + q) / 2
    return 0.5 * sum(x * math.log(x / m, base) for x in (p, q) if x > 0)


def _share(x: float, total: float) -> float | None:
    return x / total if total else None


def _surprise(f: float, total_f: float, a: float, total_a: float) -> float | None:
    p, q = _share(f, total_f), _share(a, total_a)
    return None if p is None or q is None else surprise(p, q)


def additive(dimension: str, before: Mapping, after: Mapping) -> list[Element]:
    """Elements of a metric from its value per segment (EP over the sum of the segments' changes)."""
    keys = list(dict.fromkeys([*before, *after]))
    f = {k: float(before.get(k) or 0.0) for k in keys}
    a = {k: float(after.get(k) or 0.0) for k in keys}
    total_f, total_a = math.fsum(f.values()), math.fsum(a.values())
    change = total_a - total_f
    out = []
    for k in keys:
        delta = a[k] - f[k]
        out.append(Element(dimension, k, _value(before.get(k)), _value(after.get(k)), delta,
                           delta / change if change else None, _surprise(f[k], total_f, a[k], total_a)))
    if any(x < 0 for x in [*f.values(), *a.values()]):  # shares of a total are not a distribution then
        for e in out:
            e.surprise = None
    return out


def ratio(dimension: str, segments: Mapping[object, Segment]) -> list[Element]:
    """Elements of `a / b`, from each segment's numerator and denominator in both periods."""
    n0 = math.fsum(s.num0 for s in segments.values())
    d0 = math.fsum(s.den0 for s in segments.values())
    n1 = math.fsum(s.num1 for s in segments.values())
    d1 = math.fsum(s.den1 for s in segments.values())
    split = rate_mix(segments) if d0 and d1 else {}
    raw = {}
    for k, s in segments.items():
        bottom = d0 * (d0 + s.den1 - s.den0)
        raw[k] = ((s.num1 - s.num0) * d0 - (s.den1 - s.den0) * n0) / bottom if bottom else None
    norm = math.fsum(v for v in raw.values() if v is not None)
    out = []
    for k, s in segments.items():
        parts = split.get(k, {})
        sn, sd = _surprise(s.num0, n0, s.num1, n1), _surprise(s.den0, d0, s.den1, d1)
        out.append(Element(
            dimension, k, s.num0 / s.den0 if s.den0 else None, s.num1 / s.den1 if s.den1 else None,
            parts.get("contribution"), raw[k] / norm if raw[k] is not None and norm else None,
            None if sn is None or sd is None else sn + sd, parts.get("rate"), parts.get("mix")))
    return out


def adtributor(elements: list[Element], t_eep: float = T_EEP, t_ep: float = T_EP, k: int = K) -> list[RootCause]:
    """The candidate sets of the top `k` dimensions; marks their elements `root_cause`."""
    by_dim: dict[str, list[Element]] = {}
    for e in elements:
        by_dim.setdefault(e.dimension, []).append(e)
    found = []
    for dimension, items in by_dim.items():
        chosen, ep, s = [], 0.0, 0.0
        for e in sorted(items, key=_by_surprise):
            if e.explanatory_power is not None and e.explanatory_power > t_eep:
                chosen.append(e)
                ep += e.explanatory_power
                s += e.surprise or 0.0
                if ep > t_ep:
                    found.append((s, dimension, chosen, ep))
                    break
    found.sort(key=lambda x: -x[0])
    causes = []
    for s, dimension, chosen, ep in found[:k]:
        for e in chosen:
            e.root_cause = True
        causes.append(RootCause(dimension, [e.value for e in chosen], ep, s))
    return causes


def ranked(elements: list[Element], causes: list[RootCause]) -> list[Element]:
    """Root causes first (their sets in rank order, each by surprise), then the rest by surprise."""
    rank = {c.dimension: i for i, c in enumerate(causes)}
    return sorted(elements, key=lambda e: (0, rank[e.dimension], *_by_surprise(e)) if e.root_cause else
                  (1, 0, *_by_surprise(e)))


def _by_surprise(e: Element) -> tuple:
    return (e.surprise is None, -(e.surprise or 0.0), -abs(e.contribution or 0.0))


def _value(x) -> float | None:
    return None if x is None else float(x)
