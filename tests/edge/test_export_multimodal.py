"""The image+text model as an edge bundle: float parity with torch, the int8 variant's size and accuracy, the
manifest's preprocessing reproducing the platform's, and the runner alone in its minimal virtualenv."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from app.edge import torch_export
from app.edge.runner import EdgeModel, InputError, read_manifest
from app.multimodal.model import save_checkpoint
from app.multimodal.preprocessing import decode_and_resize
from app.onnx.parity import compare_probabilities
from devharness import ROOT
from devharness.jobs import run_job
from tests.multimodal.trained import Trained

# The first test to ask trains the model tests/multimodal shares (trained_once: minutes, once per session), in
# its setup, which counts against the test's timeout: tests/edge runs before tests/multimodal.
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def bundle(trained: Trained, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """export-edge --checkpoint on the trained model's checkpoint, parity on 240 held-out listings."""
    work = tmp_path_factory.mktemp("edge-multimodal")
    save_checkpoint(trained.model, work / "checkpoint")
    args = ("export-edge", "--checkpoint", str(work / "checkpoint"), "--out", str(work / "bundle"))
    run_job(*args, "--held-out", "240").ok()
    return work / "bundle"


def torch_reference(trained: Trained) -> tuple[list[bytes], list[str], np.ndarray]:
    items = trained.held_out
    images = np.stack([decode_and_resize(x.image) for x in items])
    tokens = np.stack([trained.model.tokenizer.tokenize(x.title) for x in items])
    expected = torch_export.torch_probabilities(trained.model, images, tokens)
    return [x.image for x in items], [x.title for x in items], expected


def test_float_and_int8_variants_on_held_out_items(trained: Trained, bundle: Path) -> None:
    images, titles, expected = torch_reference(trained)  # 120 listings of another seed than the export's
    labels = np.array([x.label for x in trained.held_out])
    float_model = EdgeModel(bundle)
    got = float_model.predict_proba(float_model.image_text_inputs(images, titles))
    report = compare_probabilities(got, expected, atol=1e-5)
    assert report.ok and report.rows == 120, report.describe()

    int8 = EdgeModel(bundle, variant="int8")
    quantized = int8.predict_proba(int8.image_text_inputs(images, titles))
    drop = float((expected.argmax(1) == labels).mean() - (quantized.argmax(1) == labels).mean())
    assert drop <= 0.01

    manifest = read_manifest(bundle)
    sizes = {name: entry["size_bytes"] for name, entry in manifest["files"].items()}
    assert sizes["model.int8.onnx"] <= sizes["model.onnx"] / 3
    parity = json.loads((bundle / "parity.json").read_text())
    assert parity["int8"]["passed"] and parity["int8"]["rows"] == 240 and parity["preprocessing"]["passed"]
    assert manifest["opset"] == {"ai.onnx": torch_export.OPSET}
    assert manifest["classes"] == list(trained.model.classes)
    text = manifest["preprocessing"]["text"]
    assert text["vocabulary"] == list(trained.model.tokenizer.vocabulary) and text["max_tokens"] == 16
    assert manifest["preprocessing"]["image"]["size"] == 64
    assert manifest["preprocessing"]["image"]["resampling"] == "bilinear"


def test_runner_alone_in_its_minimal_virtualenv(
    trained: Trained, bundle: Path, runner_python: Path, tmp_path: Path
) -> None:
    """runner.py copied alone beside nothing of the platform, run by a python that has only onnxruntime, NumPy and
    Pillow (-I: no user site, no PYTHONPATH, no current directory on sys.path)."""
    shutil.copy(ROOT / "app" / "edge" / "runner.py", tmp_path / "runner.py")
    items = trained.held_out[:3]
    args = []
    for i, item in enumerate(items):
        (tmp_path / f"{i}.jpg").write_bytes(item.image)
        args += ["--image", str(tmp_path / f"{i}.jpg"), "--title", item.title]
    out = subprocess.run(
        [str(runner_python), "-I", str(tmp_path / "runner.py"), str(bundle), *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    _, _, expected = torch_reference(trained)
    assert np.max(np.abs(np.asarray(result["probabilities"]) - expected[:3])) <= 1e-5
    assert result["labels"] == [trained.model.classes[i] for i in expected[:3].argmax(1)]


def test_image_and_token_inputs_are_checked(bundle: Path) -> None:
    model = EdgeModel(bundle)
    image = np.zeros((2, 64, 64, 3), dtype=np.uint8)
    tokens = np.zeros((2, 16), dtype=np.int64)
    assert model.predict_proba({"image": image, "tokens": tokens}).shape == (2, len(model.classes))
    with pytest.raises(InputError, match="input 'image' must be uint8, got float32"):
        model.predict_proba([image.astype(np.float32), tokens])
    with pytest.raises(InputError, match=r"input 'image' must have shape \[N, 64, 64, 3\], got \[2, 32, 32, 3\]"):
        model.predict_proba([image[:, :32, :32], tokens])
    with pytest.raises(InputError, match="input 'tokens' has 1 rows, the inputs before it 2"):
        model.predict_proba([image, tokens[:1]])
    with pytest.raises(InputError, match="input 'tokens' holds ids outside"):
        model.predict_proba([image, tokens + 10_000])
    with pytest.raises(InputError, match="input 'tokens' must be int64, got float64"):
        model.predict_proba([image, tokens.astype(np.float64)])
    with pytest.raises(InputError, match=r"missing \['tokens'\], unknown \['text'\]"):
        model.predict_proba({"image": image, "text": tokens})
    with pytest.raises(InputError, match="image cannot be decoded"):
        model.image_text_inputs([b"not an image"], ["a title"])
    with pytest.raises(InputError, match="1 images but 2 titles"):
        model.image_text_inputs([b"x"], ["a", "b"])
