"""Activity Query Language (dbt-aql) → the YAML dataset dict of MODEL.md §3.

A regex tokenizer plus a small recursive-descent parser. `filter` and `join` bodies are raw
SQL: they are cut from the source text verbatim (tokens are only used to find where they end).

    query   := "using" STREAM clause+
    clause  := "select" selector ACTIVITY group
             | "append" ("first" | "last" | nth) ("ever" | "before" | "after" | "between") ACTIVITY group
             | "aggregate" ("all" | "before" | "after" | "between") ACTIVITY group
             | "include" "(" NAME { "," NAME } ")"
    group   := "(" col [ "as" ALIAS ] { "," col [ "as" ALIAS ] } { ("filter" | "join") SQL } ")"
    col     := NAME | AGG "(" NAME ")"          -- the second form only in aggregate
    nth     := "nth" "(" INT ")"                -- INT >= 1

`select` comes first and at most once; without it the query is a dataset column (one joined
clause with one column).
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

from semantic.errors import AqlSyntaxError, did_you_mean

__all__ = ["AGGREGATES", "parse_aql"]

AGGREGATES = (
    "count", "count_distinct", "sum", "avg", "min", "max", "median", "first_value",
    "last_value", "is_null", "not_null", "listagg", "listagg_distinct", "sum_bool",
)  # fmt: skip
_VERBS = ("select", "append", "aggregate", "include")
_SELECT = ("all", "first", "last", "nth")
_APPEND = ("first", "last", "nth")
_APPEND_WINDOWS = ("ever", "before", "after", "between")
_AGG_WINDOWS = ("all", "before", "after", "between")
_RELATION = {"ever": "ever", "before": "before", "after": "after", "between": "in_between"}
_AGG_RELATION = {
    "all": "aggregate_all_ever",
    "before": "aggregate_before",
    "after": "aggregate_after",
    "between": "aggregate_in_between",
}
_COLUMN_FORM = "without `select` the query is a dataset column: one `append` or `aggregate` with one column"
_CLAUSE_END = ("filter", "join")  # words that end a column list or a SQL condition

# Strings use possessive repeats so an unclosed one fails as a whole and is reported at its quote.
_TOKEN = re.compile(
    r"""(?P<space>\s+)
      | (?P<comment>--[^\n]*)
      | (?P<word>[^\W\d][\w$]*)
      | (?P<int>[0-9]+)
      | (?P<string>'(?:[^']|'')*+'|"(?:[^"]|"")*+")
      | (?P<quote>['"])
      | (?P<punct>.)""",
    re.VERBOSE | re.DOTALL,
)


# dbt-aql's Jinja for a feature in `filter` / `join` SQL; `{{-`/`-}}`, spaces and either quote are tolerated
_JSON_EXTRACT = re.compile(
    r"""\{\{-?\s*dbt_aql\s*\.\s*json_extract\s*\(\s*
        (?P<q>['"])\s*(?:\{\s*(?P<side>joined|primary)\s*\}\s*\.\s*)?\{\s*feature_json\s*\}\s*(?P=q)\s*,\s*
        (?P<k>['"])\s*(?P<key>[^\W\d]\w*)\s*(?P=k)\s*\)\s*-?\}\}""",
    re.VERBOSE,
)
_JINJA_FORMS = {"feature_json": "{feature_json}", "joined": "{joined}.{feature_json}",
                "primary": "{primary}.{feature_json}"}


def _braces(tokens: list, i: int, char: str) -> bool:
    """`{{` (or `}}`) at tokens[i]: two brace tokens with nothing between them."""
    return (i + 1 < len(tokens) and tokens[i].is_punct(char) and tokens[i + 1].is_punct(char)
            and tokens[i].end == tokens[i + 1].start)


@dataclass(frozen=True)
class _Token:
    kind: str  # word | int | string | punct | eof
    text: str
    start: int
    end: int
    line: int
    column: int

    def word(self) -> str:
        """The lower-cased keyword, or '' when this is not a word (keywords are case-insensitive)."""
        return self.text.lower() if self.kind == "word" else ""

    def is_punct(self, char: str) -> bool:
        return self.kind == "punct" and self.text == char

    def shown(self) -> str:
        return "end of query" if self.kind == "eof" else f"`{self.text}`"


def _tokenize(text: str, source: str) -> list[_Token]:
    line_starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def where(offset: int) -> tuple[int, int]:
        line = bisect.bisect_right(line_starts, offset)
        return line, offset - line_starts[line - 1] + 1

    tokens = []
    for m in _TOKEN.finditer(text):
        kind = m.lastgroup
        if kind in ("space", "comment"):
            continue
        if kind == "quote":
            line, column = where(m.start())
            message = f"unclosed string: expected a closing `{m.group()}`, found end of query"
            raise AqlSyntaxError(message, line, column, source)
        tokens.append(_Token(kind, m.group(), m.start(), m.end(), *where(m.start())))
    # End of query sits right after the last real token, not after trailing blank lines.
    end = tokens[-1].end if tokens else 0
    tokens.append(_Token("eof", "", end, end, *where(end)))
    return tokens


def _listing(words: tuple[str, ...] | list[str], tail: str = "") -> str:
    """`a`, `b` or `c` (tail, e.g. 'end of query', is appended unquoted)."""
    items = [f"`{w}`" for w in words] + ([tail] if tail else [])
    return ", ".join(items[:-1]) + " or " + items[-1] if len(items) > 1 else items[0]


class _Parser:
    def __init__(self, text: str, source: str):
        self.text, self.source = text, source
        self.tokens = _tokenize(text, source)
        self.i = 0
        self.at: dict[tuple, _Token] = {}  # key path -> token it came from (lines, later checks)

    # -- token helpers -------------------------------------------------------------------
    def peek(self) -> _Token:
        return self.tokens[self.i]

    def next(self) -> _Token:
        tok = self.tokens[self.i]
        self.i += tok.kind != "eof"  # eof is sticky
        return tok

    def error(self, tok: _Token, message: str, suggestion: str = "") -> AqlSyntaxError:
        return AqlSyntaxError(message, tok.line, tok.column, self.source, suggestion)

    def expected(self, tok: _Token, what: str, choices: tuple[str, ...] = ()) -> AqlSyntaxError:
        hint = did_you_mean(tok.word(), choices) if tok.word() and choices else ""
        return self.error(tok, f"expected {what}, found {tok.shown()}", hint)

    def name(self, what: str) -> _Token:
        tok = self.next()
        if tok.kind != "word" or tok.word() in _CLAUSE_END:
            raise self.expected(tok, what)
        return tok

    def open_paren(self, after: str) -> _Token:
        tok = self.next()
        if not tok.is_punct("("):
            raise self.expected(tok, f"`(` after {after}")
        return tok

    def unclosed(self, open_tok: _Token) -> AqlSyntaxError:
        return self.error(open_tok, "unclosed `(`: expected `)` before end of query")

    # -- grammar -------------------------------------------------------------------------
    def query(self) -> dict:
        tok = self.next()
        if tok.word() != "using":
            raise self.expected(tok, "`using <stream>`", ("using",))
        stream = self.name("a stream name after `using`")
        self.at[("stream",)] = stream
        dataset: dict = {"stream": stream.text}
        appends: list[dict] = []
        includes: list[str] = []
        while (tok := self.next()).kind != "eof":
            verb = tok.word()
            selected = "primary" in dataset
            if verb == "select":
                if selected:
                    raise self.error(tok, "expected one `select` per query, found a second `select`")
                if appends or includes:
                    raise self.error(
                        tok, "expected `select` right after `using <stream>`, found it after other clauses"
                    )
                self.at[("primary",)] = tok
                dataset["primary"], dataset["columns"] = self.primary()
            elif not selected and (verb == "include" or verb in ("append", "aggregate") and appends):
                raise self.error(tok, f"expected `select` before `{verb}`; {_COLUMN_FORM}")
            elif verb in ("append", "aggregate"):
                self.at[("append", len(appends))] = tok
                appends.append(self.joined(verb, ("append", len(appends))))
                if not selected and len(appends[0]["columns"]) > 1:
                    raise self.error(
                        self.at[("append", 0, "columns", 1)], f"expected one column; {_COLUMN_FORM}"
                    )
            elif verb == "include":
                includes.extend(self.include(len(includes)))
            else:
                verbs = _VERBS[1:] if selected else _VERBS
                raise self.expected(tok, _listing(verbs, "end of query" if selected else ""), verbs)
        if "primary" not in dataset and not appends:
            raise self.expected(tok, _listing(_VERBS[:3]))
        if appends:
            dataset["append"] = appends
        if includes:
            dataset["include"] = includes
        return dataset

    def selector(self, verb: str, choices: tuple[str, ...]) -> tuple[str, int | None]:
        tok = self.next()
        word = tok.word()
        if word == "nth":
            self.open_paren("`nth`")
            n = self.next()
            if n.kind != "int" or int(n.text) < 1:
                raise self.expected(n, "a positive integer in `nth(n)`")
            if not (close := self.next()).is_punct(")"):
                raise self.expected(close, f"`)` after `nth({n.text}`")
            return "nth", int(n.text)
        if word in choices:
            return word, None
        if verb == "append" and word == "all":
            raise self.error(
                tok, "append needs first, last or nth(n); `all` is only for select and aggregate"
            )
        raise self.expected(tok, f"{_listing([*choices[:-1], 'nth(n)'])} after `{verb}`", choices)

    def window(self, verb: str, choices: tuple[str, ...]) -> str:
        tok = self.next()
        if tok.word() in choices:
            return tok.word()
        # `ever` and `all` both mean "no time condition"; point at the one this verb spells.
        swapped = {"all": "ever", "ever": "all"}.get(tok.word())
        hint = f"did you mean `{swapped}`?" if swapped in choices else did_you_mean(tok.word(), choices)
        message = f"expected {_listing(choices)} after `{verb}`, found {tok.shown()}"
        raise self.error(tok, message, hint if tok.word() else "")

    def activity(self, path: tuple) -> str:
        tok = self.name("an activity name")
        self.at[path] = tok
        # `customer__bought_something` and `bought_something` name the same activity.
        return tok.text.rsplit("__", 1)[-1] or tok.text

    def primary(self) -> tuple[dict, list]:
        select, nth = self.selector("select", _SELECT)
        activity = self.activity(("primary", "activity"))
        primary: dict = {"activity": activity, "select": select}
        if nth is not None:
            primary["nth"] = nth
        columns, filters, _ = self.group(activity, ("primary",), (), self.plain_column, allow_join=False)
        # A primary column keeps a bare string when it keeps its own name.
        columns = [c["expr"] if c["name"] in (None, c["expr"]) else c for c in columns]
        if filters:
            primary["filter"] = filters
        return primary, columns

    def joined(self, verb: str, path: tuple) -> dict:
        if verb == "append":
            select, nth = self.selector("append", _APPEND)
            window = self.window(f"append {select}", _APPEND_WINDOWS)
            relationship = f"{select}_{_RELATION[window]}"
            prefix = f"append_{select}{nth or ''}_{window}"
            column = self.plain_column
        else:
            window = self.window("aggregate", _AGG_WINDOWS)
            nth, relationship = None, _AGG_RELATION[window]
            prefix = f"aggregate_{window}"
            column = self.agg_column
        activity = self.activity((*path, "activity"))
        item: dict = {"activity": activity, "relationship": relationship}
        if nth is not None:
            item["nth"] = nth
        columns, filters, joins = self.group(activity, path, path, column, allow_join=True)
        for col in columns:  # default alias: <activity>_<verb>_<selector>_<window>_[<agg>_]<column>
            if col["name"] is None:
                agg = f"{col['agg']}_" if "agg" in col else ""
                col["name"] = f"{activity}_{prefix}_{agg}{col['expr']}"
        if filters:
            item["filter"] = filters
        if joins:
            item["join"] = joins
        item["columns"] = columns
        return item

    def group(
        self, activity: str, path: tuple, col_path: tuple, column, allow_join: bool
    ) -> tuple[list, list, list]:
        """`( columns {filter SQL | join SQL} )` after an activity name; columns go under col_path."""
        open_tok = self.open_paren(f"activity `{activity}`")
        first = self.peek()
        if first.kind == "eof":
            raise self.unclosed(open_tok)
        if first.is_punct(")") or first.word() in _CLAUSE_END:
            raise self.expected(first, "at least one column (the column list is empty)")
        columns = [column((*col_path, "columns", 0))]
        while self.peek().is_punct(","):
            self.next()
            columns.append(column((*col_path, "columns", len(columns))))
        filters: list[str] = []
        joins: list[str] = []
        ends = (",", "filter", "join", ")") if allow_join else (",", "filter", ")")
        while not (tok := self.next()).is_punct(")"):
            if tok.kind == "eof":
                raise self.unclosed(open_tok)
            if tok.word() == "filter":
                filters.append(self.sql(tok, open_tok, (*path, "filter", len(filters))))
            elif tok.word() == "join" and allow_join:
                joins.append(self.sql(tok, open_tok, (*path, "join", len(joins))))
            elif tok.word() == "join":
                raise self.error(
                    tok, "expected `filter` or `)`, found `join`: only `append` and `aggregate` take `join`"
                )
            else:
                raise self.expected(tok, _listing(ends))
        return columns, filters, joins

    def alias(self) -> str | None:
        if self.peek().word() != "as":
            return None
        self.next()
        return self.name("an alias after `as`").text

    def plain_column(self, path: tuple) -> dict:
        tok = self.name("a column")
        self.at[path] = tok
        return {"name": self.alias(), "expr": tok.text}

    def agg_column(self, path: tuple) -> dict:
        fn = self.name("an aggregate such as `count(activity_id)`")
        self.at[path] = fn
        agg = fn.text.lower()
        if not self.peek().is_punct("("):
            if agg in AGGREGATES:
                raise self.expected(self.peek(), f"`(` after `{fn.text}`")
            raise self.error(
                fn, f"expected an aggregate such as `sum({fn.text})`, found bare column `{fn.text}`"
            )
        if agg not in AGGREGATES:
            message = f"unknown aggregate function `{fn.text}`; expected one of {_listing(AGGREGATES)}"
            raise self.error(fn, message, did_you_mean(agg, AGGREGATES))
        self.next()
        expr = self.name(f"a column inside `{fn.text}(`").text
        if not (close := self.next()).is_punct(")"):
            raise self.expected(close, f"`)` after `{fn.text}({expr}`")
        return {"name": self.alias(), "agg": agg, "expr": expr}

    def sql(self, keyword: _Token, open_tok: _Token, path: tuple) -> str:
        """Raw SQL up to the next top-level `filter`/`join` or the `)` that closes the group."""
        first = last = None
        depth = 0
        while True:
            tok = self.peek()
            if tok.kind == "eof":
                raise self.unclosed(open_tok)
            if tok.is_punct(")") and depth == 0 or depth == 0 and tok.word() in _CLAUSE_END:
                break
            depth += tok.is_punct("(") - tok.is_punct(")")
            first, last = first or tok, self.next()
        if first is None:
            raise self.expected(tok, f"a SQL condition after `{keyword.text}`")
        self.at[path] = first
        return self.without_jinja(keyword.word(), first, last)

    def without_jinja(self, clause: str, first: _Token, last: _Token) -> str:
        """The SQL from `first` to `last`, each dbt-aql `{{dbt_aql.json_extract(...)}}` replaced by what it means."""
        tokens = self.tokens[self.tokens.index(first) : self.tokens.index(last) + 1]
        out, at, i = [], first.start, 0
        while i < len(tokens):
            if not _braces(tokens, i, "{"):
                i += 1
                continue
            opening = tokens[i]
            end = next((j for j in range(i + 2, len(tokens)) if _braces(tokens, j, "}")), None)
            if end is None:
                raise self.error(opening, "unclosed `{{`: expected `}}` in the same condition")
            call = self.text[opening.start : tokens[end + 1].end]
            out += [self.text[at : opening.start], self.json_extract(call, clause, opening)]
            at, i = tokens[end + 1].end, end + 2
        return "".join(out) + self.text[at : last.end]

    def json_extract(self, call: str, clause: str, tok: _Token) -> str:
        """`{{dbt_aql.json_extract('{joined}.{feature_json}', 'x')}}` -> `joined.x` (the only Jinja understood)."""
        m = _JSON_EXTRACT.fullmatch(call)
        side = (m.group("side") or "feature_json") if m else None
        allowed = ("joined", "primary") if clause == "join" else ("feature_json",)
        if side in allowed:
            return f"{side}.{m.group('key')}"
        forms = [f"{{{{dbt_aql.json_extract('{_JINJA_FORMS[a]}', 'x')}}}}" for a in allowed]
        plain = " or ".join(f"`{a}.x`" for a in allowed)
        what = f"`{side}` features in a `{clause}` clause" if side else f"`{call}`"
        raise self.error(tok, f"unsupported Jinja in `{clause}`: {what} — only {_listing(forms)} {'are' if len(forms) > 1 else 'is'} understood",
                         f"write {plain} (a feature of the {'joined or primary row' if clause == 'join' else 'row'})")

    def include(self, offset: int) -> list[str]:
        open_tok = self.open_paren("`include`")
        names = []
        while True:
            tok = self.name("a dataset column name")
            self.at[("include", offset + len(names))] = tok
            names.append(tok.text)
            sep = self.next()
            if sep.is_punct(")"):
                return names
            if sep.kind == "eof":
                raise self.unclosed(open_tok)
            if not sep.is_punct(","):
                raise self.expected(sep, "`,` or `)`")


def parse_aql(text: str, *, source: str = "<aql>") -> tuple[dict, dict[tuple, int]]:
    """Returns (dataset_dict, positions). positions maps a key path to its 1-based line in `text`.

    dataset_dict has the shape of a YAML dataset of MODEL.md §3 without `name`. Raises
    AqlSyntaxError pointing at the offending token's line and column.
    """
    parser = _Parser(text, source)
    dataset = parser.query()
    return dataset, {path: tok.line for path, tok in parser.at.items()}
