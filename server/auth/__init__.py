"""Authentication at the doors: API keys, JWT bearer tokens and PostgreSQL users, each turned into a
`semantic.access.context.SecurityContext` (see docs/auth.md)."""

from server.auth.authenticator import SETTINGS, Authenticator, is_loopback

__all__ = ["SETTINGS", "Authenticator", "is_loopback"]
