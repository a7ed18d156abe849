"""The real app on uvicorn inside the test's own event loop, for tests that look inside the server as it runs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from litestar import Litestar
from litestar.types import ASGIApp

from syncserver.testing import free_port


@asynccontextmanager
async def uvicorn_in_loop(app: Litestar | ASGIApp) -> AsyncIterator[int]:
    """Serve ``app`` (the app, or an ASGI wrapper around it) on 127.0.0.1 from this event loop; yield its port once
    it accepts connections, stop it after."""
    config = uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning", ws_ping_interval=None)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(30):
            while not server.started:
                assert not task.done(), "the server did not start"
                await asyncio.sleep(0.02)
        yield config.port
    finally:
        server.should_exit = True
        await task
