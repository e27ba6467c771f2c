"""JWT bearer tokens: HS256 with a shared secret, RS256/ES256 (and kin) with public keys from a JWKS file or URL.

Which key checks a token follows from the algorithms this server accepts, never from the token alone: an HS*
token is checked only with the shared secret, any other only with a JWKS key of the matching type (an RSA key
for RS*/PS*, an EC key for ES*), so a token cannot make a public key serve as an HMAC secret, and `none` is
never accepted.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from jwt import PyJWK, PyJWKClient, PyJWKSet

from semantic.access.context import SecurityContext
from semantic.errors import Unauthenticated

log = logging.getLogger("phloem.auth")

HMAC = ("HS256", "HS384", "HS512")
PUBLIC = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
KEY_TYPE = {"RS": "RSA", "PS": "RSA", "ES": "EC"}
TOKEN_TIMES = ("exp", "nbf", "iat", "jti")  # about the token, not the user: kept out of attributes (and cache keys)
MIN_SECRET = 32  # bytes: RFC 7518 asks an HS256 key to be at least as long as the hash
HINT = "send a current token from your identity provider: `Authorization: Bearer <JWT>`"


class KeysUnavailable(Exception):
    """The JWKS URL did not answer: not the client's fault (503), and the reason goes to the log only."""


@dataclass
class TokenSettings:
    """What a valid token is here (from PHLOEM_JWT_* and PHLOEM_JWKS; see docs/auth.md)."""

    secret: bytes | None = None
    jwks: str | None = None  # a file path, or an http(s) URL
    algorithms: tuple[str, ...] = ()
    audience: str | None = None
    issuer: str | None = None
    roles_claim: str = "roles"
    tenant_claim: str = "tenant"
    leeway: float = 30.0  # seconds of clock difference allowed on exp and nbf

    @classmethod
    def from_env(cls, environ=os.environ) -> TokenSettings | None:
        secret = environ.get("PHLOEM_JWT_SECRET") or None
        if environ.get("PHLOEM_JWT_SECRET_FILE"):
            try:
                secret = Path(environ["PHLOEM_JWT_SECRET_FILE"]).read_text().strip()
            except OSError as e:
                raise ValueError(f"PHLOEM_JWT_SECRET_FILE cannot be read: {e.strerror}") from None
        jwks = environ.get("PHLOEM_JWKS") or None
        if secret is None and jwks is None:
            return None
        if secret is not None and len(secret.encode()) < MIN_SECRET:
            raise ValueError(f"the JWT secret must be at least {MIN_SECRET} bytes (e.g. `openssl rand -hex 32`)")
        offered = (HMAC if secret else ()) + (PUBLIC if jwks else ())
        asked = environ.get("PHLOEM_JWT_ALGORITHMS")
        algorithms = tuple(a.strip() for a in asked.split(",") if a.strip()) if asked else offered
        for alg in algorithms:
            if alg not in HMAC + PUBLIC:
                raise ValueError(f"PHLOEM_JWT_ALGORITHMS: {alg!r} is not one of {', '.join(HMAC + PUBLIC)}")
            if alg not in offered:
                needs = "PHLOEM_JWT_SECRET" if alg in HMAC else "PHLOEM_JWKS"
                raise ValueError(f"PHLOEM_JWT_ALGORITHMS: {alg} needs {needs}")
        try:
            leeway = float(environ.get("PHLOEM_JWT_LEEWAY", "30"))
        except ValueError:
            raise ValueError("PHLOEM_JWT_LEEWAY must be a number of seconds") from None
        return cls(secret.encode() if secret else None, jwks, algorithms, environ.get("PHLOEM_JWT_AUDIENCE") or None,
                   environ.get("PHLOEM_JWT_ISSUER") or None, environ.get("PHLOEM_JWT_ROLES_CLAIM") or "roles",
                   environ.get("PHLOEM_JWT_TENANT_CLAIM") or "tenant", leeway)


class JwksFile:
    """Public keys from a JWKS file, re-read when it changes (key rotation without a restart)."""

    def __init__(self, path: str):
        self.path = Path(path)
        self._seen = None
        self._keys: list[PyJWK] = []
        self._refresh(strict=True)

    def _refresh(self, strict: bool = False) -> None:
        try:
            st = os.stat(self.path)
            seen = (st.st_mtime_ns, st.st_size)
            if seen == self._seen:
                return
            self._keys = list(PyJWKSet.from_json(self.path.read_text()).keys)
            self._seen = seen
        except (OSError, ValueError, jwt.PyJWKSetError, jwt.PyJWKError) as e:
            if strict:
                raise ValueError(f"PHLOEM_JWKS: not a readable JWKS file ({e})") from None
            log.error("the JWKS file changed but cannot be read (%s); the previous keys stay in force", e)

    def keys(self, kid: str | None) -> list[PyJWK]:
        self._refresh()
        return self._keys


class JwksUrl:
    """Public keys from a JWKS URL, fetched by PyJWKClient and cached (refetched for an unknown `kid`)."""

    def __init__(self, url: str):
        self.client = PyJWKClient(url, cache_jwk_set=True, lifespan=300, timeout=5)

    def keys(self, kid: str | None) -> list[PyJWK]:
        try:
            if kid is not None:
                try:
                    return [self.client.get_signing_key(kid)]
                except jwt.PyJWKClientError as e:
                    if isinstance(e, jwt.PyJWKClientConnectionError):
                        raise
                    return []  # not in the set, even after a refetch
            return self.client.get_signing_keys()
        except jwt.PyJWKClientConnectionError as e:
            log.error("cannot fetch the JWKS: %s", e)
            raise KeysUnavailable("this server cannot fetch its token signing keys right now") from None
        except jwt.PyJWKClientError:
            return []


class Tokens:
    """Checks bearer tokens and turns their claims into a security context."""

    def __init__(self, settings: TokenSettings):
        self.settings = settings
        jwks = settings.jwks
        self.jwks = None if jwks is None else (JwksUrl(jwks) if jwks.startswith(("http://", "https://"))
                                               else JwksFile(jwks))
        self.may_block = isinstance(self.jwks, JwksUrl)  # a fetch: the caller runs it off the event loop

    def authenticate(self, token: str) -> SecurityContext:
        s = self.settings
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthenticated("the bearer token is not a well-formed JWT", HINT) from None
        alg = header.get("alg")
        if alg not in s.algorithms:
            raise Unauthenticated(f"tokens signed with {str(alg)[:20]!r} are not accepted here",
                                  f"this server accepts {', '.join(s.algorithms)}")
        key = s.secret if alg in HMAC else self._public_key(header, alg)
        options = {"require": ["exp", "sub"], "verify_aud": s.audience is not None}
        try:
            claims = jwt.decode(token, key, algorithms=[alg], audience=s.audience, issuer=s.issuer,
                                leeway=s.leeway, options=options)
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the token has expired", HINT) from None
        except jwt.ImmatureSignatureError:
            raise Unauthenticated("the token is not valid yet (its `nbf` or `iat` is in the future)", HINT) from None
        except jwt.InvalidAudienceError:
            raise Unauthenticated("the token is for another audience (`aud`)",
                                  f"ask for a token whose `aud` is {s.audience}") from None
        except jwt.InvalidIssuerError:
            raise Unauthenticated("the token comes from another issuer (`iss`)",
                                  f"ask {s.issuer} for a token") from None
        except jwt.MissingRequiredClaimError as e:
            raise Unauthenticated(f"the token has no `{e.claim}` claim", HINT) from None
        except jwt.InvalidSignatureError:
            raise Unauthenticated("the token's signature does not verify", HINT) from None
        except jwt.PyJWTError:
            raise Unauthenticated("the token is invalid", HINT) from None
        return self.context(claims)

    def _public_key(self, header: dict, alg: str):
        kid = header.get("kid")
        kid = kid if isinstance(kid, str) else None
        wanted = KEY_TYPE[alg[:2]]
        fitting = [k for k in self.jwks.keys(kid)
                   if k.key_type == wanted and (kid is None or k.key_id == kid)
                   and k._jwk_data.get("alg") in (None, alg) and k._jwk_data.get("use") in (None, "sig")]
        if len(fitting) != 1:
            said = "no signing key" if not fitting else "more than one signing key"
            raise Unauthenticated(f"{said} of this server matches the token's `kid` and `alg`", HINT)
        return fitting[0].key

    def context(self, claims: dict[str, Any]) -> SecurityContext:
        """`sub` is the user, the roles claim (a list or a space-separated string; a dotted name reaches into
        an object, e.g. realm_access.roles) the roles, the tenant claim the tenant; other claims are attributes."""
        s = self.settings
        roles = _at(claims, s.roles_claim)
        if isinstance(roles, str):
            roles = roles.split()
        elif not isinstance(roles, list):
            roles = []
        tenant = _at(claims, s.tenant_claim)
        top = {"sub", s.roles_claim.split(".")[0], s.tenant_claim.split(".")[0], *TOKEN_TIMES}
        attributes = {k: v for k, v in claims.items() if k not in top}
        return SecurityContext(str(claims["sub"]), frozenset(str(r) for r in roles),
                               None if tenant is None or isinstance(tenant, dict | list) else str(tenant),
                               json.loads(json.dumps(attributes)))


def _at(claims: dict, path: str) -> Any:
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value
