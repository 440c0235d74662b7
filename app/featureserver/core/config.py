"""Feature server settings: the feature store's ``FEATURES_`` variables plus the server's own."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field

from app.features.config import FeatureStoreSettings


class Settings(FeatureStoreSettings):
    max_entities: int = Field(default=1000, ge=1)
    """Most entities one request may ask for."""

    read_timeout_ms: float = Field(default=50.0, gt=0)
    """Budget for one online-store read; past it the request gets a 503."""

    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    """Largest request body accepted (413 above it)."""

    log_level: str = "INFO"
    """Root log level."""

    access_log: bool = True
    """One JSON log line per request."""


@lru_cache
def get_settings() -> Settings:
    return Settings()
