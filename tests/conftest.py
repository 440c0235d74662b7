from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.modelstore import LocalModelStore
from jobs.train import train_and_publish
from tests.servers import S3Server


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server(tmp_path_factory.mktemp("seaweedfs"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def trained_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local store with two real models: breast-cancer (scaler + forest) and iris (3 classes)."""
    root = tmp_path_factory.mktemp("store")
    train_and_publish(dataset="breast-cancer", name="breast-cancer", store_url=str(root), n_estimators=20)
    train_and_publish(dataset="iris", name="iris", store_url=str(root), n_estimators=10, max_depth=4)
    return root


@pytest.fixture
def store_copy(trained_store: Path, tmp_path: Path) -> LocalModelStore:
    """A private, writable copy of the trained store for tests that publish or break things."""
    import shutil

    dst = tmp_path / "store"
    shutil.copytree(trained_store, dst)
    return LocalModelStore(dst)
