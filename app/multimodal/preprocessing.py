"""CPU preprocessing: bytes -> small uint8 RGB array, fast and defensive.

Fast path: JPEG draft mode (libjpeg decodes at 1/2, 1/4 or 1/8 scale straight from the DCT
coefficients, so a 1600x1200 photo is never fully decoded for a 64x64 input), then
``reduce`` by an integer factor, then one small resample. Pixels stay uint8: normalization
happens inside the model, on the accelerator.

Defensive: the pixel count is checked from the header before decoding (decompression
bombs), truncated files fail the decode instead of yielding grey, and every failure is an
``ImageError`` with a message a client can act on.
"""

from __future__ import annotations

import io
import time
import warnings

import numpy as np
from numpy.typing import NDArray
from PIL import Image, UnidentifiedImageError

IMAGE_SIZE = 64


class ImageError(ValueError):
    """The upload is not a usable image; the message says why."""


def decode_and_resize(
    data: bytes, size: int = IMAGE_SIZE, max_pixels: int = 40_000_000, timings: dict[str, float] | None = None
) -> NDArray[np.uint8]:
    """``timings``, when given, receives ``decode_ms`` and ``resize_ms``."""
    t0 = time.perf_counter()
    if not data:
        raise ImageError("image is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img: Image.Image = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > max_pixels:
                raise ImageError(f"image is {w}x{h} = {w * h} pixels, above the limit of {max_pixels}")
            if img.format == "JPEG":
                img.draft("RGB", (size * 2, size * 2))  # type: ignore[attr-defined]  # DCT scaling: decode at >= 2x the target
            img.load()  # raises on truncated data instead of padding with grey
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"image is above the limit of pixels Pillow will decode ({exc})") from None
    except UnidentifiedImageError:
        raise ImageError("not an image (unrecognized format)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"image cannot be decoded: {exc}") from None
    t1 = time.perf_counter()
    if img.mode != "RGB":
        img = img.convert("RGB")
    factor = min(img.width, img.height) // (size * 2)
    if factor >= 2:
        img = img.reduce(factor)  # box filter by an integer factor: cheap, no aliasing
    img = img.resize((size, size), Image.Resampling.BILINEAR)
    out = np.asarray(img, dtype=np.uint8)
    if timings is not None:
        timings["decode_ms"] = (t1 - t0) * 1000
        timings["resize_ms"] = (time.perf_counter() - t1) * 1000
    return out


def naive_decode_and_resize(data: bytes, size: int = IMAGE_SIZE) -> NDArray[np.uint8]:
    """The baseline the benchmark compares with: full decode, convert, one big resample."""
    img = Image.open(io.BytesIO(data)).convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.uint8)
