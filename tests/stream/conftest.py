from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis.asyncio as aioredis

from app.modelstore import LocalModelStore
from app.runtime.registry import ModelRegistry
from app.stream.core.config import Settings as StreamSettings
from app.stream.scorer import StreamScorer
from devharness import RedisServer


def stream_settings(url: str, store: Path, **overrides: Any) -> StreamSettings:
    values: dict[str, Any] = {
        "redis_url": url,
        "model": "iris",
        "consumer": "c1",
        "claim_idle_ms": 200,
        "shard_lease_ms": 500,
        "block_ms": 20,
        "poll_interval_seconds": 0.2,
        "metrics_port": 0,
        **overrides,
    }
    return StreamSettings(MODEL_STORE_URL=str(store), **values)  # type: ignore[call-arg]


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.Redis.from_url(redis_server.url)
    await c.flushall()
    yield c
    await c.aclose()


@pytest.fixture
async def registry(trained_store: Path) -> AsyncIterator[ModelRegistry]:
    reg = ModelRegistry(stream_settings("redis://unused", trained_store), LocalModelStore(trained_store))
    await reg.start()
    yield reg
    await reg.stop()


@pytest.fixture
def make_scorer(redis_server: RedisServer, trained_store: Path, client: aioredis.Redis, registry: ModelRegistry) -> Any:
    def make(**overrides: Any) -> StreamScorer:
        return StreamScorer(stream_settings(redis_server.url, trained_store, **overrides), client, registry)

    return make


IRIS = ("sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm")


def iris_events(n: int, seed: int = 0, t0_ms: int = 1_700_000_000_000) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    x = rng.uniform([4.3, 2.0, 1.0, 0.1], [7.9, 4.4, 6.9, 2.5], size=(n, 4)).round(2)
    users = rng.integers(1, 20, n)
    amounts = rng.uniform(1, 100, n).round(2)
    t = t0_ms + np.sort(rng.integers(0, 3_600_000, n))
    return [
        {
            "event_id": f"e{i}",
            "event_time_ms": int(t[i]),
            "user_id": int(users[i]),
            "amount": float(amounts[i]),
            **{f: float(x[i, j]) for j, f in enumerate(IRIS)},
        }
        for i in range(n)
    ]
