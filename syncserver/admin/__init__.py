"""Admin tools: the conflict log, overrides, entity history and dead letters.

One service (``service.AdminService``) behind three faces: the JSON API under
``/v1/admin`` (``api.py``), the web pages under ``/admin`` (``web.py``) and the
``syncserver admin`` commands (``cli.py``).
"""

from __future__ import annotations

__all__: list[str] = []
