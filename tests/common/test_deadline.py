"""deadline(): a reply that arrived in time is not a timeout, even when the loop reads it late; a late one is."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
import uvloop

from app.common.deadline import deadline

pytestmark = pytest.mark.timed


class _Conn(asyncio.Protocol):
    def __init__(self, on_data: Callable[[bytes], None]) -> None:
        self.on_data = on_data

    def data_received(self, data: bytes) -> None:
        self.on_data(data)


async def _reply_read_late(timeout: Callable[[float], Any], replies: bool) -> str:
    """A call waiting for a reply on one socket, while another socket's callback blocks the loop for three
    budgets; the reply, if any, is sent in time: as the block begins."""
    loop = asyncio.get_running_loop()
    reply: asyncio.Future[bytes] = loop.create_future()
    a1, b1 = socket.socketpair()
    a2, b2 = socket.socketpair()

    def block(_: bytes) -> None:
        if replies:
            b1.send(b"reply")
        time.sleep(0.15)

    def answer(data: bytes) -> None:
        if not reply.done():
            reply.set_result(data)

    try:
        await loop.connect_accepted_socket(lambda: _Conn(answer), a1)
        await loop.connect_accepted_socket(lambda: _Conn(block), a2)

        async def call() -> bytes:
            async with timeout(0.05):
                b2.send(b"x")  # the blocking callback runs in the next poll
                return await reply

        try:
            return (await call()).decode()
        except TimeoutError:
            return "timeout"
    finally:
        for s in (b1, b2):
            s.close()


@pytest.mark.parametrize("run", [asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])
def test_a_reply_in_time_wins_over_a_late_loop(run: Callable[..., str]) -> None:
    assert run(_reply_read_late(deadline, replies=True)) == "reply"


@pytest.mark.parametrize("run", [asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])
def test_no_reply_is_still_a_timeout_after_a_late_loop(run: Callable[..., str]) -> None:
    started = time.monotonic()
    assert run(_reply_read_late(deadline, replies=False)) == "timeout"
    assert time.monotonic() - started < 1.0


def test_asyncio_timeout_under_uvloop_is_what_this_fixes() -> None:
    assert uvloop.run(_reply_read_late(asyncio.timeout, replies=True)) == "timeout"


def test_nothing_is_left_scheduled_and_inner_errors_pass() -> None:
    async def go() -> int:
        with pytest.raises(ValueError, match="inner"):
            async with deadline(0.01):
                raise ValueError("inner")
        async with deadline(0.01):
            await asyncio.sleep(0)
        await asyncio.sleep(0.05)  # past both deadlines: nothing fires into this task
        return 1

    assert uvloop.run(go()) == 1
