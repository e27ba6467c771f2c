"""Real credentials for the tenant and limit tests: HS256 tokens whose claims carry the user, roles and tenant."""

from __future__ import annotations

import time

import jwt

from server.auth import Authenticator

SECRET = "tenants-and-limits-tests-secret-of-32+bytes"


def authenticator() -> Authenticator:
    return Authenticator.from_env({"PHLOEM_JWT_SECRET": SECRET})


def identity(user: str, roles: str = "", tenant: str | None = None) -> dict[str, str]:
    """The Authorization header of a token for `user` with `roles` (comma-separated) and `tenant`."""
    claims = {"sub": user, "exp": int(time.time()) + 600, "roles": [r for r in roles.split(",") if r]}
    if tenant:
        claims["tenant"] = tenant
    return {"Authorization": f"Bearer {jwt.encode(claims, SECRET, algorithm='HS256')}"}
