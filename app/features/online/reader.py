"""Non-blocking reads for the services' event loops: same layout and decoding as the sync store."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import redis

from app.common.deadline import deadline
from app.features.definitions import FeatureView
from app.features.online.decoder import Decoder, FeatureVector
from app.features.online.errors import OnlineStoreUnavailableError
from app.features.online.keys import read_keys
from app.features.resp import PipelinedRedis, ReadTimeoutError, RespError


class AsyncOnlineReader:
    """Non-blocking reads for the services' event loops, same layout and decoding.

    A single Redis: one auto-pipelined connection per event loop (``resp.PipelinedRedis``).
    A cluster: redis-py's asyncio cluster client."""

    def __init__(self, url: str, *, cluster: bool = False, timeout_s: float = 0.05) -> None:
        self.cluster = cluster
        self.client: Any
        if cluster:
            # Imported here: the asyncio cluster client is slow to import and batch jobs never use it.
            from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

            kwargs: dict[str, Any] = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s}
            self.client = AsyncRedisCluster.from_url(url, **kwargs)
        else:
            self.client = PipelinedRedis(url, connect_timeout_s=timeout_s, read_timeout_s=timeout_s)
        self.timeout_s = timeout_s
        self.decoder = Decoder()

    async def read(
        self,
        requests: list[tuple[FeatureView, list[str]]],
        entity_ids: Sequence[int],
        now_us: int | None = None,
    ) -> list[FeatureVector]:
        keys = read_keys(requests, entity_ids)
        async with self._deadline():
            raw = await (self.client.mget_nonatomic(keys) if self.cluster else self.client.mget(keys))
        return self.decoder.decode(requests, len(entity_ids), raw, now_us)

    @contextlib.asynccontextmanager
    async def _deadline(self) -> AsyncIterator[None]:
        """The read budget and the one mapping of every failure to OnlineStoreUnavailableError.

        A single Redis: PipelinedRedis enforces the budget per command, failing only the late one
        (resetting the shared connection on a timeout used to fail every read in flight on it).
        A cluster: a deadline (app/common/deadline.py) around redis-py's call."""
        try:
            if self.cluster:
                async with deadline(self.timeout_s):
                    yield
            else:
                yield
        except (TimeoutError, ReadTimeoutError) as exc:
            raise OnlineStoreUnavailableError(
                f"online store did not answer within {self.timeout_s * 1000:.0f} ms"
            ) from exc
        except (redis.RedisError, RespError, OSError) as exc:
            raise OnlineStoreUnavailableError(f"online store unavailable: {exc}") from exc

    async def get(self, key: str) -> bytes | None:
        """One plain key (e.g. a precomputed prediction), under the same timeout and errors as reads."""
        async with self._deadline():
            value: bytes | None = await self.client.get(key)
        return value

    async def connect(self) -> None:
        """Open the connection now (at start-up) rather than inside the first burst of requests,
        whose first reads would otherwise share one budget with the connection handshake."""
        if not self.cluster:
            async with self._deadline():
                await self.client.connect()

    async def ping(self) -> None:
        try:
            async with deadline(self.timeout_s * 4):
                if self.cluster:
                    await self.client.ping()
                else:
                    await self.client.ping(timeout=self.timeout_s * 4)
        except (TimeoutError, redis.RedisError, RespError, OSError) as exc:
            raise OnlineStoreUnavailableError(f"online store unavailable: {exc!r}") from exc

    async def close(self) -> None:
        await self.client.aclose()
