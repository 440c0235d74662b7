"""The synchronous online store, for jobs and tools: conditional writes, reads, and the store's
own bookkeeping (materialization watermarks and locks)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa
import redis
from redis.cluster import RedisCluster

from app.features.definitions import FeatureView
from app.features.online.codec import Codec
from app.features.online.decoder import Decoder, FeatureVector
from app.features.online.errors import OnlineStoreUnavailableError
from app.features.online.keys import lock_key, read_keys, watermark_key
from app.features.online.lock import RenewedLock
from app.features.online.writer import LatestWriter, WriteResult
from app.features.resp import BlockingRedis, RespError


def connect(url: str, *, cluster: bool = False, timeout_s: float = 1.0) -> redis.Redis | RedisCluster:
    """A client for ``redis://`` / ``rediss://`` URLs; ``cluster`` selects Redis Cluster."""
    kwargs: dict[str, Any] = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s}
    if cluster:
        return RedisCluster.from_url(url, **kwargs)
    return redis.Redis.from_url(url, **kwargs)


class OnlineStore:
    def __init__(self, client: redis.Redis | RedisCluster, *, expiry_grace: timedelta = timedelta(days=1)) -> None:
        self.client = client
        self.cluster = isinstance(client, RedisCluster)
        self.expiry_grace = expiry_grace
        self._writer = LatestWriter(client)
        self.decoder = Decoder()
        self._local = threading.local()

    def codec(self, view: FeatureView) -> Codec:
        return self.decoder.codec(view)

    # -- writes (materialization) ----------------------------------------------
    def write_latest(
        self, view: FeatureView, rows: pa.Table, *, batch: int = 2000, now_ms: int | None = None
    ) -> WriteResult:
        """Write one row per entity (already deduplicated to the latest), never regressing a newer value."""
        now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
        try:
            return self._writer.write(
                self.codec(view), rows, expiry_grace=self.expiry_grace, batch=batch, now_ms=now_ms
            )
        except redis.RedisError as exc:
            raise OnlineStoreUnavailableError(f"online store unavailable: {exc}") from exc

    def lock(self, view: str, shard: int, shards: int, *, ttl_s: float, wait_s: float = 0.0) -> RenewedLock:
        """The lock of one view's shard, to hold while loading it (``with store.lock(...):``).

        Raises MaterializationLockedError on entry when another run holds it past ``wait_s``."""
        return RenewedLock(self.client, lock_key(view, shard, shards), ttl_s, wait_s)

    def read_watermark(self, view: str, shard: int = 0, shards: int = 1) -> datetime | None:
        """The newest event time loaded into this view's shard, None before its first load."""
        try:
            raw = self.client.get(watermark_key(view, shard, shards))
        except redis.RedisError as exc:
            raise OnlineStoreUnavailableError(f"online store unavailable: {exc}") from exc
        if not raw:
            return None
        return datetime.fromisoformat(raw.decode() if isinstance(raw, bytes) else str(raw))

    def write_watermark(self, view: str, shard: int, shards: int, watermark: datetime) -> None:
        try:
            self.client.set(watermark_key(view, shard, shards), watermark.isoformat())
        except redis.RedisError as exc:
            raise OnlineStoreUnavailableError(f"online store unavailable: {exc}") from exc

    # -- reads -----------------------------------------------------------------
    def _mget(self, keys: list[str]) -> list[Any]:
        # A raw connection of this thread's own (resp.BlockingRedis), outside redis-py's pool: the
        # pool and its parser layers are a large share of a one-entity lookup (docs/design.md,
        # "Online store reads").
        pool = self.client.connection_pool  # type: ignore[union-attr]
        if pool.connection_class is not redis.Connection:  # TLS or a unix socket: redis-py's own path
            reply_: list[Any] = self.client.mget(keys)
            return reply_
        conn = getattr(self._local, "conn", None)
        if conn is None:
            kw = pool.connection_kwargs
            conn = self._local.conn = BlockingRedis(
                kw.get("host", "127.0.0.1"),
                kw.get("port", 6379),
                kw.get("db", 0),
                kw.get("password"),
                kw.get("username"),
                kw.get("socket_timeout"),
            )
        reply: list[Any] = conn.execute("MGET", *keys)
        return reply

    def read(
        self,
        requests: list[tuple[FeatureView, list[str]]],
        entity_ids: Sequence[int],
        now_us: int | None = None,
    ) -> list[FeatureVector]:
        """Several views for many entities in one round trip (one MGET; split by slot on a cluster)."""
        keys = read_keys(requests, entity_ids)
        try:
            raw: list[Any] = (
                self.client.mget_nonatomic(keys)  # type: ignore[union-attr]
                if self.cluster
                else self._mget(keys)
            )
        except (redis.RedisError, RespError) as exc:
            raise OnlineStoreUnavailableError(f"online store unavailable: {exc}") from exc
        return self.decoder.decode(requests, len(entity_ids), raw, now_us)
