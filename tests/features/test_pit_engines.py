"""The point-in-time engines agree row for row: numpy (in memory), DuckDB (embedded, streaming the
table's files, spilling) and Spark (local mode here); DuckDB completes past its memory limit."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest

from app.common.epoch import epoch_us, from_epoch_us
from app.features.definitions import FeatureRepo
from app.features.historical import get_historical_features
from app.features.offline import OfflineStore
from app.features.pit_duckdb import DuckDBConfig
from devharness import S3Server
from devharness.servers import debian_binary
from tests.features.conftest import ENTITY, T0, TS, VIEW, random_rows

REFS = ["item_stats:clicks", "item_stats:price", "item_stats:score"]
UNBOUNDED = replace(VIEW, ttl=timedelta(0))
# The eras issue 26 names: in 1987 and 2005 the float idiom lands 1 µs low for some times (the tests pick one
# at the scan bound); near 2036 the rows checked here round up, and the test is a plain correctness check.
ERAS = [datetime(1987, 5, 4, tzinfo=UTC), datetime(2005, 3, 7, tzinfo=UTC), datetime(2036, 9, 1, tzinfo=UTC)]


def _entity_rows(n: int, keys: int, seed: int) -> pa.Table:
    """Entity rows before, inside and after the feature rows' days, with ids that have no features."""
    rng = np.random.default_rng(seed)
    t0 = int(T0.timestamp() * 1e6)
    ts = t0 + rng.integers(-86_400_000_000, 7 * 86_400_000_000, n)
    ts[:5] = t0 + 3_600_000_000 * np.arange(5)  # exactly on hourly event times: inclusive edges
    return pa.table(
        {"item_id": pa.array(rng.integers(0, keys + 10, n), pa.int64()), "event_timestamp": pa.array(ts, TS)}
    )


def _joins(offline: OfflineStore, ent: pa.Table, engines: tuple[str, ...]) -> dict[tuple[str, str], pa.Table]:
    out = {}
    for view in (VIEW, UNBOUNDED):
        repo = FeatureRepo([ENTITY], [view])
        for engine in engines:
            out[engine, str(view.ttl)] = get_historical_features(ent, REFS, repo, offline, engine=engine)  # type: ignore[arg-type]
    return out


def test_duckdb_equals_numpy(offline: OfflineStore) -> None:
    offline.write_partitioned(VIEW.source, random_rows(20_000, 300, days=5, seed=4), "event_timestamp")
    ent = _entity_rows(5000, 300, seed=5)
    got = _joins(offline, ent, ("numpy", "duckdb"))
    for ttl in (str(VIEW.ttl), str(UNBOUNDED.ttl)):
        numpy_rows, duck_rows = got["numpy", ttl], got["duckdb", ttl]
        assert duck_rows.schema == numpy_rows.schema
        assert duck_rows.equals(numpy_rows), ttl
        assert 0 < duck_rows.column("clicks").null_count < ent.num_rows  # matches and misses both occur
    assert (
        got["duckdb", str(VIEW.ttl)].column("clicks").null_count > got["duckdb", "0:00:00"].column("clicks").null_count
    )


def test_duckdb_completes_on_a_table_larger_than_its_memory_limit(local_offline: OfflineStore) -> None:
    feats = random_rows(1_000_000, 100_000, days=4, seed=6)
    local_offline.write_partitioned(VIEW.source, feats, "event_timestamp")
    limit_mb = 24
    assert feats.nbytes > 1.5 * limit_mb * 2**20  # 44 MB of feature rows in Arrow
    ent = _entity_rows(100_000, 100_000, seed=7)
    repo = FeatureRepo([ENTITY], [VIEW])
    # one thread: with two, how much each holds at once depends on scheduling, and under CPU load the pair
    # can pin more than the limit (seen at 24 MB); the claim is about spilling, not parallelism
    small = DuckDBConfig(memory_limit=f"{limit_mb}MB", threads=1)
    got = get_historical_features(ent, REFS, repo, local_offline, engine="duckdb", duckdb_config=small)
    assert got.equals(get_historical_features(ent, REFS, repo, local_offline, engine="numpy"))


@pytest.fixture(scope="session")
def spark_local(s3_server: S3Server) -> Iterator[None]:
    """One local Spark session for the test session (it takes 10-20 s to start). After the S3 server:
    its Python workers take the S3 credentials from the environment they start with, as executors do."""
    debian_binary("java", "openjdk-17-jre-headless")
    import os

    from app.features import pit_spark

    os.environ.setdefault("SPARK_SHUFFLE_PARTITIONS", "2")
    pit_spark.spark_session("local[2]")
    yield  # pyspark stops its JVM when the process exits; stopping here would cost 15 s more


@pytest.mark.usefixtures("spark_local")
def test_spark_equals_the_embedded_engines(s3_server: S3Server) -> None:
    """On S3: executors read the table's files themselves (pyarrow's filesystem, no Hadoop jars). Spark
    is slow to warm up, so this is its one test (the local-disk path is the same code)."""
    offline = OfflineStore(f"s3://{s3_server.create_bucket('pit-spark')}/fs", s3_endpoint_url=s3_server.endpoint)
    offline.write_partitioned(VIEW.source, random_rows(8000, 200, days=5, seed=8), "event_timestamp")
    ent = _entity_rows(3000, 200, seed=9)
    repo = FeatureRepo([ENTITY], [VIEW])  # with a TTL: both edges; the unbounded case is the same query less one bound
    duck = get_historical_features(ent, REFS, repo, offline, engine="duckdb")
    spark = get_historical_features(ent, REFS, repo, offline, engine="spark")
    assert spark.schema == duck.schema
    assert spark.equals(duck)
    assert 0 < spark.column("clicks").null_count < ent.num_rows


def _era_rows(t0: datetime, n: int, seed: int) -> tuple[pa.Table, pa.Table]:
    """Feature rows at random microseconds after ``t0``, and entity rows at exactly those times (the inclusive
    edge: the row at the entity's time is the answer), the latest among them."""
    rng = np.random.default_rng(seed)
    us = epoch_us(t0) + np.sort(rng.integers(0, 86_400_000_000, n))
    # The latest entity time bounds the scan (end = latest + 1 µs, exclusive): make it, where this era has one
    # within 100,000 µs, a time whose end the float idiom computes 1 µs low, which excluded the latest row.
    last = int(us[-1])
    sharp = [v for v in range(last, last + 100_000) if int(from_epoch_us(v + 1).timestamp() * 1_000_000) != v + 1]
    us[-1] = sharp[0] if sharp else last
    feats = pa.table(
        {
            "item_id": pa.array(np.arange(n) % 20, pa.int64()),
            "event_timestamp": pa.array(us, TS),
            "created_timestamp": pa.array(us, TS),
            "clicks": pa.array(np.arange(n), pa.int64()),
            "price": pa.array(rng.random(n).astype(np.float32), pa.float32()),
            "score": pa.array(rng.normal(size=n), pa.float64()),
        }
    )
    ent = pa.table({"item_id": feats.column("item_id"), "event_timestamp": feats.column("event_timestamp")})
    return feats, ent


@pytest.mark.usefixtures("spark_local")
@pytest.mark.parametrize("t0", ERAS, ids=[str(t.year) for t in ERAS])
def test_rows_at_exactly_the_entity_time_on_every_engine_in_any_era(t0: datetime, s3_server: S3Server) -> None:
    """Issue 26: the Spark engine's float microseconds dropped the row at exactly the entity time for 10% of
    times in 2004-2008. Every engine must answer each entity row with the feature row at its own time."""
    feats, ent = _era_rows(t0, 50, seed=t0.year)
    offline = OfflineStore(f"s3://{s3_server.create_bucket(f'era-{t0.year}')}/fs", s3_endpoint_url=s3_server.endpoint)
    offline.write_partitioned(UNBOUNDED.source, feats, "event_timestamp")
    repo = FeatureRepo([ENTITY], [UNBOUNDED])
    for engine in ("numpy", "duckdb", "spark"):
        got = get_historical_features(ent, REFS, repo, offline, engine=engine)  # type: ignore[arg-type]
        assert got.column("clicks").to_pylist() == list(range(50)), engine
