"""Which tables' `refresh` schedules are due: what `phloem worker` rebuilds although their definitions did not change.

A table's definition tells when it is stale; its rows can change in the warehouse at any time, so a schedule says
how often to read them again. A dataset with `refresh:` is due once that long has passed since it was built. A
rollup with `refresh:` is due once that long has passed since it was refreshed, and then the datasets it reads
that have no `refresh:` of their own are due with it (a rollup refreshed over unchanged datasets would hold the
same rows). Tables without a schedule are rebuilt only when stale, and rollups without one whenever a dataset
they read was rebuilt (as by `phloem build`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from semantic.materialize.build import Builder
from semantic.materialize.rollups import is_due


@dataclass(frozen=True)
class Due:
    datasets: frozenset[str] = frozenset()
    rollups: frozenset[str] = frozenset()

    @property
    def names(self) -> frozenset[str]:
        return self.datasets | self.rollups


def due(builder: Builder, now: dt.datetime | None = None) -> Due:
    """The datasets and rollups whose schedule is due at `now` (naive UTC; default: the present)."""
    model = builder.model
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    built_at = builder.built_at()
    datasets = {name for name, d in model.datasets.items()
                if d.refresh and name in built_at and is_due(built_at[name], d.refresh, now)}
    rollups: set[str] = set()
    if model.rollups:
        recorded = builder.rollups.recorded()
        for name, spec in builder.rollups.specs.items():
            refresh, state = spec.rollup.refresh, recorded.get(name)
            if refresh and state is not None and is_due(state["refreshed_at"], refresh, now):
                rollups.add(name)
                datasets |= {d for d in spec.sources if not model.datasets[d].refresh}
    return Due(frozenset(datasets), frozenset(rollups))
