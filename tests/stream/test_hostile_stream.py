"""A hostile stream (issue 24), generated: missing, duplicate and undecodable event ids; huge, NaN, empty and
missing values; events late by up to twice the allowed lateness; repeats. Checked against an oracle that
replays the documented rules one event at a time, in arrival order:

- every entry has exactly one outcome: its id's decision (first valid arrival), a dead letter, or nothing
  because its id was already decided (a repeat);
- each decision's windows equal a recount, in arrival order, of its user's kept events (LATE: not kept);
- the windows read afterwards equal an order-free recount of every kept event;
- the feature log holds exactly one row per decision.

The SIGKILL part of the hostile run lives in tests/stream/test_process.py and test_leases.py (the same
checks, against a clean run, with processes killed at random moments)."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.features.offline import OfflineStore
from app.modelstore import LocalModelStore
from app.runtime.registry import ModelRegistry
from app.stream.scorer import StreamScorer
from devharness import RedisServer
from tests.stream.conftest import IRIS, stream_settings
from tests.stream.test_scorer import drain

LATENESS = 300_000
WINDOWS = (("10m", 600_000), ("1h", 3_600_000))
T0 = 1_700_000_000_000
F32_MAX = 3.4028234663852886e38

ID = st.one_of(
    st.sampled_from([f"e{i}" for i in range(12)]),  # a small pool: repeats happen
    st.just(None),  # no id
    st.sampled_from([b"\xff", b"\xfe\xff", b"ok\xc3"]),  # not UTF-8: distinct bytes, one replacement text
    st.just(""),
)
AMOUNT = st.one_of(
    st.floats(0.01, 500, allow_nan=False).map(lambda v: round(v, 2)),
    st.sampled_from(["nan", "", "inf", "1e42", None, "-0", "12"]),
)
FEATURE = st.one_of(st.floats(0.1, 8, allow_nan=False).map(lambda v: round(v, 2)), st.sampled_from(["1e42", "nan"]))


@st.composite
def hostile_events(draw: st.DrawFn) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    newest = T0
    for _ in range(draw(st.integers(1, 40))):
        step = draw(st.integers(-2 * LATENESS, 20 * 60_000))  # late by up to twice the lateness, or ahead
        t = max(T0, newest + step)
        newest = max(newest, t)
        e: dict[str, Any] = {
            "event_id": draw(ID),
            "event_time_ms": t,
            "user_id": draw(st.integers(1, 3)),
            "amount": draw(AMOUNT),
            **{f: 5.0 for f in IRIS},
        }
        if draw(st.booleans()):
            e[draw(st.sampled_from(IRIS))] = draw(FEATURE)
        out.append(e)
    return out


def _fields(e: dict[str, Any]) -> dict[bytes, bytes]:
    return {k.encode(): v if isinstance(v, bytes) else str(v).encode() for k, v in e.items() if v is not None}


def _number(v: Any) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def oracle(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Outcomes by the documented rules, one event at a time in arrival order."""
    decided: dict[str, dict[str, Any]] = {}  # id -> {"status", "windows"}
    dead: list[int] = []
    kept: dict[int, list[tuple[int, float]]] = {}  # user -> (time, amount) of kept events
    for i, e in enumerate(events):
        eid, amount = e["event_id"], _number(e["amount"])
        features = [_number(e[f]) for f in IRIS]
        if eid is None or eid == "" or isinstance(eid, bytes) or amount is None or None in features:
            dead.append(i)  # malformed: no id, undecodable id, or a value that is not a finite number
            continue
        if any(abs(v) > F32_MAX for v in features if v is not None):
            dead.append(i)  # invalid input for a model that computes in float32
            continue
        if eid in decided:
            continue  # a repeat of a decided id: nothing
        user, t = e["user_id"], e["event_time_ms"]
        mine = kept.setdefault(user, [])
        late = bool(mine) and t < max(x for x, _ in mine) - LATENESS
        if not late:
            mine.append((t, amount))
        windows: dict[str, float] = {}
        for name, w in WINDOWS:
            sel = [a for x, a in mine if t - w < x <= t]
            windows[f"count_{name}"] = float(len(sel))
            windows[f"amount_sum_{name}"] = sum(sel)
        decided[eid] = {"status": "LATE" if late else "NEW", "windows": windows}
    return {"decided": decided, "dead": dead, "kept": kept}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=hostile_events(), batch_size=st.integers(1, 16))
def test_a_hostile_stream_gets_exactly_the_documented_outcomes(
    events: list[dict[str, Any]],
    batch_size: int,
    redis_server: RedisServer,
    trained_store: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    offline = OfflineStore(str(tmp_path_factory.mktemp("hostile") / "offline"))
    got = asyncio.run(_run(events, batch_size, redis_server, trained_store, offline))
    want = oracle(events)
    assert {d["event_id"] for d in got["decisions"]} == set(want["decided"])
    assert len(got["decisions"]) == len(want["decided"])  # one decision per id
    assert sorted(got["dead"]) == sorted(f"1-{i}" for i in want["dead"])  # one dead letter per bad entry
    for d in got["decisions"]:
        w = want["decided"][d["event_id"]]
        assert d["streaming_status"] == w["status"], d["event_id"]
        for k, v in w["windows"].items():
            assert d["streaming_features"][k] == pytest.approx(v, abs=1e-6), (d["event_id"], k)
    for user, rows in want["kept"].items():  # afterwards: order-free over every kept event
        at = max(e["event_time_ms"] for e in events if e["user_id"] == user)  # where _run reads
        read = got["read"][user]
        for name, w in WINDOWS:
            assert read[f"count_{name}"] == sum(1 for x, _ in rows if at - w < x <= at)
    assert sorted(got["logged"]) == sorted(want["decided"])  # one feature-log row per decision


async def _run(
    events: list[dict[str, Any]], batch_size: int, rs: RedisServer, store: Path, offline: OfflineStore
) -> dict[str, Any]:
    s = stream_settings(rs.url, store, batch_size=batch_size, allowed_lateness_ms=LATENESS)
    registry = ModelRegistry(s, LocalModelStore(store))
    client = aioredis.Redis.from_url(rs.url)
    await registry.start()
    try:
        await client.flushall()
        for i, e in enumerate(events):  # explicit entry ids: the dead letters name them
            await client.xadd("transactions:{0}", dict(_fields(e)), id=f"1-{i}")  # type: ignore[arg-type]
        scorer = StreamScorer(s.model_copy(update={"feature_log_flush_seconds": 0.01}), client, registry, offline)
        await drain(scorer)
        assert scorer.feature_log is not None
        for _ in range(3):
            await scorer.feature_log.step()
        await scorer.feature_log.flush()
        raw: Any = await client.xrange("decisions:{0}")
        decisions = [json.loads(f[b"decision"]) for _, f in raw]
        dead_raw: Any = await client.xrange("dead-letters:{0}")
        dead = [f[b"entry_id"].decode() for _, f in dead_raw]
        read = {}
        for user in {e["user_id"] for e in events}:
            times = [e["event_time_ms"] for e in events if e["user_id"] == user]
            read[user] = await scorer.features.read(user, max(times))
        logged: list[str] = []
        if decisions:
            table = offline.read_window(s.feature_log_dataset, "event_timestamp", None, None, ["event_id"])
            logged = table.column("event_id").to_pylist()
        return {"decisions": decisions, "dead": dead, "read": read, "logged": logged}
    finally:
        await registry.stop()
        await client.aclose()
