"""The sync server: Litestar app, transports, auth, crypto, fan-out, admin, CLI."""

from __future__ import annotations

__all__: list[str] = []
