from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from devharness import ROOT
from examples.multimodal.dataset import CLASSES, VOCABULARY


def jobs(*args: str) -> tuple[int, dict[str, Any]]:
    p = subprocess.run(
        [sys.executable, "-m", "jobs", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=dict(os.environ),
        timeout=300,
        check=False,
    )
    return p.returncode, json.loads(p.stdout.strip().splitlines()[-1])


def test_train_then_export_for_gpu(tmp_path: Path) -> None:
    code, out = jobs(
        "train-multimodal",
        "--output",
        str(tmp_path / "ckpt"),
        "--train-size",
        "120",
        "--test-size",
        "60",
        "--epochs",
        "1",
    )
    assert code == 0 and {"accuracy", "accuracy_image_only", "accuracy_text_only"} <= set(out)
    assert json.loads((tmp_path / "ckpt" / "metrics.json").read_text())["accuracy"] == out["accuracy"]
    assert json.loads((tmp_path / "ckpt" / "classes.json").read_text()) == list(CLASSES)
    assert json.loads((tmp_path / "ckpt" / "vocabulary.json").read_text()) == list(VOCABULARY)
    code, out = jobs(
        "export-triton",
        "--checkpoint",
        str(tmp_path / "ckpt"),
        "--repository",
        str(tmp_path / "repo"),
        "--gpu",
        "--backend",
        "pytorch",
        "--instances",
        "2",
    )
    assert code == 0 and out["kind"] == "KIND_GPU"
    assert out["classes"] == list(CLASSES)
    config = (tmp_path / "repo" / "product_classifier" / "config.pbtxt").read_text()
    assert "kind: KIND_GPU" in config and "count: 2" in config and 'platform: "pytorch_libtorch"' in config
    assert f'string_value: "{",".join(CLASSES)}"' in config  # what the preprocessing service reads
    assert (tmp_path / "repo" / "product_classifier" / "1" / "model.pt").stat().st_size > 10_000
    assert not (tmp_path / "repo" / "product_classifier" / "1" / "model.py").exists()  # libtorch needs no wrapper


def test_export_without_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    code, out = jobs("export-triton", "--checkpoint", str(tmp_path / "none"), "--repository", str(tmp_path / "r"))
    assert code == 1 and "no checkpoint" in out["error"] and "train-multimodal" in out["error"]
