from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.multimodal.dataset import Listing, generate
from app.multimodal.model import ProductClassifier
from app.multimodal.training import TRAIN_IMAGE_SIZE, train
from app.multimodal.triton_repo import export
from devharness import GunicornService, TritonServer


@dataclass
class Trained:
    model: ProductClassifier
    metrics: dict[str, float]
    repository: Path
    held_out: list[Listing]


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    model, metrics, _ = train(n_train=900, n_test=240, epochs=25, seed=0)
    repo = tmp_path_factory.mktemp("triton-repo")
    export(model, str(repo))
    return Trained(model, metrics, repo, generate(120, seed=99, size=TRAIN_IMAGE_SIZE))


@pytest.fixture(scope="module")
def triton(trained: Trained, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    srv = TritonServer(tmp_path_factory.mktemp("triton"), trained.repository)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def preprocess(triton: TritonServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GunicornService]:
    srv = GunicornService(
        tmp_path_factory.mktemp("preprocess"),
        {
            "PREPROCESS_TRITON_URL": triton.url,
            "PREPROCESS_MAX_IMAGE_BYTES": "2000000",
            "PREPROCESS_MAX_PIXELS": "20000000",
            "PREPROCESS_TRITON_TIMEOUT_MS": "3000",
        },
        app="app.preprocess.main:app",
    )
    try:
        yield srv.wait_ready()
    finally:
        srv.stop()
