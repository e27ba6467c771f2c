"""Who is asking, as every HTTP door reads it: the security context the auth middleware set on the request."""

from __future__ import annotations

from starlette.requests import Request

from semantic.access.context import SecurityContext


def context_of(request: Request) -> SecurityContext:
    """The request's security context; the unrestricted demo's when no auth middleware set one."""
    return getattr(request.state, "context", None) or SecurityContext.anonymous()


def project_of(request: Request):
    """The project the caller queries (its tenant's) as it may see it (the project itself when unrestricted)."""
    context = context_of(request)
    return request.app.state.runtime.project_for(context).scoped(context)
