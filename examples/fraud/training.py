"""Training sets for models that read the feature store: point-in-time features plus request-time
transforms, from the same definitions and code the prediction service uses."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from app.features import transforms
from app.features.historical import get_historical_features
from app.features.offline import OfflineStore
from app.features.repo import TRANSACTIONS, reference_repo, user_stats


@dataclass
class TrainingSet:
    x: NDArray[np.float64]
    y: NDArray[np.int64]
    timestamps_us: NDArray[np.int64]
    feature_names: list[str]
    feature_refs: list[str]
    source: str


def fraud_training_set(offline: OfflineStore) -> TrainingSet:
    """Every labeled transaction joined with the user's stats as of the transaction time."""
    tx = offline.read_window(TRANSACTIONS, "timestamp", None, None)
    if tx.num_rows == 0:
        raise ValueError(f"no transactions in {offline.url}: run `python -m jobs seed` and `features` first")
    tx = tx.sort_by([("timestamp", "ascending"), ("transaction_id", "ascending")])
    refs = [f"{user_stats.name}:{f}" for f in transforms.STATS_FEATURES]
    joined = get_historical_features(tx, refs, reference_repo(), offline, timestamp_column="timestamp")

    def col(name: str) -> NDArray[np.float64]:
        return np.asarray(pc.cast(joined.column(name), pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)

    stats = {f: col(f) for f in transforms.STATS_FEATURES}
    x = transforms.model_matrix(stats, col("amount"), np.asarray(tx.column("merchant_category").to_numpy()))
    return TrainingSet(
        x=x,
        y=np.asarray(tx.column("is_fraud").to_numpy(), dtype=np.int64),
        timestamps_us=np.asarray(tx.column("timestamp").cast(pa.int64()).to_numpy(), dtype=np.int64),
        feature_names=list(transforms.MODEL_COLUMNS),
        feature_refs=refs,
        source=f"{offline.url}/{TRANSACTIONS} x {user_stats.name} (point-in-time)",
    )
