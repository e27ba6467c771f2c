"""Limits per role (docs/limits.md): how long, how large, how many at once and how often one user may query.

`limits:` in phloem.yml names roles (and `default`); a context gets, for each limit, the most generous value of
the roles it holds that are named there (each role's missing keys are the `default`'s), or the `default`'s when
it holds none of them. Concurrency and rate are counted per user (and tenant), so one user cannot starve the rest
of a role. `Quotas.admit(context)` is the one entry every door wraps a query in.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass

from semantic.access.context import SecurityContext
from semantic.errors import LimitExceeded
from semantic.limits import NO_LIMITS, Limits
from semantic.project.model import RoleLimits

WINDOW = 60.0  # seconds `per_minute` counts over (a sliding window)
_KEYS = ("timeout", "rows", "bytes", "concurrent", "per_minute")


@dataclass(frozen=True)
class Allowance:
    """One context's limits; None: no bound."""

    timeout: float | None = None
    rows: int | None = None
    bytes: int | None = None
    concurrent: int | None = None
    per_minute: int | None = None

    @property
    def limits(self) -> Limits:
        return Limits(self.rows, self.bytes) if self.rows is not None or self.bytes is not None else NO_LIMITS


def _bound(value: float | int | None) -> float | int | None:
    return None if value == 0 else value  # 0 in phloem.yml: no limit


def _most_generous(values: list) -> float | int | None:
    return None if any(v is None for v in values) else max(values)


class Ticket:
    """An admitted query: its allowance, and its place among the user's running queries until released."""

    def __init__(self, quotas: Quotas | None, key: tuple, allowance: Allowance):
        self._quotas, self.key, self.allowance = quotas, key, allowance

    @property
    def timeout(self) -> float | None:
        return self.allowance.timeout

    @property
    def limits(self) -> Limits:
        return self.allowance.limits

    def release(self) -> None:
        quotas, self._quotas = self._quotas, None
        if quotas is not None:
            quotas._release(self.key)

    def __enter__(self) -> Ticket:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class _User:
    __slots__ = ("running", "recent")

    def __init__(self):
        self.running = 0
        self.recent: deque[float] = deque()  # monotonic times of admitted requests in the last WINDOW seconds


class Quotas:
    """Per-role limits and the counters they are checked against (thread-safe; admission never blocks)."""

    def __init__(self, limits: dict[str, RoleLimits] | None = None, timeout: float | None = None,
                 answer: Limits | None = None, clock=time.monotonic):
        """`limits`: phloem.yml's section; `timeout` and `answer`: the server's own, where `default` says none."""
        self._lock = threading.Lock()
        self._users: dict[tuple, _User] = {}
        self._clock = clock
        self.configure(limits or {}, timeout, answer)

    def configure(self, limits: dict[str, RoleLimits], timeout: float | None = None,
                  answer: Limits | None = None) -> None:
        """New settings (a reload); the counters of running queries and recent requests carry over."""
        answer = answer or NO_LIMITS
        server = {"timeout": timeout, "rows": answer.rows, "bytes": answer.bytes, "concurrent": None,
                  "per_minute": None}
        default = limits.get("default")
        base = {k: (_bound(getattr(default, k)) if default is not None and getattr(default, k) is not None
                    else server[k]) for k in _KEYS}
        roles = {}
        for role, given in limits.items():
            if role != "default":
                roles[role] = {k: _bound(getattr(given, k)) if getattr(given, k) is not None else base[k]
                               for k in _KEYS}
        self._default, self._roles = Allowance(**base), roles
        self._allowances: dict[frozenset, Allowance] = {}

    def allowance(self, context: SecurityContext | None) -> Allowance:
        roles = frozenset(r for r in (context.roles if context else ()) if r in self._roles)
        found = self._allowances.get(roles)
        if found is None:
            if not roles:
                found = self._default
            else:
                found = Allowance(**{k: _most_generous([self._roles[r][k] for r in roles]) for k in _KEYS})
            self._allowances[roles] = found
        return found

    def admit(self, context: SecurityContext | None) -> Ticket:
        """A ticket for one query of `context` (use it as a context manager), or LimitExceeded: too many of the
        user's queries running, or too many requests in the last minute (with the seconds to wait)."""
        context = context or SecurityContext.anonymous()
        allowance = self.allowance(context)
        if allowance.concurrent is None and allowance.per_minute is None:
            return Ticket(None, (), allowance)
        key = (context.tenant, context.user)
        now = self._clock()
        with self._lock:
            user = self._users.get(key)
            if user is None:
                if len(self._users) > 10_000:
                    self._forget_idle(now)
                user = self._users[key] = _User()
            recent = user.recent
            while recent and recent[0] <= now - WINDOW:
                recent.popleft()
            if allowance.per_minute is not None and len(recent) >= allowance.per_minute:
                wait = recent[-allowance.per_minute] + WINDOW - now  # when the oldest one that counts leaves
                raise LimitExceeded(
                    f"`{context.user}` made {len(recent)} requests in the last minute, the limit of its role is "
                    f"{allowance.per_minute}", f"retry in {math.ceil(wait)} s, or ask for more in fewer requests",
                    retry_after=max(wait, 0.001))
            if allowance.concurrent is not None and user.running >= allowance.concurrent:
                raise LimitExceeded(
                    f"`{context.user}` has {user.running} queries running, the most its role may run at once",
                    "wait for one to finish, then retry", retry_after=1.0)
            user.running += 1
            recent.append(now)
        return Ticket(self, key, allowance)

    def _release(self, key: tuple) -> None:
        with self._lock:
            user = self._users.get(key)
            if user is not None:
                user.running -= 1

    def _forget_idle(self, now: float) -> None:
        for key in [k for k, u in self._users.items() if not u.running and (not u.recent or
                                                                             u.recent[-1] <= now - WINDOW)]:
            del self._users[key]
