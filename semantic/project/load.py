"""Load a project folder into one immutable, validated `Model`, reporting every problem at once."""

from __future__ import annotations

import hashlib
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from semantic.errors import AqlSyntaxError, ModelError, Problem, did_you_mean
from semantic.project.model import (
    KINDS,
    NAME,
    AccessPolicy,
    Append,
    Dataset,
    Invalid,
    Metric,
    Rollup,
    Settings,
    Stream,
    View,
)
from semantic.project.yamlpos import Positions, line_of, load_yaml

PROJECT_FILE = "phloem.yml"


@dataclass(frozen=True)
class Origin:
    """Where an object was declared: its file and the key path of the object inside that file."""

    file: str
    path: tuple
    positions: Positions = field(repr=False, compare=False)

    def line(self, *sub: Any) -> int | None:
        return line_of(self.positions, (*self.path, *sub))


@dataclass(frozen=True)
class Model:
    """Everything a project declares, validated; `version` changes whenever any model file changes."""

    root: Path
    settings: Settings
    streams: dict[str, Stream]
    datasets: dict[str, Dataset]
    views: dict[str, View]
    metrics: dict[str, Metric]
    rollups: dict[str, Rollup]
    saved_queries: dict[str, BaseModel]
    dataset_columns: dict[str, tuple[str, Append]]  # AQL `include` targets: name -> (stream, append)
    origins: dict[tuple[str, str], Origin]
    version: str
    access_policies: dict[str, AccessPolicy] = field(default_factory=dict)

    def origin(self, kind: str, name: str) -> Origin:
        return self.origins[(kind, name)]

    @property
    def database_path(self) -> str:
        db = self.settings.warehouse.database
        return db if db == ":memory:" else str((self.root / db).resolve())


def find_project(start: Path | str | None = None) -> Path:
    """The folder holding phloem.yml: `start` itself, or its nearest parent that has one."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / PROJECT_FILE).is_file():
            return folder
    raise ModelError([Problem(f"no {PROJECT_FILE} in {here} or any parent folder", str(here), None, "",
                              "run `phloem init DIR` to scaffold a project, or pass --project DIR")])


def load_project(root: Path | str | None = None) -> Model:
    root = find_project(root)
    loader = _Loader(root)
    return loader.load()


class _Loader:
    def __init__(self, root: Path):
        self.root = root
        self.problems: list[Problem] = []
        self.objects: dict[str, dict[str, Any]] = {k: {} for k in KINDS}
        self.origins: dict[tuple[str, str], Origin] = {}
        self.dataset_columns: dict[str, tuple[str, Append]] = {}
        self.broken: set[tuple[str, str]] = set()  # (kind, name) declared but invalid: not "unknown" elsewhere
        self.unreadable = False  # a file did not parse: we cannot know every name, so skip cross-checks
        self.digest = hashlib.sha256()

    def rel(self, path: Path) -> str:
        return str(path.relative_to(self.root)) if path.is_relative_to(self.root) else str(path)

    def load(self) -> Model:
        settings = self._settings()
        models = self.root / "models"
        files = sorted(p for p in models.rglob("*") if p.suffix in (".yml", ".yaml", ".aql")) if models.is_dir() else []
        for path in files:
            text = path.read_text()
            self.digest.update(self.rel(path).encode() + b"\0" + text.encode() + b"\0")
            if path.suffix == ".aql":
                self._aql(path, text, settings)
            else:
                self._yaml(path, text)
        if not self.unreadable:
            from semantic.project.checks import check_model

            # cross-checks run even after other problems, so one load reports everything it can
            model = self._model(settings or Settings.model_construct())
            self.problems.extend(check_model(model, self.broken))
            if not self.problems:
                return model
        raise ModelError(self.problems)

    def _model(self, settings: Settings) -> Model:
        o = self.objects
        return Model(self.root, settings, o["streams"], o["datasets"], o["views"], o["metrics"], o["rollups"],
                     o["saved_queries"], self.dataset_columns, self.origins, self.digest.hexdigest()[:16],
                     o["access_policies"])

    def _settings(self) -> Settings | None:
        path = self.root / PROJECT_FILE
        text = path.read_text()
        self.digest.update(text.encode())
        data, pos, problems = load_yaml(text, PROJECT_FILE)
        self.problems.extend(problems)
        if problems:
            return None
        if not isinstance(data, dict):
            self.problems.append(Problem("phloem.yml must be a mapping with at least `name:`", PROJECT_FILE, 1,
                                         "", "start from `name: my_project`"))
            return None
        try:
            return Settings.model_validate(data)
        except ValidationError as e:
            self.problems.extend(pydantic_problems(e, Settings, PROJECT_FILE, (), pos, data=data))
            return None

    def _yaml(self, path: Path, text: str) -> None:
        file = self.rel(path)
        data, pos, problems = load_yaml(text, file)
        self.problems.extend(problems)
        self.unreadable |= bool(problems)
        if problems or data is None:
            return
        if not isinstance(data, dict):
            self.problems.append(Problem("a model file is a mapping of kinds to lists", file, 1, "",
                                         f"start with one of: {', '.join(KINDS)}"))
            return
        for kind, items in data.items():
            if kind not in KINDS or not isinstance(items, list):
                self.unreadable = True  # what this section declares is unknown, so references to it would mislead
            if kind not in KINDS:
                self.problems.append(Problem(f"unknown top-level key `{kind}`", file, line_of(pos, (kind,)), kind,
                                             did_you_mean(kind, KINDS) or f"allowed: {', '.join(KINDS)}"))
                continue
            if not isinstance(items, list):
                self.problems.append(Problem(f"`{kind}` must be a list (items start with `- `)", file,
                                             line_of(pos, (kind,)), kind, f"write `{kind}:` then `  - name: ...`"))
                continue
            for i, item in enumerate(items):
                self._object(kind, item, Origin(file, (kind, i), pos))

    def _object(self, kind: str, item: Any, origin: Origin) -> Any:
        cls = KINDS[kind]
        singular = kind.rstrip("s")
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            self.unreadable = True  # a nameless item may be what another object refers to
            self.problems.append(Problem(f"each item of `{kind}` needs a `name:`", origin.file, origin.line(),
                                         kind, f"add `name: my_{singular}`"))
            return None
        name = item["name"]
        if (kind, name) in self.origins:
            first = self.origins[(kind, name)]
            self.problems.append(Problem(f"duplicate {singular} name `{name}` (first declared at "
                                         f"{first.file}:{first.line()})", origin.file, origin.line("name"),
                                         f"{kind}.{name}", f"rename one of the two {kind}"))
            return None
        try:
            obj = cls.model_validate(item)
        except ValidationError as e:
            self.problems.extend(pydantic_problems(e, cls, origin.file, origin.path, origin.positions, name, item))
            self.broken.add((kind, name))
            return None
        self.objects[kind][name] = obj
        self.origins[(kind, name)] = origin
        return obj

    def _aql(self, path: Path, text: str, settings: Settings | None) -> None:
        from semantic.activity.aql import parse_aql

        file = self.rel(path)
        name = path.stem
        try:
            data, pos = parse_aql(text, source=file)
        except AqlSyntaxError as e:
            self.problems.append(Problem(f"AQL syntax error at column {e.column}: {e.message}", file, e.line,
                                         name, e.suggestion or "see MODEL.md §3.3 for the AQL grammar"))
            self.broken |= {("datasets", name), ("dataset_columns", name)}
            return
        compat = settings.aql.compat if settings else "dbt_aql"
        if "primary" not in data:  # a dataset column, used through `include (name)`
            try:
                append = Append.model_validate(data["append"][0])
            except ValidationError as e:
                self.problems.extend(pydantic_problems(e, Append, file, ("append", 0), pos, name, data["append"][0]))
                self.broken.add(("dataset_columns", name))
                return
            self.dataset_columns[name] = (data["stream"], append)
            self.origins[("dataset_columns", name)] = Origin(file, (), pos)
            return
        self._object("datasets", {"name": name, "compat": compat, **data}, Origin(file, (), pos))


_FIELD = re.compile(r"'([^']+)'")


def pydantic_problems(error: ValidationError, cls: type[BaseModel], file: str, base: tuple,
                      positions: Positions, name: str = "", data: Any = None) -> list[Problem]:
    """Turn pydantic's errors into Problems with line, dotted key and a suggestion."""
    out = []
    errors = error.errors()
    for err in errors:
        if err["type"] == "too_short" and any(e["loc"][: len(err["loc"])] == err["loc"] != e["loc"] for e in errors):
            continue  # pydantic also calls a list too short when its items failed; those errors are the real ones
        loc = tuple(x for x in err["loc"] if isinstance(x, int) or not _internal(x))
        kind, msg, suggestion = err["type"], err["msg"].removeprefix("Value error, "), _FIXES.get(err["type"], "")
        cause = err.get("ctx", {}).get("error")
        if isinstance(cause, Invalid):
            loc, msg, suggestion = (*loc, *cause.at), cause.message, cause.suggestion
        key = ".".join(str(x) for x in (name, *_named(loc, data)) if x != "")
        line = line_of(positions, (*base, *loc))
        if kind == "extra_forbidden":
            fields = _fields_at(cls, loc[:-1])
            msg = f"unknown key `{loc[-1]}`"
            suggestion = did_you_mean(str(loc[-1]), fields) or f"allowed keys: {', '.join(sorted(fields))}"
        elif kind == "missing":
            msg = f"missing required key `{loc[-1]}`"
            suggestion = f"add `{loc[-1]}:`"
        elif kind == "literal_error":
            allowed = _FIELD.findall(err["ctx"]["expected"])
            msg = f"`{err['input']}` is not one of {', '.join(allowed)}"
            suggestion = did_you_mean(str(err["input"]), allowed)
        elif kind == "string_pattern_mismatch":
            msg = f"`{err['input']}` is not a valid name"
            snake = re.sub(r"[^a-z0-9]+", "_", re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", str(err["input"])).lower())
            snake = snake.strip("_")
            suggestion = (f"did you mean `{snake}`? " if re.match(NAME, snake) else "") + \
                "names are lower_snake_case: a letter, then letters, digits or _"
        out.append(Problem(msg, file, line, key, suggestion))
    return out


# A fix for the pydantic error types whose message alone does not say what to write.
_FIXES = {
    "model_type": "write a mapping: `key: value` lines or `{key: value}`",
    "dict_type": "write a mapping: `key: value` lines or `{key: value}`",
    "list_type": "write a list: `- item` lines or `[a, b]`",
    "tuple_type": "write a list: `- item` lines or `[a, b]`",
    "string_type": "write text (quote it if YAML reads it as a number or boolean)",
    "int_parsing": "write a whole number, e.g. 2",
    "int_from_float": "write a whole number, e.g. 2",
    "float_parsing": "write a number, e.g. 0.9",
    "bool_parsing": "write true or false",
    "too_short": "add at least one item",
    "greater_than_equal": "use a larger number",
    "greater_than": "use a larger number",
    "less_than": "use a smaller number",
}


def _named(loc: tuple, data: Any) -> tuple:
    """`loc` with list indexes replaced by the item's `name` (or `activity`), which users recognise."""
    out = []
    for part in loc:
        item = data[part] if isinstance(data, (list, dict)) and _has(data, part) else None
        label = next((item[k] for k in ("name", "activity") if isinstance(item, dict) and isinstance(item.get(k), str)),
                     None)
        out.append(label if isinstance(part, int) and label else part)
        data = item
    return tuple(out)


def _has(data: list | dict, part: Any) -> bool:
    return part in data if isinstance(data, dict) else isinstance(part, int) and 0 <= part < len(data)


def _internal(part: Any) -> bool:
    # pydantic puts validator and union-branch labels in `loc`; they are not user keys
    return isinstance(part, str) and ("[" in part or part in ("function-after", "function-before", "str"))


def _fields_at(cls: type[BaseModel], loc: tuple) -> list[str]:
    """The keys allowed at `loc` inside `cls` (following nested models and lists)."""
    current: Any = cls
    keyed = False  # the next part is a key of a mapping (`limits: {analyst: ...}`), not a field
    for part in loc:
        if isinstance(part, int) or not (isinstance(current, type) and issubclass(current, BaseModel)):
            continue
        if keyed:
            keyed = False
            continue
        info = current.model_fields.get(part)
        if info is None:
            alias = next((f for f in current.model_fields.values() if f.alias == part), None)
            info = alias
        if info is None:
            return []
        keyed = typing.get_origin(info.annotation) is dict
        current = _model_in(info.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or n for n, f in current.model_fields.items()]
    return []


def _model_in(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None
