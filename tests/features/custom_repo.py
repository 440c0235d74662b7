"""A user's own feature repository, transform and training set, written outside app/ as a newcomer would
(docs/feature-store.md, "Writing your own feature repository and transforms"): a second feature view beside
the example's, a request-time transform over it, and the training set that uses both. Loaded by reference:
``FEATURES_REPO=tests.features.custom_repo:custom_repo``, ``--training-set
tests.features.custom_repo:risk_training_set``; the model records ``tests.features.custom_repo:risk_v1``."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from app.features.definitions import Feature, FeatureRepo, FeatureView
from app.features.offline import OfflineStore
from app.features.request_transforms import RequestTransform
from app.features.training import TrainingSet, point_in_time_training_set
from examples.fraud.repo import user, user_stats

EVENTS = "risk_events"  # labeled requests: user_id, timestamp, amount, is_risky

user_profile = FeatureView(
    name="user_profile",
    entity=user,
    source="features/user_profile",
    ttl=timedelta(days=30),
    description="what the bank knows of a card holder",
    features=(Feature("credit_limit", "float32"), Feature("years_customer", "float32")),
)


def custom_repo() -> FeatureRepo:
    return FeatureRepo(entities=[user], views=[user_stats, user_profile])


def _risk(stats: dict[str, NDArray[np.float64]], request: NDArray[np.float64]) -> NDArray[np.float64]:
    limit = np.nan_to_num(stats["credit_limit"], nan=0.0)
    years = np.nan_to_num(stats["years_customer"], nan=0.0)
    amount = request[:, 0]
    return np.column_stack([limit, years, amount, amount / (limit + 1.0)])


risk_v1 = RequestTransform(
    feature_refs=("user_profile:credit_limit", "user_profile:years_customer"),
    request_fields=("amount",),
    columns=("credit_limit", "years_customer", "amount", "amount_to_limit"),
    fn=_risk,
)


def risk_training_set(offline: OfflineStore, repo: FeatureRepo) -> TrainingSet:
    events = offline.read_window(EVENTS, "timestamp", None, None).sort_by("timestamp")
    return point_in_time_training_set(
        events,
        label="is_risky",
        transform="tests.features.custom_repo:risk_v1",
        repo=repo,
        offline=offline,
        source=f"{offline.url}/{EVENTS} x user_profile",
    )


def profiles(n_users: int, seed: int) -> dict[str, NDArray[np.float64]]:
    rng = np.random.default_rng(seed)
    return {"credit_limit": rng.uniform(500, 5000, n_users), "years_customer": rng.uniform(0, 20, n_users)}


def profile_table(p: dict[str, NDArray[np.float64]], at_us: int) -> pa.Table:
    n = len(p["credit_limit"])
    ts = pa.timestamp("us", tz="UTC")
    return pa.table(
        {
            "user_id": pa.array(np.arange(n), pa.int64()),
            "event_timestamp": pa.array(np.full(n, at_us), ts),
            "created_timestamp": pa.array(np.full(n, at_us), ts),
            "credit_limit": pa.array(p["credit_limit"].astype(np.float32)),
            "years_customer": pa.array(p["years_customer"].astype(np.float32)),
        }
    )


def event_table(p: dict[str, NDArray[np.float64]], n: int, start_us: int, seed: int) -> pa.Table:
    """Requests after the profiles were known; risky when the amount passes half the user's limit."""
    rng = np.random.default_rng(seed)
    users = rng.integers(0, len(p["credit_limit"]), n)
    amount = rng.uniform(0, 1, n) * p["credit_limit"][users]
    return pa.table(
        {
            "user_id": pa.array(users, pa.int64()),
            "timestamp": pa.array(start_us + np.sort(rng.integers(0, 86_400_000_000, n)), pa.timestamp("us", tz="UTC")),
            "amount": pa.array(amount),
            "is_risky": pa.array((amount > 0.5 * p["credit_limit"][users]).astype(np.int64)),
        }
    )
