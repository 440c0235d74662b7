"""Feature server settings: the feature store's ``FEATURES_`` variables plus the server's own."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from app.common.settings import ServiceSettings
from app.features.config import FeatureStoreSettings


class Settings(ServiceSettings, FeatureStoreSettings):
    """The feature store's settings with the ``FEATURES_`` prefix, the server's own, and ServiceSettings'
    log level, access log and body limit (``FEATURES_LOG_LEVEL``, ...)."""

    model_config = SettingsConfigDict(env_prefix="FEATURES_", use_attribute_docstrings=True, extra="ignore")

    max_entities: int = Field(default=1000, ge=1)
    """Most entities one request may ask for."""

    read_timeout_ms: float = Field(default=50.0, gt=0)
    """Budget for one online-store read; past it the request gets a 503."""

    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    """Largest request body accepted, counted as it streams and after content decoding (413 above it)."""


@lru_cache
def get_settings() -> Settings:
    return Settings()
