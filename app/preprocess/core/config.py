"""Settings of the preprocessing service: environment variables prefixed ``PREPROCESS_``."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.multimodal.preprocessing import MAX_FULL_DECODE_PIXELS, MAX_PIXELS


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PREPROCESS_", use_attribute_docstrings=True, extra="ignore")

    triton_url: str = "127.0.0.1:8000"
    """Triton's HTTP endpoint, host:port."""

    model_name: str = "product_classifier"
    """Model in Triton's repository."""

    triton_timeout_ms: float = Field(default=2000.0, gt=0)
    """Budget for one Triton round trip; past it the request gets a 503."""

    max_image_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    """Largest upload accepted (413 above it)."""

    max_pixels: int = Field(default=MAX_PIXELS, ge=1)
    """Largest image in pixels, checked from the header before decoding (decompression bombs).
    JPEG is decoded at 1/8 scale, so this bounds little more than the bytes read."""

    max_full_decode_pixels: int = Field(default=MAX_FULL_DECODE_PIXELS, ge=1)
    """Largest image in pixels for the formats decoded at full size (PNG, WebP, GIF, BMP, TIFF):
    memory and CPU per request grow with it (docs/operations.md has the measured worst case)."""

    max_text_chars: int = Field(default=300, ge=1)
    """Longest title accepted."""

    decode_threads: int = Field(default=2, ge=1)
    """Threads per worker for decoding and resizing (Pillow releases the GIL while decoding)."""

    log_level: str = "INFO"
    """Root log level."""

    access_log: bool = True
    """One JSON log line per request."""


@lru_cache
def get_settings() -> Settings:
    return Settings()
