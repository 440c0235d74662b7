from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch

from app.multimodal.triton_repo import config_pbtxt, torchscript
from examples.multimodal.dataset import CLASSES, VOCABULARY
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
    cpu = config_pbtxt(CLASSES, VOCABULARY)
    assert "kind: KIND_CPU" in cpu and 'backend: "python"' in cpu and "dynamic_batching" in cpu
    gpu = config_pbtxt(CLASSES, VOCABULARY, kind="KIND_GPU", backend="pytorch", dynamic_batching=False)
    assert "kind: KIND_GPU" in gpu and 'platform: "pytorch_libtorch"' in gpu and "dynamic_batching" not in gpu
    assert "model_warmup" in cpu and "max_batch_size: 64" in cpu


def test_the_config_names_the_models_classes() -> None:
    cpu = config_pbtxt(CLASSES, VOCABULARY)
    assert f"dims: [ {len(CLASSES)} ]" in cpu
    assert f'parameters: {{ key: "classes", value: {{ string_value: "{",".join(CLASSES)}" }} }}' in cpu
    assert 'string_value: "a,b"' in config_pbtxt(("a", "b"), ("w",))
    with pytest.raises(ValueError, match=r"cannot be written to config\.pbtxt"):
        config_pbtxt(("a", 'b"c'), ("w",))


def test_the_config_names_the_models_vocabulary() -> None:
    cpu = config_pbtxt(CLASSES, VOCABULARY)
    assert f'parameters: {{ key: "vocabulary", value: {{ string_value: "{",".join(VOCABULARY)}" }} }}' in cpu
    assert 'string_value: "red,blue"' in config_pbtxt(("a", "b"), ("red", "blue"))
    with pytest.raises(ValueError, match="lowercase letters and digits"):
        config_pbtxt(("a", "b"), ("red", 'blue"'))


def test_the_model_carries_its_classes_through_the_checkpoint(tmp_path: Path) -> None:
    from app.multimodal.model import ProductClassifier, load_checkpoint, save_checkpoint

    torch.manual_seed(0)
    model = ProductClassifier(("cat", "dog", "owl"), ("furry", "feathered"))
    assert model.embed.num_embeddings == 4  # two words, padding and unknown
    loaded = load_checkpoint(save_checkpoint(model, tmp_path))
    assert loaded.classes == ("cat", "dog", "owl")
    assert loaded.tokenizer.vocabulary == ("furry", "feathered")
    x = torch.zeros(1, 64, 64, 3, dtype=torch.uint8), torch.ones(1, 16, dtype=torch.int64)
    with torch.no_grad():
        assert loaded(*x).shape == (1, 3)
        torch.testing.assert_close(loaded(*x), model(*x))
    with pytest.raises(ValueError, match="distinct"):
        ProductClassifier(("a", "a"), VOCABULARY)
    with pytest.raises(ValueError, match="repeated"):
        ProductClassifier(("a", "b"), ("w", "w"))
