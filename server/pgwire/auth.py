"""Who may connect: SCRAM-SHA-256 (RFC 5802 / RFC 7677) against stored verifiers, or trust where configured.

Users come from `PHLOEM_PG_USERS` ("alice:secret,bob:SCRAM-SHA-256$4096:<salt>$<StoredKey>:<ServerKey>") or
`PHLOEM_PG_USERS_FILE` (one `user:password-or-verifier` a line; or, for a file named *.yml / *.yaml, a mapping
of user names to `password` or `verifier`, `roles`, `tenant` and `attributes`: who each user is, as a
SecurityContext). A plain password is turned into a verifier when read and never kept; PostgreSQL's own
`pg_authid.rolpassword` verifiers are accepted as they are, and `python -m server.pgwire.auth USER PASSWORD`
prints one.

Channel binding is not offered (no SCRAM-SHA-256-PLUS): clients send the `n,,` or `y,,` GS2 header, both
accepted. An unknown user goes through the same exchange with a made-up salt and fails like a wrong password,
so user names cannot be probed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import sys
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from ruamel.yaml import YAML

from semantic.access.context import SecurityContext

MECHANISM = "SCRAM-SHA-256"
ITERATIONS = 4096


class AuthFailed(Exception):
    """The SCRAM exchange failed: a wrong password (28P01) or a malformed message (08P01)."""

    def __init__(self, sqlstate: str, message: str):
        super().__init__(message)
        self.sqlstate = sqlstate


@dataclass(frozen=True)
class Verifier:
    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes

    @classmethod
    def from_password(cls, password: str, salt: bytes | None = None, iterations: int = ITERATIONS) -> Verifier:
        salt = salt if salt is not None else secrets.token_bytes(16)
        salted = hashlib.pbkdf2_hmac("sha256", saslprep(password).encode(), salt, iterations)
        client_key = _hmac(salted, b"Client Key")
        return cls(salt, iterations, hashlib.sha256(client_key).digest(), _hmac(salted, b"Server Key"))

    @classmethod
    def parse(cls, text: str) -> Verifier:
        """PostgreSQL's verifier format: SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>."""
        try:
            mechanism, params, keys = text.split("$")
            iterations, salt = params.split(":")
            stored, server = keys.split(":")
            if mechanism != MECHANISM:
                raise ValueError(mechanism)
            return cls(base64.b64decode(salt, validate=True), int(iterations),
                       base64.b64decode(stored, validate=True), base64.b64decode(server, validate=True))
        except ValueError:
            raise ValueError("not a SCRAM-SHA-256 verifier (SCRAM-SHA-256$<iter>:<salt>$<stored>:<server>)") from None

    def __str__(self) -> str:
        b64 = base64.b64encode
        return (f"{MECHANISM}${self.iterations}:{b64(self.salt).decode()}$"
                f"{b64(self.stored_key).decode()}:{b64(self.server_key).decode()}")


def saslprep(password: str) -> str:
    """RFC 4013 normalisation as PostgreSQL applies it (a password it cannot normalise is used as is)."""
    mapped = "".join(" " if unicodedata.category(c) == "Zs" else c for c in password
                     if c not in "\u00ad\u034f\u1806\u180b\u180c\u180d\u200b\u200c\u200d\u2060\ufe00\ufeff")
    normal = unicodedata.normalize("NFKC", mapped)
    if any(unicodedata.category(c) in ("Cc", "Co", "Cs", "Cn") for c in normal):
        return password
    return normal


def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def parse_users(spec: str) -> dict[str, Verifier]:
    """'user:password,user2:SCRAM-SHA-256$...' (or the same one per line) into verifiers."""
    users: dict[str, Verifier] = {}
    for item in spec.replace("\n", ",").split(","):
        item = item.strip()
        if not item or item.startswith("#"):
            continue
        user, sep, secret = item.partition(":")
        if not sep or not user:
            raise ValueError(f"expected user:password, got {item.split(':')[0]!r}…")
        users[user] = _secret(secret)
    return users


def _secret(secret: str) -> Verifier:
    return Verifier.parse(secret) if secret.startswith(MECHANISM + "$") else Verifier.from_password(secret)


def parse_users_yaml(text: str) -> tuple[dict[str, Verifier], dict[str, SecurityContext]]:
    """`alice: {password | verifier, roles: [..], tenant, attributes: {..}}` into verifiers and contexts."""
    try:
        data = YAML(typ="safe", pure=True).load(text) or {}
    except Exception as e:
        raise ValueError(f"the users file is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ValueError("the users file must map user names to their password (or verifier) and roles")
    users, contexts = {}, {}
    for name, entry in data.items():
        if not isinstance(entry, dict) or not (entry.get("password") or entry.get("verifier")):
            raise ValueError(f"user {str(name)!r} needs a password or a verifier")
        roles = entry.get("roles") or []
        roles = roles.replace(",", " ").split() if isinstance(roles, str) else roles
        attributes = entry.get("attributes") or {}
        if not isinstance(attributes, dict):
            raise ValueError(f"user {str(name)!r}: attributes must be a mapping")
        tenant = entry.get("tenant")
        users[str(name)] = _secret(str(entry.get("verifier") or entry["password"]))
        contexts[str(name)] = SecurityContext(str(name), frozenset(str(r) for r in roles),
                                              None if tenant is None else str(tenant), dict(attributes))
    return users, contexts


def load_users(environ=os.environ) -> tuple[dict[str, Verifier], dict[str, SecurityContext]] | None:
    """Users (verifiers) and who they are (contexts; a user of the line format has no roles) from
    PHLOEM_PG_USERS and PHLOEM_PG_USERS_FILE; None when neither is set."""
    spec, path = environ.get("PHLOEM_PG_USERS"), environ.get("PHLOEM_PG_USERS_FILE")
    if spec is None and path is None:
        return None
    users, contexts = parse_users(spec or ""), {}
    if path:
        text = Path(path).read_text()
        if Path(path).suffix in (".yml", ".yaml"):
            more, contexts = parse_users_yaml(text)
            users.update(more)
        else:
            users.update(parse_users(text))
    return users, contexts


def users_from_env(environ=os.environ) -> dict[str, Verifier] | None:
    """Users from PHLOEM_PG_USERS and PHLOEM_PG_USERS_FILE; None when neither is set."""
    loaded = load_users(environ)
    return None if loaded is None else loaded[0]


class ScramExchange:
    """The server side of one SCRAM-SHA-256 authentication."""

    def __init__(self, user: str, verifier: Verifier | None, secret: bytes):
        self.user = user
        if verifier is None:  # unknown user: a stable fake salt, and a verifier nobody can match
            fake_salt = _hmac(secret, user.encode())[:16]
            verifier = Verifier(fake_salt, ITERATIONS, secrets.token_bytes(32), secrets.token_bytes(32))
            self.known = False
        else:
            self.known = True
        self.verifier = verifier
        self.client_first_bare = ""
        self.server_first = ""
        self.nonce = ""
        self.gs2_header = ""

    def first(self, client_first: bytes) -> bytes:
        """client-first-message -> server-first-message."""
        text = _ascii(client_first)
        parts = text.split(",", 2)
        if parts[0].startswith("p="):
            raise AuthFailed("08P01", "channel binding is not supported by this server")
        if len(parts) != 3 or parts[0] not in ("n", "y") or (parts[1] and not parts[1].startswith("a=")):
            raise AuthFailed("08P01", "malformed SCRAM message")
        self.gs2_header = f"{parts[0]},{parts[1]},"
        self.client_first_bare = parts[2]
        attrs = _attributes(self.client_first_bare)
        client_nonce = attrs.get("r", "")
        if not client_nonce or "n" not in attrs or any(c in client_nonce for c in ", ") or "m" in attrs:
            raise AuthFailed("08P01", "malformed SCRAM message")
        self.nonce = client_nonce + base64.b64encode(secrets.token_bytes(18)).decode()
        salt = base64.b64encode(self.verifier.salt).decode()
        self.server_first = f"r={self.nonce},s={salt},i={self.verifier.iterations}"
        return self.server_first.encode()

    def final(self, client_final: bytes) -> bytes:
        """client-final-message -> server-final-message, or AuthFailed."""
        text = _ascii(client_final)
        without_proof, sep, proof_part = text.rpartition(",p=")
        if not sep:
            raise AuthFailed("08P01", "malformed SCRAM message")
        attrs = _attributes(without_proof)
        expected_binding = base64.b64encode(self.gs2_header.encode()).decode()
        if attrs.get("c") != expected_binding:
            raise AuthFailed("08P01", "SCRAM channel binding check failed")
        if attrs.get("r") != self.nonce:
            raise AuthFailed("08P01", "SCRAM nonce mismatch")
        try:
            proof = base64.b64decode(proof_part, validate=True)
        except ValueError:
            raise AuthFailed("08P01", "malformed SCRAM message") from None
        auth_message = f"{self.client_first_bare},{self.server_first},{without_proof}".encode()
        signature = _hmac(self.verifier.stored_key, auth_message)
        if len(proof) != len(signature):
            raise AuthFailed("08P01", "malformed SCRAM message")
        client_key = _xor(proof, signature)
        if not self.known or not hmac.compare_digest(hashlib.sha256(client_key).digest(), self.verifier.stored_key):
            raise AuthFailed("28P01", f'password authentication failed for user "{self.user}"')
        server_signature = _hmac(self.verifier.server_key, auth_message)
        return b"v=" + base64.b64encode(server_signature)


def _ascii(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise AuthFailed("08P01", "malformed SCRAM message") from None


def _attributes(text: str) -> dict[str, str]:
    attrs = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if sep and len(key) == 1:
            attrs[key] = value
        elif key:
            attrs.setdefault(key[:1], "")
    return attrs


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m server.pgwire.auth USER PASSWORD   (prints USER:<SCRAM verifier>)", file=sys.stderr)
        return 2
    print(f"{argv[0]}:{Verifier.from_password(argv[1])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
