"""The HTTP feature endpoint under gunicorn, against a real Redis."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from app.features.online import OnlineStore
from devharness import GunicornService, RedisServer, free_port
from examples.fraud.repo import user_stats
from jobs.settings import REFERENCE_REPO
from tests.features.conftest import TS

# The view's TTL (2 days) is measured against the wall clock when the test runs, so the fresh rows are an
# hour old, not "yesterday's midnight": a module imported before 00:00 UTC and run after it would
# otherwise read them as EXPIRED.
FRESH = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)

pytestmark = pytest.mark.integration
F7 = ["user_stats:txn_count_7d"]


def _user_rows() -> object:
    import pyarrow as pa

    n = 3
    cols = {
        "user_id": pa.array([1, 2, 3], pa.int64()),
        "event_timestamp": pa.array([FRESH, FRESH, FRESH - timedelta(days=10)], TS),
        "created_timestamp": pa.array([FRESH, FRESH, FRESH - timedelta(days=10)], TS),
    }
    for f in user_stats.features:
        cols[f.name] = pa.array([1, 2, 3][:n], pa.int64()).cast(f.dtype)
    cols["amount_std_30d"] = pa.array([None, 1.5, 2.0], pa.float32())
    return pa.table(cols)


@pytest.fixture(scope="module")
def feature_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GunicornService, RedisServer]]:
    work = tmp_path_factory.mktemp("fsrv")
    with RedisServer(work / "redis") as rs:  # stopped even if the writes or the service fail
        store = OnlineStore(redis.Redis.from_url(rs.url), expiry_grace=timedelta(days=30))
        store.write_latest(user_stats, _user_rows())  # type: ignore[arg-type]
        with GunicornService(
            work / "svc",
            {
                "FEATURES_REDIS_URL": rs.url,
                "FEATURES_REPO": REFERENCE_REPO,
                "FEATURES_MAX_ENTITIES": "100",
                "FEATURES_EXPIRY_GRACE_HOURS": "720",
            },
            app="app.featureserver.main:app",
        ) as srv:
            yield srv.wait_ready(), rs


def test_values_statuses_and_timestamps(feature_server: tuple[GunicornService, RedisServer]) -> None:
    srv, _ = feature_server
    body = {
        "entities": {"user_id": [1, 2, 3, 4]},
        "features": ["user_stats:txn_count_7d", "user_stats:amount_std_30d"],
    }
    r = httpx.post(srv.url + "/v1/features", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["statuses"]["user_stats"] == ["PRESENT", "PRESENT", "EXPIRED", "MISSING"]
    assert out["features"]["user_stats:txn_count_7d"] == [1, 2, None, None]
    assert out["features"]["user_stats:amount_std_30d"] == [None, 1.5, None, None]
    assert out["event_timestamps"]["user_stats"][0] == FRESH.isoformat()
    metrics = httpx.get(srv.url + "/metrics").text
    assert 'feature_values_total{status="MISSING",view="user_stats"} 1.0' in metrics
    # the documented wildcard (issue 23): every feature of the view, the same values
    every = httpx.post(srv.url + "/v1/features", json={**body, "features": ["user_stats:*"]})
    assert every.status_code == 200, every.text
    got = every.json()["features"]
    assert got["user_stats:txn_count_7d"] == [1, 2, None, None] and len(got) > 2


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"entities": {"user_id": [1]}}, 400, "body must be"),
        ({"entities": {"user_id": [1]}, "features": ["user_stats:nope"]}, 400, "has no feature 'nope'"),
        ({"entities": {"user_id": [1]}, "features": ["nope:x"]}, 400, "unknown feature view"),
        ({"entities": {"item_id": [1]}, "features": F7}, 400, "keyed by 'user_id'"),
        ({"entities": {"user_id": ["1"]}, "features": F7}, 400, "expected an integer id"),
        ({"entities": {"user_id": [True]}, "features": F7}, 400, "expected an integer id"),
        ({"entities": {"user_id": []}, "features": F7}, 400, "non-empty list"),
        ({"entities": {"user_id": [2**63 + 5]}, "features": F7}, 400, "int64"),
        ({"entities": {"user_id": list(range(101))}, "features": F7}, 413, "too many"),
    ],
)
def test_bad_requests(
    feature_server: tuple[GunicornService, RedisServer], body: dict[str, Any], status: int, message: str
) -> None:
    srv, _ = feature_server
    r = httpx.post(srv.url + "/v1/features", json=body)
    assert r.status_code == status and message in r.json()["error"]


def test_redis_down_is_a_fast_503_and_unready(tmp_path: Path) -> None:
    srv = GunicornService(
        tmp_path / "svc",
        {
            "FEATURES_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
            "FEATURES_REPO": REFERENCE_REPO,
            "FEATURES_READ_TIMEOUT_MS": "100",
        },
        app="app.featureserver.main:app",
        ready_path="/healthz",
    ).wait_ready()
    try:
        r = httpx.post(srv.url + "/v1/features", json={"entities": {"user_id": [1]}, "features": F7})
        assert r.status_code == 503 and "online store" in r.json()["error"]
        assert r.elapsed.total_seconds() < 1.0
        assert httpx.get(srv.url + "/readyz").status_code == 503
    finally:
        srv.stop()


def test_without_a_feature_repository_the_server_refuses_to_start() -> None:
    from app.features.definitions import DefinitionError
    from app.featureserver.core.config import Settings
    from app.featureserver.main import create_app

    with pytest.raises(DefinitionError, match="no feature repository configured: set FEATURES_REPO"):
        create_app(Settings(repo=None))
    assert create_app(Settings(repo=REFERENCE_REPO)).state.repo.view("user_stats") is user_stats
