from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import redis
import uvloop

from app.features.materialize import latest_per_entity
from app.features.online import (
    AsyncOnlineReader,
    Codec,
    OnlineStore,
    OnlineStoreUnavailableError,
    Status,
    connect,
    entity_key,
)
from devharness import RedisServer, free_port
from tests.features.conftest import T0, VIEW, random_rows, rows

NOW_MS = int((T0 + timedelta(hours=6)).timestamp() * 1000)
NOW_US = NOW_MS * 1000
H = timedelta(hours=1)


def test_codec_roundtrip_with_nulls() -> None:
    table = random_rows(500, 100, days=1)
    codec = Codec(VIEW)
    values = codec.split(codec.pack(table))
    assert {len(v) for v in values} == {codec.size} and codec.size == 32 + 1 + 8 + 4 + 8
    decoded = [codec.unpack(v) for v in values]
    assert [d[0] for d in decoded] == table.column("event_timestamp").cast(pa.int64()).to_pylist()
    assert [d[1][0] for d in decoded] == table.column("clicks").to_pylist()
    price_nulls = table.column("price").is_null().to_pylist()
    assert [bool(d[2][0] >> 1 & 1) for d in decoded] == price_nulls
    np.testing.assert_array_equal([d[1][2] for d in decoded], table.column("score").to_numpy())


def test_newer_wins_and_reruns_are_noops(online: OnlineStore, rclient: redis.Redis) -> None:
    new = rows((1, T0 + 2 * H, T0 + 2 * H, 20, 2.0, 0.2))
    old = rows((1, T0 + H, T0 + 3 * H, 10, 1.0, 0.1))  # older event, even if created later
    assert online.write_latest(VIEW, new, now_ms=NOW_MS).written == 1
    res = online.write_latest(VIEW, old, now_ms=NOW_MS)
    assert (res.written, res.stale) == (0, 1)
    assert online.write_latest(VIEW, new, now_ms=NOW_MS).unchanged == 1
    correction = rows((1, T0 + 2 * H, T0 + 3 * H, 21, 2.0, 0.2))  # same event, newer created time
    assert online.write_latest(VIEW, correction, now_ms=NOW_MS).written == 1
    got = online.read([(VIEW, ["clicks", "price"])], [1], now_us=NOW_US)[0]
    assert got.values == {"clicks": [21], "price": [2.0]} and got.statuses == [Status.PRESENT]
    # the key expires at event time + ttl + grace
    pxat = rclient.pexpiretime(entity_key(VIEW.name, 1))
    assert pxat == int((T0 + 2 * H + VIEW.ttl + online.expiry_grace).timestamp() * 1000)


def test_statuses_present_expired_missing_and_null(online: OnlineStore) -> None:
    online.write_latest(VIEW, rows((1, T0, T0, 5, None, 0.5), (2, T0 + 5 * H, T0 + 5 * H, 7, 1.5, 0.5)), now_ms=NOW_MS)
    later_us = int((T0 + VIEW.ttl + 30 * timedelta(minutes=1)).timestamp() * 1e6)  # 1 is past its TTL, 2 not
    vec = online.read([(VIEW, ["clicks", "price"])], [1, 2, 3], now_us=later_us)[0]
    assert vec.statuses == [Status.EXPIRED, Status.PRESENT, Status.MISSING]
    assert vec.values["clicks"] == [None, 7, None]
    fresh = online.read([(VIEW, ["clicks", "price"])], [1], now_us=NOW_US)[0]
    assert fresh.values == {"clicks": [5], "price": [None]}  # a null stays null, not 0
    assert fresh.event_timestamps_us == [int(T0.timestamp() * 1e6)]


def test_rows_already_past_ttl_and_grace_are_not_written(online: OnlineStore) -> None:
    far_future = NOW_MS + int((VIEW.ttl + online.expiry_grace).total_seconds() * 1000) * 2
    res = online.write_latest(VIEW, rows((1, T0, T0, 5, 1.0, 0.5)), now_ms=far_future)
    assert (res.written, res.expired) == (0, 1)


def test_ttl_zero_never_expires(online: OnlineStore) -> None:
    view = replace(VIEW, ttl=timedelta(0))
    online.write_latest(view, rows((1, T0, T0, 5, 1.0, 0.5)), now_ms=NOW_MS)
    vec = online.read([(view, ["clicks"])], [1], now_us=NOW_US + 10**15)[0]
    assert vec.statuses == [Status.PRESENT]


def test_several_views_one_round_trip(online: OnlineStore, rclient: redis.Redis) -> None:
    other = replace(VIEW, name="item_other")
    online.write_latest(VIEW, rows((1, T0, T0, 5, 1.0, 0.5)), now_ms=NOW_MS)
    online.write_latest(other, rows((1, T0, T0, 9, 1.0, 0.5)), now_ms=NOW_MS)
    online.read([(VIEW, ["clicks"])], [1])  # connect first: the handshake sends commands of its own
    before = rclient.info("stats")["total_commands_processed"]
    a, b = online.read([(VIEW, ["clicks"]), (other, ["clicks", "score"])], [1, 2], now_us=NOW_US)
    after = rclient.info("stats")["total_commands_processed"]
    assert after - before == 2  # our MGET plus the INFO call itself
    assert a.values["clicks"] == [5, None] and b.values == {"clicks": [9, None], "score": [0.5, None]}


def test_redis_down_is_a_fast_clear_error() -> None:
    store = OnlineStore(connect(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.2))
    t = time.monotonic()
    with pytest.raises(OnlineStoreUnavailableError, match="online store unavailable"):
        store.read([(VIEW, ["clicks"])], [1])
    assert time.monotonic() - t < 2


def test_async_reader_matches_sync(online: OnlineStore, redis_server: RedisServer) -> None:
    online.write_latest(VIEW, random_rows(300, 50, days=1), now_ms=NOW_MS)
    ids = list(range(60))
    sync = online.read([(VIEW, VIEW.feature_names)], ids, now_us=NOW_US)[0]

    async def go() -> list:  # type: ignore[type-arg]
        reader = AsyncOnlineReader(redis_server.url, timeout_s=1.0)
        try:
            return await reader.read([(VIEW, VIEW.feature_names)], ids, now_us=NOW_US)
        finally:
            await reader.close()

    got = asyncio.run(go())[0]
    assert got.values == sync.values and got.statuses == sync.statuses


def test_async_reader_redis_down() -> None:
    async def go() -> None:
        reader = AsyncOnlineReader(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.1)
        try:
            await reader.read([(VIEW, ["clicks"])], [1])
        finally:
            await reader.close()

    with pytest.raises(OnlineStoreUnavailableError):
        asyncio.run(go())


def test_redis_cluster(redis_cluster: RedisServer) -> None:
    store = OnlineStore(connect(redis_cluster.url.rsplit("/", 1)[0], cluster=True))
    table = latest_per_entity(random_rows(400, 80, days=1, seed=4), VIEW)
    res = store.write_latest(VIEW, table, now_ms=NOW_MS)
    assert res.expired == 0 and res.written == len(set(table.column("item_id").to_pylist()))
    assert store.write_latest(VIEW, table, now_ms=NOW_MS).written == 0  # idempotent on a cluster too
    vec = store.read([(VIEW, ["clicks"])], list(range(80)), now_us=NOW_US)[0]
    assert Status.PRESENT in vec.statuses


def test_pipelined_client_concurrency_reconnect_and_db(tmp_path: Path) -> None:
    from app.features.resp import PipelinedRedis, RespError

    srv = RedisServer(tmp_path / "r1")
    try:
        direct = redis.Redis(port=srv.port, db=3)
        direct.mset({f"k{i}": f"v{i}" for i in range(200)})

        async def go() -> None:
            c = PipelinedRedis(f"redis://127.0.0.1:{srv.port}/3")
            # 200 concurrent commands on one connection: every caller gets its own reply
            got = await asyncio.gather(*(c.get(f"k{i}") for i in range(200)))
            assert got == [f"v{i}".encode() for i in range(200)]
            assert await c.mget(["k1", "nope"]) == [b"v1", None]
            with pytest.raises(RespError, match=r"wrong number of arguments|ERR"):
                await c.execute("GET")
            assert await c.get("k2") == b"v2"  # the connection survives an error reply
            c.reset()
            assert await c.get("k3") == b"v3"  # and reconnects after a reset
            await c.aclose()

        asyncio.run(go())
    finally:
        srv.stop()


def test_tls_urls_are_accepted_by_both_clients() -> None:
    from app.features.resp import PipelinedRedis

    assert PipelinedRedis("rediss://cache.example:6380/2").ssl is not None
    store = OnlineStore(connect("rediss://127.0.0.1:1/0", timeout_s=0.2))
    with pytest.raises(OnlineStoreUnavailableError):  # goes through redis-py's TLS connection, fails cleanly
        store.read([(VIEW, ["clicks"])], [1])
    with pytest.raises(ValueError, match="redis:// and rediss://"):
        PipelinedRedis("unix:///tmp/redis.sock")


class StallingProxy:
    """TCP proxy to Redis in the test's event loop. After a command containing ``marker`` passes
    through, replies on that connection are held back for ``hold_s``: a connection that stops
    answering (one slow reply, in RESP's in-order stream, delays every reply behind it)."""

    def __init__(self, upstream_port: int, marker: bytes, hold_s: float) -> None:
        self.upstream_port, self.marker, self.hold_s = upstream_port, marker, hold_s
        self.connections = 0

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"redis://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/0"

    async def _serve(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        self.connections += 1
        ur, uw = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        hold_until = 0.0

        async def up() -> None:
            nonlocal hold_until
            while data := await cr.read(65536):
                if self.marker in data:
                    hold_until = time.monotonic() + self.hold_s
                uw.write(data)

        async def down() -> None:
            while data := await ur.read(65536):
                if (wait := hold_until - time.monotonic()) > 0:
                    await asyncio.sleep(wait)
                cw.write(data)

        with contextlib.suppress(ConnectionError):
            await asyncio.gather(up(), down())
        cw.close()
        uw.close()

    def close(self) -> None:
        self.server.close()


@pytest.mark.parametrize("hold_s", [1.0, 3600], ids=["slow-reply", "never-answers-again"])
def test_one_slow_read_fails_only_itself(redis_server: RedisServer, rclient: redis.Redis, hold_s: float) -> None:
    """A timeout used to reset the shared connection and fail every read in flight on it. Now the
    late read fails alone; the reads queued behind it move to a new connection."""
    rclient.mset({f"k{i}": f"v{i}" for i in range(400)})

    async def go() -> tuple[BaseException | bytes | None, list[BaseException | bytes | None], int, int]:
        proxy = StallingProxy(redis_server.port, b"slow-key", hold_s=hold_s)
        # A 200 ms budget rather than the default 50 ms: the proxy shares this loop and the machine.
        reader = AsyncOnlineReader(await proxy.start(), timeout_s=0.2)
        try:
            await reader.get("k0")  # connected
            slow = asyncio.ensure_future(reader.get("slow-key"))
            others: list[asyncio.Future[bytes | None]] = []
            for i in range(40):  # concurrent reads for 400 ms, the first ones queued right behind it
                others += [asyncio.ensure_future(reader.get(f"k{i * 10 + j}")) for j in range(10)]
                await asyncio.sleep(0.01)
            got_slow = (await asyncio.gather(slow, return_exceptions=True))[0]
            got = await asyncio.gather(*others, return_exceptions=True)
            await asyncio.sleep(0.1)
            still_open = len(getattr(reader.client, "_open", ()))
            return got_slow, got, proxy.connections, still_open
        finally:
            await reader.close()
            proxy.close()

    slow, others, connections, still_open = asyncio.run(go())
    assert isinstance(slow, OnlineStoreUnavailableError) and "did not answer within 200 ms" in str(slow)
    failed = [o for o in others if isinstance(o, BaseException)]
    assert failed == [], f"{len(failed)} of {len(others)} concurrent reads failed: {failed[:3]}"
    assert others == [f"v{i}".encode() for i in range(400)]
    assert connections <= 3  # the stalled connection was replaced (once, unless the machine stalls too)
    assert still_open == 1  # and closed once nothing on it was awaited


class _Blocker(asyncio.Protocol):
    """A connection whose data runs ``work`` inside the I/O callback itself, then takes the loop for
    ``pause_s`` there (parsing a large request, a GC run that happens there)."""

    def __init__(self, work: Callable[[], None], pause_s: float) -> None:
        self.work, self.pause_s = work, pause_s

    def data_received(self, data: bytes) -> None:
        self.work()
        time.sleep(self.pause_s)


@pytest.mark.parametrize("where", ["task", "io-callback"])
@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.timed
def test_replies_that_arrive_while_the_loop_is_busy_are_not_timeouts(
    redis_server: RedisServer, rclient: redis.Redis, loop: str, where: str
) -> None:
    """The event loop blocked past the budget (a burst, a GC pause, a cold worker): the replies
    already in the socket win over the deadline, and nothing fails. Was: under uvloop, which runs due
    timers before it reads sockets, a pause in an I/O callback failed every read sent just before it."""
    rclient.mset({f"k{i}": f"v{i}" for i in range(64)})

    async def go() -> list[BaseException | bytes | None]:
        reader = AsyncOnlineReader(redis_server.url, timeout_s=0.05)
        a, b = socket.socketpair()
        try:
            await reader.get("k0")  # connected
            reads: list[asyncio.Future[bytes | None]] = []
            if where == "task":
                reads = [asyncio.ensure_future(reader.get(f"k{i}")) for i in range(64)]
                await asyncio.sleep(0)  # every read is sent
                time.sleep(0.15)  # the loop is busy for three budgets; the replies arrive meanwhile
            else:
                client = reader.client  # the reads must be sent inside the callback, before its pause
                protocol = client._protocol

                def send_reads() -> None:
                    reads.extend(client._send(protocol, ("GET", f"k{i}"), 0.05) for i in range(64))

                await asyncio.get_running_loop().connect_accepted_socket(lambda: _Blocker(send_reads, 0.15), a)
                b.send(b"x")
                while not reads:
                    await asyncio.sleep(0.001)
            return await asyncio.gather(*reads, return_exceptions=True)
        finally:
            await reader.close()
            b.close()

    got = (uvloop.run if loop == "uvloop" else asyncio.run)(go())
    assert got == [f"v{i}".encode() for i in range(64)]
