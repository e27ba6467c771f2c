"""A stand-in for the auth middleware in tests: the security context from test headers, set where auth sets it.

The auth branch's middleware leaves `request.state.context` on every request; this does the same from
`X-Test-User`, `X-Test-Roles` (comma-separated) and `X-Test-Tenant`, so the doors' tenant and limit handling is
exercised over real HTTP exactly as it will be behind real credentials.
"""

from __future__ import annotations

from starlette.datastructures import Headers

from semantic.access.context import SecurityContext


class TestIdentity:
    __test__ = False  # not a pytest class

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            headers = Headers(scope=scope)
            user = headers.get("x-test-user")
            if user:
                roles = frozenset(r for r in (headers.get("x-test-roles") or "").split(",") if r)
                scope.setdefault("state", {})["context"] = SecurityContext(user, roles, headers.get("x-test-tenant"))
        await self.app(scope, receive, send)


def identity(user: str, roles: str = "", tenant: str | None = None) -> dict[str, str]:
    return {"X-Test-User": user, "X-Test-Roles": roles, **({"X-Test-Tenant": tenant} if tenant else {})}
