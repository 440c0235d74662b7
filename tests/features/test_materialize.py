from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import redis

from app.features.definitions import FeatureRepo
from app.features.materialize import (
    MaterializationLockedError,
    latest_per_entity,
    materialize,
    materialize_incremental,
    read_watermark,
    shard_mask,
)
from app.features.offline import OfflineStore
from app.features.online import OnlineStore, Status
from devharness import ROOT, RedisServer
from tests.features.conftest import ENTITY, T0, VIEW, random_rows, rows

H = timedelta(hours=1)
END = T0 + timedelta(days=3)


def dump(client: redis.Redis, view: str = VIEW.name) -> dict[bytes, tuple[bytes, int]]:
    """Every online value of a view with its absolute expiry: the state a run leaves behind."""
    out: dict[bytes, tuple[bytes, int]] = {}
    for key in client.scan_iter(f"fs:{view}:*", count=1000):
        value, expiry = client.get(key), client.pexpiretime(key)
        assert isinstance(value, bytes) and isinstance(expiry, int)
        out[key] = (value, expiry)
    return out


def expected_latest(table: pa.Table, start: object, end: object) -> dict[int, int]:
    """Brute force: entity -> clicks of its latest row (event, then created) in the window."""
    best: dict[int, tuple[int, int, int]] = {}
    for r in table.to_pylist():
        if (start is None or r["event_timestamp"] >= start) and r["event_timestamp"] < end:
            key = (int(r["event_timestamp"].timestamp() * 1e6), int(r["created_timestamp"].timestamp() * 1e6))
            if r["item_id"] not in best or key > best[r["item_id"]][:2]:
                best[r["item_id"]] = (*key, r["clicks"])
    return {k: v[2] for k, v in best.items()}


def online_clicks(online: OnlineStore, ids: list[int]) -> dict[int, int]:
    vec = online.read([(VIEW, ["clicks"])], ids, now_us=int(T0.timestamp() * 1e6))[0]
    return {i: c for i, c, s in zip(ids, vec.values["clicks"], vec.statuses, strict=True) if s == Status.PRESENT}


def test_window_loads_exactly_the_latest_rows(offline: OfflineStore, online: OnlineStore) -> None:
    table = random_rows(6000, 400, days=3, seed=7)
    offline.write_partitioned(VIEW.source, table, "event_timestamp")
    start = T0 + timedelta(hours=20)
    rep = materialize(VIEW, offline, online, start, END)
    want = expected_latest(table, start, END)
    assert rep.entities == len(want) and rep.written == len(want)
    assert online_clicks(online, list(range(400))) == want
    again = materialize(VIEW, offline, online, start, END)
    assert again.written == 0 and again.unchanged == len(want)


def test_latest_per_entity_tie_breaks() -> None:
    t = rows(
        (1, T0, T0 + 2 * H, 2, 1.0, 0.0),
        (1, T0, T0 + H, 1, 1.0, 0.0),
        (2, T0, T0, 3, 1.0, 0.0),
        (1, T0 - H, T0 + 5 * H, 0, 1.0, 0.0),
    )
    got = latest_per_entity(t, VIEW)
    assert sorted(zip(got.column("item_id").to_pylist(), got.column("clicks").to_pylist(), strict=True)) == [
        (1, 2),
        (2, 3),
    ]


def test_incremental_watermark_is_the_newest_loaded_row_not_the_clock(
    local_offline: OfflineStore, online: OnlineStore
) -> None:
    first = rows((1, T0, T0, 1, 1.0, 0.0), (2, T0 + 2 * H, T0 + 2 * H, 1, 1.0, 0.0))
    local_offline.write_partitioned(VIEW.source, first, "event_timestamp")
    far_future = T0 + timedelta(days=365)
    rep = materialize_incremental(VIEW, local_offline, online, lookback=H, end=far_future)
    assert rep.written == 2 and rep.watermark_after == (T0 + 2 * H).isoformat()
    # A future END did not move the watermark: a row arriving later with an earlier event time is loaded.
    late = rows((3, T0 + 90 * timedelta(minutes=1), T0 + 5 * H, 1, 1.0, 0.0))  # within the 1 h lookback
    local_offline.write_partitioned(VIEW.source, pa.concat_tables([first, late]), "event_timestamp")
    rep = materialize_incremental(VIEW, local_offline, online, lookback=H, end=far_future)
    assert rep.written == 1 and rep.start == (T0 + H).isoformat()
    assert set(online_clicks(online, [1, 2, 3])) == {1, 2, 3}
    # Rows older than the lookback are not re-read (documented: raise the lookback for later data).
    very_late = rows((4, T0, T0 + 6 * H, 1, 1.0, 0.0))
    local_offline.write_partitioned(VIEW.source, pa.concat_tables([first, late, very_late]), "event_timestamp")
    rep = materialize_incremental(VIEW, local_offline, online, lookback=H, end=far_future)
    assert rep.written == 0 and 4 not in online_clicks(online, [4])
    assert read_watermark(online, VIEW) == T0 + 2 * H


def test_out_of_order_and_duplicate_rows(local_offline: OfflineStore, online: OnlineStore) -> None:
    new, old = rows((1, T0 + 3 * H, T0 + 3 * H, 30, 1.0, 0.0)), rows((1, T0 + H, T0 + H, 10, 1.0, 0.0))
    local_offline.write_partitioned(VIEW.source, new, "event_timestamp")
    materialize(VIEW, local_offline, online, T0, END)
    # The older row lands in the offline store afterwards and a window covering only it is loaded:
    local_offline.write_partitioned(VIEW.source, pa.concat_tables([new, old, old]), "event_timestamp")
    rep = materialize(VIEW, local_offline, online, T0, T0 + 2 * H)
    assert rep.skipped_stale == 1 and online_clicks(online, [1]) == {1: 30}


def test_sharded_runs_equal_a_single_run(local_offline: OfflineStore, redis_server: RedisServer) -> None:
    table = random_rows(8000, 1000, days=3, seed=9)
    local_offline.write_partitioned(VIEW.source, table, "event_timestamp")
    single = redis.Redis.from_url(redis_server.url.replace("/0", "/1"))
    sharded = redis.Redis.from_url(redis_server.url.replace("/0", "/2"))
    single.flushdb()
    sharded.flushdb()
    materialize(VIEW, local_offline, OnlineStore(single), None, END)
    reports = [materialize(VIEW, local_offline, OnlineStore(sharded), None, END, shard=i, shards=3) for i in range(3)]
    assert sum(r.entities for r in reports) == len(set(table.column("item_id").to_pylist()))
    assert min(r.entities for r in reports) > 200  # the hash spreads entities
    assert dump(single) == dump(sharded) and len(dump(single)) > 900
    keys = table.column("item_id").to_numpy()
    masks = [shard_mask(keys, i, 3) for i in range(3)]
    assert (np.sum(masks, axis=0) == 1).all()


def test_concurrent_runs_cannot_overlap(local_offline: OfflineStore, online: OnlineStore) -> None:
    local_offline.write_partitioned(VIEW.source, random_rows(3000, 300, days=2, seed=2), "event_timestamp")
    lock = online.client.lock(f"fs:lock:{VIEW.name}:0of1", timeout=5, thread_local=False)
    assert lock.acquire(blocking=False)
    with pytest.raises(MaterializationLockedError, match="another materialization"):
        materialize(VIEW, local_offline, online, None, END)
    released = threading.Timer(0.5, lock.release)
    released.start()
    rep = materialize(VIEW, local_offline, online, None, END, lock_wait_s=5)  # waits, then runs
    assert rep.written > 0
    # two runs racing from threads: both finish, state is the single-run state
    errors: list[BaseException] = []

    def run() -> None:
        try:
            materialize(VIEW, local_offline, online, None, END, lock_wait_s=30)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_expired_rows_skip_and_ttl_zero(local_offline: OfflineStore, online: OnlineStore) -> None:
    view = replace(VIEW, ttl=timedelta(hours=1))
    old = rows((1, T0 - timedelta(days=5), T0 - timedelta(days=5), 1, 1.0, 0.0))
    local_offline.write_partitioned(view.source, old, "event_timestamp")
    rep = materialize(view, local_offline, online, None, END)
    assert rep.expired == 1 and rep.written == 0
    rep = materialize(replace(VIEW, ttl=timedelta(0)), local_offline, online, None, END)
    assert rep.written == 1


def _run_cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobs", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **env},
        timeout=timeout,
        check=False,
    )


def _seed(tmp_path: Path) -> dict[str, str]:
    return {"FEATURES_OFFLINE_URL": str(tmp_path / "offline"), "FEATURES_LOCK_TTL_SECONDS": "3"}


@pytest.mark.timed
def test_killed_runs_then_rerun_equal_one_clean_run(tmp_path: Path, redis_server: RedisServer) -> None:
    env = _seed(tmp_path)
    start = (T0 - timedelta(days=20)).date().isoformat()
    assert _run_cli(env, "seed", "--users", "3000", "--days", "20", "--start", start).returncode == 0
    assert _run_cli(env, "features", "--users", "3000", "--days", "20", "--start", start).returncode == 0
    clean_url, killed_url = redis_server.url.replace("/0", "/3"), redis_server.url.replace("/0", "/4")
    clean, killed = redis.Redis.from_url(clean_url), redis.Redis.from_url(killed_url)
    clean.flushdb()
    killed.flushdb()
    ok = _run_cli({**env, "FEATURES_REDIS_URL": clean_url}, "materialize-incremental")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    for delay in (0.3, 0.8, 1.3, 1.8):
        proc = subprocess.Popen(
            [sys.executable, "-m", "jobs", "materialize-incremental"],
            cwd=ROOT,
            env={**os.environ, **env, "FEATURES_REDIS_URL": killed_url},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    rerun = _run_cli({**env, "FEATURES_REDIS_URL": killed_url}, "materialize-incremental", "--lock-wait-seconds", "10")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert dump(clean, "user_stats") == dump(killed, "user_stats")
    assert clean.get("fs:meta:user_stats:watermark:0of1") == killed.get("fs:meta:user_stats:watermark:0of1")
    assert len(dump(clean, "user_stats")) > 1000


def test_cli_locked_exit_code_and_summary(tmp_path: Path, redis_server: RedisServer) -> None:
    env = {**_seed(tmp_path), "FEATURES_REDIS_URL": redis_server.url.replace("/0", "/5")}
    start = (T0 - timedelta(days=3)).date().isoformat()
    _run_cli(env, "seed", "--users", "50", "--days", "3", "--start", start)
    _run_cli(env, "features", "--users", "50", "--days", "3", "--start", start)
    client = redis.Redis.from_url(env["FEATURES_REDIS_URL"])
    lock = client.lock("fs:lock:user_stats:0of1", timeout=30)
    assert lock.acquire(blocking=False)
    try:
        res = _run_cli(env, "materialize", start, T0.date().isoformat())
        assert res.returncode == 3 and '"status":"error"' in res.stdout and "another materialization" in res.stdout
    finally:
        lock.release()
    res = _run_cli(env, "materialize", start, (T0 + timedelta(days=1)).date().isoformat())
    assert res.returncode == 0 and '"written":' in res.stdout
    bad = _run_cli({**env, "FEATURES_REDIS_URL": "redis://127.0.0.1:1/0"}, "materialize-incremental")
    assert bad.returncode == 1 and "online store unavailable" in bad.stdout


def test_repo_view_validation_used_by_cli() -> None:
    with pytest.raises(Exception, match="unknown feature view"):
        FeatureRepo([ENTITY], [VIEW]).view("nope")


def test_job_metrics_are_pushed(tmp_path: Path, redis_server: RedisServer) -> None:
    from devharness import Pushgateway

    gw = Pushgateway(tmp_path / "pgw")
    try:
        env = {
            **_seed(tmp_path),
            "FEATURES_REDIS_URL": redis_server.url.replace("/0", "/6"),
            "FEATURES_PUSHGATEWAY_URL": gw.url,
        }
        start = (T0 - timedelta(days=3)).date().isoformat()
        _run_cli(env, "seed", "--users", "60", "--days", "3", "--start", start)
        _run_cli(env, "features", "--users", "60", "--days", "3", "--start", start)
        # the feature job's own series, for FeatureJobFailed / FeatureJobStale
        features = [ln for ln in gw.metrics().splitlines() if 'job="features",view="user_stats"' in ln]
        rows = [ln for ln in features if ln.startswith("mlplatform_job_rows_written{")]
        assert rows and float(rows[0].rsplit(" ", 1)[1]) > 0, features
        assert any(ln.startswith("mlplatform_job_last_run_success{") and ln.endswith(" 1") for ln in features)
        failed = _run_cli({**env, "FEATURES_OFFLINE_URL": str(tmp_path / "no-such-store")}, "features", "--users", "60")
        assert failed.returncode == 1, failed.stdout
        features = [ln for ln in gw.metrics().splitlines() if 'job="features",view="user_stats"' in ln]
        assert any(ln.startswith("mlplatform_job_last_run_success{") and ln.endswith(" 0") for ln in features)
        assert any(ln.startswith("mlplatform_job_last_success_timestamp_seconds{") for ln in features)
        ok = _run_cli(env, "materialize-incremental", "--shard", "1", "--shards", "2")
        assert ok.returncode == 0, ok.stdout + ok.stderr
        text = gw.metrics()
        series = [ln for ln in text.splitlines() if ln.startswith("mlplatform_job_")]
        labels = 'job="materialize",shard="1of2",view="user_stats"'
        written = [ln for ln in series if ln.startswith("mlplatform_job_entities_written{") and labels in ln]
        assert written and float(written[0].rsplit(" ", 1)[1]) > 0
        assert any(ln.startswith("mlplatform_job_last_run_success{") and ln.endswith(" 1") for ln in series)
        # a failed run says so, and keeps the time of the last success
        bad = _run_cli(
            {**env, "FEATURES_REDIS_URL": "redis://127.0.0.1:1/0"},
            "materialize-incremental",
            "--shard",
            "1",
            "--shards",
            "2",
        )
        assert bad.returncode == 1
        text = gw.metrics()

        def value(name: str) -> float | None:  # the pushgateway adds instance="" before our labels
            hits = [ln for ln in text.splitlines() if ln.startswith(name + "{") and labels in ln]
            return float(hits[0].rsplit(" ", 1)[1]) if hits else None

        assert value("mlplatform_job_last_run_success") == 0
        assert value("mlplatform_job_last_success_timestamp_seconds") is not None
    finally:
        gw.stop()
