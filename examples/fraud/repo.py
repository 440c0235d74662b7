"""The fraud scenario's feature repository: card-transaction risk scoring for a ``user`` entity
(``FEATURES_REPO=examples.fraud.repo:reference_repo``)."""

from __future__ import annotations

from datetime import timedelta

from app.features.definitions import Entity, Feature, FeatureRepo, FeatureView

user = Entity(name="user", join_key="user_id", description="card holder")

user_stats = FeatureView(
    name="user_stats",
    entity=user,
    source="features/user_stats",
    ttl=timedelta(days=2),
    description="rolling aggregates of a user's transactions, one row per user per day",
    features=(
        Feature("txn_count_1d", "int64"),
        Feature("txn_count_7d", "int64"),
        Feature("txn_count_30d", "int64"),
        Feature("amount_sum_7d", "float32"),
        Feature("amount_mean_7d", "float32"),
        Feature("amount_mean_30d", "float32"),
        Feature("amount_max_30d", "float32"),
        Feature("amount_std_30d", "float32"),
        Feature("distinct_merchants_30d", "int64"),
        Feature("account_age_days", "float32"),
    ),
)

# The stream scorer's window features (app.stream, STREAM_WINDOWS=10m,1h on amount) as it served them:
# its feature log appends them to this dataset, so a training set joins exactly what serving saw. Not
# materialized: the scorer keeps them current in Redis itself.
user_activity = FeatureView(
    name="user_activity",
    entity=user,
    source="features/stream_activity",
    ttl=timedelta(hours=1),
    online=False,
    description="a user's transactions in the last 10 minutes and hour, as the stream scorer computed them",
    features=(
        Feature("count_10m", "float64"),
        Feature("amount_sum_10m", "float64"),
        Feature("count_1h", "float64"),
        Feature("amount_sum_1h", "float64"),
    ),
)

TRANSACTIONS = "transactions"


def reference_repo() -> FeatureRepo:
    return FeatureRepo(entities=[user], views=[user_stats, user_activity])
