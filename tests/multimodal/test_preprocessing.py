from __future__ import annotations

import io
import random
import time

import numpy as np
import pytest
from PIL import Image

from app.multimodal.preprocessing import ImageError, decode_and_resize, naive_decode_and_resize
from app.multimodal.tokenizer import MAX_TOKENS, UNK, Tokenizer
from examples.multimodal.dataset import VOCABULARY, generate


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
    tokenize = Tokenizer(VOCABULARY).tokenize
    ids = tokenize("Deluxe  WOOL set, gift!")
    assert ids.shape == (MAX_TOKENS,) and ids.dtype == np.int64
    assert (ids[:4] > 1).all() and (ids[4:] == 0).all()
    assert tokenize("zzz unknownword")[:2].tolist() == [UNK, UNK]
    assert (tokenize("wool " * 40) > 0).sum() == MAX_TOKENS


def test_token_ids_follow_the_vocabulary_given() -> None:
    tokenizer = Tokenizer(("red", "blue", "x2"))
    assert tokenizer.size == 5  # the words, padding and unknown: the model's embedding size
    assert tokenizer.tokenize("Blue-RED x2 green")[:5].tolist() == [3, 2, 4, UNK, 0]
    assert Tokenizer(("blue", "red")).tokenize("blue red")[:2].tolist() == [2, 3]


@pytest.mark.parametrize(
    ("vocabulary", "message"),
    [
        ((), "it is empty"),
        (("red", "Red"), r"not words: \['Red'\]"),
        (("a b",), "not words"),
        (("red", "blue", "red"), r"repeated: \['red'\]"),
    ],
)
def test_a_vocabulary_the_tokenizer_could_not_match_is_refused(vocabulary: tuple[str, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Tokenizer(vocabulary)


def _seed_images() -> dict[str, bytes]:
    """Small valid files of every format a hostile client might mutate, with real pixel content."""
    gradient = Image.linear_gradient("L").resize((48, 32))
    rgb = Image.merge("RGB", (gradient, gradient.transpose(Image.Transpose.FLIP_LEFT_RIGHT), gradient))
    return {
        "jpeg": _encode(rgb, "JPEG", quality=80),
        "png": _encode(rgb.convert("RGBA"), "PNG"),
        "gif": _encode(rgb.convert("P"), "GIF"),
        "bmp": _encode(rgb, "BMP"),
        "dds": _encode(rgb.convert("RGBA"), "DDS"),
        "tiff": _encode(rgb, "TIFF", compression="tiff_lzw"),
        "webp": _encode(rgb, "WEBP"),
    }


def _mutate(rng: random.Random, data: bytes) -> bytes:
    """Byte flips, boundary integers (sizes, offsets, counts), deletions and insertions."""
    b = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        i, op = rng.randrange(len(b)), rng.random()
        if op < 0.5:
            b[i] = rng.randrange(256)
        elif op < 0.7:
            b[i : i + 4] = rng.choice(
                [b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x7f\xff\xff\xff", b"\x80\x00\x00\x01"]
            )
        elif op < 0.85:
            del b[i : i + rng.randint(1, 16)]
        else:
            b[i:i] = rng.randbytes(rng.randint(1, 16))
    return bytes(b)


def test_fuzzed_images_only_ever_raise_image_error() -> None:
    """Whatever a decoder raises on mutated bytes (NotImplementedError from a DDS header, struct.error,
    IndexError, ...) leaves decode_and_resize as ImageError, which the service answers with a 400.
    Seeded, so a failure reproduces; bounded by cases and by time, so it stays a unit test."""
    rng = random.Random(20260901)
    seeds = _seed_images()
    escaped: dict[str, str] = {}
    cases, deadline = 0, time.monotonic() + 20
    while cases < 8000 and time.monotonic() < deadline:
        for fmt, data in seeds.items():
            mutated = _mutate(rng, data)
            cases += 1
            try:
                out = decode_and_resize(mutated)
            except ImageError:
                continue
            except Exception as exc:
                escaped.setdefault(f"{fmt}: {type(exc).__name__}: {exc}", mutated.hex()[:200])
                continue
            assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert cases >= 2000, f"only {cases} cases ran in the time budget"
    assert not escaped, escaped


def test_formats_outside_the_accepted_set_are_refused() -> None:
    for fmt in ("DDS", "TGA", "PPM"):
        with pytest.raises(ImageError, match="not an image in an accepted format"):
            decode_and_resize(_encode(Image.new("RGB", (32, 32), (1, 2, 3)), fmt))
    for fmt in ("JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP"):
        assert decode_and_resize(_encode(Image.new("RGB", (32, 32), (1, 2, 3)), fmt)).shape == (64, 64, 3)


def _header_only(img: Image.Image, fmt: str, keep: int) -> bytes:
    """The first ``keep`` bytes of a file: a header announcing the size, and too little data to decode."""
    return _encode(img, fmt)[:keep]


def test_pixel_limits_are_checked_from_the_header_before_decoding() -> None:
    # Both files are cut after their header: any decode attempt would fail as "cannot be decoded",
    # so the limit message proves nothing was decoded.
    png_5mp = _header_only(Image.new("1", (2500, 2000)), "PNG", 200)
    with pytest.raises(ImageError, match="PNG image is 2500x2000 = 5000000 pixels, above the limit of 4000000"):
        decode_and_resize(png_5mp)
    jpeg_20mp = _header_only(Image.new("L", (5000, 4000)), "JPEG", 2000)
    with pytest.raises(ImageError, match="= 20000000 pixels, above the limit of 16000000"):
        decode_and_resize(jpeg_20mp)


def test_a_phone_photo_is_cheap_and_the_limits_are_the_service_defaults() -> None:
    from app.preprocess.core.config import Settings

    photo = _encode(Image.linear_gradient("L").resize((4032, 3024)).convert("RGB"), "JPEG", quality=90)
    cpu = time.thread_time()
    assert decode_and_resize(photo).shape == (64, 64, 3)  # 12.2 MP: under the JPEG limit
    assert time.thread_time() - cpu < 0.25  # decoded at 1/8 scale: ~10 ms of CPU, not ~0.3 s
    png = _encode(Image.new("RGB", (2000, 2000), (5, 6, 7)), "PNG")
    assert decode_and_resize(png)[0, 0].tolist() == [5, 6, 7]  # 4 MP product shot: at the limit, accepted
    settings = Settings()
    assert (settings.max_pixels, settings.max_full_decode_pixels) == (16_000_000, 4_000_000)
