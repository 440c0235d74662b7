"""The demo's drift step (demo/drift.py) on the reference scenario, against real valkey and gunicorn, as
``make demo`` runs it: against a baseline window of served traffic the first, unshifted half flags nothing,
and the second half (amounts x3) flags the amount, what the request-time transform computes from it and the
score, and nothing else."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from demo.drift import AMOUNT_DEPENDENT, drift_step
from devharness import GunicornService, RedisServer
from devharness.jobs import run_job
from jobs.settings import REFERENCE_REPO

pytestmark = pytest.mark.integration
USERS, DAYS = 400, 14  # ~8,000 transactions: the step's 3,000 newest have current online features


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, str], Path]]:
    work = tmp_path_factory.mktemp("demo-drift")
    start = (datetime.now(UTC) - timedelta(days=DAYS - 1)).date().isoformat()  # as the demo: ending today
    with RedisServer(work / "redis") as rs:
        env = {
            "FEATURES_OFFLINE_URL": str(work / "offline"),
            "FEATURES_REDIS_URL": rs.url,
            "MODEL_STORE_URL": str(work / "models"),
            "FEATURES_REPO": REFERENCE_REPO,
        }
        for args in (
            ("seed", "--users", str(USERS), "--days", str(DAYS), "--start", start),
            ("features", "--users", str(USERS), "--days", str(DAYS), "--start", start),
            ("materialize-incremental",),
            ("train", "--dataset", "fraud", "--name", "fraud", "--n-estimators", "20"),
        ):
            run_job(*args, env=env).ok()
        yield env, work


def jobs(env: dict[str, str], *args: str) -> dict[str, Any]:
    result: dict[str, Any] = run_job(*args, env=env).ok()
    return result


def test_the_demo_monitor_flags_the_shifted_half_only(scenario: tuple[dict[str, str], Path], tmp_path: Path) -> None:
    env, _ = scenario
    srv = GunicornService(
        tmp_path / "predict",
        {
            "MODEL_STORE_URL": env["MODEL_STORE_URL"],
            "FEATURES_REDIS_URL": env["FEATURES_REDIS_URL"],
            "FEATURES_REPO": REFERENCE_REPO,
            "MONITORING_LOG_URL": str(tmp_path / "served"),
            "MONITORING_LOG_SAMPLE_RATE": "1",
            "MONITORING_LOG_FLUSH_SECONDS": "0.3",
        },
    )
    try:
        srv.wait_ready()
        result = drift_step(jobs, env, srv.url, tmp_path / "served", tmp_path / "drift", users=USERS, flush_s=1.0)
    finally:
        srv.stop()
    assert result.first_half == []
    assert AMOUNT_DEPENDENT <= set(result.second_half) <= AMOUNT_DEPENDENT | {"__score__"}
    # Against the training profile the served user statistics differ ("as of now" against point in time):
    # what the demo explains instead of showing it as drift.
    assert result.against_training
    assert sorted(p.name for p in (tmp_path / "drift").glob("*.html")) == [
        f"{name}-drift-fraud-{p}.html"
        for name, p in [
            ("first-half", _version(env)),
            ("first-half-vs-training", _version(env)),
            ("second-half-amounts-x3", _version(env)),
        ]
    ]


def _version(env: dict[str, str]) -> str:
    from app.modelstore import open_store

    version = open_store(env["MODEL_STORE_URL"]).latest("fraud")
    assert version is not None
    return version
