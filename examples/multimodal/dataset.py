"""Generated product listings (the multimodal scenario's data): a photo-like JPEG and a title; the class
needs both.

Six classes = 3 product shapes (drawn) x 2 material families (named in the title): the
image alone can tell the shape (1 of 3), the title alone the family (1 of 2); only both
give the class. Deterministic from a seed; images are drawn at ``IMAGE_SIZE`` (default
1600x1200, like a phone photo) and saved as JPEG quality 90.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SHAPES = ("round", "square", "triangle")
FAMILIES = ("textile", "metal")
CLASSES = tuple(f"{s}-{f}" for s in SHAPES for f in FAMILIES)
# The title words. The model is trained with VOCABULARY and carries it (checkpoint, then Triton's config), so
# the serving tokenizer gets it from the model; its order fixes the token ids.
MATERIALS = ("cotton", "linen", "wool", "steel", "aluminium", "titanium")
DESCRIPTORS = ("classic", "modern", "compact", "deluxe", "everyday", "premium", "vintage", "sport", "travel", "home")
NOUNS = ("item", "piece", "set", "kit", "edition", "model", "design", "pack")
EXTRA = ("new", "sale", "with", "for", "and", "the", "limited", "gift", "original", "best")
VOCABULARY: tuple[str, ...] = (*MATERIALS, *DESCRIPTORS, *NOUNS, *EXTRA)
FAMILY_MATERIALS = {"textile": MATERIALS[:3], "metal": MATERIALS[3:]}


@dataclass
class Listing:
    image: bytes
    title: str
    label: int


def draw(rng: np.random.Generator, shape: int, size: tuple[int, int]) -> Image.Image:
    w, h = size
    bg = tuple(int(v) for v in rng.integers(150, 255, 3))
    img = Image.new("RGB", (w, h), bg)
    d = ImageDraw.Draw(img)
    for _ in range(6):  # clutter, so the shape has to be found
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        k = int(rng.integers(min(w, h) // 40, min(w, h) // 12))
        d.line([(x, y), (x + k * 3, y + k)], fill=tuple(int(v) for v in rng.integers(90, 200, 3)), width=max(2, k // 4))
    cx, cy = w * rng.uniform(0.35, 0.65), h * rng.uniform(0.35, 0.65)
    r = min(w, h) * rng.uniform(0.18, 0.3)
    color = tuple(int(v) for v in rng.integers(0, 110, 3))
    if SHAPES[shape] == "round":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=color)
    elif SHAPES[shape] == "square":
        d.rectangle([cx - r, cy - r, cx + r, cy + r], fill=color)
    else:
        d.polygon([(cx, cy - r), (cx - r, cy + r * 0.8), (cx + r, cy + r * 0.8)], fill=color)
    return img.filter(ImageFilter.GaussianBlur(radius=1.5))


def title(rng: np.random.Generator, family: str) -> str:
    words = [str(rng.choice(DESCRIPTORS)), str(rng.choice(FAMILY_MATERIALS[family])), str(rng.choice(NOUNS))]
    words += [str(w) for w in rng.choice(EXTRA, size=int(rng.integers(0, 4)))]
    rng.shuffle(words)
    return " ".join(words).capitalize()


def generate(n: int, seed: int = 0, size: tuple[int, int] = (1600, 1200), quality: int = 90) -> list[Listing]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        label = int(rng.integers(0, len(CLASSES)))
        shape, family = divmod(label, len(FAMILIES))
        buf = io.BytesIO()
        draw(rng, shape, size).save(buf, "JPEG", quality=quality)
        out.append(Listing(buf.getvalue(), title(rng, FAMILIES[family]), label))
    return out
