"""The streaming features as served, in the offline store's Delta table, and joined back point-in-time."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import redis.asyncio as aioredis

from app.features.historical import get_historical_features
from app.features.offline import OfflineStore
from app.stream.feature_log import FeatureLog
from app.stream.scorer import StreamScorer
from examples.fraud.repo import reference_repo, user_activity
from tests.stream.conftest import iris_events
from tests.stream.test_scorer import decisions, drain, produce


async def test_served_window_features_land_in_the_offline_store_and_join_back(
    make_scorer: Any, client: aioredis.Redis, tmp_path: Path
) -> None:
    offline = OfflineStore(str(tmp_path / "offline"))
    events = iris_events(200, seed=2)
    await produce(client, events)
    plain: StreamScorer = make_scorer(feature_log_flush_seconds=0.01)
    scorer = StreamScorer(plain.s, client, plain.registry, offline)
    await drain(scorer)
    assert scorer.feature_log is not None
    for _ in range(3):  # its own pending entries (none), then the new ones
        await scorer.feature_log.step()
    await scorer.feature_log.flush()
    served = {d["event_id"]: d for d in await decisions(client)}
    table = offline.read_window(user_activity.source, "event_timestamp", None, None)
    assert table.num_rows == len(events)
    rows = table.to_pylist()
    for r in rows:
        d = served[r["event_id"]]
        assert r["user_id"] == d["entity"]
        assert int(r["event_timestamp"].timestamp() * 1000) == d["event_time_ms"]
        assert {f: r[f] for f in user_activity.feature_names} == d["streaming_features"]
    # A training set asks for user_activity at each event's time and gets what the scorer served.
    entity_rows = pa.table(
        {
            "user_id": pa.array([e["user_id"] for e in events], pa.int64()),
            "event_timestamp": pa.array([e["event_time_ms"] for e in events], pa.timestamp("ms", tz="UTC")).cast(
                pa.timestamp("us", tz="UTC")
            ),
        }
    )
    refs = [f"user_activity:{f}" for f in user_activity.feature_names]
    joined = get_historical_features(entity_rows, refs, reference_repo(), offline).to_pylist()
    for e, row in zip(events, joined, strict=True):
        assert {f: row[f] for f in user_activity.feature_names} == served[e["event_id"]]["streaming_features"]
    assert (await client.xpending("decisions:{0}", "scorer-feature-log"))["pending"] == 0
    # The log group read every decision once: nothing more to append.
    assert await scorer.feature_log.step() == 0
    assert json.dumps(sorted(served)) == json.dumps(sorted(r["event_id"] for r in rows))


async def _scored(
    make_scorer: Any, client: aioredis.Redis, tmp_path: Path, n: int
) -> tuple[StreamScorer, OfflineStore]:
    offline = OfflineStore(str(tmp_path / "offline"))
    await produce(client, iris_events(n, seed=3))
    plain: StreamScorer = make_scorer(feature_log_flush_seconds=3600, claim_idle_ms=100)
    await drain(plain)
    return plain, offline


def _log(plain: StreamScorer, client: aioredis.Redis, offline: OfflineStore, consumer: str) -> FeatureLog:
    settings = plain.s.model_copy(update={"consumer": consumer})
    return FeatureLog(settings, client, offline, plain.features.feature_names)


def _logged_ids(offline: OfflineStore) -> list[str]:
    table = offline.read_window(user_activity.source, "event_timestamp", None, None, ["event_id"])
    return sorted(table.column("event_id").to_pylist())


async def test_a_consumer_replaced_under_a_new_name_loses_and_duplicates_nothing(
    make_scorer: Any, client: aioredis.Redis, tmp_path: Path
) -> None:
    """Issue 24: without XAUTOCLAIM a replaced pod's entries stayed pending forever (29,325 of 49,755
    decisions never logged), and recovering its own pending entries re-buffered them on every loop."""
    plain, offline = await _scored(make_scorer, client, tmp_path, 120)
    old = _log(plain, client, offline, "scorer-old-7f9c")
    await old.setup()
    for _ in range(3):
        await old.step()  # read everything, never flushed: the pod is gone
    assert len(old.rows) == 120
    await asyncio.sleep(0.15)
    new = _log(plain, client, offline, "scorer-new-5d2a")
    for _ in range(4):
        await new.step()
    assert len(new.rows) == 120
    await new.flush()
    assert _logged_ids(offline) == sorted(d["event_id"] for d in await decisions(client))
    assert (await client.xpending("decisions:{0}", "scorer-feature-log"))["pending"] == 0


async def test_own_pending_entries_are_buffered_once_however_many_loops(
    make_scorer: Any, client: aioredis.Redis, tmp_path: Path
) -> None:
    plain, offline = await _scored(make_scorer, client, tmp_path, 60)
    first = _log(plain, client, offline, "c1")
    await first.setup()
    for _ in range(2):  # its own pending entries (none), then the decisions
        await first.step()
    assert len(first.rows) == 60
    restarted = _log(plain, client, offline, "c1")  # same pod name, buffer lost
    for _ in range(10):
        await restarted.step()
    assert len(restarted.rows) == 60
    await restarted.flush()
    assert len(_logged_ids(offline)) == 60


async def test_a_crash_between_the_commit_and_the_ack_appends_nothing_twice(
    make_scorer: Any, client: aioredis.Redis, tmp_path: Path
) -> None:
    plain, offline = await _scored(make_scorer, client, tmp_path, 80)
    first = _log(plain, client, offline, "c1")
    await first.setup()
    for _ in range(2):
        await first.step()
    offline.append(user_activity.source, first.table(), "event_timestamp")  # committed; the XACK never ran
    restarted = _log(plain, client, offline, "c1")
    for _ in range(3):
        await restarted.step()
    await restarted.flush()
    assert _logged_ids(offline) == sorted(d["event_id"] for d in await decisions(client))
    assert len(_logged_ids(offline)) == 80
