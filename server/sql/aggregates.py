"""Which aggregate call a SELECT wrote, and whether it is the measure's own (MODEL.md §7).

On a view's table a measure answers to MEASURE(x), to its own aggregate (SUM for sum, COUNT for count,
COUNT(DISTINCT x) or COUNT_DISTINCT(x) for count_distinct, AVG, MIN, MAX, MEDIAN or PERCENTILE_CONT(0.5)
WITHIN GROUP (ORDER BY x) for median, PERCENTILE_CONT/DISC(p) … for percentile) and to its bare name.
On `metrics` every metric answers to MEASURE, SUM, AVG, MIN, MAX, ANY_VALUE and its bare name (all mean
the metric at the query's grain), and a simple metric also to its measure's own aggregate.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot import exp

from semantic.errors import QueryError
from server.sql.tables import TableColumn


@dataclass(frozen=True)
class Call:
    """An aggregate call: its form (`sum`, `count`, `count_distinct`, `percentile_cont` …) and argument."""

    form: str
    argument: exp.Expression  # exp.Star for COUNT(*)
    p: float | None = None
    text: str = ""


PLAIN = {exp.Sum: "sum", exp.Avg: "avg", exp.Min: "min", exp.Max: "max", exp.Median: "median",
         exp.ApproxDistinct: "approx_count_distinct", exp.AnyValue: "any_value"}
WRAPPERS_ON_METRICS = {"measure", "sum", "avg", "min", "max", "any_value"}
OWN_FORMS = {
    "sum": {"sum"}, "count": {"count"}, "count_distinct": {"count_distinct", "approx_count_distinct"},
    "approx_count_distinct": {"approx_count_distinct", "count_distinct"}, "avg": {"avg"}, "min": {"min"},
    "max": {"max"}, "median": {"median", "percentile_cont"}, "percentile": {"percentile_cont", "percentile_disc"},
}
SPELLING = {"sum": "SUM({x})", "count": "COUNT({x})", "count_distinct": "COUNT(DISTINCT {x})",
            "approx_count_distinct": "APPROX_COUNT_DISTINCT({x})", "avg": "AVG({x})", "min": "MIN({x})",
            "max": "MAX({x})", "median": "MEDIAN({x})"}


def is_aggregate(node: exp.Expression) -> bool:
    if isinstance(node, exp.WithinGroup):
        return True
    if isinstance(node, exp.Anonymous):
        return str(node.this).lower() in ("measure", "count_distinct")
    return isinstance(node, exp.AggFunc)


def call(node: exp.Expression, text: str) -> Call:
    """Read an aggregate node (written `text`), refusing what semantic SQL cannot answer (DISTINCT sums …)."""
    if isinstance(node, exp.WithinGroup):
        fn, order = node.this, node.expression
        if not isinstance(fn, exp.PercentileCont | exp.PercentileDisc) or len(order.expressions) != 1:
            raise QueryError(f"`{text}` is not supported", "use PERCENTILE_CONT(p) WITHIN GROUP (ORDER BY x)")
        p = fn.this
        if not (isinstance(p, exp.Literal) and not p.is_string):
            raise QueryError(f"`{text}`: the fraction must be a number", "e.g. PERCENTILE_CONT(0.9)")
        form = "percentile_cont" if isinstance(fn, exp.PercentileCont) else "percentile_disc"
        return Call(form, order.expressions[0].this, float(p.this), text)
    if isinstance(node, exp.Anonymous):
        if len(node.expressions) != 1:
            raise QueryError(f"`{text}` takes one column", f"write {str(node.this).upper()}(column)")
        return Call(str(node.this).lower(), node.expressions[0], text=text)
    if isinstance(node, exp.Count):
        arg = node.this
        if isinstance(arg, exp.Distinct):
            if len(arg.expressions) != 1:
                raise QueryError(f"`{text}` counts several columns", "count one column: COUNT(DISTINCT x)")
            return Call("count_distinct", arg.expressions[0], text=text)
        return Call("count", arg if arg is not None else exp.Star(), text=text)
    form = PLAIN.get(type(node))
    if form is None:
        raise QueryError(f"aggregate `{text}` is not supported in semantic SQL",
                         "use MEASURE(x) or the measure's own aggregate (SUM, COUNT, AVG, MIN, MAX …)")
    arg = node.this
    if isinstance(arg, exp.Distinct):
        raise QueryError(f"`{text}`: DISTINCT inside {form.upper()} is not supported",
                         f"write {form.upper()}(x) or MEASURE(x)")
    if node.expressions:
        raise QueryError(f"`{text}` takes one column", f"write {form.upper()}(x)")
    return Call(form, arg, text=text)


def own_spelling(measure_agg: str, name: str, p: float | None = None, discrete: bool = False) -> str:
    if measure_agg == "percentile":
        return f"PERCENTILE_{'DISC' if discrete else 'CONT'}({p:g}) WITHIN GROUP (ORDER BY {name})"
    return SPELLING[measure_agg].format(x=name)


def check(c: Call, column: TableColumn) -> None:
    """Raise a QueryError unless `c` is a way to ask for this measure or metric."""
    if c.form == "measure":
        return
    if column.kind == "metric" and c.form in WRAPPERS_ON_METRICS:
        return  # on `metrics`, a BI tool's aggregate wrapper means the metric at the query's grain
    m = column.measure
    if m is not None and c.form in OWN_FORMS[m.agg] and _same_fraction(c, m):
        return
    if column.kind == "metric":
        own = f", or {own_spelling(m.agg, column.name, m.p, m.discrete)}" if m is not None else ""
        raise QueryError(f"`{c.text}`: {c.form.upper()} does not apply to metric `{column.name}`",
                         f"write MEASURE({column.name}) or SUM({column.name}) (both mean the metric){own}")
    agg = m.agg if m.agg != "percentile" else f"percentile (p={m.p:g}{', discrete' if m.discrete else ''})"
    raise QueryError(f"`{c.text}` does not match measure `{column.name}`, a {agg} measure",
                     f"write {own_spelling(m.agg, column.name, m.p, m.discrete)} or MEASURE({column.name})")


def _same_fraction(c: Call, m) -> bool:
    if m.agg == "median":
        return c.form == "median" or (c.form == "percentile_cont" and c.p == 0.5)
    if m.agg == "percentile":
        return c.p == m.p and (c.form == "percentile_disc") == m.discrete
    return True
