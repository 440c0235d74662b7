"""Settings of the prediction service: environment variables prefixed ``PREDICT_``."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from app.runtime.settings import RuntimeSettings


class Settings(RuntimeSettings):
    """The model runtime's settings (app/runtime/settings.py) under ``PREDICT_``, and the service's own:
    request limits and where the stream's decisions are read."""

    model_config = SettingsConfigDict(env_prefix="PREDICT_", use_attribute_docstrings=True, extra="ignore")

    max_instances: int = Field(default=1000, ge=1)
    """Most rows one request may carry."""

    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    """Largest request body accepted, counted as it streams and after content decoding (413 above it)."""

    decisions_redis_url: str | None = Field(default=None, validation_alias="STREAM_REDIS_URL")
    """The stream scorer's broker, where GET /v1/decisions/{event_id} reads its decisions; unset: that route
    answers 404 naming this variable. Env ``STREAM_REDIS_URL``, the scorer's own name."""

    decisions_redis_cluster: bool = Field(default=False, validation_alias="STREAM_REDIS_CLUSTER")
    """The broker is a Redis Cluster. Env ``STREAM_REDIS_CLUSTER``."""

    decisions_stream: str = Field(default="decisions", validation_alias="STREAM_OUTPUT_STREAM")
    """The scorer's decision stream (its keys' prefix). Env ``STREAM_OUTPUT_STREAM``."""

    decisions_shards: int = Field(default=1, ge=1, le=1024, validation_alias="STREAM_SHARDS")
    """The scorer's shards, each looked up. Env ``STREAM_SHARDS``."""

    @field_validator("decisions_redis_url", mode="before")
    @classmethod
    def _empty_url_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value


@lru_cache
def get_settings() -> Settings:
    return Settings()
