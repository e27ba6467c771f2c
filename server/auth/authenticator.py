"""One credential in, one security context out: API keys, JWTs, and the token of the local server record."""

from __future__ import annotations

import hmac
import ipaddress
import os
from dataclasses import dataclass

from semantic.access.context import SecurityContext
from semantic.errors import Forbidden, Unauthenticated
from server.auth.keys import PREFIX, ApiKeys
from server.auth.tokens import Tokens, TokenSettings

SETTINGS = ("PHLOEM_API_KEYS_FILE", "PHLOEM_JWT_SECRET", "PHLOEM_JWT_SECRET_FILE", "PHLOEM_JWKS")
ASK = "send `Authorization: Bearer <API key or JWT>`"
CLI_USER = "phloem-cli"  # the user of the CLI beside the server (it holds .phloem/server.json's token)


def is_loopback(host: str) -> bool:
    """Whether a bind address only takes connections from this machine (a name other than localhost: no)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]").split("%")[0]).is_loopback
    except ValueError:
        return False


@dataclass
class Authenticator:
    """Who is asking, from the credential a request carries. Off (everyone anonymous) when nothing is set."""

    keys: ApiKeys | None = None
    tokens: Tokens | None = None
    admin_role: str = "admin"

    @classmethod
    def from_env(cls, environ=os.environ) -> Authenticator:
        """PHLOEM_API_KEYS_FILE, PHLOEM_JWT_* / PHLOEM_JWKS and PHLOEM_ADMIN_ROLE; ValueError when misconfigured."""
        path = environ.get("PHLOEM_API_KEYS_FILE") or None
        settings = TokenSettings.from_env(environ)
        return cls(ApiKeys(path) if path else None, Tokens(settings) if settings else None,
                   environ.get("PHLOEM_ADMIN_ROLE") or "admin")

    @property
    def enabled(self) -> bool:
        return self.keys is not None or self.tokens is not None

    @property
    def may_block(self) -> bool:
        """A check may fetch a JWKS URL: run it in a worker thread."""
        return self.tokens is not None and self.tokens.may_block

    def cli(self) -> SecurityContext:
        """The local CLI beside the server: the project's owner, unrestricted, allowed the admin endpoints."""
        return SecurityContext(CLI_USER, frozenset({self.admin_role}), None, {}, unrestricted=True)

    def authenticate(self, credential: str | None, record_token: str | None = None) -> SecurityContext:
        """The context of `credential` (the bearer value); Unauthenticated says what was missing or wrong."""
        if credential and record_token and hmac.compare_digest(credential.encode(), record_token.encode()):
            return self.cli()
        if not self.enabled:
            return SecurityContext.anonymous()
        if not credential:
            raise Unauthenticated("this server needs credentials and the request has none", ASK)
        if credential.startswith(PREFIX):
            if self.keys is None:
                raise Unauthenticated("this server does not accept API keys", "send a JWT bearer token")
            return self.keys.authenticate(credential)
        if credential.count(".") == 2:
            if self.tokens is None:
                raise Unauthenticated("this server does not accept JWTs", "send an API key (phk_…)")
            return self.tokens.authenticate(credential)
        raise Unauthenticated("the credential is neither an API key (phk_…) nor a JWT", ASK)

    def require_admin(self, context: SecurityContext) -> None:
        """Forbidden unless `context` has the admin role (the local CLI has it)."""
        if context.has_role(self.admin_role):
            return
        if not self.enabled:
            raise Forbidden("admin endpoints need the token of this server's record",
                            "run the `phloem` command in the project folder, as a user who can read "
                            ".phloem/server.json")
        raise Forbidden(f"this needs the `{self.admin_role}` role, which {context.user} does not have",
                        "ask for a key or token with the admin role")
