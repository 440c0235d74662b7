"""The stream scorer's decisions, read by event id (GET /v1/decisions/{event_id}).

The scorer writes each decision under a key of its shard (app.common.stream_keys); the event's shard depends on
its entity, which a caller holding only the event id does not know, so every shard is asked, in one
round trip per shard (a handful at most).
"""

from __future__ import annotations

import json
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from app.common.errors import NotFoundError, UnavailableError
from app.common.stream_keys import StreamKeys
from app.predict.core.config import Settings


class DecisionReader:
    def __init__(self, settings: Settings) -> None:
        url = settings.decisions_redis_url
        if url is None:
            raise ValueError("STREAM_REDIS_URL is not set")
        kwargs: dict[str, Any] = {"socket_timeout": 1.0, "socket_connect_timeout": 1.0}
        self.client: aioredis.Redis | RedisCluster = (
            RedisCluster.from_url(url, **kwargs)
            if settings.decisions_redis_cluster
            else aioredis.Redis.from_url(url, **kwargs)
        )
        self.keys = StreamKeys(output_stream=settings.decisions_stream, shards=settings.decisions_shards)

    async def get(self, event_id: str) -> dict[str, Any]:
        try:
            for shard in range(self.keys.shards):
                raw = await self.client.get(self.keys.decision(shard, event_id))
                if raw is not None:
                    decision: dict[str, Any] = json.loads(raw)
                    return decision
        except RedisError as exc:
            raise UnavailableError(f"the decision store did not answer: {exc}") from None
        raise NotFoundError(f"no decision for event {event_id!r} (not scored yet, or older than its TTL)")

    async def close(self) -> None:
        await self.client.aclose()
