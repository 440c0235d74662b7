"""Versioned training data: a model records the table versions it read; `train --as-of-version` rebuilds
exactly that data after the tables moved on; `list-models` shows the versions; the migration job turns
the pre-lakehouse layout into tables in place and can run again."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from app.features.offline import OfflineStore, OfflineStoreError
from app.modelstore import LocalModelStore
from devharness.jobs import run_job
from examples.fraud.repo import TRANSACTIONS, user_stats
from tests.features.conftest import T0, VIEW, random_rows


def test_train_as_of_version_rebuilds_the_same_training_set(tmp_path: Path) -> None:
    env = {"FEATURES_OFFLINE_URL": str(tmp_path / "offline"), "MODEL_STORE_URL": str(tmp_path / "models")}
    days = ["--users", "150", "--days", "4"]
    run_job("seed", *days, "--start", "2026-10-01", env=env).ok()
    run_job("features", *days, "--start", "2026-10-01", env=env).ok()
    train = ("train", "--dataset", "fraud", "--name", "fraud", "--n-estimators", "5")
    first = run_job(*train, env=env).ok()
    off = OfflineStore(str(tmp_path / "offline"))
    assert first["table_versions"] == {TRANSACTIONS: 0, user_stats.source: 0}
    meta = LocalModelStore(tmp_path / "models").read_metadata("fraud", first["version"])
    assert meta.training_data.table_versions == first["table_versions"]
    assert meta.training_data.entity_fingerprint and len(meta.training_data.entity_fingerprint) == 64

    # The point-in-time job over the same tables: one output row per transaction, versions reported.
    hist = run_job(
        "historical",
        "--entities",
        TRANSACTIONS,
        "--features",
        "user_stats:txn_count_7d",
        "--output",
        "training/fraud",
        "--memory-limit",
        "256MB",
        env=env,
    ).ok()
    assert hist["table_versions"] == first["table_versions"] and hist["output_version"] == 0
    assert hist["rows"] == off.read_window(TRANSACTIONS, "timestamp", None, None).num_rows
    assert off.read_window("training/fraud", "timestamp", None, None).column_names[-1] == "txn_count_7d"

    # New data lands: four more days of transactions and features (new table versions).
    run_job("seed", *days, "--start", "2026-10-05", "--seed", "1", env=env).ok()
    run_job("features", *days, "--start", "2026-10-05", env=env).ok()
    assert off.version(TRANSACTIONS) == 1 and off.version(user_stats.source) == 1
    latest = run_job(*train, env=env).ok()
    assert latest["table_versions"] == {TRANSACTIONS: 1, user_stats.source: 1}
    assert latest["fingerprint"] != first["fingerprint"]

    pinned = run_job("train", "--as-of-version", f"fraud:{first['version']}", "--n-estimators", "5", env=env).ok()
    assert pinned["model"] == "fraud" and pinned["table_versions"] == first["table_versions"]
    assert pinned["fingerprint"] == first["fingerprint"]  # the same training matrix and labels, bit for bit

    listed = run_job("list-models", env=env).ok()["models"]["fraud"]["data_versions"]
    assert listed[first["version"]] == first["table_versions"]
    assert listed[latest["version"]] == latest["table_versions"]

    bad = run_job("train", "--as-of-version", "fraud:nope", env=env)
    assert bad.code != 0 and "nope" in bad.summary["error"]


def test_as_of_version_of_a_model_without_table_versions_is_refused(tmp_path: Path) -> None:
    env = {"MODEL_STORE_URL": str(tmp_path / "models")}
    run_job("train", "--dataset", "iris", "--name", "iris", "--n-estimators", "3", env=env).ok()
    run = run_job("train", "--as-of-version", "iris", env=env)
    assert run.code != 0 and "recorded no table versions" in run.summary["error"]


def test_migration_job_converts_the_old_layout_in_place_and_can_run_again(offline: OfflineStore) -> None:
    feats = random_rows(600, 20, days=3)
    for day in range(3):  # the pre-lakehouse layout: <dataset>/date=YYYY-MM-DD/part-0.parquet
        d = (T0 + timedelta(days=day)).strftime("%Y-%m-%d")
        part = feats.filter([t.strftime("%Y-%m-%d") == d for t in feats.column("event_timestamp").to_pylist()])
        offline.fs.create_dir(f"{offline.path(VIEW.source)}/date={d}")
        pq.write_table(part, f"{offline.path(VIEW.source)}/date={d}/part-0.parquet", filesystem=offline.fs)
    off = offline
    with pytest.raises(OfflineStoreError, match=r"pre-lakehouse layout .*`python -m jobs migrate-offline`"):
        off.read_window(VIEW.source, "event_timestamp", None, None)
    env = {"FEATURES_OFFLINE_URL": off.url, "AWS_ENDPOINT_URL_S3": off.s3_endpoint_url or ""}
    done = run_job("migrate-offline", env=env).ok()
    assert done["converted"] == {VIEW.source: {"version": 0, "partitions": 3}}
    got = off.read_window(VIEW.source, "event_timestamp", T0 + timedelta(days=1), None)
    assert sorted(got.column("clicks").to_pylist()) == sorted(
        c
        for c, t in zip(feats.column("clicks").to_pylist(), feats.column("event_timestamp").to_pylist(), strict=True)
        if t >= T0 + timedelta(days=1)
    )
    again = run_job("migrate-offline", "--dataset", VIEW.source, env=env).ok()
    assert again["converted"] == {} and again["already_tables"] == [VIEW.source]
    off.append(VIEW.source, random_rows(10, 20, days=1, seed=5), "event_timestamp")  # a table from now on
    assert off.read_window(VIEW.source, "event_timestamp", None, None).num_rows == 610
