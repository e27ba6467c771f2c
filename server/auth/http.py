"""The HTTP door's authentication: one ASGI middleware in front of REST, GraphQL, semantic SQL and the explorer.

It sets `request.state.context` (a SecurityContext) on every request it lets through, and answers 401 with a
`WWW-Authenticate: Bearer` header for a missing or invalid credential.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from semantic.access.context import SecurityContext
from semantic.errors import Unauthenticated
from server.auth.authenticator import Authenticator
from server.auth.tokens import KeysUnavailable
from server.errors import body, json_response, status_of
from server.identity import context_of

# answered without credentials: probes, and pages and assets that hold no data (a trailing * is a prefix)
OPEN = ("/healthz", "/readyz", "/", "/docs", "/docs/assets/*", "/openapi.json", "/explorer/*", "/graphql/assets/*")
_EXACT = frozenset(p for p in OPEN if not p.endswith("*"))
_PREFIXES = tuple(p[:-1] for p in OPEN if p.endswith("*"))
PUBLIC = SecurityContext("unauthenticated")  # an open path's caller when auth is on: restricted, no roles


def is_open(path: str) -> bool:
    return path in _EXACT or path.startswith(_PREFIXES)


def credential(headers: Headers) -> str | None:
    """The bearer value of `Authorization`, or `X-API-Key`; Unauthenticated for another scheme."""
    given = headers.get("authorization")
    if given:
        scheme, _, value = given.strip().partition(" ")
        if scheme.lower() != "bearer":
            raise Unauthenticated(f"the {scheme[:20]} authorization scheme is not supported",
                                  "send `Authorization: Bearer <API key or JWT>`")
        return value.strip() or None
    return headers.get("x-api-key") or None


class Authenticate:
    """Pure ASGI, so it costs one header lookup on the probes and one check per request elsewhere."""

    def __init__(self, app: ASGIApp, auth: Authenticator):
        self.app, self.auth = app, auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        path = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):] or "/"
        state = scope.setdefault("state", {})
        if is_open(path):
            state["context"] = PUBLIC if self.auth.enabled else SecurityContext.anonymous()
            return await self.app(scope, receive, send)
        runtime = scope["app"].state.runtime
        sent = None
        try:
            sent = credential(Headers(scope=scope))
            if self.auth.may_block and sent and not sent.startswith("phk_"):
                context = await run_in_threadpool(self.auth.authenticate, sent, runtime.token)
            else:
                context = self.auth.authenticate(sent, runtime.token)
        except Unauthenticated as e:
            return await self._refuse(scope, receive, send, *status_of(e), invalid=sent is not None)
        except KeysUnavailable as e:
            content = body("auth", str(e), "retry in a moment; the server log says why")
            return await self._refuse(scope, receive, send, 503, content, invalid=False)
        state["context"] = context
        await self.app(scope, receive, send)

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, content: dict, invalid: bool) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": content["error"]["message"][:120]})
            return
        challenge = 'Bearer realm="phloem"' + (', error="invalid_token"' if invalid else "")
        response = json_response(content, status, headers={"WWW-Authenticate": challenge} if status == 401 else None)
        await response(scope, receive, send)


def require_admin(request: Request) -> None:
    """Forbidden (403) unless the caller has the admin role (PHLOEM_ADMIN_ROLE) or is the local CLI."""
    request.app.state.auth.require_admin(context_of(request))
