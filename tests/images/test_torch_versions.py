"""Finding 10 of issue 8: the TorchScript file the export job writes is loaded by another torch in Triton.

- CPU (kind, the tests): images/triton-cpu installs torch at the multimodal extra's pin, the one the export
  image (jobs-multimodal) installs: the same version by construction, checked here.
- GPU (NGC's image): its pytorch backend's libtorch is older than the export's torch. The real export
  command writes model.pt here; a throwaway virtualenv with torch of the GPU image's version
  (`make torch-gpu-venv`, or TORCH_GPU_PYTHON) loads it and must give the export torch's outputs.
  Without that virtualenv (~4 GB of CUDA wheels) the test is skipped, with the reason."""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from tests.deploy.images import IMAGES, ROOT
from tests.images.test_image_imports import PYPROJECT, closure

GPU_PYTHON = Path(os.environ.get("TORCH_GPU_PYTHON", ROOT / "var" / "torch-gpu-venv" / "bin" / "python"))


def _torch_pin(requirements: list[str]) -> str:
    (pin,) = [str(Requirement(r).specifier) for r in requirements if Requirement(r).name == "torch"]
    return pin


def test_cpu_triton_and_the_export_job_share_torch() -> None:
    cpu, export = IMAGES["triton-cpu"], IMAGES["jobs-multimodal"]
    assert "torch" in closure(export.requirements)
    (extra,) = [r.removeprefix("ml-platform[").removesuffix("]") for r in export.requirements]
    export_pin = _torch_pin(PYPROJECT["optional-dependencies"][extra])
    assert export_pin.startswith("==") and _torch_pin(cpu.requirements) == export_pin
    assert cpu.build_args["TORCH_VERSION"] == export_pin.removeprefix("==")
    # and the tests' Triton (the same entrypoint.sh, with this virtualenv) runs that version too
    assert Version(md.version("torch")).base_version == export_pin.removeprefix("==")


LOAD = """
import json, sys, torch
model = torch.jit.load(sys.argv[1], map_location="cpu").eval()
io = torch.load(sys.argv[2], weights_only=True)
with torch.no_grad():
    out = model(io["image"], io["tokens"])
print(json.dumps({"torch": torch.__version__, "max_abs_diff": (out - io["probs"]).abs().max().item()}))
"""


def test_gpu_triton_torch_loads_the_exported_torchscript(tmp_path: Path) -> None:
    gpu_torch = IMAGES["triton"].labels["io.ml-platform.libtorch-version"]
    if not GPU_PYTHON.exists():
        pytest.skip(f"no virtualenv with torch {gpu_torch} at {GPU_PYTHON}: `make torch-gpu-venv` (~4 GB)")
    import torch

    from app.multimodal.model import ProductClassifier, save_checkpoint
    from app.multimodal.preprocessing import IMAGE_SIZE
    from app.multimodal.tokenizer import MAX_TOKENS
    from examples.multimodal.dataset import CLASSES, VOCABULARY

    torch.manual_seed(0)
    save_checkpoint(ProductClassifier(CLASSES, VOCABULARY), tmp_path / "ckpt")
    repo = tmp_path / "repo"
    # the export Job's command on GPU (charts/ml-platform/charts/multimodal/templates/export-job.yaml)
    export = ["export-triton", "--checkpoint", str(tmp_path / "ckpt"), "--repository", str(repo)]
    p = subprocess.run(
        [sys.executable, "-m", "jobs", *export, "--gpu", "--backend", "pytorch"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        check=False,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    exported = repo / "product_classifier" / "1" / "model.pt"
    assert 'platform: "pytorch_libtorch"' in (repo / "product_classifier" / "config.pbtxt").read_text()
    g = torch.Generator().manual_seed(1)
    image = torch.randint(0, 256, (4, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=torch.uint8, generator=g)
    tokens = torch.randint(0, len(VOCABULARY) + 2, (4, MAX_TOKENS), dtype=torch.int64, generator=g)
    with torch.no_grad():
        probs = torch.jit.load(str(exported)).eval()(image, tokens)  # type: ignore[no-untyped-call]
    torch.save({"image": image, "tokens": tokens, "probs": probs}, tmp_path / "io.pt")
    run = subprocess.run(
        [str(GPU_PYTHON), "-W", "ignore", "-c", LOAD, str(exported), str(tmp_path / "io.pt")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert Version(result["torch"]).base_version == gpu_torch, result
    assert Version(result["torch"]) < Version(torch.__version__)  # it is the older torch that loads the file
    assert result["max_abs_diff"] < 1e-5, result
