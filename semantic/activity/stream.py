"""Activity streams: the SELECT that turns one activity's source SQL into its canonical, typed table.

Layout: one table per activity (`<stream>__<activity>`), plus a view `<stream>` that unions them with a
`feature_json` column. Temporal joins read only the one activity they need, with typed feature columns,
so no JSON is parsed and no other activity is scanned (see bench/ for the measurement).
"""

from __future__ import annotations

import sqlglot
from sqlglot import exp

from semantic.project.model import Activity, Stream
from semantic.sqltree import col, ident  # noqa: F401  (re-exported: dataset and build code import them from here)

PREV = "_previous_at"  # ts of the entity's previous occurrence: makes first_after a plain equi-join
JSON_OBJECT = {"postgres": "JSON_BUILD_OBJECT"}  # PostgreSQL 15 has no JSON_OBJECT(k, v, ...)


def table_name(stream: Stream, activity: Activity) -> str:
    return f"{stream.name}__{activity.name}"


def entity_key(stream: Stream, table: str | None) -> exp.Expression:
    """What rows of one entity share: the entity, or the anonymous id where the entity is NULL."""
    entity = col(stream.entity, table)
    if not stream.anonymous_entity:
        return entity
    anon = exp.Concat(expressions=[exp.Literal.string("~"), exp.cast(col(stream.anonymous_entity, table), "text")])
    return exp.Coalesce(this=exp.cast(entity, "text"), expressions=[anon])


def order_window(stream: Stream, table: str | None, extra: list[exp.Expression] = ()) -> dict:
    """PARTITION BY entity (+ keys) ORDER BY ts, activity_id: the one order every pick uses."""
    return {
        "partition_by": [entity_key(stream, table), *extra],
        "order": exp.Order(expressions=[exp.Ordered(this=col("ts", table)), exp.Ordered(this=col("activity_id", table))]),
    }


def occurrence_columns(stream: Stream, table: str | None, extra: list[exp.Expression] = ()) -> list[exp.Expression]:
    """activity_occurrence, activity_repeated_at and the previous ts, over the rows at hand."""
    w = order_window(stream, table, list(extra))
    ts = col("ts", table)
    return [
        exp.alias_(exp.Window(this=exp.RowNumber(), **w), "activity_occurrence", quoted=True),
        exp.alias_(exp.Window(this=exp.Anonymous(this="LEAD", expressions=[ts]), **w), "activity_repeated_at",
                   quoted=True),
        exp.alias_(exp.Window(this=exp.Anonymous(this="LAG", expressions=[ts]), **w), PREV, quoted=True),
    ]


def base_columns(stream: Stream, activity: Activity) -> list[str]:
    """Columns of an activity table before the occurrence columns, in table order."""
    ids = [stream.entity] + ([stream.anonymous_entity] if stream.anonymous_entity else [])
    return ["activity_id", "ts", *ids, "activity", *(f.name for f in activity.features), "revenue_impact", "link"]


def cast_to(value: exp.Expression, type_name: str, dialect: str) -> exp.Cast:
    """CAST to a type the user wrote in their warehouse's words (`int8`, `timestamptz` on postgres)."""
    return exp.cast(value, type_name if dialect == "duckdb" else exp.DataType.build(type_name, dialect=dialect))


def activity_select(stream: Stream, activity: Activity, dialect: str = "duckdb") -> exp.Select:
    """SELECT producing the canonical table of one activity from its source SQL (written in `dialect`)."""
    source = sqlglot.parse_one(activity.sql, read=dialect)
    src = "src"
    if activity.id:
        activity_id = exp.cast(col(activity.id, src), "text")
    else:
        # md5 of entity, ts, activity name and features in declaration order (MODEL.md §8)
        parts = [col(stream.entity, src), col("ts", src), exp.Literal.string(activity.name),
                 *(col(f.name, src) for f in activity.features)]
        text = [exp.Coalesce(this=exp.cast(p, "text"), expressions=[exp.Literal.string("_null_")]) for p in parts]
        activity_id = exp.MD5(this=exp.Anonymous(this="CONCAT_WS", expressions=[exp.Literal.string("-"), *text]))
    ids = [stream.entity] + ([stream.anonymous_entity] if stream.anonymous_entity else [])
    inner = [
        exp.alias_(activity_id, "activity_id", quoted=True),
        exp.alias_(exp.cast(col("ts", src), "timestamp"), "ts", quoted=True),
        *(exp.alias_(col(i, src), i, quoted=True) for i in ids),
        exp.alias_(exp.Literal.string(activity.name), "activity", quoted=True),
        *(exp.alias_(cast_to(col(f.name, src), f.type, dialect) if f.type else col(f.name, src), f.name,
                      quoted=True)
          for f in activity.features),
        exp.alias_(exp.cast(col(activity.revenue_impact, src), "double") if activity.revenue_impact
                   else exp.cast(exp.null(), "double"), "revenue_impact", quoted=True),
        exp.alias_(exp.cast(col(activity.link, src), "text") if activity.link else exp.cast(exp.null(), "text"),
                   "link", quoted=True),
    ]
    rows = exp.select(*inner).from_(exp.Subquery(this=source, alias=exp.TableAlias(this=ident(src))))
    outer = exp.select(*(col(c, "a") for c in base_columns(stream, activity)), *occurrence_columns(stream, "a"))
    return outer.from_(exp.Subquery(this=rows, alias=exp.TableAlias(this=ident("a"))))


def stream_view(stream: Stream, table_of, dialect: str = "duckdb") -> exp.Expression:
    """The whole stream as one canonical relation: features folded into `feature_json`."""
    ids = [stream.entity] + ([stream.anonymous_entity] if stream.anonymous_entity else [])
    json_object = JSON_OBJECT.get(dialect, "JSON_OBJECT")
    parts = []
    for a in stream.activities:
        features = exp.Anonymous(this=json_object, expressions=[
            x for f in a.features for x in (exp.Literal.string(f.name), col(f.name))]) if a.features \
            else exp.cast(exp.null(), "json")
        parts.append(exp.select(
            col("activity_id"), col("ts"), *(col(i) for i in ids), col("activity"),
            exp.alias_(exp.cast(features, "json"), "feature_json", quoted=True),
            col("revenue_impact"), col("link"), col("activity_occurrence"), col("activity_repeated_at"),
        ).from_(table_of(stream, a)))
    query = parts[0]
    for p in parts[1:]:
        query = exp.union(query, p, distinct=False)
    return query
