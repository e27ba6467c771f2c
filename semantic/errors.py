"""Errors raised by the library; each door translates them once (exit code, HTTP 4xx, pg ErrorResponse)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """A ' — did you mean `x`?' hint, or '' when nothing is close."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    return f"did you mean `{close[0]}`?" if close else ""


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a model file: where, which key, what, and how to fix it."""

    message: str
    file: str = "<model>"
    line: int | None = None
    key: str = ""
    suggestion: str = ""

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        key = f" [{self.key}]" if self.key else ""
        fix = f" — {self.suggestion}" if self.suggestion else ""
        return f"{where}{key}: {self.message}{fix}"


class PhloemError(Exception):
    """Base of every error a user can cause."""


class ModelError(PhloemError):
    """The project's model files are wrong; carries every problem found."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        super().__init__(self.render())

    def render(self) -> str:
        n = len(self.problems)
        head = f"{n} problem{'s' if n != 1 else ''} in the project:"
        return "\n".join([head, *(f"  {p}" for p in self.problems)])


class AqlSyntaxError(PhloemError):
    """AQL text that does not parse; points at line and column."""

    def __init__(self, message: str, line: int, column: int, source: str = "<aql>", suggestion: str = ""):
        self.message, self.line, self.column, self.source, self.suggestion = (
            message,
            line,
            column,
            source,
            suggestion,
        )
        fix = f" — {suggestion}" if suggestion else ""
        super().__init__(f"{source}:{line}:{column}: {message}{fix}")


class QueryError(PhloemError):
    """A query the model cannot answer; a 4xx at every door."""

    def __init__(self, message: str, suggestion: str = ""):
        self.message, self.suggestion = message, suggestion
        super().__init__(message + (f" — {suggestion}" if suggestion else ""))


class BuildError(PhloemError):
    """The warehouse refused to build a stream, dataset or rollup; previous tables stay in place."""

    rollup: str | None = None  # the rollup whose build failed, if it was one


class WarehouseError(PhloemError):
    """The warehouse cannot be reached or refused a statement; carries the server's own message."""


class QueryTimeout(PhloemError):
    """A query ran past its time limit and was cancelled in the warehouse."""


class Unauthenticated(PhloemError):
    """No valid credentials (HTTP 401, pg 28P01): the message says what was missing or wrong, never a secret."""

    sqlstate = "28P01"

    def __init__(self, message: str, suggestion: str = ""):
        self.message, self.suggestion = message, suggestion
        super().__init__(message + (f" — {suggestion}" if suggestion else ""))


class Forbidden(QueryError):
    """A known identity asked for what its roles do not allow (HTTP 403, pg 42501)."""

    sqlstate = "42501"


class LimitExceeded(QueryError):
    """A per-role limit (concurrent queries, requests per minute) was hit (HTTP 429, pg 53300)."""

    sqlstate = "53300"

    def __init__(self, message: str, suggestion: str = "", retry_after: float | None = None):
        super().__init__(message, suggestion)
        self.retry_after = retry_after
