"""Fan-out: commit notifications between server processes. ``create_app`` picks the backend:
``SYNC_REDIS_URL`` set selects ``RedisFanout`` (``syncserver.fanout.redis``), unset ``MemoryFanout``."""

from __future__ import annotations

from syncserver.fanout.interface import Fanout, FanoutListener
from syncserver.fanout.memory import MemoryFanout

__all__ = ["Fanout", "FanoutListener", "MemoryFanout"]
