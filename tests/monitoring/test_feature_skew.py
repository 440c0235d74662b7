"""Feature logic skew and outcomes on the reference scenario, against real gunicorn, valkey and the
offline store: a consistent pipeline reports zero mismatches; a service whose transform differs from
training's (the serving image's code changed: amount scaled by 1.1) is caught on the features that
depend on the amount, and on them only; late labels give the AUC of the scores the service returned."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score

from app.features.offline import OfflineStore
from app.features.online import OnlineStore, Status, connect
from devharness import GunicornService, Pushgateway, RedisServer, wait_until
from devharness.jobs import run_job
from examples.fraud.repo import TRANSACTIONS, user_stats
from jobs.settings import REFERENCE_REPO
from tests.features.conftest import T0

pytestmark = pytest.mark.integration
DAYS = 10
USERS = 200
START = (T0 - timedelta(days=DAYS - 1)).date().isoformat()
AMOUNT_DEPENDENT = {"amount", "amount_to_mean_30d", "amount_to_max_30d"}

# Loaded first by the skewed service's interpreter: the transform the model names now scales the amount,
# as if the serving image shipped other transform code than the trainer ran.
SKEWED_SITECUSTOMIZE = """
import dataclasses
import numpy as np
import examples.fraud.transforms as t
_original = t.fraud_v1.fn
def _skewed(stats, request):
    return _original(stats, request * np.array([1.1] + [1.0] * (request.shape[1] - 1)))
t.fraud_v1 = dataclasses.replace(t.fraud_v1, fn=_skewed)
"""


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, str], Path]]:
    work = tmp_path_factory.mktemp("skew")
    with RedisServer(work / "redis") as rs:
        env = {"FEATURES_OFFLINE_URL": str(work / "offline"), "FEATURES_REDIS_URL": rs.url}
        env["MODEL_STORE_URL"] = str(work / "models")
        for args in (
            ("seed", "--users", str(USERS), "--days", str(DAYS), "--start", START),
            ("features", "--users", str(USERS), "--days", str(DAYS), "--start", START),
            ("train", "--dataset", "fraud", "--name", "fraud", "--n-estimators", "10"),
            ("materialize-incremental",),
        ):
            run_job(*args, env=env).ok()
        yield env, work


def _transactions(env: dict[str, str]) -> list[dict[str, Any]]:
    """Labeled transactions of users with current online features: every fraud, and non-frauds to 120."""
    present = OnlineStore(connect(env["FEATURES_REDIS_URL"])).read(
        [(user_stats, user_stats.feature_names)], range(1, USERS + 1)
    )[0]
    users = {u for u, s in zip(range(1, USERS + 1), present.statuses, strict=True) if s is Status.PRESENT}
    tx = OfflineStore(env["FEATURES_OFFLINE_URL"]).read_window(TRANSACTIONS, "timestamp", None, None).to_pylist()
    tx = [t for t in tx if t["user_id"] in users]
    fraud = [t for t in tx if t["is_fraud"]][:30]
    return fraud + [t for t in tx if not t["is_fraud"]][: 120 - len(fraud)]


def _serve(
    env: dict[str, str], work: Path, log: Path, extra: dict[str, str], txs: list[dict[str, Any]]
) -> list[tuple[int, float, float, int]]:
    """Each transaction through the service, one request each; (user, score, label time, label)."""
    srv = GunicornService(
        work,
        {
            "MODEL_STORE_URL": env["MODEL_STORE_URL"],
            "FEATURES_REDIS_URL": env["FEATURES_REDIS_URL"],
            "FEATURES_REPO": REFERENCE_REPO,
            "MONITORING_LOG_URL": str(log),
            "MONITORING_LOG_SAMPLE_RATE": "1",
            "MONITORING_LOG_FLUSH_SECONDS": "0.3",
            **extra,
        },
    )
    out = []
    try:
        srv.wait_ready()
        with httpx.Client() as c:
            for t in txs:
                body = {
                    "instances": [
                        {"user_id": t["user_id"], "amount": t["amount"], "merchant_category": t["merchant_category"]}
                    ]
                }
                r = c.post(f"{srv.url}/v1/models/fraud/predict", json=body)
                assert r.status_code == 200, r.text
                out.append((t["user_id"], r.json()["probabilities"][0]["1"], time.time(), int(t["is_fraud"])))
        wait_until(
            lambda: sum(pq.read_metadata(f).num_rows for f in log.rglob("*.parquet")) == len(txs), 15, "served log"
        )
    finally:
        srv.stop()
    return out


def test_consistent_pipeline_reports_zero_and_a_skewed_transform_is_caught(
    scenario: tuple[dict[str, str], Path], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    env, _ = scenario
    txs = _transactions(env)
    assert sum(t["is_fraud"] for t in txs) >= 5, "too few frauds for an AUC"
    served = _serve(env, tmp_path / "svc", tmp_path / "log", {}, txs)

    consistent = run_job("feature-skew", "--model", "fraud", "--served-log", str(tmp_path / "log"), env=env).ok()
    assert consistent["rows"] == len(txs) and consistent["skipped"] == 0
    assert consistent["skewed"] == [] and set(consistent["mismatch_share"].values()) == {0.0}

    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SKEWED_SITECUSTOMIZE)
    _serve(env, tmp_path / "svc-skewed", tmp_path / "log-skewed", {"PYTHONPATH": str(site)}, txs)
    run = run_job(
        "feature-skew", "--model", "fraud", "--served-log", str(tmp_path / "log-skewed"), "--fail-on-skew", env=env
    )
    assert run.code == 1 and run.summary["status"] == "error" and "feature logic skew" in run.summary["error"]
    pgw = Pushgateway(tmp_path / "pgw")
    request.addfinalizer(pgw.stop)
    skewed = run_job(
        "feature-skew",
        "--model",
        "fraud",
        "--served-log",
        str(tmp_path / "log-skewed"),
        "--pushgateway",
        pgw.url,
        env=env,
    ).ok()
    assert re.search(r'model_feature_logic_skew\{[^}]*feature="amount"[^}]*\} 1(\.0)?\n', pgw.metrics())
    assert set(skewed["skewed"]) == AMOUNT_DEPENDENT
    assert skewed["mismatch_share"]["amount"] == 1.0
    assert all(skewed["mismatch_share"][f] == 0.0 for f in user_stats.feature_names)

    # Labels arrive later: (user, time, is_fraud) per served transaction; the live AUC is the AUC of the
    # scores the service returned.
    labels = tmp_path / "labels"
    labels.mkdir()
    pq.write_table(
        pa.table(
            {
                "entity": [str(u) for u, _, _, _ in served],
                "ts": pa.array([datetime.fromtimestamp(t, UTC) for _, _, t, _ in served], pa.timestamp("us", tz="UTC")),
                "label": [y for _, _, _, y in served],
            }
        ),
        labels / "labels.parquet",
    )
    result = run_job(
        "outcomes",
        "--model",
        "fraud",
        "--labels",
        str(labels),
        "--served-log",
        str(tmp_path / "log"),
        "--pushgateway",
        pgw.url,
        env=env,
    ).ok()
    assert result["matched"] == len(served) and result["unmatched"] == 0
    ((_, live),) = result["versions"].items()
    y = np.array([y for *_, y in served])
    scores = np.array([s for _, s, _, _ in served])
    assert live["labeled"] == len(served) and live["positives"] == int(y.sum())
    assert live["auc"] == pytest.approx(roc_auc_score(y, scores), abs=1e-9)
    assert 0 <= live["calibration_error"] <= 1 and live["log_loss"] > 0
    auc = re.search(r'model_live_auc\{[^}]*model="fraud"[^}]*window="1d"[^}]*\} (\S+)', pgw.metrics())
    assert auc and float(auc.group(1)) == pytest.approx(live["auc"])
