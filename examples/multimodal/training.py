"""Train the platform's image+text classifier on the scenario's generated listings."""

from __future__ import annotations

from app.multimodal.model import ProductClassifier
from app.multimodal.training import Arrays, fit
from examples.multimodal.dataset import CLASSES, VOCABULARY, generate

TRAIN_IMAGE_SIZE = (320, 240)  # small photos keep generation fast; preprocessing is the same code as serving


def train(
    n_train: int = 2400, n_test: int = 600, epochs: int = 25, seed: int = 0
) -> tuple[ProductClassifier, dict[str, float], Arrays]:
    train_set = generate(n_train, seed=seed, size=TRAIN_IMAGE_SIZE)
    test_set = generate(n_test, seed=seed + 1, size=TRAIN_IMAGE_SIZE)
    return fit(train_set, test_set, CLASSES, VOCABULARY, epochs=epochs, seed=seed)
