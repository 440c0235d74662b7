"""The fraud model's training set (``python -m jobs train --dataset fraud``, or
``--training-set examples.fraud.training:fraud_training_set``): every labeled transaction joined
point-in-time with the user's stats, through the request-time transform the service will apply."""

from __future__ import annotations

from app.features.definitions import FeatureRepo
from app.features.offline import OfflineStore
from app.features.training import TrainingSet, point_in_time_training_set
from examples.fraud.repo import TRANSACTIONS, user_stats
from examples.fraud.transforms import TRANSFORM


def fraud_training_set(offline: OfflineStore, repo: FeatureRepo) -> TrainingSet:
    tx = offline.read_window(TRANSACTIONS, "timestamp", None, None)
    if tx.num_rows == 0:
        raise ValueError(f"no transactions in {offline.url}: run `python -m jobs seed` and `features` first")
    tx = tx.sort_by([("timestamp", "ascending"), ("transaction_id", "ascending")])
    return point_in_time_training_set(
        tx,
        label="is_fraud",
        transform=TRANSFORM,
        repo=repo,
        offline=offline,
        timestamp_column="timestamp",
        source=f"{offline.url}/{TRANSACTIONS} x {user_stats.name} (point-in-time)",
    )
