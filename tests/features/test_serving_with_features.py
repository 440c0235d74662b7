"""Train on point-in-time features, materialize, serve by user_id: the seed's answer to skew."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pytest

from app.features.historical import get_historical_features
from app.features.offline import OfflineStore
from app.modelstore import LocalModelStore
from devharness import ROOT, GunicornService, RedisServer, free_port, wait_until
from devharness.jobs import run_job
from examples.fraud import transforms
from examples.fraud.repo import reference_repo, user_stats
from jobs.settings import REFERENCE_REPO
from tests.features.conftest import T0
from tests.predict.helpers import reference

pytestmark = pytest.mark.integration
DAYS = 20
START = (T0 - timedelta(days=DAYS - 1)).date().isoformat()


def jobs(env: dict[str, str], *args: str) -> dict[str, Any]:
    return run_job(*args, env=env).ok()


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    work = tmp_path_factory.mktemp("fraud")
    with RedisServer(work / "redis") as rs:  # stopped even if a job or the service fails
        env = {
            "FEATURES_OFFLINE_URL": str(work / "offline"),
            "FEATURES_REDIS_URL": rs.url,
            "MODEL_STORE_URL": str(work / "models"),
        }
        jobs(env, "seed", "--users", "400", "--days", str(DAYS), "--start", START)
        jobs(env, "features", "--users", "400", "--days", str(DAYS), "--start", START)
        jobs(env, "train", "--dataset", "fraud", "--name", "fraud", "--n-estimators", "30")
        jobs(env, "materialize-incremental")
        with GunicornService(
            work / "svc",
            {
                "MODEL_STORE_URL": str(work / "models"),
                "FEATURES_REDIS_URL": rs.url,
                "FEATURES_REPO": REFERENCE_REPO,
            },
        ).wait_ready() as srv:
            yield {"srv": srv, "env": env, "work": work, "redis": rs}


def test_model_learned_from_point_in_time_features(platform: dict[str, Any]) -> None:
    model = reference(LocalModelStore(platform["work"] / "models"), "fraud")
    meta = model.meta
    assert meta.online_features is not None and meta.feature_views == ["user_stats"]
    # 2% of labels are flipped at random, which caps what any model can reach
    assert meta.metrics["roc_auc"] > 0.8 and meta.metrics["f1_macro"] > 0.8, meta.metrics
    assert meta.feature_names == list(transforms.MODEL_COLUMNS)


def test_served_predictions_equal_offline_ones(platform: dict[str, Any]) -> None:
    srv: GunicornService = platform["srv"]
    offline = OfflineStore(platform["env"]["FEATURES_OFFLINE_URL"])
    model = reference(LocalModelStore(platform["work"] / "models"), "fraud")
    users = list(range(1, 41))
    rng = np.random.default_rng(5)
    amount = np.round(rng.uniform(1, 400, len(users)), 2)
    category = rng.integers(0, 10, len(users))
    # Offline: the same features as of now, through the training code path.
    now = pa.array([T0 + timedelta(days=1, hours=1)] * len(users), pa.timestamp("us", tz="UTC"))
    rows = pa.table({"user_id": pa.array(users, pa.int64()), "event_timestamp": now})
    refs = [f"user_stats:{f}" for f in transforms.STATS_FEATURES]
    hist = get_historical_features(rows, refs, reference_repo(), offline)
    stats = {
        f: np.asarray(hist.column(f).cast(pa.float64()).to_numpy(zero_copy_only=False))
        for f in transforms.STATS_FEATURES
    }
    present = ~np.isnan(stats["txn_count_30d"])
    expected = model.predict_proba(transforms.model_matrix(stats, amount, category))
    body = {
        "instances": [
            {"user_id": u, "amount": float(a), "merchant_category": int(c)}
            for u, a, c in zip(users, amount, category, strict=True)
            if present[users.index(u)]
        ]
    }
    r = httpx.post(srv.url + "/v1/models/fraud/predict", json=body)
    assert r.status_code == 200, r.text
    got = np.array([[p["0"], p["1"]] for p in r.json()["probabilities"]])
    # float32 ONNX engine: held to scikit-learn at 1e-5 (PREDICT_ONNX_TOLERANCE)
    np.testing.assert_allclose(got, expected[present], atol=1e-5)
    assert set(r.json()["feature_status"]) == {"PRESENT"}
    # the V2 protocol with one tensor per request field works the same
    v2 = {
        "inputs": [
            {
                "name": k,
                "shape": [len(body["instances"])],
                "datatype": "FP64",
                "data": [i[k] for i in body["instances"]],
            }
            for k in ("user_id", "amount", "merchant_category")
        ]
    }
    r2 = httpx.post(srv.url + "/v2/models/fraud/infer", json=v2)
    assert r2.status_code == 200, r2.text
    proba = np.array(next(o for o in r2.json()["outputs"] if o["name"] == "predict_proba")["data"]).reshape(-1, 2)
    np.testing.assert_allclose(proba, expected[present], atol=1e-5)


def test_unknown_entity_and_bad_ids(platform: dict[str, Any]) -> None:
    srv: GunicornService = platform["srv"]
    r = httpx.post(
        srv.url + "/v1/models/fraud/predict",
        json={"instances": [{"user_id": 999999, "amount": 5.0, "merchant_category": 1}]},
    )
    assert r.status_code == 404 and "user_id 999999: no current features" in r.json()["error"]
    r = httpx.post(
        srv.url + "/v1/models/fraud/predict",
        json={"instances": [{"user_id": 1.5, "amount": 5.0, "merchant_category": 1}]},
    )
    assert r.status_code == 400 and "must be an integer" in r.json()["error"]
    r = httpx.post(srv.url + "/v1/models/fraud/predict", json={"instances": [{"user_id": 1, "amount": 5.0}]})
    assert r.status_code == 400 and "merchant_category" in r.json()["error"]


def test_missing_policy_zeros_and_redis_down(platform: dict[str, Any], tmp_path: Path) -> None:
    models = str(platform["work"] / "models")
    srv = GunicornService(
        tmp_path / "zeros",
        {
            "MODEL_STORE_URL": models,
            "FEATURES_REDIS_URL": platform["redis"].url,
            "FEATURES_REPO": REFERENCE_REPO,
            "PREDICT_MISSING_ENTITY_POLICY": "zeros",
        },
    ).wait_ready()
    try:
        r = httpx.post(
            srv.url + "/v1/models/fraud/predict",
            json={"instances": [{"user_id": 999999, "amount": 5.0, "merchant_category": 1}]},
        )
        assert r.status_code == 200 and r.json()["feature_status"] == ["MISSING"]
    finally:
        srv.stop()
    down = GunicornService(
        tmp_path / "down",
        {
            "MODEL_STORE_URL": models,
            "FEATURES_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
            "FEATURES_REPO": REFERENCE_REPO,
            "PREDICT_FEATURES_TIMEOUT_MS": "100",
        },
    ).wait_live()
    try:
        r = httpx.post(
            down.url + "/v1/models/fraud/predict",
            json={"instances": [{"user_id": 1, "amount": 5.0, "merchant_category": 1}]},
        )
        assert r.status_code == 503 and "online store" in r.json()["error"]
        assert r.elapsed.total_seconds() < 1.0
        # readiness says what a request would find (issue 23): the model that reads features is not ready
        ready = httpx.get(down.url + "/readyz")
        assert ready.status_code == 503 and "fraud: unavailable (online store" in ready.json()["error"], ready.text
    finally:
        down.stop()


def test_model_needing_features_is_not_served_without_an_online_store(platform: dict[str, Any], tmp_path: Path) -> None:
    srv = GunicornService(tmp_path / "nofs", {"MODEL_STORE_URL": str(platform["work"] / "models")}).wait_live()
    try:
        r = httpx.get(srv.url + "/readyz")
        assert r.status_code == 503 and "fraud" in r.json()["error"]
        assert "set FEATURES_REDIS_URL" in srv.server.log_text()
    finally:
        srv.stop()
    assert user_stats.name == "user_stats"


def test_a_refused_password_makes_the_feature_reading_model_unready(platform: dict[str, Any], tmp_path: Path) -> None:
    """Issue 23: /readyz stayed 200 with a wrong Redis password while every request needing features got 503."""
    rs = platform["redis"]
    wrong = rs.url.replace("redis://", "redis://:wrong-password@", 1)
    env = {
        "MODEL_STORE_URL": str(platform["work"] / "models"),
        "FEATURES_REDIS_URL": wrong,
        "FEATURES_REPO": REFERENCE_REPO,
    }
    srv = GunicornService(tmp_path / "wrongpass", env).wait_live()
    try:
        wait_until(lambda: httpx.get(srv.url + "/readyz").status_code == 503, 20, "unready on a refused password")
        ready = httpx.get(srv.url + "/readyz").json()["error"]
        assert "fraud: unavailable (online store" in ready, ready
        assert httpx.get(srv.url + "/v2/models/fraud/ready").status_code == 503
        r = httpx.post(
            srv.url + "/v1/models/fraud/predict",
            json={"instances": [{"user_id": 1, "amount": 5.0, "merchant_category": 1}]},
        )
        assert r.status_code == 503, r.text
    finally:
        srv.stop()


def test_model_needing_features_is_refused_without_a_feature_repository(
    platform: dict[str, Any], tmp_path: Path
) -> None:
    """The platform names no repository of its own: a model that reads features needs one configured."""
    env = {
        "MODEL_STORE_URL": str(platform["work"] / "models"),
        "FEATURES_REDIS_URL": platform["redis"].url,
    }
    srv = GunicornService(tmp_path / "norepo", env).wait_live()
    try:
        r = httpx.get(srv.url + "/readyz")
        assert r.status_code == 503 and "fraud" in r.json()["error"]
        assert "no feature repository is configured: set FEATURES_REPO" in srv.server.log_text()
    finally:
        srv.stop()


def test_batch_predictions_match_online_ones(platform: dict[str, Any]) -> None:
    srv: GunicornService = platform["srv"]
    env = platform["env"]
    as_of = (T0 + timedelta(days=1, hours=1)).isoformat()
    out = jobs(
        env,
        "batch-predict",
        "--model",
        "fraud",
        "--as-of",
        as_of,
        "--request",
        "amount=250",
        "--request",
        "merchant_category=8",
    )
    assert out["status"] == "ok" and "entities" in out
    offline = OfflineStore(env["FEATURES_OFFLINE_URL"])
    table = offline.read_window("predictions/fraud", "as_of", None, None)
    assert table.num_rows > 300 and set(table.column("version").to_pylist()) == {
        reference(LocalModelStore(platform["work"] / "models"), "fraud").version
    }
    for user in (1, 2, 3):
        pre = httpx.get(srv.url + f"/v1/models/fraud/precomputed/{user}")
        assert pre.status_code == 200, pre.text
        live = httpx.post(
            srv.url + "/v1/models/fraud/predict",
            json={"instances": [{"user_id": user, "amount": 250, "merchant_category": 8}]},
        )
        assert pre.json()["probabilities"] == pytest.approx(live.json()["probabilities"][0], abs=1e-9)
    assert httpx.get(srv.url + "/v1/models/fraud/precomputed/999999").status_code == 404
    bad = subprocess.run(
        [sys.executable, "-m", "jobs", "batch-predict", "--model", "fraud", "--request", "amount=1"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **env},
        check=False,
    )
    assert bad.returncode == 1 and "missing ['merchant_category']" in bad.stdout
