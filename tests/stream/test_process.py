"""``python -m app.stream`` as the chart runs it: SIGTERM drains, SIGKILL loses nothing, Redis restarts."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
import redis.asyncio as aioredis

from app.modelstore import LocalModelStore
from app.runtime.registry import ModelRegistry
from app.stream.scorer import StreamScorer
from devharness import VENV_BIN, RedisServer, Server, free_port, wait_until
from tests.stream.conftest import iris_events

EVENTS = "transactions:{0}"


@pytest.fixture
def aof_broker(tmp_path: Path) -> Iterator[RedisServer]:
    srv = RedisServer(tmp_path / "valkey", persistent=True)
    try:
        yield srv
    finally:
        srv.stop()


def scorer(tmp_path: Path, broker: RedisServer, store: Path, consumer: str = "pod-0", **env: str) -> Server:
    return Server(
        [str(VENV_BIN / "python"), "-m", "app.stream"],
        tmp_path / f"scorer-{consumer}-{time.monotonic_ns()}.log",
        env={
            "MODEL_STORE_URL": str(store),
            "STREAM_REDIS_URL": broker.url,
            "STREAM_MODEL": "iris",
            "STREAM_CONSUMER": consumer,
            "STREAM_CLAIM_IDLE_MS": "500",
            "STREAM_BATCH_SIZE": "100",
            "STREAM_METRICS_PORT": str(free_port()),
            **env,
        },
    )


def produce(client: redis.Redis, events: list[dict[str, Any]]) -> None:
    pipe = client.pipeline(transaction=False)
    for e in events:
        pipe.xadd(EVENTS, {k: str(v) for k, v in e.items()})
    pipe.execute()


def decided(client: redis.Redis) -> list[dict[str, Any]]:
    raw: Any = client.xrange("decisions:{0}")
    return [json.loads(f[b"decision"]) for _, f in raw]


def wait_all_decided(client: redis.Redis, n: int, proc: Server, timeout: float = 90) -> None:
    wait_until(lambda: client.xlen("decisions:{0}") >= n, timeout, "decisions", proc.proc, proc.log)
    wait_until(lambda: client.xpending(EVENTS, "scorer")["pending"] == 0, 30, "acks", proc.proc, proc.log)


def clean_run(broker: RedisServer, store: Path, events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """What one uninterrupted run decides, in process, on database 1 of the same server."""
    from tests.stream.conftest import stream_settings
    from tests.stream.test_scorer import drain

    async def run() -> dict[str, dict[str, Any]]:
        url = broker.url.rsplit("/", 1)[0] + "/1"
        settings = stream_settings(url, store)
        registry = ModelRegistry(settings, LocalModelStore(store))
        client = aioredis.Redis.from_url(url)
        await registry.start()
        try:
            await client.flushdb()
            pipe = client.pipeline(transaction=False)
            for e in events:
                pipe.xadd(EVENTS, {k: str(v) for k, v in e.items()})
            await pipe.execute()
            await drain(StreamScorer(settings, client, registry))
            raw: Any = await client.xrange("decisions:{0}")
            return {d["event_id"]: d for d in (json.loads(f[b"decision"]) for _, f in raw)}
        finally:
            await registry.stop()
            await client.aclose()

    return asyncio.run(run())


def brute_force_windows(events: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    t = np.array([e["event_time_ms"] for e in events])
    u = np.array([e["user_id"] for e in events])
    a = np.array([e["amount"] for e in events])
    feats = {}
    for e in events:
        out = {}
        for name, w in (("10m", 600_000), ("1h", 3_600_000)):
            sel = (u == e["user_id"]) & (t > e["event_time_ms"] - w) & (t <= e["event_time_ms"])
            out[f"count_{name}"], out[f"amount_sum_{name}"] = float(sel.sum()), float(a[sel].sum())
        feats[e["event_id"]] = out
    return feats


def test_sigterm_finishes_the_batch_acks_and_exits(
    tmp_path: Path, aof_broker: RedisServer, trained_store: Path
) -> None:
    client = redis.Redis.from_url(aof_broker.url)
    events = iris_events(3000)
    produce(client, events)
    proc = scorer(tmp_path, aof_broker, trained_store, STREAM_BATCH_SIZE="50")
    try:
        wait_until(lambda: client.xlen("decisions:{0}") >= 200, 60, "first decisions", proc.proc, proc.log)
        proc.signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        # It acknowledged what it had decided and took nothing more: no entry is left pending.
        assert client.xpending(EVENTS, "scorer")["pending"] == 0
        assert "stream scorer stopped" in proc.log.read_text()
    finally:
        proc.stop()
    rest = scorer(tmp_path, aof_broker, trained_store, consumer="pod-1")
    try:
        wait_all_decided(client, len(events), rest)
    finally:
        rest.stop()
    ids = [d["event_id"] for d in decided(client)]
    assert sorted(ids) == sorted(e["event_id"] for e in events)


@pytest.mark.timed
def test_sigkill_at_random_moments_loses_nothing_and_decides_each_event_once(
    tmp_path: Path, aof_broker: RedisServer, trained_store: Path
) -> None:
    client = redis.Redis.from_url(aof_broker.url)
    events = iris_events(6000, seed=5)
    produce(client, events)
    rng = random.Random(7)
    for _ in range(5):
        proc = scorer(tmp_path, aof_broker, trained_store, STREAM_BATCH_SIZE="200")
        try:
            time.sleep(rng.uniform(1.0, 2.5))  # start-up is ~1 s: some kills land mid-batch
            proc.proc.kill()
            proc.wait(10)
        finally:
            proc.stop()
    last = scorer(tmp_path, aof_broker, trained_store)  # the same consumer name: it takes its pending back
    try:
        wait_all_decided(client, len(events), last)
    finally:
        last.stop()
    out = decided(client)
    assert len(out) == len(events)  # exactly one decision per event
    clean = clean_run(aof_broker, trained_store, events)
    feats = brute_force_windows(events)
    for d in out:
        assert d["probabilities"] == clean[d["event_id"]]["probabilities"]
        assert d["streaming_features"] == clean[d["event_id"]]["streaming_features"]
        assert d["streaming_features"] == pytest.approx(feats[d["event_id"]], abs=1e-6)


def test_a_redis_restart_mid_run_loses_nothing(tmp_path: Path, aof_broker: RedisServer, trained_store: Path) -> None:
    client = redis.Redis.from_url(aof_broker.url)
    events = iris_events(4000, seed=9)
    produce(client, events[:2000])
    proc = scorer(tmp_path, aof_broker, trained_store, STREAM_BATCH_SIZE="50")
    try:
        wait_until(lambda: client.xlen("decisions:{0}") >= 100, 60, "first decisions", proc.proc, proc.log)
        aof_broker.restart()
        client = redis.Redis.from_url(aof_broker.url)
        produce(client, events[2000:])
        wait_all_decided(client, len(events), proc)
        assert proc.proc.poll() is None  # it reconnected rather than crashing
    finally:
        proc.stop()
    ids = sorted(d["event_id"] for d in decided(client))
    assert ids == sorted(e["event_id"] for e in events)
