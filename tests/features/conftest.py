from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import redis

from app.features.definitions import Entity, Feature, FeatureView
from app.features.offline import OfflineStore
from app.features.online import OnlineStore
from devharness import RedisServer, S3Server

# Recent, because Redis expires keys on its own clock (event time + TTL + grace).
T0 = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
TS = pa.timestamp("us", tz="UTC")

ENTITY = Entity("item", "item_id")
VIEW = FeatureView(
    name="item_stats",
    entity=ENTITY,
    source="features/item_stats",
    ttl=timedelta(days=2),
    features=(Feature("clicks", "int64"), Feature("price", "float32"), Feature("score", "float64")),
)


def rows(*items: tuple[int, datetime, datetime, int, float | None, float]) -> pa.Table:
    """(item_id, event, created, clicks, price, score) tuples as a view table."""
    return pa.table(
        {
            "item_id": pa.array([r[0] for r in items], pa.int64()),
            "event_timestamp": pa.array([r[1] for r in items], TS),
            "created_timestamp": pa.array([r[2] for r in items], TS),
            "clicks": pa.array([r[3] for r in items], pa.int64()),
            "price": pa.array([r[4] for r in items], pa.float32()),
            "score": pa.array([r[5] for r in items], pa.float64()),
        }
    )


def random_rows(n: int, entities: int, days: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    ev = int(T0.timestamp() * 1e6) + rng.integers(0, days * 86_400_000_000, n)
    cr = ev + rng.integers(0, 3, n) * 1_000_000  # coarse created times: plenty of ties
    ev = (ev // 3_600_000_000) * 3_600_000_000  # hourly event times: plenty of ties too
    return pa.table(
        {
            "item_id": pa.array(rng.integers(0, entities, n), pa.int64()),
            "event_timestamp": pa.array(ev, TS),
            "created_timestamp": pa.array(cr, TS),
            "clicks": pa.array(rng.integers(0, 1000, n), pa.int64()),
            "price": pa.array(rng.random(n).astype(np.float32), pa.float32(), mask=rng.random(n) < 0.1),
            "score": pa.array(rng.normal(size=n), pa.float64()),
        }
    )


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    srv = RedisServer(tmp_path_factory.mktemp("valkey-cluster"), cluster=True)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def rclient(redis_server: RedisServer) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_server.url)
    c.flushall()
    yield c
    c.close()


@pytest.fixture
def online(rclient: redis.Redis) -> OnlineStore:
    return OnlineStore(rclient)


@pytest.fixture(params=["local", "s3"])
def offline(request: pytest.FixtureRequest, tmp_path: Path) -> OfflineStore:
    if request.param == "local":
        return OfflineStore(str(tmp_path / "offline"))
    s3: S3Server = request.getfixturevalue("s3_server")
    bucket = s3.create_bucket(f"off-{tmp_path.name.lower().replace('_', '-')[-40:]}")
    return OfflineStore(f"s3://{bucket}/fs", s3_endpoint_url=s3.endpoint)


@pytest.fixture
def local_offline(tmp_path: Path) -> OfflineStore:
    return OfflineStore(str(tmp_path / "offline"))
