from __future__ import annotations

import io

import numpy as np
import torch

from app.multimodal.triton_repo import config_pbtxt, torchscript
from tests.multimodal.trained import Trained


def test_both_modalities_matter(trained: Trained) -> None:
    m = trained.metrics
    assert m["accuracy"] > 0.9, m
    # image alone can find the shape (1 of 3) but not the material family, text alone the reverse
    assert m["accuracy_image_only"] < 0.65 and m["accuracy_text_only"] < 0.5, m
    assert m["accuracy"] - max(m["accuracy_image_only"], m["accuracy_text_only"]) > 0.3


def test_torchscript_equals_eager(trained: Trained) -> None:
    scripted = torch.jit.load(io.BytesIO(torchscript(trained.model)))  # type: ignore[no-untyped-call]
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 255, (5, 64, 64, 3), dtype=np.uint8))
    tokens = torch.from_numpy(rng.integers(0, 30, (5, 16)).astype(np.int64))
    with torch.no_grad():
        torch.testing.assert_close(scripted(images, tokens), trained.model(images, tokens))


def test_config_flags() -> None:
    cpu = config_pbtxt()
    assert "kind: KIND_CPU" in cpu and 'backend: "python"' in cpu and "dynamic_batching" in cpu
    gpu = config_pbtxt(kind="KIND_GPU", backend="pytorch", dynamic_batching=False)
    assert "kind: KIND_GPU" in gpu and 'platform: "pytorch_libtorch"' in gpu and "dynamic_batching" not in gpu
    assert "model_warmup" in cpu and "max_batch_size: 64" in cpu
