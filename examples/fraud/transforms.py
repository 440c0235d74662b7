"""The fraud scenario's request-time transform: the same code builds training rows and serving rows.

Inputs are the request-time fields of a transaction (amount, merchant category)
and the entity's stored features; outputs are the model's extra columns. Written
with NumPy so that a column (training) and a single row (serving) go through the
identical arithmetic. The model's metadata records the reference ``examples.fraud.transforms:fraud_v1``;
the prediction service and the batch-prediction job load it from there.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from app.features.request_transforms import RequestTransform
from examples.fraud.repo import user_stats

REQUEST_FIELDS = ("amount", "merchant_category")
RISKY_CATEGORIES = (7, 8, 9)
N_CATEGORIES = 10
DERIVED = ("amount_to_mean_30d", "amount_to_max_30d", "is_risky_category")


def derive(
    amount: NDArray[np.float64],
    merchant_category: NDArray[np.int64],
    amount_mean_30d: NDArray[np.float64],
    amount_max_30d: NDArray[np.float64],
) -> dict[str, NDArray[np.float64]]:
    mean = np.nan_to_num(amount_mean_30d, nan=0.0)
    mx = np.nan_to_num(amount_max_30d, nan=0.0)
    return {
        "amount_to_mean_30d": amount / (mean + 1.0),
        "amount_to_max_30d": amount / (mx + 1.0),
        "is_risky_category": np.isin(merchant_category, RISKY_CATEGORIES).astype(np.float64),
    }


STATS_FEATURES = tuple(user_stats.feature_names)  # every feature of the view, in its order
MODEL_COLUMNS = (*STATS_FEATURES, "has_history", "amount", "merchant_category", *DERIVED)


def model_matrix(
    stats: dict[str, NDArray[np.float64]],
    amount: NDArray[np.float64],
    merchant_category: NDArray[np.int64],
) -> NDArray[np.float64]:
    """The model's input matrix (columns = MODEL_COLUMNS) from stored stats (NaN where missing)
    and request-time fields. Missing history becomes zeros plus ``has_history = 0``."""
    has = ~np.isnan(stats["txn_count_30d"])
    d = derive(amount, merchant_category, stats["amount_mean_30d"], stats["amount_max_30d"])
    cols = [np.nan_to_num(stats[f], nan=0.0) for f in STATS_FEATURES]
    cols += [has.astype(np.float64), amount.astype(np.float64), merchant_category.astype(np.float64)]
    cols += [d[k] for k in DERIVED]
    return np.column_stack(cols)


def _fraud_v1(stats: dict[str, NDArray[np.float64]], request: NDArray[np.float64]) -> NDArray[np.float64]:
    return model_matrix(stats, request[:, 0], request[:, 1].astype(np.int64))


fraud_v1 = RequestTransform(
    feature_refs=tuple(f"{user_stats.name}:{f}" for f in STATS_FEATURES),
    request_fields=REQUEST_FIELDS,
    columns=MODEL_COLUMNS,
    fn=_fraud_v1,
)
TRANSFORM = "examples.fraud.transforms:fraud_v1"  # what a fraud model's metadata records
