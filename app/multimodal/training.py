"""Train the image+text classifier on labelled items, through the serving preprocessing.

The items, their class names and the title vocabulary come from the caller (a scenario's dataset); the
model carries the class names and the vocabulary from here on (its checkpoint, then Triton's config).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from numpy.typing import NDArray

from app.multimodal.model import ProductClassifier
from app.multimodal.preprocessing import decode_and_resize
from app.multimodal.tokenizer import Tokenizer


class LabelledItem(Protocol):
    """One labelled item: encoded image bytes, a title, and the index of its class."""

    @property
    def image(self) -> bytes: ...
    @property
    def title(self) -> str: ...
    @property
    def label(self) -> int: ...


@dataclass
class Arrays:
    images: NDArray[np.uint8]
    tokens: NDArray[np.int64]
    labels: NDArray[np.int64]


def to_arrays(items: Sequence[LabelledItem], tokenizer: Tokenizer) -> Arrays:
    """The model's inputs, made as serving makes them (the same image preprocessing, the model's tokenizer)."""
    return Arrays(
        np.stack([decode_and_resize(x.image) for x in items]),
        np.stack([tokenizer.tokenize(x.title) for x in items]),
        np.array([x.label for x in items], dtype=np.int64),
    )


def predict(model: ProductClassifier, data: Arrays, batch: int = 256) -> NDArray[np.float32]:
    model.eval()
    outs = []
    with torch.no_grad():
        for i in range(0, len(data.labels), batch):
            outs.append(
                model(torch.from_numpy(data.images[i : i + batch]), torch.from_numpy(data.tokens[i : i + batch]))
            )
    return torch.cat(outs).numpy()


def accuracy(model: ProductClassifier, data: Arrays) -> float:
    return float((predict(model, data).argmax(1) == data.labels).mean())


def fit(
    train_items: Sequence[LabelledItem],
    test_items: Sequence[LabelledItem],
    classes: Sequence[str],
    vocabulary: Sequence[str],
    epochs: int = 25,
    seed: int = 0,
) -> tuple[ProductClassifier, dict[str, float], Arrays]:
    """Train on ``train_items`` (labels index ``classes``, titles tokenized with ``vocabulary``); metrics on
    ``test_items``."""
    torch.manual_seed(seed)
    model = ProductClassifier(classes, vocabulary)
    train_set, test_set = to_arrays(train_items, model.tokenizer), to_arrays(test_items, model.tokenizer)
    for name, data in (("train", train_set), ("test", test_set)):
        if len(data.labels) and not 0 <= int(data.labels.min()) <= int(data.labels.max()) < len(classes):
            raise ValueError(f"{name} labels must index the {len(classes)} classes")
    n_train = len(train_set.labels)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    rng = np.random.default_rng(seed)
    images, tokens, labels = (torch.from_numpy(a) for a in (train_set.images, train_set.tokens, train_set.labels))
    for _ in range(epochs):
        model.train()
        for idx in np.array_split(rng.permutation(n_train), max(1, n_train // 64)):
            i = torch.from_numpy(idx)
            opt.zero_grad()
            loss = loss_fn(model.logits(images[i], tokens[i]), labels[i])
            loss.backward()
            opt.step()
    # Ablations: each modality alone (the other blanked) must fall far short of both.
    blank_text = Arrays(test_set.images, np.zeros_like(test_set.tokens), test_set.labels)
    blank_image = Arrays(np.full_like(test_set.images, 200), test_set.tokens, test_set.labels)
    metrics = {
        "accuracy": accuracy(model, test_set),
        "accuracy_image_only": accuracy(model, blank_text),
        "accuracy_text_only": accuracy(model, blank_image),
    }
    return model, metrics, test_set
