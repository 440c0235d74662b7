"""The materializer CronJob's command with a Pushgateway set, in the environment a pod gives it.

Finding 3 of issue 8: the jobs image set PROMETHEUS_MULTIPROC_DIR=/tmp/prometheus, /tmp is an
emptyDir, and the push raised FileNotFoundError after Redis was written, so every run exited 1.
A multiprocess directory that does not exist must change nothing for a job."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from devharness import Pushgateway, RedisServer
from devharness.jobs import run_job
from tests.features.conftest import T0

pytestmark = pytest.mark.integration


@pytest.fixture
def valkey(tmp_path: Path) -> Iterator[RedisServer]:
    srv = RedisServer(tmp_path / "valkey")
    try:
        yield srv
    finally:
        srv.stop()


def _jobs(env: dict[str, str], *args: str) -> dict[str, Any]:
    return run_job(*args, env=env, timeout=180).ok()


def test_materialize_pushes_with_a_missing_multiproc_dir(tmp_path: Path, valkey: RedisServer) -> None:
    gw = Pushgateway(tmp_path / "pgw")
    try:
        missing = tmp_path / "emptydir" / "prometheus"  # what /tmp/prometheus is in a fresh pod
        env = {
            "FEATURES_OFFLINE_URL": str(tmp_path / "offline"),
            "FEATURES_REDIS_URL": valkey.url,
            "FEATURES_PUSHGATEWAY_URL": gw.url,
            "PROMETHEUS_MULTIPROC_DIR": str(missing),
        }
        start = (T0 - timedelta(days=2)).date().isoformat()
        for step in (("seed",), ("features",)):
            _jobs(env, *step, "--users", "40", "--days", "2", "--start", start)
        assert _jobs(env, "materialize-incremental")["status"] == "ok"
        assert redis.Redis.from_url(valkey.url).dbsize() > 0
        series = [ln for ln in gw.metrics().splitlines() if ln.startswith("mlplatform_job_")]
        labels = 'job="materialize",shard="0of1",view="user_stats"'
        written = [ln for ln in series if ln.startswith("mlplatform_job_entities_written{") and labels in ln]
        assert written and float(written[0].rsplit(" ", 1)[1]) > 0, series
        success = [ln for ln in series if ln.startswith("mlplatform_job_last_run_success{") and labels in ln]
        assert success and success[0].endswith(" 1"), series
        assert not missing.exists()  # nothing wrote multiprocess files on the job's behalf
    finally:
        gw.stop()
