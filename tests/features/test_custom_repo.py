"""A newcomer's own feature view and request-time transform (tests/features/custom_repo.py, outside app/):
materialized to a real valkey, trained on through the jobs CLI, served by entity id under real gunicorn,
with nothing under app/ changed or configured beyond the references. A version whose transform cannot be
imported is refused at load; the previous version keeps serving."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.features.offline import OfflineStore
from app.modelstore import LocalModelStore
from devharness import GunicornService, RedisServer, wait_until
from devharness.jobs import run_job
from tests.features import custom_repo
from tests.features.conftest import T0

pytestmark = pytest.mark.integration
REPO = "tests.features.custom_repo:custom_repo"
USERS = 300


def jobs(env: dict[str, str], *args: str) -> dict[str, Any]:
    return run_job(*args, env=env).ok()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    work = tmp_path_factory.mktemp("custom")
    profiles = custom_repo.profiles(USERS, seed=1)
    offline = OfflineStore(str(work / "offline"))
    day_us = int((T0 - timedelta(days=3)).timestamp() * 1e6)
    offline.write_partitioned(
        custom_repo.user_profile.source, custom_repo.profile_table(profiles, day_us), "event_timestamp"
    )
    events = custom_repo.event_table(profiles, 4000, day_us + 3_600_000_000, seed=2)
    offline.write_partitioned(custom_repo.EVENTS, events, "timestamp")
    with RedisServer(work / "redis") as rs:
        env = {
            "FEATURES_REPO": REPO,
            "FEATURES_OFFLINE_URL": str(work / "offline"),
            "FEATURES_REDIS_URL": rs.url,
            "MODEL_STORE_URL": str(work / "models"),
        }
        materialized = jobs(env, "materialize-incremental", "--view", "user_profile")
        trained = jobs(
            env,
            "train",
            "--training-set",
            "tests.features.custom_repo:risk_training_set",
            "--name",
            "risk",
            "--n-estimators",
            "30",
        )
        service_env = {
            "MODEL_STORE_URL": str(work / "models"),
            "FEATURES_REDIS_URL": rs.url,
            "FEATURES_REPO": REPO,
        }
        with GunicornService(work / "svc", service_env).wait_ready() as srv:
            yield {"srv": srv, "work": work, "profiles": profiles, "materialized": materialized, "trained": trained}


def test_trained_on_the_custom_view_through_the_recorded_transform(served: dict[str, Any]) -> None:
    assert served["materialized"]["written"] == USERS, served["materialized"]
    meta = LocalModelStore(served["work"] / "models").read_metadata("risk", served["trained"]["version"])
    assert meta.online_features is not None
    assert meta.online_features.transform == "tests.features.custom_repo:risk_v1"
    assert meta.online_features.feature_refs == ["user_profile:credit_limit", "user_profile:years_customer"]
    assert meta.feature_names == ["credit_limit", "years_customer", "amount", "amount_to_limit"]
    assert meta.target_name == "is_risky" and meta.metrics["accuracy"] > 0.9


def test_served_by_entity_id(served: dict[str, Any]) -> None:
    limits = served["profiles"]["credit_limit"]
    users = [3, 17, 250]
    safe = [{"user_id": u, "amount": float(limits[u] * 0.05)} for u in users]
    risky = [{"user_id": u, "amount": float(limits[u] * 0.95)} for u in users]
    r = httpx.post(f"{served['srv'].url}/v1/models/risk/predict", json={"instances": safe + risky}, timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["predictions"] == [0, 0, 0, 1, 1, 1]
    unknown = httpx.post(
        f"{served['srv'].url}/v1/models/risk/predict", json={"instances": [{"user_id": 99999, "amount": 1.0}]}
    )
    assert unknown.status_code == 404 and "user_id 99999" in unknown.json()["error"]


def test_a_version_whose_transform_cannot_be_imported_is_refused(served: dict[str, Any]) -> None:
    store = LocalModelStore(served["work"] / "models")
    good = served["trained"]["version"]
    meta, artifact = store.read_version("risk", good)
    assert meta.online_features is not None
    broken = meta.model_copy(
        update={
            "version": "zz-broken-transform",
            "online_features": meta.online_features.model_copy(update={"transform": "tests.features.nowhere:risk_v1"}),
        }
    )
    store.publish(broken, artifact, set_latest=True, onnx_graph=store.read_onnx(meta))
    log: Path = served["srv"].server.log
    wait_until(lambda: "tests.features.nowhere" in log.read_text(), 20, "the rejection in the log")
    assert "cannot import 'tests.features.nowhere'" in log.read_text()
    r = httpx.post(
        f"{served['srv'].url}/v1/models/risk/predict", json={"instances": [{"user_id": 3, "amount": 1.0}]}, timeout=10
    )
    assert r.status_code == 200 and r.json()["version"] == good
