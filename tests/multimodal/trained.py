"""The small multimodal model the multimodal and preprocessing-service tests share, trained once
per session (it takes minutes) whichever of the two directories asks first."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from app.multimodal.model import ProductClassifier
from app.multimodal.triton_repo import export
from examples.multimodal.dataset import Listing, generate
from examples.multimodal.training import TRAIN_IMAGE_SIZE, train


@dataclass
class Trained:
    model: ProductClassifier
    metrics: dict[str, float]
    repository: Path
    held_out: list[Listing]


_trained: dict[str, Trained] = {}


def trained_once(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """Trains and exports on the first call of the session; later calls return the same model."""
    if "model" not in _trained:
        model, metrics, _ = train(n_train=900, n_test=240, epochs=25, seed=0)
        repo = tmp_path_factory.mktemp("triton-repo")
        export(model, str(repo))
        _trained["model"] = Trained(model, metrics, repo, generate(120, seed=99, size=TRAIN_IMAGE_SIZE))
    return _trained["model"]
