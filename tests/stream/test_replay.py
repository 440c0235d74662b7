"""``python -m jobs replay``: offline transactions into the sharded stream, then scored on a Redis Cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis

from devharness import RedisServer
from devharness.jobs import run_job


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    offline = tmp_path_factory.mktemp("offline")
    env = {"FEATURES_OFFLINE_URL": str(offline)}
    run_job("seed", "--users", "40", "--days", "2", "--start", "2026-10-01", env=env).ok()
    return env


def test_replays_in_event_time_order_one_shard_per_entity(seeded: dict[str, str], started: Any, tmp_path: Path) -> None:
    srv = started.enter_context(RedisServer(tmp_path / "v"))
    env = {**seeded, "STREAM_REDIS_URL": srv.url, "STREAM_SHARDS": "3"}
    out = run_job("replay", "--start", "2026-10-01", "--days", "2", env=env).ok()
    client = redis.Redis.from_url(srv.url, decode_responses=True)
    total = 0
    for shard in range(3):
        entries: Any = client.xrange(f"transactions:{{{shard}}}")
        times = [int(f["event_time_ms"]) for _, f in entries]
        assert times == sorted(times)  # event-time order within the shard
        assert {int(f["user_id"]) % 3 for _, f in entries} <= {shard}
        assert all("is_fraud" not in f for _, f in entries)  # the label is not sent
        assert set(entries[0][1]) == {"event_id", "event_time_ms", "user_id", "amount", "merchant_category"}
        total += len(entries)
    assert total == out["events"] > 100
    # Re-running is safe for the scorer (same ids); --limit caps it.
    assert run_job("replay", "--start", "2026-10-01", "--limit", "7", env=env).ok()["events"] == 7


def test_replay_refuses_a_dataset_without_the_named_columns(
    seeded: dict[str, str], started: Any, tmp_path: Path
) -> None:
    srv = started.enter_context(RedisServer(tmp_path / "v"))
    run = run_job("replay", "--start", "2026-10-01", "--id-column", "txn", env={**seeded, "STREAM_REDIS_URL": srv.url})
    assert run.code == 1
    assert "has no column 'txn'" in run.summary["error"]
