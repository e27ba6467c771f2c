"""Who is asking: the security context every door builds from its credentials and hands to the planner."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import orjson

RESERVED = ("id", "name", "user", "roles", "tenant")  # `{{ user.x }}` names that are not token claims


@dataclass(frozen=True)
class SecurityContext:
    """A user, their roles, their tenant and the attributes their token carried.

    `unrestricted` is the built-in demo on loopback (no auth configured) and the project's own CLI: access
    policies do not apply. Every authenticated identity is restricted, admins included.
    """

    user: str
    roles: frozenset[str] = frozenset()
    tenant: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict, compare=False)
    unrestricted: bool = False

    @classmethod
    def anonymous(cls) -> SecurityContext:
        """The context of a server without auth (the loopback demo) and of local library use."""
        return cls("anonymous", frozenset(), None, {}, unrestricted=True)

    def value(self, name: str) -> Any:
        """`{{ user.<name> }}` in a policy: the user, roles, tenant, or a token claim (None when absent)."""
        if name in ("id", "name", "user"):
            return self.user
        if name == "roles":
            return sorted(self.roles)
        if name == "tenant":
            return self.tenant
        return self.attributes.get(name)

    def has_role(self, role: str) -> bool:
        return role == "*" or role in self.roles

    def key(self) -> str:
        """A stable digest of everything a policy may read, for cache keys (same identity, same key)."""
        data = {"user": self.user, "roles": sorted(self.roles), "tenant": self.tenant,
                "attributes": self.attributes, "unrestricted": self.unrestricted}
        return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS, default=str)).hexdigest()[:24]
