"""One event, three serving modes, one answer: the HTTP API, the stream scorer and batch-predict give the
fraud model's same probabilities for the same user and request (seed's "no skew between modes")."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from app.features.offline import OfflineStore
from app.modelstore import LocalModelStore
from app.runtime.registry import ModelRegistry
from app.stream.scorer import StreamScorer
from devharness import GunicornService, RedisServer
from devharness.jobs import run_job
from jobs.settings import REFERENCE_REPO
from tests.stream.conftest import stream_settings
from tests.stream.test_scorer import drain

DAYS = 12
TODAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
START = (TODAY - timedelta(days=DAYS)).date().isoformat()
USERS = list(range(1, 21))
REQUEST = {"amount": 250.0, "merchant_category": 8}


@pytest.fixture(scope="module")
def fraud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    work = tmp_path_factory.mktemp("modes")
    with RedisServer(work / "redis") as rs:
        env = {
            "FEATURES_OFFLINE_URL": str(work / "offline"),
            "FEATURES_REDIS_URL": rs.url,
            "MODEL_STORE_URL": str(work / "models"),
        }
        for args in (
            ("seed", "--users", "200", "--days", str(DAYS), "--start", START),
            ("features", "--users", "200", "--days", str(DAYS), "--start", START),
            ("train", "--dataset", "fraud", "--name", "fraud", "--n-estimators", "20"),
            ("materialize-incremental",),
        ):
            run_job(*args, env=env).ok()
        service_env = {
            "MODEL_STORE_URL": env["MODEL_STORE_URL"],
            "FEATURES_REDIS_URL": rs.url,
            "FEATURES_REPO": REFERENCE_REPO,
            "STREAM_REDIS_URL": rs.url,  # the decision lookup reads the scorer's broker
            "PREDICT_MISSING_ENTITY_POLICY": "zeros",  # as the scorer's default: a new user is scored
        }
        with GunicornService(work / "svc", service_env).wait_ready() as srv:
            yield {"env": env, "work": work, "redis": rs, "srv": srv}


async def test_http_stream_and_batch_give_the_same_probabilities(fraud: dict[str, Any]) -> None:
    rs: RedisServer = fraud["redis"]
    srv: GunicornService = fraud["srv"]
    # HTTP
    body = {"instances": [{"user_id": u, **REQUEST} for u in USERS]}
    http = httpx.post(srv.url + "/v1/models/fraud/predict", json=body, timeout=10).json()
    # Stream: the same events through the scorer, read back through the prediction service's route.
    settings = stream_settings(
        rs.url,
        fraud["work"] / "models",
        model="fraud",
        FEATURES_REDIS_URL=rs.url,
        FEATURES_REPO=REFERENCE_REPO,
    )
    registry = ModelRegistry(settings, LocalModelStore(fraud["work"] / "models"))
    client = aioredis.Redis.from_url(rs.url)
    await registry.start()
    try:
        now_ms = int(datetime.now(UTC).timestamp() * 1000)
        for u in USERS:
            fields = {"event_id": f"u{u}", "event_time_ms": now_ms, "user_id": u, **REQUEST}
            await client.xadd("transactions:{0}", {k: str(v) for k, v in fields.items()})
        await drain(StreamScorer(settings, client, registry))
    finally:
        await registry.stop()
        await client.aclose()
    stream = [httpx.get(srv.url + f"/v1/decisions/u{u}", timeout=10).json() for u in USERS]
    # Batch: every entity as of now, with the same request-time fields.
    as_of = datetime.now(UTC).isoformat()
    run_job(
        "batch-predict", "--model", "fraud", "--as-of", as_of, "--request", "amount=250",
        "--request", "merchant_category=8", env=fraud["env"],
    ).ok()  # fmt: skip
    table = OfflineStore(fraud["env"]["FEATURES_OFFLINE_URL"]).read_window("predictions/fraud", "as_of", None, None)
    batch = {r["user_id"]: r for r in table.to_pylist()}
    assert len(set(USERS) & set(batch)) >= 10  # batch scores users with current features only
    # an unknown user (no current features) is scored as one with no history, by both, not refused
    assert "MISSING" in [d["feature_status"] for d in stream]
    for i, u in enumerate(USERS):
        assert stream[i]["version"] == http["version"]
        assert stream[i]["probabilities"] == http["probabilities"][i]
        assert stream[i]["feature_status"] == http["feature_status"][i]
        if u in batch:
            assert http["feature_status"][i] == "PRESENT"
            assert [batch[u][f"proba_{c}"] for c in ("0", "1")] == pytest.approx(
                [http["probabilities"][i][c] for c in ("0", "1")], abs=1e-9
            )


def test_the_decision_route_answers_404_for_an_unknown_event(fraud: dict[str, Any], tmp_path: Path) -> None:
    srv: GunicornService = fraud["srv"]
    r = httpx.get(srv.url + "/v1/decisions/never-sent", timeout=10)
    assert r.status_code == 404 and "never-sent" in r.text
