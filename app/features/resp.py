"""A minimal asyncio Redis client that pipelines automatically, for the services' hot read path.

Concurrent requests of one event loop share one connection: each command is
written as soon as it is issued and replies come back in order (RESP
guarantees it), so N concurrent lookups cost one socket and no pool checkout.
redis-py's asyncio client spends far more per command on pooling and task
plumbing (docs/design.md, "Online store reads"); this spends a write, a read callback and a future.

Only what the read path needs: plain commands, replies parsed by hiredis,
reconnect on the next call after a failure, and no cluster support (cluster
deployments use redis-py's cluster client).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections import deque
from typing import Any
from urllib.parse import unquote, urlparse

import hiredis

from app.common.deadline import AFTER_POLL_S


class RespError(Exception):
    """Connection lost or refused, or an error reply."""


class ReadTimeoutError(RespError):
    """No reply within the caller's budget (only that caller fails; the connection stays)."""


class _Entry:
    """One command awaiting its reply: ``fut`` is None once the command moved to another connection."""

    __slots__ = ("deadline", "fut", "payload", "sent")

    def __init__(self, fut: asyncio.Future[Any] | None, sent: float, deadline: float, payload: bytes | None) -> None:
        self.fut, self.sent, self.deadline, self.payload = fut, sent, deadline, payload


class _Protocol(asyncio.Protocol):
    """One connection and the commands written on it, in reply order."""

    def __init__(self, client: PipelinedRedis) -> None:
        self.client = client
        self.reader = hiredis.Reader()
        self.transport: asyncio.Transport | None = None
        self.pending: deque[_Entry] = deque()
        self.last_rx = 0.0  # loop time of the last bytes received
        self.retired = False  # no new commands; closed once nothing on it is awaited

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.last_rx = self.client.loop_time()
        self.reader.feed(data)
        pending = self.pending
        while True:
            reply = self.reader.gets()
            if reply is False:
                break
            fut = pending.popleft().fut
            # A caller that timed out (or moved) still owns its slot in the reply order.
            if fut is not None and not fut.done():
                if isinstance(reply, hiredis.ReplyError):
                    fut.set_exception(RespError(str(reply)))
                else:
                    fut.set_result(reply)
        if self.retired and not self.awaited():
            self.close()

    def awaited(self) -> bool:
        return any(e.fut is not None and not e.fut.done() for e in self.pending)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.client._lost(self, exc)


class PipelinedRedis:
    """One auto-pipelined connection per event loop, with per-command deadlines.

    A command's deadline fails only that command: its reply slot stays, its reply is
    dropped when it comes. The connection is replaced only when it stalls, i.e. nothing
    at all has come back for a quarter of the read budget while a command waits: then the
    commands queued behind the oldest one are re-sent on a new connection (reads are
    idempotent) and the old one is closed once nothing on it is awaited. Deadlines are
    checked by one watchdog timer per client, which the event loop runs after it has
    processed socket reads: a reply that arrived while the loop was busy is never
    mistaken for a timeout."""

    def __init__(self, url: str, connect_timeout_s: float = 1.0, read_timeout_s: float | None = None) -> None:
        u = urlparse(url)
        if u.scheme not in ("redis", "rediss"):
            raise ValueError(f"PipelinedRedis supports redis:// and rediss:// URLs, got {url!r}")
        # rediss: TLS with the system's CAs and hostname checks (ElastiCache in-transit encryption).
        self.ssl: ssl.SSLContext | None = ssl.create_default_context() if u.scheme == "rediss" else None
        self.host = u.hostname or "127.0.0.1"
        self.port = u.port or 6379
        self.password = unquote(u.password) if u.password else None
        self.username = unquote(u.username) if u.username else None
        self.db = int(u.path.lstrip("/") or 0)
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self._protocol: _Protocol | None = None
        self._open: set[_Protocol] = set()  # current and retired connections
        self._connecting: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._watch_due = 0.0  # loop time the watchdog is due at
        self._rechecking = False  # the watchdog fired late and deferred its verdict past one poll
        self._resending: set[asyncio.Future[None]] = set()
        self.stalls = 0  # connections replaced because they stopped answering

    def loop_time(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    async def _connect(self, timeout: float | None = None) -> _Protocol:
        """The current connection, opened if needed. One deadline covers the wait for another
        caller's attempt and this one's (nested asyncio.timeouts can leak a CancelledError)."""
        if self._connecting is None:
            self._connecting = asyncio.Lock()
            self._loop = asyncio.get_running_loop()
        budget = timeout if timeout is not None else self.connect_timeout_s
        try:
            async with asyncio.timeout(budget):
                return await self._connect_locked()
        except TimeoutError as exc:
            raise ReadTimeoutError(f"no connection to {self.host}:{self.port} within {budget:.3f}s") from exc

    async def _connect_locked(self) -> _Protocol:
        assert self._connecting is not None and self._loop is not None
        async with self._connecting:
            if self._protocol is not None:
                return self._protocol
            try:
                _, protocol = await self._loop.create_connection(
                    lambda: _Protocol(self), self.host, self.port, ssl=self.ssl
                )
            except OSError as exc:
                raise RespError(f"cannot connect to {self.host}:{self.port}: {exc!r}") from exc
            self._protocol = protocol
            self._open.add(protocol)
            try:
                if self.password is not None:
                    auth = ("AUTH", self.username, self.password) if self.username else ("AUTH", self.password)
                    await self._send(protocol, auth, None, movable=False)
                if self.db:
                    await self._send(protocol, ("SELECT", str(self.db)), None, movable=False)
            except BaseException:  # an error reply, or the deadline: never leave a half-set-up connection
                self._drop()
                raise
            return protocol

    async def connect(self) -> None:
        if self._protocol is None:
            await self._connect()

    def _send(
        self, protocol: _Protocol, args: tuple[Any, ...], timeout: float | None, *, movable: bool = True
    ) -> asyncio.Future[Any]:
        loop = self._loop
        assert loop is not None and protocol.transport is not None
        fut: asyncio.Future[Any] = loop.create_future()
        payload = hiredis.pack_command(args)
        now = loop.time()
        protocol.pending.append(
            _Entry(fut, now, now + timeout if timeout is not None else float("inf"), payload if movable else None)
        )
        protocol.transport.write(payload)
        if timeout is not None and self._watchdog is None:
            self._arm()
        return fut

    def _tick(self) -> float:
        return max((self.read_timeout_s or 0.05) / 16, 0.001)

    def _arm(self, delay: float | None = None) -> None:
        assert self._loop is not None
        delay = self._tick() if delay is None else delay
        self._watch_due = self._loop.time() + delay
        self._watchdog = self._loop.call_later(delay, self._watch)

    async def execute(self, *args: Any, timeout: float | None = None) -> Any:
        """Send a command, await its reply; ``timeout`` (s, default ``read_timeout_s``) fails only this command."""
        timeout = timeout if timeout is not None else self.read_timeout_s
        protocol = self._protocol or await self._connect(timeout)
        return await self._send(protocol, args, timeout)

    def _watch(self) -> None:
        """Expire overdue commands; replace a stalled connection. Runs every read_timeout/16 while needed."""
        self._watchdog = None
        now = self.loop_time()
        if now - self._watch_due > self._tick() and not self._rechecking:
            # Fired late: the loop was blocked (a GC pause, a long callback), and replies that came meanwhile
            # may still be unread in the socket (uvloop runs due timers before polling). Judge after the next
            # poll: a reply that arrived in time is not a timeout, and a stall is not one either.
            self._rechecking = True
            self._arm(AFTER_POLL_S)
            return
        self._rechecking = False
        busy = False
        for protocol in list(self._open):
            head: _Entry | None = None
            for e in protocol.pending:
                fut = e.fut
                if fut is None or fut.done():
                    continue
                if now >= e.deadline:
                    fut.set_exception(
                        ReadTimeoutError(f"{self.host}:{self.port} did not answer within {e.deadline - e.sent:.3f}s")
                    )
                    continue
                busy = True
                if head is None:
                    head = e
            if protocol.retired:
                if head is None:
                    protocol.close()
                continue
            if head is not None and self.read_timeout_s is not None:
                silent_since = max(head.sent, protocol.last_rx)
                if now - silent_since > self.read_timeout_s / 4:
                    self._stalled(protocol, head)
        if busy:
            self._arm()

    def _stalled(self, protocol: _Protocol, head: _Entry) -> None:
        """Nothing came back for a quarter of a budget: new commands go to a new connection, and so do the
        ones queued behind the oldest (which keeps its slot and its deadline here)."""
        self.stalls += 1
        protocol.retired = True
        if self._protocol is protocol:
            self._protocol = None
        moved = []
        for e in protocol.pending:
            if e is not head and e.payload is not None and e.fut is not None and not e.fut.done():
                moved.append(_Entry(e.fut, e.sent, e.deadline, e.payload))
                e.fut = None
        if moved:
            task = asyncio.ensure_future(self._resend(moved))
            self._resending.add(task)
            task.add_done_callback(self._resending.discard)

    async def _resend(self, entries: list[_Entry]) -> None:
        try:
            protocol = self._protocol or await self._connect()
        except RespError as exc:
            for e in entries:
                if e.fut is not None and not e.fut.done():
                    e.fut.set_exception(exc)
            return
        assert protocol.transport is not None
        for e in entries:
            if e.fut is not None and not e.fut.done():
                protocol.pending.append(e)
                protocol.transport.write(e.payload)  # type: ignore[arg-type]
        if self._watchdog is None and self._loop is not None:
            self._arm()

    def _lost(self, protocol: _Protocol, exc: Exception | None) -> None:
        self._open.discard(protocol)
        if self._protocol is protocol:
            self._protocol = None
        err = RespError(f"connection to {self.host}:{self.port} lost: {exc!r}")
        while protocol.pending:
            fut = protocol.pending.popleft().fut
            if fut is not None and not fut.done():
                fut.set_exception(err)

    def reset(self) -> None:
        """Close the connection; pending callers fail, the next call reconnects."""
        self._drop()

    def _drop(self) -> None:
        if self._protocol is not None:
            self._protocol.close()
        self._protocol = None

    async def mget(self, keys: list[str]) -> list[bytes | None]:
        reply: list[bytes | None] = await self.execute("MGET", *keys)
        return reply

    async def get(self, key: str) -> bytes | None:
        reply: bytes | None = await self.execute("GET", key)
        return reply

    async def ping(self, timeout: float | None = None) -> None:
        await self.execute("PING", timeout=timeout)

    async def aclose(self) -> None:
        self._drop()
        for protocol in list(self._open):
            protocol.close()
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        self._rechecking = False


class BlockingRedis:
    """The same idea for synchronous in-process reads: one socket per thread, hiredis parsing,
    no pool: a one-key MGET costs well under redis-py's (docs/design.md, "Online store reads")."""

    def __init__(
        self,
        host: str,
        port: int,
        db: int = 0,
        password: str | None = None,
        username: str | None = None,
        timeout_s: float | None = 1.0,
    ) -> None:
        self.host, self.port, self.db = host, port, db
        self.password, self.username, self.timeout_s = password, username, timeout_s
        self._sock: socket.socket | None = None
        self._reader = hiredis.Reader()

    def _connect(self) -> socket.socket:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout_s)
        except OSError as exc:
            raise RespError(f"cannot connect to {self.host}:{self.port}: {exc!r}") from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock, self._reader = sock, hiredis.Reader()
        if self.password is not None:
            self.execute(*(("AUTH", self.username, self.password) if self.username else ("AUTH", self.password)))
        if self.db:
            self.execute("SELECT", str(self.db))
        return sock

    def execute(self, *args: Any) -> Any:
        sock = self._sock or self._connect()
        try:
            sock.sendall(hiredis.pack_command(args))
            while True:
                reply = self._reader.gets()
                if reply is not False:
                    break
                data = sock.recv(65536)
                if not data:
                    raise ConnectionError("connection closed by the server")
                self._reader.feed(data)
        except OSError as exc:
            self.close()  # reconnect on the next call
            raise RespError(f"{self.host}:{self.port}: {exc!r}") from exc
        if isinstance(reply, hiredis.ReplyError):
            raise RespError(str(reply))
        return reply

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock = None
