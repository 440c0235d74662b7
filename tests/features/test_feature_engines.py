"""The user_stats feature job on its three engines gives the same rows: NumPy (compute_user_stats, the
reference), DuckDB and Spark (examples/fraud/features_sql.py), through ``python -m jobs features
--engine``, on a generated case plus edge users; bad input is refused naming the problem."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from app.features.offline import OfflineStore, OfflineStoreError
from app.features.pit_duckdb import DuckDBConfig
from devharness import S3Server
from devharness.servers import debian_binary
from examples.fraud import features_sql, scenario
from examples.fraud.features_sql import FeatureJobInputError
from examples.fraud.repo import TRANSACTIONS, user_stats
from jobs.__main__ import build_parser, run
from jobs.settings import JobSettings

START = datetime(2026, 10, 1, tzinfo=UTC)
DAY = 86_400_000_000
SINGLE, GAP, PEAK, FLAT = 1001, 1002, 1003, 1004  # the edge users, past the generated ones


def _edge_rows() -> pa.Table:
    """(user, day, hour, amount, category) rows of users with known answers."""
    rows = [(SINGLE, 5, 12, 123.45, 3)]  # one transaction ever: 30 rows, count 1, std exactly 0
    # activity, a gap of 34 days, one transaction: no rows in the gap, then sums that are differences of
    # cumulative sums that include the old days (the rounding NumPy's std shows)
    rows += [(GAP, d, h, 10.1 + 7.3 * d + h / 3, d % 4) for d in (0, 1, 2) for h in (1, 5, 9)]
    rows += [(GAP, 36, 4, 17.77, 5)]
    rows += [(PEAK, 2, 8, 1000.0, 9)]  # the 30-day max holds 1000 on days 2..31 and drops on day 32
    rows += [(PEAK, d, 10, 20.0 + d / 7, 1) for d in range(3, 40)]
    rows += [(FLAT, d, h, 42.42, 7) for d in range(0, 40, 3) for h in (1, 2, 3, 4)]  # std exactly 0
    us = int(START.timestamp() * 1e6)
    return pa.table(
        {
            "transaction_id": pa.array(np.arange(len(rows), dtype=np.int64) + 10_000_000),
            "user_id": pa.array([r[0] for r in rows], pa.int64()),
            "amount": pa.array([r[3] for r in rows], pa.float64()),
            "merchant_category": pa.array([r[4] for r in rows], pa.int64()),
            "timestamp": pa.array([us + r[1] * DAY + r[2] * 3_600_000_000 for r in rows], pa.timestamp("us", "UTC")),
        }
    )


def _case(users: int, days: int, seed: int) -> pa.Table:
    """Generated users 1..users (ids renumbered into 1..1000 is not needed: users <= 1000), the edge users,
    sorted by time as the offline store keeps them."""
    tx = scenario.generate_transactions(users, days, START, seed)
    return pa.concat_tables([tx, _edge_rows()]).sort_by([("timestamp", "ascending")])


def assert_same(got: pa.Table, ref: pa.Table) -> None:
    """Same schema and rows; integers equal, floats within 1e-9 relative, nulls in the same places."""
    assert got.schema == ref.schema
    keys = [("user_id", "ascending"), (user_stats.event_timestamp_column, "ascending")]
    got, ref = got.sort_by(keys), ref.sort_by(keys)
    assert got.num_rows == ref.num_rows
    for name in ref.column_names:
        a, b = got.column(name), ref.column(name)
        assert a.is_null().equals(b.is_null()), name
        if pa.types.is_floating(b.type):
            x = np.asarray(a.to_numpy(zero_copy_only=False), dtype=np.float64)
            y = np.asarray(b.to_numpy(zero_copy_only=False), dtype=np.float64)
            ok = np.isnan(y) | (np.abs(x - y) <= 1e-9 * np.abs(y))
            assert ok.all(), f"{name}: {int((~ok).sum())} values differ, e.g. {x[~ok][:3]} vs {y[~ok][:3]}"
        else:
            assert a.equals(b), name


def _job(offline: OfflineStore, monkeypatch: pytest.MonkeyPatch, *argv: str) -> tuple[dict[str, object], pa.Table]:
    """``python -m jobs features ARGV`` on ``offline``; its summary and the user_stats it wrote."""
    monkeypatch.setenv("FEATURES_OFFLINE_URL", offline.url)
    if offline.s3_endpoint_url:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", offline.s3_endpoint_url)
    settings = JobSettings()
    args = build_parser(settings).parse_args(["features", "--start", START.date().isoformat(), *argv])
    summary = run(args, settings)
    end = START + timedelta(days=int(args.days) + 1)
    return summary, offline.read_window(user_stats.source, user_stats.event_timestamp_column, START, end)


def _user(stats: pa.Table, user: int) -> dict[str, list[Any]]:
    rows: dict[str, list[Any]] = stats.filter(pc.equal(stats.column("user_id"), user)).to_pydict()
    return rows


def test_duckdb_equals_numpy_through_the_job(offline: OfflineStore, monkeypatch: pytest.MonkeyPatch) -> None:
    offline.write_partitioned(TRANSACTIONS, _case(300, 40, seed=11), "timestamp")
    common = ("--users", "1004", "--days", "40")
    summary, ref = _job(offline, monkeypatch, *common)  # numpy, the default
    assert summary["engine"] == "numpy"
    summary, got = _job(offline, monkeypatch, *common, "--engine", "duckdb", "--memory-limit", "256MB")
    assert summary["engine"] == "duckdb"
    assert summary["rows"] == ref.num_rows > 10_000
    assert_same(got, ref)
    assert got.equals(ref)  # more than the contract: the same bits (features_sql.py repeats NumPy's arithmetic)

    single = _user(got, SINGLE)
    assert len(single["txn_count_30d"]) == 30 and set(single["txn_count_30d"]) == {1}  # days 5..34
    assert set(single["amount_std_30d"]) == {0.0}
    assert single["amount_max_30d"][0] == pytest.approx(123.45)
    assert single["amount_mean_7d"][:7] == [pytest.approx(123.45)] * 7 and set(single["amount_mean_7d"][7:]) == {None}
    assert single["account_age_days"][:3] == [1.0, 2.0, 3.0]

    gap = _user(got, GAP)
    days = [(t - START).days - 1 for t in gap[user_stats.event_timestamp_column]]
    assert days == [*range(0, 32), *range(36, 40)]  # nothing while the last 30 days are empty
    assert gap["txn_count_30d"][32] == 1 and gap["account_age_days"][32] == 37.0
    assert gap["amount_mean_30d"][32] == pytest.approx(17.77)
    assert gap["amount_std_30d"][32] < 1e-3  # one transaction: zero up to NumPy's rounding, which DuckDB repeats

    peak = _user(got, PEAK)
    assert peak["amount_max_30d"][:30] == [1000.0] * 30  # days 2..31
    assert peak["amount_max_30d"][30] == pytest.approx(20 + 32 / 7)  # day 32: the peak has left the window
    assert set(_user(got, FLAT)["amount_std_30d"]) == {0.0}
    assert max(_user(got, FLAT)["distinct_merchants_30d"]) == 1
    assert max(got.column("distinct_merchants_30d").to_pylist()) > 3


def test_duckdb_in_memory_equals_numpy_in_row_order() -> None:
    """A table in memory is summed in its row order, whatever it is (here: by user, not by time)."""
    tx = _case(120, 35, seed=12).sort_by([("user_id", "descending"), ("amount", "ascending")])
    ref = scenario.compute_user_stats(tx, START, 40, 1004)
    got = features_sql.compute_user_stats_duckdb(tx, START, 40, 1004)
    assert_same(got, ref)
    assert got.equals(ref)


def test_duckdb_job_completes_under_a_memory_limit_below_its_need(
    local_offline: OfflineStore, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """900k transactions need ~250 MB of DuckDB memory in one query (the per-day ordered lists cannot
    spill): under a 64 MB limit that query runs out of memory, and the job, cutting the users into chunks
    sized to the limit and writing the rows chunk by chunk in one commit, completes with NumPy's rows."""
    users, limit = 20_000, "64MB"
    local_offline.write_partitioned(TRANSACTIONS, scenario.generate_transactions(users, 30, START, 5), "timestamp")
    spill = tmp_path / "spill"
    config = DuckDBConfig(memory_limit=limit, temp_directory=str(spill))
    dataset = local_offline.scan(TRANSACTIONS, "timestamp", None, None, list(features_sql.COLUMNS)).dataset()
    one_query = features_sql.plan_user_stats_duckdb(dataset, START, 30, users, config, chunk_rows=10**12)
    assert len(one_query.chunks) == 1
    with pytest.raises(duckdb.OutOfMemoryException):
        one_query.table()  # the limit is below what the whole job needs at once

    common = ("--users", str(users), "--days", "30")
    _, ref = _job(local_offline, monkeypatch, *common)
    argv = ("--engine", "duckdb", "--memory-limit", limit, "--spill-dir", str(spill))
    summary, got = _job(local_offline, monkeypatch, *common, *argv)
    assert summary["rows"] == ref.num_rows > 500_000
    assert summary["chunks"] > 4  # type: ignore[operator]
    assert_same(got, ref)
    assert got.equals(ref)  # the chunks' files read back in the chunks' order: users ascending in each day
    assert local_offline.history(user_stats.source, 1)[0]["operation"] == "WRITE"  # one commit per run
    assert local_offline.version(user_stats.source) == 1


def test_a_write_in_parts_is_one_commit_or_nothing(local_offline: OfflineStore) -> None:
    """write_partitioned_parts (the DuckDB job's writer): parts failing half-way, or with a row outside the
    days announced, leave the table and its directory as they were."""
    stats = scenario.compute_user_stats(_edge_rows(), START, 40, 1004)
    days = sorted({t.strftime("%Y-%m-%d") for t in stats.column(user_stats.event_timestamp_column).to_pylist()})
    name, ts = user_stats.source, user_stats.event_timestamp_column
    assert local_offline.write_partitioned_parts(name, features_sql.SCHEMA, [stats], ts, days) == days
    root = Path(local_offline.path(name))
    files = sorted(root.rglob("*.parquet"))

    def failing() -> Iterator[pa.Table]:
        yield stats.slice(0, 50)
        raise RuntimeError("the engine failed")

    with pytest.raises(RuntimeError, match="the engine failed"):
        local_offline.write_partitioned_parts(name, features_sql.SCHEMA, failing(), ts, days)
    with pytest.raises(OfflineStoreError, match="outside the days written"):
        local_offline.write_partitioned_parts(name, features_sql.SCHEMA, [stats.slice(0, 50), stats], ts, days[:3])
    assert local_offline.version(name) == 0 and sorted(root.rglob("*.parquet")) == files
    assert local_offline.read_window(name, ts, None, None).equals(stats.sort_by([(ts, "ascending")]))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"user_id": 1005}, r"1 row\(s\) with user_id outside 1\.\.1004"),
        ({"user_id": 0}, r"user_id outside"),
        ({"merchant_category": 10}, r"merchant_category outside 0\.\.9"),
        ({"amount": None}, r"1 row\(s\) with a null"),
    ],
)
def test_bad_transactions_are_refused_naming_the_problem(change: dict[str, object], message: str) -> None:
    tx = _edge_rows()
    bad = {c: tx.column(c).to_pylist() for c in tx.column_names}
    for col, value in change.items():
        bad[col][0] = value
    bad_tx = pa.table(bad, schema=tx.schema)
    with pytest.raises(FeatureJobInputError, match=message):
        features_sql.compute_user_stats_duckdb(bad_tx, START, 40, 1004)
    with pytest.raises(FeatureJobInputError, match=message):
        features_sql.check_transactions(bad_tx, 1004)  # the numpy engine's check in the job


def test_the_job_refuses_users_past_users_and_a_missing_column(
    local_offline: OfflineStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    local_offline.write_partitioned(TRANSACTIONS, _edge_rows(), "timestamp")
    for engine in ("numpy", "duckdb"):
        with pytest.raises(FeatureJobInputError, match=r"user_id outside 1\.\.1000 \(--users\)"):
            _job(local_offline, monkeypatch, "--users", "1000", "--days", "40", "--engine", engine)
    with pytest.raises(FeatureJobInputError, match=r"no column\(s\) \['merchant_category'\]"):
        features_sql.compute_user_stats_duckdb(_edge_rows().drop_columns(["merchant_category"]), START, 40, 1004)
    with pytest.raises(FeatureJobInputError, match="timezone-aware"):
        features_sql.compute_user_stats_duckdb(_edge_rows(), START.replace(tzinfo=None), 40, 1004)


@pytest.fixture(scope="session")
def spark_local(s3_server: S3Server) -> Iterator[None]:
    """The process's one local Spark session (shared with tests/features/test_pit_engines.py: pit_spark
    keeps one per process). After the S3 server: its Python workers read S3 with the environment's keys."""
    debian_binary("java", "openjdk-17-jre-headless")
    from app.features import pit_spark

    os.environ.setdefault("SPARK_SHUFFLE_PARTITIONS", "2")
    pit_spark.spark_session("local[2]")
    yield


@pytest.mark.usefixtures("spark_local")
def test_spark_equals_numpy_and_duckdb_through_the_job(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """On S3: the executors read the transactions' files themselves. Spark is slow to warm up: its one test."""
    offline = OfflineStore(f"s3://{s3_server.create_bucket('features-spark')}/fs", s3_endpoint_url=s3_server.endpoint)
    offline.write_partitioned(TRANSACTIONS, _case(100, 40, seed=13), "timestamp")
    common = ("--users", "1004", "--days", "40")
    _, ref = _job(offline, monkeypatch, *common)
    summary, spark = _job(offline, monkeypatch, *common, "--engine", "spark")
    assert summary["engine"] == "spark" and summary["rows"] == ref.num_rows
    assert_same(spark, ref)
    assert spark.equals(ref)
    _, duck = _job(offline, monkeypatch, *common, "--engine", "duckdb")
    assert spark.equals(duck)
    assert set(_user(spark, FLAT)["amount_std_30d"]) == {0.0}
    assert _user(spark, PEAK)["amount_max_30d"][30] < 1000.0
