"""API keys: `phk_<id>_<secret>`, of which the server keeps only a SHA-256 digest, in a keys file.

The file (PHLOEM_API_KEYS_FILE) is JSON lines, or a YAML list when its name ends in .yml/.yaml; each entry has
`id`, `name`, `hash`, `roles`, `tenant` and `attributes`. It is re-read when it changes, so a key created or
revoked while the server runs counts from the next request.

Why SHA-256 and not a slow hash: a slow hash protects guessable passwords from offline guessing, but these keys
carry 256 random bits, which no amount of hashing speed makes guessable; a fast digest keeps each request cheap.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import os
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from semantic.access.context import SecurityContext
from semantic.errors import Unauthenticated

log = logging.getLogger("phloem.auth")

PREFIX = "phk_"
UNKNOWN = ("unknown API key", "check that the whole key was sent, or create one: phloem keys create NAME --role ROLE")
_DUMMY = "sha256:" + "0" * 64  # compared against when the id is unknown, so both failures take the same path


def digest(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class ApiKey:
    """One entry of the keys file: what a key's holder is (never the key itself)."""

    id: str
    name: str
    hash: str
    roles: tuple[str, ...] = ()
    tenant: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    created: str = ""

    @classmethod
    def from_entry(cls, entry: dict) -> ApiKey:
        if not isinstance(entry, dict) or not entry.get("id") or not entry.get("name"):
            raise ValueError("each key needs an id and a name")
        hashed = str(entry.get("hash", ""))
        if not hashed.startswith("sha256:") or len(hashed) != 71:
            raise ValueError(f"key {entry['id']!r}: `hash` must be sha256:<64 hex digits>")
        roles = entry.get("roles") or []
        roles = roles.split() if isinstance(roles, str) else roles
        attributes = entry.get("attributes") or {}
        if not isinstance(attributes, dict):
            raise ValueError(f"key {entry['id']!r}: `attributes` must be a mapping")
        tenant = entry.get("tenant")
        return cls(str(entry["id"]), str(entry["name"]), hashed, tuple(str(r) for r in roles),
                   None if tenant is None else str(tenant), dict(attributes), str(entry.get("created", "")))

    def entry(self) -> dict:
        return {"id": self.id, "name": self.name, "hash": self.hash, "roles": list(self.roles),
                "tenant": self.tenant, "attributes": self.attributes, "created": self.created}

    def context(self) -> SecurityContext:
        return SecurityContext(self.name, frozenset(self.roles), self.tenant, dict(self.attributes))


def read_keys(path: Path) -> list[ApiKey]:
    """The keys of a file (none when it does not exist yet); ValueError for a malformed file."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    if path.suffix in (".yml", ".yaml"):
        try:
            entries = YAML(typ="safe", pure=True).load(text) or []
        except Exception as e:
            raise ValueError(f"the keys file is not valid YAML: {str(e).splitlines()[0]}") from None
        if not isinstance(entries, list):
            raise ValueError("the keys file must be a YAML list of keys")
    else:
        entries = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip() and not line.lstrip().startswith("#"):
                try:
                    entries.append(json.loads(line))
                except ValueError:
                    raise ValueError(f"line {number} of the keys file is not JSON") from None
    return [ApiKey.from_entry(e) for e in entries]


def new_key(name: str, roles: list[str], tenant: str | None = None,
            attributes: dict[str, Any] | None = None) -> tuple[str, ApiKey]:
    """A fresh key (shown to its owner once) and the entry that stores only its digest."""
    key_id = secrets.token_hex(4)
    key = f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    created = datetime.now(UTC).replace(microsecond=0).isoformat()
    return key, ApiKey(key_id, name, digest(key), tuple(roles), tenant, dict(attributes or {}), created)


def append_key(path: Path, entry: ApiKey) -> None:
    """Add one entry to the keys file, created with mode 0600 (readers could otherwise list every identity)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(entry.entry(), ensure_ascii=False)
    if path.suffix in (".yml", ".yaml"):
        line = "- " + line  # a JSON object is a YAML flow mapping: one list item per line
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a") as f:
        os.fchmod(fd, 0o600)
        f.write(line + "\n")


def remove_keys(path: Path, which: str) -> int:
    """Drop the entries whose id or name is `which`; how many went."""
    kept, gone = [], 0
    for entry in read_keys(path):
        if which in (entry.id, entry.name):
            gone += 1
        else:
            kept.append(entry)
    if gone:
        buffer = io.StringIO()
        for entry in kept:
            line = json.dumps(entry.entry(), ensure_ascii=False)
            buffer.write(("- " + line if path.suffix in (".yml", ".yaml") else line) + "\n")
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(buffer.getvalue())
        os.replace(tmp, path)
    return gone


class ApiKeys:
    """The keys of one keys file, looked up by id and checked by digest, re-read when the file changes."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._seen: tuple | None = None
        self._by_id: dict[str, list[ApiKey]] = {}
        self._refresh(strict=True)

    def _refresh(self, strict: bool = False) -> None:
        try:
            st = os.stat(self.path)
            seen = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            seen = None
        if seen == self._seen and self._seen is not None:
            return
        try:
            keys = read_keys(self.path)
        except (ValueError, OSError) as e:
            if strict:
                raise ValueError(f"PHLOEM_API_KEYS_FILE: {e}") from None
            log.error("the keys file changed but cannot be read (%s); the previous keys stay in force", e)
            return
        by_id: dict[str, list[ApiKey]] = {}
        for key in keys:
            by_id.setdefault(key.id, []).append(key)
        self._by_id, self._seen = by_id, seen

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_id.values())

    def authenticate(self, key: str) -> SecurityContext:
        """The holder of `key`; Unauthenticated, the same for an unknown id and a wrong secret."""
        self._refresh()
        key_id = key[len(PREFIX):].partition("_")[0]
        given = digest(key).encode()
        found = None
        for candidate in self._by_id.get(key_id) or [None]:
            expected = (candidate.hash if candidate else _DUMMY).encode()
            if hmac.compare_digest(given, expected) and candidate is not None:
                found = candidate
        if found is None:
            raise Unauthenticated(*UNKNOWN)
        return found.context()
