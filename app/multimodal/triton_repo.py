"""Export the classifier as a Triton model repository (a local directory or s3://).

    <repo>/product_classifier/config.pbtxt
    <repo>/product_classifier/1/model.pt         TorchScript, the one artifact both backends run
    <repo>/product_classifier/1/model.py         python-backend wrapper (CPU fallback)

Backends: the cloud image runs ``pytorch`` (libtorch, GPU: ``platform: "pytorch_libtorch"``);
here and on kind without NVIDIA's image, the ``python`` backend loads the same TorchScript
file with torch. Both execute the same TorchScript graph, so they agree; the tests check the
python backend's outputs against TorchScript in-process.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from app.multimodal.preprocessing import IMAGE_SIZE
from app.multimodal.tokenizer import MAX_TOKENS, Tokenizer

if TYPE_CHECKING:
    from app.multimodal.model import ProductClassifier

MODEL_NAME = "product_classifier"
INPUT_IMAGE, INPUT_TOKENS, OUTPUT = "IMAGE", "TOKENS", "PROBS"
# The output's class names travel in config.pbtxt as this parameter (comma-separated, in output order):
# the preprocessing service reads them from Triton's model config, so it needs neither the checkpoint
# nor the dataset that defined them.
CLASSES_PARAMETER = "classes"
# The tokenizer's words travel the same way (comma-separated, in id order): the service tokenizes with the
# model's vocabulary, read from the same config.
VOCABULARY_PARAMETER = "vocabulary"
_CLASS_NAME = re.compile(r"^[A-Za-z0-9_.:/ +-]+$")  # nothing that needs quoting in pbtxt or splits the list

PYTHON_BACKEND_MODEL = '''
"""Triton python backend: runs the TorchScript file next to this one, batched."""
import os
import sys

# The backend's stub starts its interpreter without reading PYTHONPATH; honour it here so the
# model finds torch in the serving environment (a venv or the image's site-packages).
for _p in os.environ.get("PYTHONPATH", "").split(os.pathsep):
    if _p and _p not in sys.path:
        sys.path.append(_p)

import torch  # noqa: E402
from torch.utils.dlpack import from_dlpack, to_dlpack  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        torch.set_num_threads(int(os.environ.get("MODEL_THREADS", "1")))
        here = os.path.dirname(__file__)
        self.model = torch.jit.load(os.path.join(here, "model.pt"), map_location="cpu").eval()

    def execute(self, requests):
        # DLPack in and out: zero-copy, and no NumPy in the data path (this Triton's stub was
        # built against NumPy 1.x; our environment has NumPy 2).
        images = [from_dlpack(pb_utils.get_input_tensor_by_name(r, "IMAGE").to_dlpack()) for r in requests]
        tokens = [from_dlpack(pb_utils.get_input_tensor_by_name(r, "TOKENS").to_dlpack()) for r in requests]
        sizes = [len(i) for i in images]
        with torch.no_grad():
            probs = self.model(torch.cat(images), torch.cat(tokens)).float().contiguous()
        out = []
        for chunk in torch.split(probs, sizes):
            tensor = pb_utils.Tensor.from_dlpack("PROBS", to_dlpack(chunk.contiguous()))
            out.append(pb_utils.InferenceResponse(output_tensors=[tensor]))
        return out
'''


def config_pbtxt(
    classes: Sequence[str],
    vocabulary: Sequence[str],
    kind: Literal["KIND_CPU", "KIND_GPU"] = "KIND_CPU",
    backend: Literal["python", "pytorch"] = "python",
    max_batch_size: int = 64,
    dynamic_batching: bool = True,
    max_queue_delay_us: int = 2000,
    instances: int = 1,
) -> str:
    bad = [c for c in classes if not _CLASS_NAME.match(c)]
    if bad:
        raise ValueError(f"class names {bad} cannot be written to config.pbtxt (letters, digits, '_.:/ +-' only)")
    words = Tokenizer(vocabulary).vocabulary  # lowercase letters and digits: nothing to quote, no comma
    image = f"data_type: TYPE_UINT8, dims: [ {IMAGE_SIZE}, {IMAGE_SIZE}, 3 ]"
    tokens = f"data_type: TYPE_INT64, dims: [ {MAX_TOKENS} ]"
    lines = [
        f'name: "{MODEL_NAME}"',
        'backend: "python"' if backend == "python" else 'platform: "pytorch_libtorch"',
        f"max_batch_size: {max_batch_size}",
        "input [",
        f'  {{ name: "{INPUT_IMAGE}", {image} }},',
        f'  {{ name: "{INPUT_TOKENS}", {tokens} }}',
        "]",
        f'output [ {{ name: "{OUTPUT}", data_type: TYPE_FP32, dims: [ {len(classes)} ] }} ]',
        f"instance_group [ {{ count: {instances}, kind: {kind} }} ]",
    ]
    if dynamic_batching:
        lines += [
            "dynamic_batching {",
            "  preferred_batch_size: [ 8, 16, 32 ]",
            f"  max_queue_delay_microseconds: {max_queue_delay_us}",
            "}",
        ]
    lines += [
        "model_warmup [ {",
        '  name: "zeros"',
        "  batch_size: 1",
        f'  inputs {{ key: "{INPUT_IMAGE}" value: {{ {image}, zero_data: true }} }}',
        f'  inputs {{ key: "{INPUT_TOKENS}" value: {{ {tokens}, zero_data: true }} }}',
        "} ]",
        f'parameters: {{ key: "{CLASSES_PARAMETER}", value: {{ string_value: "{",".join(classes)}" }} }}',
        f'parameters: {{ key: "{VOCABULARY_PARAMETER}", value: {{ string_value: "{",".join(words)}" }} }}',
    ]
    return "\n".join(lines) + "\n"


def torchscript(model: ProductClassifier) -> bytes:
    # torch here, not at the top: the preprocessing service imports this module's tensor names and
    # its image has no torch (tests/images/test_image_imports.py).
    import torch

    model.eval()
    example = (
        torch.zeros(1, IMAGE_SIZE, IMAGE_SIZE, 3, dtype=torch.uint8),
        torch.zeros(1, MAX_TOKENS, dtype=torch.int64),
    )
    traced = torch.jit.trace(model, example)  # type: ignore[no-untyped-call]
    buf = io.BytesIO()
    torch.jit.save(traced, buf)
    return buf.getvalue()


def export(model: ProductClassifier, repo: str, **config: object) -> dict[str, bytes]:
    """Write the repository; returns the files written (relative path -> bytes)."""
    files = {f"{MODEL_NAME}/1/model.pt": torchscript(model)}
    if config.get("backend", "python") == "python":
        files[f"{MODEL_NAME}/1/model.py"] = PYTHON_BACKEND_MODEL.encode()
    # The config goes last: a model directory with its config.pbtxt is complete (what `jobs wait-for`
    # waits on before Triton starts).
    files[f"{MODEL_NAME}/config.pbtxt"] = config_pbtxt(model.classes, model.tokenizer.vocabulary, **config).encode()  # type: ignore[arg-type]
    if repo.startswith("s3://"):
        from app.common.s3 import parse_s3_url, s3_client

        bucket, prefix = parse_s3_url(repo)
        client = s3_client()
        for rel, data in files.items():
            client.put_object(Bucket=bucket, Key=f"{prefix}/{rel}".lstrip("/"), Body=data)
    else:
        for rel, data in files.items():
            path = Path(repo) / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(path.suffix + ".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
    return files
