"""Shard ownership (issue 24), with ``python -m app.stream`` processes as the chart runs them: more replicas
than shards, two of them SIGKILLed mid-run and one added. Each shard has one active reader at a time, so
every event's windows count exactly the user's earlier events (events are in time order per user: two
readers of one shard scoring at once would undercount), and every event is decided once."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from devharness import RedisServer, wait_until
from tests.stream.conftest import iris_events
from tests.stream.test_process import brute_force_windows, scorer

SHARDS = 2
ENV = {
    "STREAM_SHARDS": str(SHARDS),
    "STREAM_SHARD_LEASE_MS": "1000",
    "STREAM_BATCH_SIZE": "16",  # small batches: many chances for two readers to interleave
}


def _events(n: int) -> list[dict[str, Any]]:
    events = iris_events(n, seed=11)
    for i, e in enumerate(events):
        e["user_id"] = int(e["user_id"]) % 6  # few users: many events per user, each window well filled
        e["event_time_ms"] = 1_700_000_000_000 + 450 * i  # distinct times: "earlier" is unambiguous
    return events


def _decisions(client: redis.Redis) -> list[dict[str, Any]]:
    out = []
    for s in range(SHARDS):
        raw: Any = client.xrange(f"decisions:{{{s}}}")
        out += [json.loads(f[b"decision"]) for _, f in raw]
    return out


def _owners(client: redis.Redis) -> set[str]:
    owners: list[Any] = [client.get(f"transactions:{{{s}}}:owner") for s in range(SHARDS)]
    return {(v or b"").decode() for v in owners}


@pytest.mark.timed
def test_more_replicas_than_shards_with_kills_keep_per_user_order(
    tmp_path: Path, redis_server: RedisServer, trained_store: Path
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    events = _events(8000)
    pipe = client.pipeline(transaction=False)
    for e in events:  # per user, stream order is event-time order
        pipe.xadd(f"transactions:{{{e['user_id'] % SHARDS}}}", {k: str(v) for k, v in e.items()})
    pipe.execute()
    procs = {f"pod-{i}": scorer(tmp_path, redis_server, trained_store, consumer=f"pod-{i}", **ENV) for i in range(3)}
    try:
        first = procs["pod-0"]
        wait_until(lambda: len(_decisions(client)) >= 500, 60, "first decisions", first.proc, first.log)
        for victim in ("pod-0", "pod-1"):  # killed mid-run: no release, their leases expire
            procs[victim].proc.kill()
            procs[victim].wait(10)
            time.sleep(0.5)
        procs["pod-3"] = scorer(tmp_path, redis_server, trained_store, consumer="pod-3", **ENV)
        live = procs["pod-2"]

        def finished() -> bool:
            pending = sum(client.xpending(f"transactions:{{{s}}}", "scorer")["pending"] for s in range(SHARDS))
            return len(_decisions(client)) >= len(events) and pending == 0

        wait_until(finished, 120, "every event decided and acknowledged", live.proc, live.log)
        wait_until(lambda: _owners(client) <= {"pod-2", "pod-3"}, 30, "leases on live pods", live.proc, live.log)
        assert "" not in _owners(client)
    finally:
        for p in procs.values():
            p.stop()
    out = _decisions(client)
    assert sorted(d["event_id"] for d in out) == sorted(e["event_id"] for e in events)  # each decided once
    want = brute_force_windows(events)
    wrong = [
        d["event_id"]
        for d in out
        if any(abs(v - want[d["event_id"]][k]) > 1e-6 for k, v in d["streaming_features"].items())
    ]
    assert not wrong, f"{len(wrong)} events scored with windows missing earlier events, e.g. {wrong[:5]}"
