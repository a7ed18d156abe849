"""Who may do what: bearer tokens and their keys (JWKS), channel scopes and rate limits."""

from __future__ import annotations

from syncserver.auth.tokens import ROLES, Principal, Role, TokenVerifier

__all__ = ["ROLES", "Principal", "Role", "TokenVerifier"]
