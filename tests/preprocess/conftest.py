from __future__ import annotations

from collections.abc import Iterator

import pytest

from devharness import GunicornService, TritonServer
from tests.multimodal.trained import Trained, trained_once


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    return trained_once(tmp_path_factory)


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
