"""CPU preprocessing: bytes -> small uint8 RGB array, fast and defensive.

Fast path: JPEG draft mode (libjpeg decodes at 1/2, 1/4 or 1/8 scale straight from the DCT
coefficients, so a 1600x1200 photo is never fully decoded for a 64x64 input), then
``reduce`` by an integer factor, then one small resample. Pixels stay uint8: normalization
happens inside the model, on the accelerator. The other formats have no reduced-scale
decoder in Pillow, so they are decoded whole; ``reduce`` then runs before any mode
conversion where it can, so the full-size image exists once, not twice.

Defensive: only the formats in ``ACCEPTED_FORMATS`` are opened (each decoder is attack
surface); the pixel count is checked from the header before decoding (decompression bombs);
truncated files fail the decode instead of yielding grey; and every failure of a decoder,
whatever it raises, is an ``ImageError`` with a message a client can act on.
"""

from __future__ import annotations

import io
import time
import warnings

import numpy as np
from numpy.typing import NDArray
from PIL import Image, UnidentifiedImageError

IMAGE_SIZE = 64

# What product photos come as. Not DDS, PSD, EPS (Ghostscript), FITS, ...: every extra decoder is
# more code fed with hostile bytes, and fuzzing found decoders raising outside OSError/ValueError.
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")

# The model sees 64x64 = 4,096 pixels; the limits below are the margin for real uploads, sized
# by what a decode costs (docs/operations.md, "Guarantees: HTTP limits and worst cases").
# JPEG is decoded at 1/8 scale (draft mode), so 16 MP takes every common phone and camera photo
# (4032x3024 = 12.2 MP, 4608x3456 = 15.9 MP) for a few MB of memory.
MAX_PIXELS = 16_000_000
# Every other format is decoded whole, 3-4 bytes and ~20 ns of CPU per pixel and more for WebP:
# 4 MP takes 2000x2000 product shots and 2560x1440 screenshots.
MAX_FULL_DECODE_PIXELS = 4_000_000

# Modes ``reduce`` averages correctly; palette and bilevel images are converted to RGB first.
_REDUCIBLE = frozenset({"RGB", "L"})


class ImageError(ValueError):
    """The upload is not a usable image; the message says why."""


def _open(data: bytes, size: int, max_pixels: int, max_full_decode_pixels: int) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # corrupt-metadata chatter from the TIFF/EXIF readers
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img: Image.Image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
            w, h = img.size
            if w * h > max_pixels:
                raise ImageError(f"image is {w}x{h} = {w * h} pixels, above the limit of {max_pixels}")
            if img.format != "JPEG" and w * h > max_full_decode_pixels:
                raise ImageError(
                    f"{img.format} image is {w}x{h} = {w * h} pixels, above the limit of {max_full_decode_pixels}"
                    f" for formats decoded at full size (JPEG is decoded at reduced scale: up to {max_pixels})"
                )
            # JPEG: DCT scaling, decode at >= 2x the target. Every other format ignores it.
            img.draft("RGB", (size * 2, size * 2))
            img.load()  # raises on truncated data instead of padding with grey
            return img
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"image is above the limit of pixels Pillow will decode ({exc})") from None
    except UnidentifiedImageError:
        raise ImageError(f"not an image in an accepted format ({', '.join(ACCEPTED_FORMATS)})") from None
    except Exception as exc:
        # Not only OSError/SyntaxError/ValueError: mutated files make decoders raise
        # NotImplementedError, struct.error, IndexError, ... All are the upload's fault.
        raise ImageError(f"image cannot be decoded: {type(exc).__name__}: {exc}") from None


def _shrink(img: Image.Image, size: int) -> Image.Image:
    if img.mode not in _REDUCIBLE:
        img = img.convert("RGB")
    factor = min(img.width, img.height) // (size * 2)
    if factor >= 2:
        img = img.reduce(factor)  # box filter by an integer factor: cheap, no aliasing
    if img.mode != "RGB":
        img = img.convert("RGB")  # after reduce: converts the small image, not the full one
    return img.resize((size, size), Image.Resampling.BILINEAR)


def decode_and_resize(
    data: bytes,
    size: int = IMAGE_SIZE,
    max_pixels: int = MAX_PIXELS,
    timings: dict[str, float] | None = None,
    max_full_decode_pixels: int = MAX_FULL_DECODE_PIXELS,
) -> NDArray[np.uint8]:
    """``max_pixels`` bounds every image, ``max_full_decode_pixels`` the formats without a reduced-scale
    decoder (all but JPEG); both are checked from the header, before decoding. ``timings``, when
    given, receives ``decode_ms`` and ``resize_ms``."""
    t0 = time.perf_counter()
    if not data:
        raise ImageError("image is empty")
    img = _open(data, size, max_pixels, max_full_decode_pixels)
    t1 = time.perf_counter()
    try:
        out = np.asarray(_shrink(img, size), dtype=np.uint8)
    except Exception as exc:  # a mode or header value the decoder accepted but conversion cannot use
        raise ImageError(f"image cannot be converted to RGB: {type(exc).__name__}: {exc}") from None
    if timings is not None:
        timings["decode_ms"] = (t1 - t0) * 1000
        timings["resize_ms"] = (time.perf_counter() - t1) * 1000
    return out


def naive_decode_and_resize(data: bytes, size: int = IMAGE_SIZE) -> NDArray[np.uint8]:
    """The baseline the benchmark compares with: full decode, convert, one big resample."""
    img = Image.open(io.BytesIO(data)).convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.uint8)
