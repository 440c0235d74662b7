"""Train the product classifier on generated listings, through the serving preprocessing."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray

from app.multimodal.dataset import Listing, generate
from app.multimodal.model import ProductClassifier
from app.multimodal.preprocessing import decode_and_resize
from app.multimodal.tokenizer import tokenize

TRAIN_IMAGE_SIZE = (320, 240)  # small photos keep generation fast; preprocessing is the same code as serving


@dataclass
class Arrays:
    images: NDArray[np.uint8]
    tokens: NDArray[np.int64]
    labels: NDArray[np.int64]


def to_arrays(listings: list[Listing]) -> Arrays:
    return Arrays(
        np.stack([decode_and_resize(x.image) for x in listings]),
        np.stack([tokenize(x.title) for x in listings]),
        np.array([x.label for x in listings], dtype=np.int64),
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


def train(
    n_train: int = 2400, n_test: int = 600, epochs: int = 25, seed: int = 0
) -> tuple[ProductClassifier, dict[str, float], Arrays]:
    torch.manual_seed(seed)
    train_set = to_arrays(generate(n_train, seed=seed, size=TRAIN_IMAGE_SIZE))
    test_set = to_arrays(generate(n_test, seed=seed + 1, size=TRAIN_IMAGE_SIZE))
    model = ProductClassifier()
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
