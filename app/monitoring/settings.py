"""Settings of the serving-side monitoring: environment variables prefixed ``MONITORING_``."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class MonitoringSettings(BaseSettings):
    """Read by each prediction worker when it loads a model version."""

    model_config = SettingsConfigDict(env_prefix="MONITORING_", use_attribute_docstrings=True, extra="ignore")

    enabled: bool = True
    """Bin every served row against the model's reference profile (the drift and schema-skew metrics)."""

    disabled_models: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Comma-separated models not to monitor (the per-model switch)."""

    flush_seconds: float = Field(default=1.0, ge=0.0)
    """How often a worker adds its bin counts to the shared metrics (0: after every request)."""

    log_url: str | None = None
    """Sampled served-data log (dir or s3://bucket/prefix; the offline store's URL fits): feature-skew and
    outcome jobs read it. Unset: no log."""

    log_sample_rate: float = Field(default=0.01, ge=0.0, le=1.0)
    """Share of requests whose rows go to the log."""

    log_flush_seconds: float = Field(default=30.0, gt=0.0)
    """How often a worker writes its buffered log rows (one Parquet file per model and flush)."""

    log_buffer_rows: int = Field(default=50_000, ge=1)
    """Most rows a worker buffers for the log; past it rows are dropped and counted, never waited for."""

    @field_validator("disabled_models", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [m.strip() for m in value.split(",") if m.strip()]
        return value

    @field_validator("log_url", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    def monitors(self, model: str) -> bool:
        return self.enabled and model not in self.disabled_models
