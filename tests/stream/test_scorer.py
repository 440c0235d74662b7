"""The stream scorer against a real valkey and the prediction service's own registry and model."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from app.runtime.registry import ModelRegistry
from app.stream.scorer import StreamScorer
from devharness import RedisServer
from tests.stream.conftest import IRIS, iris_events, stream_settings


async def produce(client: aioredis.Redis, events: list[dict[str, Any]], key: str = "transactions:{0}") -> None:
    pipe = client.pipeline(transaction=False)
    for e in events:
        pipe.xadd(key, {k: str(v) for k, v in e.items()})
    await pipe.execute()


async def drain(scorer: StreamScorer, rounds: int = 200) -> None:
    """Step until a pass handles nothing and nothing is pending."""
    await scorer.setup()
    idle = 0
    for _ in range(rounds):
        handled = await scorer.step()
        idle = idle + 1 if handled == 0 else 0
        if idle >= 2:
            return
    raise AssertionError("the scorer did not drain the stream")


async def entries(client: aioredis.Redis, key: str) -> list[dict[str, str]]:
    """A stream's entries' fields, decoded."""
    raw: Any = await client.xrange(key)
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in raw]


async def decisions(client: aioredis.Redis, key: str = "decisions:{0}") -> list[dict[str, Any]]:
    return [json.loads(f["decision"]) for f in await entries(client, key)]


async def test_scores_every_event_once_with_the_models_probabilities(
    make_scorer: Any, client: aioredis.Redis, registry: ModelRegistry
) -> None:
    from prometheus_client import REGISTRY

    lm = registry.get("iris")
    labels = {"model": "iris", "version": lm.version}
    before = REGISTRY.get_sample_value("model_monitored_rows_total", labels) or 0.0
    events = iris_events(300)
    await produce(client, events)
    scorer: StreamScorer = make_scorer(batch_size=64)
    await drain(scorer)
    assert lm.monitor is not None
    lm.monitor.flush()  # drift monitoring records what the stream served, as it does for HTTP requests
    assert (REGISTRY.get_sample_value("model_monitored_rows_total", labels) or 0.0) - before == len(events)
    out = await decisions(client)
    assert sorted(d["event_id"] for d in out) == sorted(e["event_id"] for e in events)
    x = np.array([[e[f] for f in IRIS] for e in events])
    expected = lm.model.predict_proba(x)
    by_id = {d["event_id"]: d for d in out}
    for i, e in enumerate(events):
        got = by_id[e["event_id"]]
        assert [got["probabilities"][str(c)] for c in lm.model.classes] == expected[i].tolist()
        assert got["version"] == lm.version
    # the HTTP API's lookup by event id
    assert await scorer.decision("e7") == by_id["e7"]
    assert (await client.xpending("transactions:{0}", "scorer"))["pending"] == 0


async def test_a_redelivered_event_changes_nothing(make_scorer: Any, client: aioredis.Redis) -> None:
    events = iris_events(50)
    await produce(client, events)
    scorer: StreamScorer = make_scorer()
    await drain(scorer)
    first = await decisions(client)
    state = await scorer.features.read(events[0]["user_id"], events[-1]["event_time_ms"])
    await produce(client, events[:20])  # a producer retried: the same event ids again
    await drain(scorer)
    assert await decisions(client) == first
    assert await scorer.features.read(events[0]["user_id"], events[-1]["event_time_ms"]) == state


async def test_a_crashed_consumers_pending_events_are_taken_over(make_scorer: Any, client: aioredis.Redis) -> None:
    events = iris_events(80)
    await produce(client, events)
    scorer: StreamScorer = make_scorer(consumer="survivor", claim_idle_ms=100)
    await scorer.setup()
    # Another consumer reads half the stream and dies before acknowledging anything.
    await client.xreadgroup("scorer", "crashed", {"transactions:{0}": ">"}, count=40)
    await asyncio.sleep(0.15)
    await drain(scorer)
    out = await decisions(client)
    assert sorted(d["event_id"] for d in out) == sorted(e["event_id"] for e in events)
    assert (await client.xpending("transactions:{0}", "scorer"))["pending"] == 0


async def test_malformed_events_are_dead_lettered_at_once_and_block_nothing(
    make_scorer: Any, client: aioredis.Redis
) -> None:
    good = iris_events(10)
    bad: list[dict[str, Any]] = [
        {"event_id": "no-time", "user_id": 1, "amount": 1, **dict.fromkeys(IRIS, 1.0)},
        {**good[0], "event_id": "nan", "petal_length_cm": "nan"},
        {**good[0], "event_id": "text", "amount": "ten"},
        {**good[0], "event_id": "frac-user", "user_id": "1.5"},
        {"junk": "x"},
    ]
    await produce(client, [*bad, *good])
    await drain(make_scorer())
    dead = {f["reason"] for f in await entries(client, "dead-letters:{0}")}
    assert dead == {
        "malformed: missing field 'event_time_ms'",
        "malformed: petal_length_cm: not a finite number: 'nan'",
        "malformed: amount: not a number: 'ten'",
        "malformed: user_id: must be an integer in [-9007199254740992, 2**53), got '1.5'",
        "malformed: missing field 'event_id'",
    }
    assert len(await decisions(client)) == len(good)
    assert (await client.xpending("transactions:{0}", "scorer"))["pending"] == 0


async def test_events_that_keep_failing_go_to_the_dead_letter_stream_with_the_reason(
    make_scorer: Any, client: aioredis.Redis
) -> None:
    await produce(client, iris_events(5))
    scorer: StreamScorer = make_scorer(model="no-such-model", max_deliveries=3)
    await drain(scorer, rounds=400)
    dead = await entries(client, "dead-letters:{0}")
    assert len(dead) == 5
    reason = dead[0]["reason"]
    assert reason.startswith("delivered 4 times without success; last error: UnknownModelError")
    assert json.loads(dead[0]["event"])["event_id"] == "e0"  # the original event travels with it
    assert await decisions(client) == []


async def test_windows_equal_a_brute_force_recount_under_shuffled_late_events(
    make_scorer: Any, client: aioredis.Redis
) -> None:
    events = iris_events(400, seed=3)
    rng = np.random.default_rng(1)
    # out of order: each event delayed by up to 5 minutes of event time
    order = np.argsort([e["event_time_ms"] + rng.integers(0, 300_000) for e in events])
    await produce(client, [events[i] for i in order])
    scorer: StreamScorer = make_scorer(batch_size=32)
    await drain(scorer)
    t = np.array([e["event_time_ms"] for e in events])
    u = np.array([e["user_id"] for e in events])
    a = np.array([e["amount"] for e in events])
    for user in np.unique(u)[:8]:
        for at in (int(t.max()), int(np.median(t))):
            got = await scorer.features.read(int(user), at)
            for name, w in (("10m", 600_000), ("1h", 3_600_000)):
                sel = (u == user) & (t > at - w) & (t <= at)
                assert got[f"count_{name}"] == sel.sum()
                assert abs(got[f"amount_sum_{name}"] - a[sel].sum()) < 1e-6


async def test_shards_over_a_redis_cluster(
    tmp_path_factory: pytest.TempPathFactory, trained_store: Path, registry: ModelRegistry
) -> None:
    srv = RedisServer(tmp_path_factory.mktemp("cluster"), cluster=True)
    client = RedisCluster.from_url(srv.url)
    try:
        settings = stream_settings(srv.url, trained_store, redis_cluster=True, shards=3)
        scorer = StreamScorer(settings, client, registry)
        events = iris_events(120)
        for e in events:
            await client.xadd(scorer.keys.events(scorer.keys.shard_of(e["user_id"])), {k: str(v) for k, v in e.items()})
        await drain(scorer)
        ids: list[str] = []
        for shard in range(3):
            raw: Any = await client.xrange(scorer.keys.decisions(shard))
            ids += [json.loads(f[b"decision"])["event_id"] for _, f in raw]
        assert sorted(ids) == sorted(e["event_id"] for e in events)
        assert (await scorer.decision("e5") or {}).get("event_id") == "e5"
    finally:
        await client.aclose()
        srv.stop()


async def test_lag_and_pending_gauges(make_scorer: Any, client: aioredis.Redis) -> None:
    from prometheus_client import REGISTRY

    def gauge(name: str) -> float | None:
        return REGISTRY.get_sample_value(name, {"stream": "transactions", "shard": "0"})

    await produce(client, iris_events(50))
    scorer: StreamScorer = make_scorer()
    await scorer.setup()
    await client.xreadgroup("scorer", "slow", {"transactions:{0}": ">"}, count=10)  # delivered, not acked
    await scorer.update_gauges()
    assert gauge("stream_consumer_lag_entries") == 40
    assert gauge("stream_pending_entries") == 10
    assert (gauge("stream_oldest_pending_age_seconds") or 0) >= 0
    await asyncio.sleep(0.25)  # past claim_idle_ms: the scorer takes the slow consumer's entries over
    await drain(scorer)
    await scorer.update_gauges()
    assert gauge("stream_consumer_lag_entries") == 0
    assert gauge("stream_pending_entries") == 0


async def test_a_version_that_fails_to_load_leaves_the_previous_one_scoring(
    store_copy: Any, client: aioredis.Redis, redis_server: RedisServer
) -> None:
    from app.modelstore import LocalModelStore
    from app.modelstore.metadata import sha256_hex

    store: LocalModelStore = store_copy
    settings = stream_settings(redis_server.url, store.root, poll_interval_seconds=0.1)
    registry = ModelRegistry(settings, store)
    await registry.start()
    try:
        good = registry.get("iris").version
        meta, _ = store.read_version("iris", good)
        junk = b"not a model"
        broken = meta.model_copy(
            update={"version": "v-broken", "sha256": sha256_hex(junk), "size_bytes": len(junk), "onnx": None}
        )
        store.publish(broken, junk)  # latest now points at an artifact that cannot load
        await asyncio.sleep(0.5)  # a few polls: the registry tries it, refuses it, keeps the good one
        await produce(client, iris_events(40))
        await drain(StreamScorer(settings, client, registry))
        out = await decisions(client)
        assert len(out) == 40 and {d["version"] for d in out} == {good}
        from prometheus_client import REGISTRY

        tried = REGISTRY.get_sample_value("model_load_failures_total", {"model": "iris", "version": "v-broken"})
        assert (tried or 0) >= 1  # it was tried and refused, not missed
    finally:
        await registry.stop()


async def test_a_redelivered_event_gets_the_windows_it_was_first_served(make_scorer: Any) -> None:
    """Out of order: B (earlier event time) arrives after A. A redelivery of A must not count B, or a batch
    retried after a crash would decide differently from a clean run."""
    scorer: StreamScorer = make_scorer()
    await scorer.setup()
    a, b = ("a", 7, 1_000_000, 10.0), ("b", 7, 999_000, 5.0)
    (first,) = await scorer.features.update([a])
    await scorer.features.update([b])
    (again,) = await scorer.features.update([a])
    assert first.values == again.values == {"count_10m": 1, "amount_sum_10m": 10, "count_1h": 1, "amount_sum_1h": 10}
    assert (first.status, again.status) == ("NEW", "NEW")  # the status it was first served with (issue 24)
    # ... while the window itself, read afterwards, has both
    assert (await scorer.features.read(7, 1_000_000))["count_10m"] == 2


async def test_lateness_is_the_allowed_lateness_and_a_late_enough_event_is_counted_right(make_scorer: Any) -> None:
    """Issue 24: the code allowed the longest window plus the lateness (65 minutes), the docs 5 minutes;
    events 5 to 30 minutes late came back NEW with their 1-hour windows undercounted."""
    scorer: StreamScorer = make_scorer(allowed_lateness_ms=300_000)
    await scorer.setup()
    t = 10_000_000_000
    history = [(f"h{i}", 3, t - 3_600_000 + i * 60_000, 1.0) for i in range(61)]  # one a minute up to t
    await scorer.features.update(history)
    edge, past, far = ("edge", 3, t - 300_000, 2.0), ("past", 3, t - 300_001, 2.0), ("far", 3, t - 1_800_000, 2.0)
    got = await scorer.features.update([edge, past, far])
    assert [g.status for g in got] == ["NEW", "LATE", "LATE"]
    # the event exactly at the lateness bound: both windows equal a recount over everything kept
    times = [h[2] for h in history] + [edge[2]]
    for name, w in (("10m", 600_000), ("1h", 3_600_000)):
        assert got[0].values[f"count_{name}"] == sum(edge[2] - w < x <= edge[2] for x in times)


async def test_a_crash_between_the_windows_and_the_decision_decides_with_the_first_status(
    make_scorer: Any, client: aioredis.Redis
) -> None:
    """Issue 24: the only decision of such an event said DUPLICATE."""
    events = iris_events(3, seed=4)
    await produce(client, events)
    scorer: StreamScorer = make_scorer()
    await scorer.setup()
    e = events[1]
    (served,) = await scorer.features.update([(e["event_id"], e["user_id"], e["event_time_ms"], e["amount"])])
    await drain(scorer)  # the "restarted" scorer
    got = {d["event_id"]: d for d in await decisions(client)}
    assert [got[x["event_id"]]["streaming_status"] for x in events] == ["NEW", "NEW", "NEW"]
    assert got[e["event_id"]]["streaming_features"] == served.values


async def test_a_poison_event_is_dead_lettered_alone_and_its_neighbours_decided(
    make_scorer: Any, client: aioredis.Redis, registry: ModelRegistry
) -> None:
    """Issue 24: ``1e42`` passed the finite check and raised inside the model; the scorer crash-looped on the
    batch, then dead-lettered all of it. Now: a value past what the model takes is named; an error the model
    raises on some events only is found by bisecting; the rest of the batch is decided on first delivery,
    and the poison events are not counted in their users' windows."""
    events = iris_events(40, seed=5)
    events[7]["sepal_length_cm"] = 1e42  # past float32: the trees' engine cannot take it
    events[20]["petal_width_cm"] = 77.0  # the model below raises on this one
    events[33]["petal_width_cm"] = 77.0
    await produce(client, events)
    lm = registry.get("iris")
    real = lm.model.predict_proba

    def fussy(x: np.ndarray) -> np.ndarray:
        if (x == 77.0).any():
            raise ValueError("cannot score 77")
        return real(x)

    lm.model.predict_proba = fussy  # type: ignore[method-assign]
    try:
        scorer: StreamScorer = make_scorer(batch_size=64)
        await drain(scorer)
    finally:
        lm.model.predict_proba = real  # type: ignore[method-assign]
    poison = {"e7", "e20", "e33"}
    assert sorted(d["event_id"] for d in await decisions(client)) == sorted(
        e["event_id"] for e in events if e["event_id"] not in poison
    )
    dead = {json.loads(f["event"])["event_id"]: f["reason"] for f in await entries(client, "dead-letters:{0}")}
    assert set(dead) == poison
    assert dead["e7"].startswith("invalid input: sepal_length_cm: 1e+42 is too large for this model")
    assert dead["e20"] == dead["e33"] == "model error: ValueError: cannot score 77"
    assert (await client.xpending("transactions:{0}", "scorer"))["pending"] == 0
    # windows: a recount over the decided events only
    at = max(e["event_time_ms"] for e in events)
    for user in {e["user_id"] for e in events}:
        got = await scorer.features.read(user, at)
        kept = [e for e in events if e["user_id"] == user and e["event_id"] not in poison]
        assert got["count_1h"] == sum(at - 3_600_000 < e["event_time_ms"] <= at for e in kept)


async def test_an_unavailable_online_store_leaves_the_batch_pending_and_the_scorer_alive(
    make_scorer: Any, client: aioredis.Redis, registry: ModelRegistry
) -> None:
    """Issue 24: FeaturesUnavailableError was not caught: the process exited 1."""
    from app.runtime.online_inputs import FeaturesUnavailableError
    from app.stream import metrics

    events = iris_events(12, seed=6)
    await produce(client, events)
    lm = registry.get("iris")
    real = lm.prepare

    async def down(x: np.ndarray) -> Any:
        raise FeaturesUnavailableError("online store: connection refused")

    failed = metrics.FAILED_BATCHES.labels("transactions", "FeaturesUnavailableError")
    before = failed._value.get()
    lm.prepare = down  # type: ignore[method-assign]
    scorer: StreamScorer = make_scorer(max_deliveries=50)
    try:
        await scorer.setup()
        for _ in range(3):
            await scorer.step()  # does not raise
    finally:
        lm.prepare = real  # type: ignore[method-assign]
    assert failed._value.get() >= before + 3
    assert (await client.xpending("transactions:{0}", "scorer"))["pending"] == len(events)
    assert await decisions(client) == [] and await entries(client, "dead-letters:{0}") == []
    await drain(scorer)  # the store is back: every event decided, once
    assert sorted(d["event_id"] for d in await decisions(client)) == sorted(e["event_id"] for e in events)


async def test_the_reason_survives_the_consumer_that_saw_it(make_scorer: Any, client: aioredis.Redis) -> None:
    """A batch that failed in one consumer and is dead-lettered by another (after a crash or a takeover)
    still names the last error, not "unknown"."""
    await produce(client, iris_events(3))
    first: StreamScorer = make_scorer(model="no-such-model", consumer="first", max_deliveries=1)
    await first.setup()
    await first.step()  # its own pending entries: none
    await first.step()  # reads the events and fails: left pending, the reason kept in Redis
    assert (await client.xpending("transactions:{0}", "scorer"))["pending"] == 3
    await asyncio.sleep(0.6)  # past the first's lease (500 ms, renewed before its last step) and claim idle time
    second: StreamScorer = make_scorer(model="no-such-model", consumer="second", max_deliveries=1, claim_idle_ms=200)
    await drain(second, rounds=400)
    reasons = [f["reason"] for f in await entries(client, "dead-letters:{0}")]
    assert len(reasons) == 3
    assert all("last error: UnknownModelError" in r for r in reasons), reasons
    assert await client.exists("dead-letters:{0}:failures") == 0  # nothing left behind


async def test_an_id_reused_by_another_user_counts_in_no_window(make_scorer: Any, client: aioredis.Redis) -> None:
    """Found by the hostile-stream test: a second event under a decided id (another user) got no decision
    but was counted in its user's windows. In the same batch and across batches."""
    base = iris_events(3, seed=8)
    for e in base:
        e["user_id"] = 1
    reuse_now = {**base[0], "user_id": 2}  # same batch as the original
    reuse_later = {**base[1], "user_id": 3}  # a later batch
    await produce(client, [base[0], reuse_now, base[1]])
    scorer: StreamScorer = make_scorer(batch_size=3)
    await drain(scorer)
    await produce(client, [reuse_later, base[2]])
    await drain(scorer)
    assert sorted(d["event_id"] for d in await decisions(client)) == ["e0", "e1", "e2"]
    at = max(e["event_time_ms"] for e in base)
    assert (await scorer.features.read(2, at))["count_1h"] == 0
    assert (await scorer.features.read(3, at))["count_1h"] == 0
    assert (await scorer.features.read(1, at))["count_1h"] == 3
