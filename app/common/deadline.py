"""``deadline(seconds)``: ``asyncio.timeout`` for calls to a backend, judged only after the sockets were read.

A worker's event loop can be blocked past a request's budget (a GC pause, parsing a large body, a burst's
callbacks). uvloop runs due timers before it polls the sockets, so ``asyncio.timeout`` then expires calls whose
replies arrived in time and sit unread: healthy backends, answered as unavailable. Here the verdict waits for
one more poll (about a millisecond on a real timeout): a reply that came in time wins. PipelinedRedis does the
same in its own watchdog (app/features/resp.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

AFTER_POLL_S = 0.001  # a timer, not a call_soon: uvloop turns a zero delay into call_soon, run before the poll


@contextlib.asynccontextmanager
async def deadline(seconds: float) -> AsyncIterator[None]:
    """Raise TimeoutError in the block if it has not finished ``seconds`` from now, as ``asyncio.timeout``."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(None) as timeout:
        handles = []

        def due() -> None:  # then one more poll, and asyncio's own cancel-and-TimeoutError
            handles.append(loop.call_later(AFTER_POLL_S, timeout.reschedule, loop.time()))

        handles.append(loop.call_later(seconds, due))
        try:
            yield
        finally:
            for handle in handles:
                handle.cancel()
