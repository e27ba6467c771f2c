"""The typed, immutable model users write (MODEL.md §1–6): settings, streams, datasets, views, metrics."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from semantic.errors import did_you_mean

NAME = r"^[a-z][a-z0-9_]*$"

Selector = Literal["all", "first", "last", "nth"]
Relationship = Literal[
    "first_ever",
    "last_ever",
    "nth_ever",
    "first_before",
    "last_before",
    "nth_before",
    "first_after",
    "last_after",
    "nth_after",
    "first_in_between",
    "last_in_between",
    "nth_in_between",
    "aggregate_all_ever",
    "aggregate_before",
    "aggregate_after",
    "aggregate_in_between",
]
RELATIONSHIPS: tuple[str, ...] = Relationship.__args__  # type: ignore[attr-defined]
DatasetAgg = Literal[
    "count",
    "count_distinct",
    "sum",
    "avg",
    "min",
    "max",
    "median",
    "first_value",
    "last_value",
    "listagg",
    "listagg_distinct",
    "is_null",
    "not_null",
    "sum_bool",
]
MeasureAgg = Literal[
    "sum", "count", "count_distinct", "approx_count_distinct", "avg", "min", "max", "median", "percentile"
]
# The canonical activity-schema columns every materialized activity has (MODEL.md §2).
CANONICAL = (
    "activity_id",
    "ts",
    "activity",
    "revenue_impact",
    "link",
    "activity_occurrence",
    "activity_repeated_at",
)
UNITS = ("second", "minute", "hour", "day", "week", "month", "quarter", "year")
DURATION = re.compile(rf"^\s*(\d+)\s+({'|'.join(UNITS)})s?\s*$")
GRAINS = ("hour", "day", "week", "month", "quarter", "year")


class Invalid(ValueError):
    """A validator's complaint: the message, how to fix it, and the sub-key it is about (for the line)."""

    def __init__(self, message: str, suggestion: str = "", at: tuple = ()):
        super().__init__(message)
        self.message, self.suggestion, self.at = message, suggestion, at


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _listify(value: Any) -> Any:
    """A single string where a list is expected is a one-item list (`filter: "x > 1"`)."""
    return [value] if isinstance(value, str) else value


# ---------------------------------------------------------------- settings


class Warehouse(Frozen):
    engine: Literal["duckdb", "postgres"] = "duckdb"
    database: str = ":memory:"
    dsn: str | None = None


class Materialization(Frozen):
    schema_: str = Field("phloem", alias="schema", pattern=NAME)
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class AqlSettings(Frozen):
    compat: Literal["dbt_aql", "phloem"] = "dbt_aql"


class Tenant(Frozen):
    """One tenant's warehouse (docs/tenants.md): its source schemas renamed, or its own database; its own tables."""

    schemas: dict[str, str] = {}  # a source schema the model names -> this tenant's (`raw: acme_raw`)
    database: str | None = None  # DuckDB: its own file, relative to the project
    dsn: str | None = None  # PostgreSQL: its own database
    materialization: Materialization | None = None  # default: `<materialization.schema>_<tenant>`

    @field_validator("schemas")
    @classmethod
    def _schemas(cls, v: dict[str, str]) -> dict[str, str]:
        for source, target in v.items():
            for name in (source, target):
                if not re.match(NAME, name):
                    raise Invalid(f"`{name}` is not a schema name", "schemas are lower_snake_case: a letter, then "
                                  "letters, digits or _", (source,))
        return v


_SECONDS = {"ms": 0.001, "s": 1, "sec": 1, "second": 1, "seconds": 1, "m": 60, "min": 60, "minute": 60,
            "minutes": 60, "h": 3600, "hour": 3600, "hours": 3600}


def seconds(value: Any) -> float:
    """Seconds from `30`, `30s`, `500ms`, `2m`, `1h`, `2 minutes`."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*", str(value))
    if not m or (m.group(2) or "s") not in _SECONDS:
        raise Invalid(f"`{value}` is not a duration", "write seconds, or a number with ms, s, m or h: `30s`, `2m`")
    return float(m.group(1)) * _SECONDS[m.group(2) or "s"]


class RoleLimits(Frozen):
    """What one role's queries may use (docs/limits.md); a key left out is the `default` role's; 0: no limit."""

    timeout: float | None = Field(None, ge=0)  # seconds a query may run before it is cancelled
    rows: int | None = Field(None, ge=0)
    bytes: int | None = Field(None, ge=0)
    concurrent: int | None = Field(None, ge=0)  # queries one user runs at once
    per_minute: int | None = Field(None, ge=0)  # requests one user makes in any 60 seconds

    @field_validator("timeout", mode="before")
    @classmethod
    def _timeout(cls, v: Any) -> Any:
        return None if v is None else seconds(v)

    @field_validator("bytes", mode="before")
    @classmethod
    def _bytes(cls, v: Any) -> Any:
        from semantic.limits import size

        try:
            return None if v is None else size(v)
        except ValueError as e:
            raise Invalid(str(e), "write bytes, or a number with KB, MB or GB: `64MB`") from None


class Settings(Frozen):
    name: str = Field(pattern=NAME)
    warehouse: Warehouse = Warehouse()
    materialization: Materialization = Materialization()
    aql: AqlSettings = AqlSettings()
    timezone: str | None = None
    tenants: dict[str, Tenant] = {}
    limits: dict[str, RoleLimits] = {}

    @field_validator("tenants")
    @classmethod
    def _tenant_names(cls, v: dict[str, Tenant]) -> dict[str, Tenant]:
        for name in v:
            if not re.match(NAME, name):
                raise Invalid(f"`{name}` is not a valid tenant name", "tenant names are lower_snake_case: a "
                              "letter, then letters, digits or _", (name,))
        return v

    def tenant_schema(self, name: str) -> str:
        """Where tenant `name`'s streams, datasets and rollups are built."""
        own = self.tenants[name].materialization
        return own.schema_ if own is not None else f"{self.materialization.schema_}_{name}"

    @model_validator(mode="after")
    def _tenants(self) -> Settings:
        engine = self.warehouse.engine
        used: dict[str | None, dict[str, str]] = {None: {self.materialization.schema_: "the project"}}
        for name, t in self.tenants.items():
            if t.database and engine != "duckdb":
                raise Invalid(f"tenant `{name}`: `database` is a DuckDB file, and the warehouse is {engine}",
                              "give the tenant `dsn:` (its own database) or `schemas:`", ("tenants", name))
            if t.dsn and engine != "postgres":
                raise Invalid(f"tenant `{name}`: `dsn` is a PostgreSQL database, and the warehouse is {engine}",
                              "give the tenant `database: data/<tenant>.duckdb` or `schemas:`", ("tenants", name))
            schema = self.tenant_schema(name)
            if len(schema) > 63:
                raise Invalid(f"tenant `{name}`: schema `{schema}` is longer than 63 characters",
                              "give it a shorter `materialization: {schema: ...}`", ("tenants", name))
            where = used.setdefault(t.database or t.dsn, {})
            if schema in where:
                raise Invalid(f"tenant `{name}` would build into schema `{schema}`, as {where[schema]} does",
                              "give each tenant sharing a warehouse its own `materialization: {schema: ...}`",
                              ("tenants", name))
            if schema in t.schemas or schema in t.schemas.values():
                raise Invalid(f"tenant `{name}` builds into `{schema}`, one of its source schemas: builds replace "
                              "tables there", "build into another schema", ("tenants", name))
            where[schema] = f"tenant `{name}`"
        return self


# ---------------------------------------------------------------- streams


class Feature(Frozen):
    name: str = Field(pattern=NAME)
    type: str | None = None  # a SQL type to cast to; else the type the SQL produces


class Activity(Frozen):
    name: str = Field(pattern=NAME)
    sql: str
    id: str | None = None
    revenue_impact: str | None = None
    link: str | None = None
    features: tuple[Feature, ...] = ()
    description: str | None = None

    @field_validator("features", mode="before")
    @classmethod
    def _features(cls, v: Any) -> Any:
        return [{"name": f} if isinstance(f, str) else f for f in (v or [])]


class Stream(Frozen):
    name: str = Field(pattern=NAME)
    entity: str = Field(pattern=NAME)
    anonymous_entity: str | None = Field(None, pattern=NAME)
    activities: tuple[Activity, ...] = Field(min_length=1)
    description: str | None = None

    def activity(self, name: str) -> Activity | None:
        return next((a for a in self.activities if a.name == name), None)

    def columns_of(self, activity: Activity) -> list[str]:
        """What a dataset may select from one materialized activity: canonical columns, entity ids, features."""
        ids = [self.entity] + ([self.anonymous_entity] if self.anonymous_entity else [])
        return [*CANONICAL, *ids, *(f.name for f in activity.features)]


# ---------------------------------------------------------------- datasets


class Column(Frozen):
    name: str = Field(pattern=NAME)
    expr: str | None = None
    agg: DatasetAgg | None = None
    fill: Any = None
    type: str | None = None


def _columns(v: Any) -> Any:
    return [{"name": c} if isinstance(c, str) else c for c in (v or [])]


class Primary(Frozen):
    activity: str
    select: Selector = "all"
    nth: int | None = Field(None, ge=1)
    filter: tuple[str, ...] = ()

    _f = field_validator("filter", mode="before")(classmethod(lambda cls, v: _listify(v)))

    @model_validator(mode="after")
    def _nth(self) -> Primary:
        if self.select == "nth" and self.nth is None:
            raise Invalid(
                "`select: nth` needs `nth: N` (the 1-based occurrence to keep)",
                "add `nth: 2` to keep each entity's second occurrence",
                ("select",),
            )
        return self


class JoinKey(Frozen):
    primary: str
    joined: str


class Append(Frozen):
    activity: str
    relationship: Relationship
    nth: int | None = Field(None, ge=1)
    join_keys: tuple[JoinKey, ...] = ()
    filter: tuple[str, ...] = ()
    join: tuple[str, ...] = ()  # extra SQL conditions over `primary.x` and `joined.x`
    columns: tuple[Column, ...] = Field(min_length=1)

    _f = field_validator("filter", "join", mode="before")(classmethod(lambda cls, v: _listify(v)))
    _c = field_validator("columns", mode="before")(classmethod(lambda cls, v: _columns(v)))

    @field_validator("join_keys", mode="before")
    @classmethod
    def _keys(cls, v: Any) -> Any:
        return [{"primary": k, "joined": k} if isinstance(k, str) else k for k in _listify(v) or []]

    @property
    def is_aggregate(self) -> bool:
        return self.relationship.startswith("aggregate")

    @model_validator(mode="after")
    def _check(self) -> Append:
        if self.relationship.startswith("nth") and self.nth is None:
            raise Invalid(
                f"`relationship: {self.relationship}` needs `nth: N`",
                "add `nth: 2` (the 1-based occurrence to pick)",
                ("relationship",),
            )
        for j, c in enumerate(self.columns):
            if self.is_aggregate and c.agg is None:
                raise Invalid(
                    f"column `{c.name}`: an aggregate relationship needs `agg:` on every column",
                    "add e.g. `agg: sum`, `agg: count` or `agg: max`",
                    ("columns", j),
                )
            if not self.is_aggregate and c.agg is not None:
                window = (
                    self.relationship.rsplit("_", 1)[-1]
                    .replace("ever", "all_ever")
                    .replace("between", "in_between")
                )
                raise Invalid(
                    f"column `{c.name}`: `agg` only applies to aggregate_* relationships, "
                    f"not {self.relationship}",
                    f"remove `agg:`, or use `relationship: aggregate_{window}`",
                    ("columns", j, "agg"),
                )
        return self


class Dataset(Frozen):
    name: str = Field(pattern=NAME)
    stream: str
    primary: Primary
    columns: tuple[Column, ...] = ()
    append: tuple[Append, ...] = ()
    include: tuple[str, ...] = ()
    # dbt_aql: sums over no rows are 0, and the in-between window excludes the next primary row.
    compat: Literal["phloem", "dbt_aql"] = "phloem"
    refresh: str | None = None  # `phloem worker` rebuilds it from the warehouse once per this duration
    description: str | None = None

    _c = field_validator("columns", mode="before")(classmethod(lambda cls, v: _columns(v)))
    _d = field_validator("refresh")(classmethod(lambda cls, v: _duration(v)))

    def output_columns(self) -> list[str]:
        return [c.name for c in self.columns] + [c.name for a in self.append for c in a.columns]


# ---------------------------------------------------------------- views


class Entity(Frozen):
    name: str = Field(pattern=NAME)
    column: str | None = None

    @property
    def expr(self) -> str:
        return self.column or self.name


class Dimension(Frozen):
    name: str = Field(pattern=NAME)
    type: Literal["categorical", "time", "boolean", "number"] = "categorical"
    expr: str | None = None
    label: str | None = None
    description: str | None = None


class Measure(Frozen):
    name: str = Field(pattern=NAME)
    agg: MeasureAgg
    expr: str | None = None
    filter: str | None = None
    p: float | None = Field(None, gt=0, lt=1)
    discrete: bool = False
    label: str | None = None
    description: str | None = None

    @model_validator(mode="after")
    def _p(self) -> Measure:
        if self.agg == "percentile" and self.p is None:
            raise Invalid(
                "`agg: percentile` needs `p:` between 0 and 1",
                "add e.g. `p: 0.9` for the 90th percentile",
                ("agg",),
            )
        return self


class View(Frozen):
    name: str = Field(pattern=NAME)
    dataset: str | None = None
    table: str | None = None
    sql: str | None = None
    primary_key: str | None = None
    time: str | None = None
    entities: tuple[Entity, ...] = ()
    dimensions: tuple[Dimension, ...] = ()
    measures: tuple[Measure, ...] = ()
    label: str | None = None
    description: str | None = None

    @field_validator("dimensions", "entities", mode="before")
    @classmethod
    def _names(cls, v: Any) -> Any:
        return [{"name": d} if isinstance(d, str) else d for d in (v or [])]

    @model_validator(mode="after")
    def _source(self) -> View:
        given = [k for k in ("dataset", "table", "sql") if getattr(self, k)]
        if len(given) > 1:
            raise Invalid(
                f"a view reads exactly one of `dataset`, `table` or `sql` (found {', '.join(given)})",
                f"keep one of {', '.join(f'`{k}`' for k in given)}",
                (given[1],),
            )
        if not given:
            raise Invalid(
                "a view reads exactly one of `dataset`, `table` or `sql`",
                "add `dataset: my_dataset`, `table: schema.table` or `sql: select ...`",
            )
        return self


# ---------------------------------------------------------------- metrics


def _duration(v: str | None) -> str | None:
    if v is not None and not DURATION.match(str(v)):
        n = re.match(r"\s*(\d+)", str(v))
        spelled = [f"{n.group(1)} {u}{'' if n.group(1) == '1' else 's'}" for u in UNITS] if n else []
        raise Invalid(
            f"`{v}` is not a duration",
            did_you_mean(v, spelled) or "write a number and a unit, e.g. `7 days`, `1 month`, `12 hours`",
        )
    return v


class MetricInput(Frozen):
    metric: str
    offset: str | None = None
    fill_nulls_with: float | None = None
    _d = field_validator("offset")(classmethod(lambda cls, v: _duration(v)))


class Ratio(Frozen):
    numerator: str
    denominator: str


class Cumulative(Frozen):
    metric: str
    window: str | None = None
    grain_to_date: Literal["day", "week", "month", "quarter", "year"] | None = None
    period_agg: Literal["last", "first", "avg"] = "last"
    _d = field_validator("window")(classmethod(lambda cls, v: _duration(v)))


class Conversion(Frozen):
    stream: str
    base: str
    conversion: str
    window: str
    calculation: Literal["rate", "count"] = "rate"
    _d = field_validator("window")(classmethod(lambda cls, v: _duration(v)))


class Metric(Frozen):
    name: str = Field(pattern=NAME)
    measure: str | None = None
    expr: str | None = None
    inputs: dict[str, MetricInput] = {}
    ratio: Ratio | None = None
    cumulative: Cumulative | None = None
    conversion: Conversion | None = None
    filter: str | None = None
    format: Literal["number", "currency", "percent", "integer"] | None = None
    good: Literal["up", "down"] = "up"
    owner: str | None = None
    label: str | None = None
    description: str | None = None
    fill_nulls_with: float | None = None
    join_to_timespine: bool = False
    public: bool = False  # a global benchmark: access policies' row filters do not apply (docs/access.md)

    @field_validator("inputs", mode="before")
    @classmethod
    def _inputs(cls, v: Any) -> Any:
        return {k: ({"metric": x} if isinstance(x, str) else x) for k, x in (v or {}).items()}

    @model_validator(mode="after")
    def _kind(self) -> Metric:
        given = [k for k in ("measure", "expr", "ratio", "cumulative", "conversion") if getattr(self, k)]
        kinds = "a metric is exactly one of `measure`, `expr`, `ratio`, `cumulative` or `conversion`"
        if len(given) > 1:
            raise Invalid(
                f"{kinds} (found {', '.join(given)})",
                f"keep one of {', '.join(f'`{k}`' for k in given)}; a second definition is a new metric",
                (given[1],),
            )
        if not given:
            raise Invalid(kinds, "add `measure: view.measure` (a leaf) or `expr: a - b` (over other metrics)")
        if self.inputs and not self.expr:
            raise Invalid(
                "`inputs` only applies to a derived metric (one with `expr`)",
                "write an `expr:` over the input names, or remove `inputs`",
                ("inputs",),
            )
        return self

    @property
    def kind(self) -> str:
        if self.measure:
            return "simple"
        if self.expr:
            return "derived"
        return next(k for k in ("ratio", "cumulative", "conversion") if getattr(self, k))


# The time lattice: which stored grain a coarser one can be computed from (weeks never make months).
COARSER = {"hour": ("day", "week", "month", "quarter", "year"), "day": ("week", "month", "quarter", "year"),
           "week": (), "month": ("quarter", "year"), "quarter": ("year",), "year": ()}


def serves(stored: str, wanted: str) -> bool:
    """Whether buckets of `wanted` are unions of buckets of `stored` (day → week, day → month, never week → month)."""
    return wanted == stored or wanted in COARSER[stored]


class Rollup(Frozen):
    """A pre-aggregated table over one view: additive partials by dimensions and a time grain (docs/model.md §9)."""

    name: str = Field(pattern=NAME)
    view: str
    measures: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()  # expanded to their leaf measures in `view`
    dimensions: tuple[str, ...] = ()
    time: str | None = None  # the view's time column (metric_time); the default
    grain: Literal["hour", "day", "week", "month", "quarter", "year"] = "day"
    partition: Literal["day", "week", "month", "quarter", "year"] | None = None
    refresh: str | None = None  # at most once per this duration; default: at every build that changed its dataset
    incremental: str | None = None  # on refresh, rebuild only the partitions of this last stretch (and missing ones)
    freshness: Literal["union", "dataset"] = "union"
    timezone: str | None = None  # default: the project's
    description: str | None = None

    _l = field_validator("measures", "metrics", "dimensions", mode="before")(
        classmethod(lambda cls, v: [x.strip() for x in v.split(",")] if isinstance(v, str) else v))
    _d = field_validator("refresh", "incremental")(classmethod(lambda cls, v: _duration(v)))

    @model_validator(mode="after")
    def _check(self) -> Rollup:
        if not self.measures and not self.metrics:
            raise Invalid("a rollup stores at least one measure", "add `measures: [a, b]` or `metrics: [m]`")
        if self.partition and not serves(self.grain, self.partition):
            raise Invalid(f"partition `{self.partition}` does not hold whole `{self.grain}` buckets",
                          f"partition by one of: {', '.join(COARSER[self.grain])}" if COARSER[self.grain]
                          else "remove `partition` (nothing coarser is made of whole weeks)", ("partition",))
        if self.incremental and not self.partition:
            raise Invalid("`incremental` rebuilds partitions, so it needs `partition:`",
                          "add e.g. `partition: month`, or remove `incremental`", ("incremental",))
        return self


def _names(v: Any) -> Any:
    return [x.strip() for x in v.split(",") if x.strip()] if isinstance(v, str) else v


class Members(Frozen):
    """Members of the model by kind: whole views (their dimensions and measures), `view.dim`, `view.measure`, metrics."""

    views: tuple[str, ...] = ()
    dimensions: tuple[str, ...] = ()
    measures: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()

    _l = field_validator("views", "dimensions", "measures", "metrics", mode="before")(classmethod(
        lambda cls, v: _names(v)))


class AccessPolicy(Frozen):
    """What the holders of some roles may see: rows of views (a condition over dimensions) and members."""

    name: str = Field(pattern=NAME)
    roles: tuple[str, ...] = Field(min_length=1)  # `"*"`: every authenticated identity
    rows: str | None = None  # e.g. `customers.country = {{ user.country }}`; none: every row
    views: tuple[str, ...] | None = None  # the views `rows` governs; default: every view
    include: Members | None = None  # default: every member
    exclude: Members = Members()
    description: str | None = None

    _l = field_validator("roles", "views", mode="before")(classmethod(lambda cls, v: _names(v)))

    @model_validator(mode="before")
    @classmethod
    def _role(cls, data: Any) -> Any:
        """`role: x` is `roles: [x]`."""
        if isinstance(data, dict) and "role" in data:
            data = dict(data)
            role = data.pop("role")
            if "roles" in data:
                raise Invalid("give `role` or `roles`, not both", "keep `roles: [a, b]`", ("role",))
            data["roles"] = [role] if isinstance(role, str) else role
        return data


class SavedQuery(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow")
    name: str = Field(pattern=NAME)


KINDS: dict[str, type[BaseModel]] = {
    "streams": Stream,
    "datasets": Dataset,
    "views": View,
    "metrics": Metric,
    "rollups": Rollup,
    "saved_queries": SavedQuery,
    "access_policies": AccessPolicy,
}
