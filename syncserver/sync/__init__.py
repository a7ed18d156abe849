"""Sync: push (validate, merge, commit), pull, cursors, the conflict log and payload codecs."""

from __future__ import annotations

__all__: list[str] = []
