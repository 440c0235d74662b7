"""Streaming benchmark: the stream scorer against a naive consumer, latency at half load, and chaos.

    python -m bench.stream [--events 50000] [--chaos-events 100000] [--kills 20] [--skip-chaos]

Every part runs real processes against a real valkey: the scorer as production starts it
(``python -m app.stream``, the chart's command), one process, on the reference model (a 50-tree forest,
depth 8, 20 features: docs/benchmarks.md). Events carry the 20 features, a user id and an amount.

- **Throughput**: N events preloaded in the stream, then one scorer process drains them; rate = events /
  (last decision - first decision). The naive consumer, in the same run: one XREADGROUP per event,
  redis-py, scikit-learn ``predict_proba`` on the pickle, XADD the decision, XACK: what a first version
  of such a consumer looks like.
- **Latency**: once the scorer has decided a warm-up batch, a producer at half the measured throughput, event
  time = append time; the decisions' ``decided_ms - event_time_ms``, p50 and p99.
- **Chaos**: events shuffled within 5 minutes of event time, replayed while the scorer is SIGKILLed
  at random moments and restarted; then every event id must have exactly one decision equal (model
  version, probabilities, streaming features) to a clean run's, and the windows must equal a
  brute-force recount of the events.

Prints a table and writes JSON to bench/results/stream-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import pickle
import random
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import redis

from app.modelstore import LocalModelStore
from devharness import RedisServer, Server, free_port, leaves_nothing_running, wait_until
from jobs.train import train_and_publish

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
EVENTS = "transactions:{0}"
DECISIONS = "decisions:{0}"
FEATURES = [f"f{i}" for i in range(20)]


def make_events(n: int, seed: int = 0, t0_ms: int | None = None, span_ms: int = 3_600_000) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 20)).round(4)
    users = rng.integers(1, max(2, n // 20), n)
    amounts = rng.uniform(1, 500, n).round(2)
    t0 = t0_ms if t0_ms is not None else int(time.time() * 1000) - span_ms
    t = t0 + np.sort(rng.integers(0, span_ms, n))
    return [
        {
            "event_id": f"e{i}",
            "event_time_ms": int(t[i]),
            "user_id": int(users[i]),
            "amount": float(amounts[i]),
            **{f: float(x[i, j]) for j, f in enumerate(FEATURES)},
        }
        for i in range(n)
    ]


def produce(client: redis.Redis, events: list[dict[str, Any]], key: str = EVENTS) -> None:
    pipe = client.pipeline(transaction=False)
    for i, e in enumerate(events):
        pipe.xadd(key, e)  # type: ignore[arg-type]
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()


def scorer(work: Path, url: str, store: Path, consumer: str = "bench-0", **env: str) -> Server:
    return Server(
        [sys.executable, "-m", "app.stream"],
        work / f"scorer-{time.monotonic_ns()}.log",
        env={
            "MODEL_STORE_URL": str(store),
            "STREAM_REDIS_URL": url,
            "STREAM_MODEL": "reference",
            "STREAM_CONSUMER": consumer,
            "STREAM_METRICS_PORT": str(free_port()),
            "STREAM_CLAIM_IDLE_MS": "1000",
            "STREAM_BATCH_SIZE": "512",
            "STREAM_LOG_LEVEL": "WARNING",
            **env,
        },
    )


def _grew(client: redis.Redis, before: int) -> bool:
    return int(client.xlen(DECISIONS)) > before


def decisions(client: redis.Redis) -> list[dict[str, Any]]:
    raw: Any = client.xrange(DECISIONS)
    return [json.loads(f[b"decision"]) for _, f in raw]


def wait_decided(client: redis.Redis, n: int, proc: Server, timeout: float = 600) -> None:
    wait_until(lambda: client.xlen(DECISIONS) >= n, timeout, "decisions", proc.proc, proc.log)


# ---- throughput ----------------------------------------------------------------------------------
def ours_throughput(work: Path, url: str, store: Path, n: int) -> float:
    client = redis.Redis.from_url(url)
    client.flushdb()
    produce(client, make_events(n, seed=1))
    proc = scorer(work, url, store)
    try:
        wait_decided(client, n, proc)
    finally:
        proc.stop()
    out = decisions(client)
    decided = sorted(d["decided_ms"] for d in out)
    # first to last decision: the process's start-up (imports, model load) is not throughput
    return float(n / max((decided[-1] - decided[0]) / 1000, 1e-3))


def naive_throughput(url: str, store: Path, n: int) -> float:
    """One event per XREADGROUP, scikit-learn on the pickle, one XADD and one XACK per event."""
    client = redis.Redis.from_url(url)
    client.flushdb()
    produce(client, make_events(n, seed=1))
    s = LocalModelStore(store)
    version = s.latest("reference")
    assert version is not None
    _, artifact = s.read_version("reference", version)
    model = pickle.loads(artifact)
    client.xgroup_create(EVENTS, "naive", id="0")
    start = time.perf_counter()
    done = 0
    while done < n:
        reply: Any = client.xreadgroup("naive", "c", {EVENTS: ">"}, count=1)
        for _, msgs in reply:
            for entry_id, f in msgs:
                x = np.array([[float(f[k.encode()]) for k in FEATURES]])
                p = model.predict_proba(x)[0]
                client.xadd("naive-decisions", {"event_id": f[b"event_id"], "p1": float(p[1])})
                client.xack(EVENTS, "naive", entry_id)
                done += 1
    return float(n / (time.perf_counter() - start))


# ---- latency -------------------------------------------------------------------------------------
def latency_at(work: Path, url: str, store: Path, rate: float, seconds: float) -> dict[str, float]:
    client = redis.Redis.from_url(url)
    client.flushdb()
    proc = scorer(work, url, store, STREAM_BLOCK_MS="5")
    try:
        # Steady state, not start-up: the clock starts once the scorer has decided a warm-up batch (imports,
        # model load and the first calls take seconds here; events waiting for them would be its p99).
        warm = [{**e, "event_id": f"warm-{e['event_id']}"} for e in make_events(200, seed=9)]
        produce(client, warm)
        wait_decided(client, len(warm), proc)
        n = int(rate * seconds)
        base = make_events(n, seed=2)
        start = time.perf_counter()
        step = 50  # events per append round trip
        for i in range(0, n, step):
            now_ms = int(time.time() * 1000)
            pipe = client.pipeline(transaction=False)
            for e in base[i : i + step]:
                fields: dict[Any, Any] = {**e, "event_time_ms": now_ms}
                pipe.xadd(EVENTS, fields)
            pipe.execute()
            ahead = (i + step) / rate - (time.perf_counter() - start)
            if ahead > 0:
                time.sleep(ahead)
        wait_decided(client, n + len(warm), proc)
    finally:
        proc.stop()
    timed = [d for d in decisions(client) if not str(d["event_id"]).startswith("warm-")]
    lat = np.array([d["decided_ms"] - d["event_time_ms"] for d in timed], dtype=np.float64)
    return {"rate": rate, "events": float(len(lat)), "p50_ms": float(np.percentile(lat, 50)),
            "p90_ms": float(np.percentile(lat, 90)), "p99_ms": float(np.percentile(lat, 99)),
            "max_ms": float(lat.max())}  # fmt: skip


# ---- chaos ---------------------------------------------------------------------------------------
def chaos(work: Path, url: str, store: Path, n: int, kills: int) -> dict[str, Any]:
    events = make_events(n, seed=3)
    rng = np.random.default_rng(4)
    order = np.argsort([e["event_time_ms"] + int(rng.integers(0, 300_000)) for e in events])
    shuffled = [events[i] for i in order]
    client = redis.Redis.from_url(url)
    # The clean run first, on database 1.
    clean_url = url.rsplit("/", 1)[0] + "/1"
    clean_client = redis.Redis.from_url(clean_url)
    clean_client.flushdb()
    produce(clean_client, shuffled)
    proc = scorer(work, clean_url, store, consumer="clean")
    try:
        wait_decided(clean_client, n, proc)
    finally:
        proc.stop()
    clean = {d["event_id"]: d for d in decisions(clean_client)}
    # Then the same stream with kills: the producer appends while the scorer is killed and restarted.
    client.flushdb()
    chunks = np.array_split(np.arange(n), kills + 1)
    pick = random.Random(5)
    for k, chunk in enumerate(chunks):
        produce(client, [shuffled[i] for i in chunk])
        if k == kills:
            break
        proc = scorer(work, url, store)
        try:
            before = client.xlen(DECISIONS)
            # Kill while it scores: once it has decided something, at a random moment of the next second.
            wait_until(partial(_grew, client, before), 120, "first decision", proc.proc, proc.log)
            time.sleep(pick.uniform(0.0, 1.0))
            proc.proc.kill()
            proc.wait(10)
        finally:
            proc.stop()
        print(f"  chaos: kill {k + 1}/{kills}, {client.xlen(DECISIONS)} decided", flush=True)
    proc = scorer(work, url, store)
    try:
        wait_decided(client, n, proc)
        wait_until(lambda: client.xpending(EVENTS, "scorer")["pending"] == 0, 60, "acks")
    finally:
        proc.stop()
    got = decisions(client)
    ids = [d["event_id"] for d in got]
    by_id = {d["event_id"]: d for d in got}
    differ = [
        i for i in clean
        if by_id.get(i, {}).get("probabilities") != clean[i]["probabilities"]
        or by_id.get(i, {}).get("streaming_features") != clean[i]["streaming_features"]
    ]  # fmt: skip
    # Windows against a brute-force recount from the events themselves (a sample of users), read with the
    # scorer's own read script at each user's last event time.
    from app.stream.windows import _READ, parse_windows

    t = np.array([e["event_time_ms"] for e in events])
    u = np.array([e["user_id"] for e in events])
    a = np.array([e["amount"] for e in events])
    windows = parse_windows("10m,1h")
    window_errors = 0
    all_users = np.unique(u)
    users = all_users[:: max(1, len(all_users) // 200)]
    for user in users:
        at = int(t[u == user].max())
        keys = [f"sf:{{0}}:{user}:ev", f"sf:{{0}}:{user}:val"]  # one shard: app.stream.windows' key layout
        raw: Any = client.eval(_READ, 2, *keys, at, *(w.length_ms for w in windows))
        for k, w in enumerate(windows):
            sel = (u == user) & (t > at - w.length_ms) & (t <= at)
            count, total = int(raw[2 * k]), float(raw[2 * k + 1])
            window_errors += int(count != int(sel.sum()) or abs(total - float(a[sel].sum())) > 1e-6)
    return {
        "events": n,
        "kills": kills,
        "decisions": len(ids),
        "distinct_event_ids": len(set(ids)),
        "lost": len(set(clean) - set(ids)),
        "differing_from_clean_run": len(differ),
        "users_checked": len(users),
        "window_mismatches": window_errors,
    }


@leaves_nothing_running("bench.stream")
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--naive-events", type=int, default=3_000)
    ap.add_argument("--latency-seconds", type=float, default=20)
    ap.add_argument("--chaos-events", type=int, default=100_000)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--skip-chaos", action="store_true")
    ap.add_argument(
        "--latency-rate", type=float, default=0.0, help="events/s of the latency run (0: half the measured max)"
    )
    args = ap.parse_args()
    work = ROOT / "var" / "bench-stream"
    work.mkdir(parents=True, exist_ok=True)
    store = work / "store"
    if LocalModelStore(store).latest("reference") is None:
        train_and_publish(LocalModelStore(store), dataset="reference", name="reference", n_estimators=50, max_depth=8)
    result: dict[str, Any] = {"command": " ".join(sys.argv)}
    with RedisServer(work / "valkey") as rs:
        ours = ours_throughput(work, rs.url, store, args.events)
        naive = naive_throughput(rs.url, store, args.naive_events)
        print(f"throughput: ours {ours:,.0f} events/s, naive {naive:,.0f} events/s ({ours / naive:.1f}x)", flush=True)
        result["throughput"] = {"ours_events_per_s": ours, "naive_events_per_s": naive, "ratio": ours / naive}
        lat = latency_at(work, rs.url, store, args.latency_rate or ours / 2, args.latency_seconds)
        print(f"latency at {lat['rate']:,.0f} events/s: p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms")
        result["latency"] = lat
        if not args.skip_chaos:
            result["chaos"] = chaos(work, rs.url, store, args.chaos_events, args.kills)
            print("chaos:", json.dumps(result["chaos"]), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"stream-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
