"""Transports: HTTP today; each speaks protocol v1 and calls the same services."""

from __future__ import annotations

__all__: list[str] = []
