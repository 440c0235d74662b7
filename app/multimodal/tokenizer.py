"""The platform's word-level tokenizer (no download): the rules are here, the words are the model's.

A model is trained with a vocabulary (a scenario's word list) and carries it: its checkpoint writes it
beside the weights, the Triton export into config.pbtxt, and the preprocessing service builds its
``Tokenizer`` from Triton's model config, so serving tokenizes exactly as training did.

Rules: lowercased, split on anything that is not a letter or digit, truncated or padded to ``MAX_TOKENS``.
Ids: 0 padding, 1 unknown word, 2.. the vocabulary's words in order.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

MAX_TOKENS = 16
PAD, UNK = 0, 1
_SPLIT = re.compile(r"[^a-z0-9]+")
_WORD = re.compile(r"^[a-z0-9]+$")  # what the split can produce; anything else could never be matched


class Tokenizer:
    def __init__(self, vocabulary: Sequence[str]) -> None:
        """``vocabulary``: the words with an id of their own, in id order (the first is 2)."""
        words = tuple(vocabulary)
        bad = [w for w in words if not isinstance(w, str) or not _WORD.match(w)]
        repeated = sorted(w for w, n in Counter(words).items() if n > 1)
        problems = (["it is empty"] if not words else []) + ([f"not words: {bad[:5]}"] if bad else [])
        problems += [f"repeated: {repeated[:5]}"] if repeated else []
        if problems:
            raise ValueError(
                "a vocabulary is one or more distinct words of lowercase letters and digits; " + "; ".join(problems)
            )
        self.vocabulary = words
        self._index = {w: i + 2 for i, w in enumerate(words)}

    @property
    def size(self) -> int:
        """The number of ids: the words, padding and unknown (the model's embedding size)."""
        return len(self.vocabulary) + 2

    def tokenize(self, text: str, max_tokens: int = MAX_TOKENS) -> NDArray[np.int64]:
        words = [w for w in _SPLIT.split(text.lower()) if w]
        ids = [self._index.get(w, UNK) for w in words[:max_tokens]]
        out = np.zeros(max_tokens, dtype=np.int64)
        out[: len(ids)] = ids
        return out
