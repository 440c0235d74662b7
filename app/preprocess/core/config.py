"""Settings of the preprocessing service: environment variables prefixed ``PREPROCESS_``."""

from __future__ import annotations

from functools import lru_cache
from typing import Self

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from app.common.settings import ServiceSettings
from app.multimodal.preprocessing import MAX_FULL_DECODE_PIXELS, MAX_PIXELS


class Settings(ServiceSettings):
    """Log level, access log and body limit come from ServiceSettings. The operator's knob is
    ``max_image_bytes``; the body limit follows it (twice: the base64 of an image in a JSON body)."""

    model_config = SettingsConfigDict(env_prefix="PREPROCESS_", use_attribute_docstrings=True, extra="ignore")

    triton_url: str = "127.0.0.1:8000"
    """Triton's HTTP endpoint, host:port."""

    model_name: str = "product_classifier"
    """Model in Triton's repository."""

    triton_timeout_ms: float = Field(default=2000.0, gt=0)
    """Budget for one Triton round trip; past it the request gets a 503."""

    max_image_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    """Largest image accepted, in bytes (413 above it)."""

    max_body_bytes: int = Field(default=2 * 10 * 1024 * 1024, ge=1024)
    """Largest request body accepted (413 above it). Unset: twice ``max_image_bytes``, room for the
    image base64-encoded in a JSON body; set, it must be at least ``max_image_bytes``."""

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

    @model_validator(mode="after")
    def _body_follows_image(self) -> Self:
        if "max_body_bytes" not in self.model_fields_set:
            self.max_body_bytes = 2 * self.max_image_bytes
        elif self.max_body_bytes < self.max_image_bytes:
            raise ValueError(
                f"max_body_bytes ({self.max_body_bytes}) is below max_image_bytes ({self.max_image_bytes}):"
                " no image of the allowed size could arrive"
            )
        return self


@lru_cache
def get_settings() -> Settings:
    return Settings()
