"""The key-cache metrics are Prometheus counters: they never go down."""

from __future__ import annotations

import gc

from prometheus_client import REGISTRY

from syncserver.keys.keyring import TenantKeyring
from syncserver.keys.providers import LocalKeyProvider
from syncserver.ops.metrics import watch_keyring
from syncstore import MemoryStore


def _hits() -> float:
    value = REGISTRY.get_sample_value("sync_key_cache_hits_total")
    return 0.0 if value is None else value


def test_key_cache_hits_never_decrease_when_a_keyring_is_collected() -> None:
    before = _hits()
    ring = TenantKeyring(MemoryStore(), LocalKeyProvider(b"\x02" * 32))
    watch_keyring(ring)
    ring.stats.hits += 7
    assert _hits() == before + 7
    del ring
    gc.collect()
    assert _hits() == before + 7
