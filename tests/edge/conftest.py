from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from jobs import export_edge
from jobs.settings import JobSettings
from jobs.train import train_and_publish
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


def export_in_process(store: Path, ref: str, out: Path) -> dict[str, Any]:
    """``python -m jobs --store STORE export-edge --model REF --out OUT``'s handler, in this process (the CLI
    itself is run as a process by the tests that are about it)."""
    args = argparse.Namespace(model=ref, checkpoint=None, out=str(out), held_out=600, seed=1)
    return export_edge.run(args, JobSettings().model_copy(update={"model_store_url": str(store)}))


@pytest.fixture(scope="session")
def iris_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small iris model's bundle (5 trees of depth 3), exported once per session."""
    from app.modelstore import LocalModelStore

    work = tmp_path_factory.mktemp("edge-iris")
    train_and_publish(LocalModelStore(work / "store"), dataset="iris", name="iris", n_estimators=5, max_depth=3)
    export_in_process(work / "store", "iris", work / "bundle")
    return work / "bundle"
