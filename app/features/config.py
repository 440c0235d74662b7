"""Feature store settings: environment variables prefixed ``FEATURES_`` (jobs and feature server)."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from app.common.settings import S3Settings
from app.features.definitions import DefinitionError


class FeatureStoreSettings(S3Settings):
    """The S3 endpoint and region come from S3Settings (``AWS_ENDPOINT_URL_S3``, ``AWS_DEFAULT_REGION``:
    no prefix, the same names as the model store's and the AWS SDK's)."""

    model_config = SettingsConfigDict(env_prefix="FEATURES_", use_attribute_docstrings=True, extra="ignore")

    repo: str | None = None
    """Feature definitions as code: ``module:function`` returning a FeatureRepo. The platform names no
    repository of its own: unset (or empty), what needs one fails naming this variable."""

    offline_url: str = "./var/offline"
    """Offline store root: a directory, or s3://bucket/prefix."""

    redis_url: str = "redis://127.0.0.1:6379/0"
    """Online store: redis:// or rediss:// URL (password in the URL or REDIS_PASSWORD-style secret)."""

    redis_cluster: bool = False
    """Connect to a Redis Cluster (ElastiCache cluster mode) instead of a single primary."""

    redis_timeout_seconds: float = Field(default=1.0, gt=0)
    """Connect and read timeout for the online store."""

    expiry_grace_hours: float = Field(default=24.0, ge=0)
    """How long past its TTL a value stays in Redis so reads can report it EXPIRED rather than MISSING."""

    lookback_minutes: float = Field(default=60.0, ge=0)
    """Incremental materialization re-reads this far behind the watermark, for late-arriving rows."""

    lock_ttl_seconds: float = Field(default=120.0, gt=1)
    """Materialization lock expiry; a dead run's lock frees itself after this long."""

    pushgateway_url: str | None = None
    """Prometheus Pushgateway for batch-job metrics (e.g. http://pushgateway:9091); unset: no push."""

    @field_validator("repo", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    def require_repo(self) -> str:
        """The configured repository's reference; no repository is a DefinitionError naming the variable."""
        if self.repo is None:
            raise DefinitionError(
                "no feature repository configured: set FEATURES_REPO to the module:function that returns it"
            )
        return self.repo

    @property
    def expiry_grace(self) -> timedelta:
        return timedelta(hours=self.expiry_grace_hours)

    @property
    def lookback(self) -> timedelta:
        return timedelta(minutes=self.lookback_minutes)
