"""Operations: health and readiness probes, Prometheus metrics, structured logs with request ids."""

from __future__ import annotations

__all__: list[str] = []
