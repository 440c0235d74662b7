from __future__ import annotations

from pathlib import Path

import pytest

from tests.edge import minimal_venv
from tests.multimodal.trained import Trained, trained_once


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """The small image+text model tests/multimodal trains (once per session, shared)."""
    return trained_once(tmp_path_factory)


@pytest.fixture(scope="session")
def runner_python() -> Path:
    """The python of a virtualenv with only onnxruntime, NumPy and Pillow (var/edge-runner-venv)."""
    return minimal_venv.ensure()
