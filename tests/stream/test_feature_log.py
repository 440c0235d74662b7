"""The streaming features as served, in the offline store's Delta table, and joined back point-in-time."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import redis.asyncio as aioredis

from app.features.historical import get_historical_features
from app.features.offline import OfflineStore
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
