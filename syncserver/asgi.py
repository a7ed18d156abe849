"""ASGI entry point for servers such as uvicorn: ``uvicorn syncserver.asgi:app``.

It also sets the server process's garbage-collector policy (docs/adr/0011):
a full collection walks every live object, and with a thousand WebSocket
sessions that froze the process for 50-180 ms, which was the whole p99 of
fan-out. Objects alive after start-up (modules, the app) are never garbage, so
they are frozen out of every scan, and full collections run 100 times less
often. Young collections are unchanged, so short-lived cycles still die young.
The cycles that ended WebSocket sessions leave are collected by the live hub
every so many sessions (docs/adr/0019).
"""

from __future__ import annotations

from syncserver.app import create_app
from syncserver.live import server_gc_policy

app = create_app()

server_gc_policy()
