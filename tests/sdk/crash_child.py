"""A client process for the crash tests: it is SIGKILLed at a random moment.

``write URL TOKEN REPLICA DB COUNT GROUP``: queue COUNT changes, GROUP writes
per transaction (1: each write commits alone), printing ids once their commit
returned (so the parent knows what was acknowledged), then ``SYNC`` and sync.
``drain URL TOKEN REPLICA DB``: sync what is left. Both end with
``DONE <outbox size> <sync seconds>``.
"""

from __future__ import annotations

import asyncio
import sys
import time

from syncclient import SyncClient
from syncproto.messages import Change


def write(client: SyncClient, i: int) -> Change:
    deliveries = client.collection("deliveries")
    entity = f"{client.replica_id}-{i % 40}"
    match i % 4:
        case 0:
            return deliveries.set(entity, status="out_for_delivery", step=i)
        case 1:
            return deliveries.inc(entity, "cod_cents", i)
        case 2:
            return deliveries.add(entity, "scanned", f"parcel-{i}")
        case _:
            return deliveries.append(entity, "trail", {"i": i, "lat": 25.2})


async def main(url: str, token: str, replica: str, db: str, count: int, group: int) -> None:
    # Small batches: more push boundaries inside the sync for the kill to land on.
    async with SyncClient(url, token, replica, db, batch_size=50) as client:
        for start in range(0, count, group):
            with client.batch():
                ids = [write(client, i).id for i in range(start, min(count, start + group))]
            print("\n".join(ids), flush=True)
        print("SYNC", flush=True)
        began = time.monotonic()
        await client.sync()
        print("DONE", client.store.outbox_size(), f"{time.monotonic() - began:.3f}", flush=True)


if __name__ == "__main__":
    mode, url, token, replica, db, *rest = sys.argv[1:]
    count, group = (int(rest[0]), int(rest[1])) if mode == "write" else (0, 1)
    asyncio.run(main(url, token, replica, db, count, group))
