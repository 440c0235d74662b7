from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from app.multimodal.dataset import generate
from app.multimodal.preprocessing import ImageError, decode_and_resize, naive_decode_and_resize
from app.multimodal.tokenizer import MAX_TOKENS, UNK, tokenize


def _encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def test_fast_path_matches_the_naive_one() -> None:
    for listing in generate(5, seed=3):  # 1600x1200 JPEGs
        fast = decode_and_resize(listing.image)
        naive = naive_decode_and_resize(listing.image)
        assert fast.shape == naive.shape == (64, 64, 3) and fast.dtype == np.uint8
        assert np.abs(fast.astype(int) - naive.astype(int)).mean() < 6  # same picture, different filtering


def test_timings_and_other_formats() -> None:
    t: dict[str, float] = {}
    png = _encode(Image.new("RGBA", (300, 200), (10, 20, 30, 128)), "PNG")
    out = decode_and_resize(png, timings=t)
    assert out.shape == (64, 64, 3) and set(t) == {"decode_ms", "resize_ms"}
    gray = _encode(Image.new("L", (100, 100), 7), "JPEG")
    assert decode_and_resize(gray)[0, 0].tolist() == [7, 7, 7]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"definitely not an image", "not an image"),
        (_encode(Image.new("RGB", (640, 480), (200, 10, 10)), "JPEG")[:2000], "cannot be decoded"),
        (_encode(Image.new("1", (10000, 9000)), "PNG"), "above the limit"),  # tiny file, 90M pixels
    ],
    ids=["empty", "garbage", "truncated-jpeg", "decompression-bomb"],
)
def test_bad_images_are_clear_errors(data: bytes, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        decode_and_resize(data, max_pixels=40_000_000)


def test_tokenizer() -> None:
    ids = tokenize("Deluxe  WOOL set, gift!")
    assert ids.shape == (MAX_TOKENS,) and ids.dtype == np.int64
    assert (ids[:4] > 1).all() and (ids[4:] == 0).all()
    assert tokenize("zzz unknownword")[:2].tolist() == [UNK, UNK]
    assert (tokenize("wool " * 40) > 0).sum() == MAX_TOKENS
