"""ASGI entry point for servers such as uvicorn: ``uvicorn syncserver.asgi:app``.

It also sets the server process's garbage-collector policy (docs/adr/0011):
a full collection walks every live object, and with a thousand WebSocket
sessions that froze the process for 50-180 ms, which was the whole p99 of
fan-out. Objects alive after start-up (modules, the app) are never garbage, so
they are frozen out of every scan, and full collections run 100 times less
often. Young collections are unchanged, so short-lived cycles still die young.
"""

from __future__ import annotations

import gc

from syncserver.app import create_app

app = create_app()

gc.freeze()
gc.set_threshold(700, 10, 1000)
