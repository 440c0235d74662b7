"""The feature store's two stores, built from its settings: the one way the jobs (and anything else
holding a FeatureStoreSettings) open them."""

from __future__ import annotations

from app.features.config import FeatureStoreSettings
from app.features.offline import OfflineStore
from app.features.online import OnlineStore, connect

# Arrow's S3 client needs a region to sign with; the AWS SDK default when AWS_DEFAULT_REGION is unset.
DEFAULT_REGION = "us-east-1"


def offline_store(s: FeatureStoreSettings) -> OfflineStore:
    return OfflineStore(s.offline_url, s3_endpoint_url=s.s3_endpoint_url, s3_region=s.s3_region or DEFAULT_REGION)


def online_store(s: FeatureStoreSettings) -> OnlineStore:
    client = connect(s.redis_url, cluster=s.redis_cluster, timeout_s=s.redis_timeout_seconds)
    return OnlineStore(client, expiry_grace=s.expiry_grace)
