"""The word-level tokenizer that ships with the project (no download): a fixed vocabulary.

Ids: 0 padding, 1 unknown word, 2.. the vocabulary in order. Lowercased, split on anything
that is not a letter or digit, truncated or padded to ``MAX_TOKENS``.
"""

from __future__ import annotations

import re

import numpy as np
from numpy.typing import NDArray

MAX_TOKENS = 16
PAD, UNK = 0, 1
MATERIALS = ("cotton", "linen", "wool", "steel", "aluminium", "titanium")
DESCRIPTORS = ("classic", "modern", "compact", "deluxe", "everyday", "premium", "vintage", "sport", "travel", "home")
NOUNS = ("item", "piece", "set", "kit", "edition", "model", "design", "pack")
EXTRA = ("new", "sale", "with", "for", "and", "the", "limited", "gift", "original", "best")
VOCAB: tuple[str, ...] = (*MATERIALS, *DESCRIPTORS, *NOUNS, *EXTRA)
_INDEX = {w: i + 2 for i, w in enumerate(VOCAB)}
VOCAB_SIZE = len(VOCAB) + 2
_SPLIT = re.compile(r"[^a-z0-9]+")


def tokenize(text: str, max_tokens: int = MAX_TOKENS) -> NDArray[np.int64]:
    words = [w for w in _SPLIT.split(text.lower()) if w]
    ids = [_INDEX.get(w, UNK) for w in words[:max_tokens]]
    out = np.zeros(max_tokens, dtype=np.int64)
    out[: len(ids)] = ids
    return out
