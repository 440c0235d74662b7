from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devharness import GunicornService


@pytest.fixture(scope="module")
def service(trained_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GunicornService]:
    """The service over the shared trained store, two workers, as production runs it."""
    srv = GunicornService(
        tmp_path_factory.mktemp("svc"),
        {
            "MODEL_STORE_URL": str(trained_store),
            "PREDICT_DEFAULT_MODEL": "breast-cancer",
            "PREDICT_MAX_INSTANCES": "100",
            "PREDICT_MAX_BODY_BYTES": "65536",
        },
    )
    try:
        yield srv.wait_ready()
    finally:
        srv.stop()
