from __future__ import annotations

import pytest

from tests.multimodal.trained import Trained, trained_once


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    return trained_once(tmp_path_factory)
