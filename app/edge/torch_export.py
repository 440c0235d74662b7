"""The image+text classifier as ONNX: the torch exporter, int8 dynamic quantization, and the
preprocessing spec a device needs to build the inputs.

The graph takes what the preprocessing service sends Triton (uint8 pixels [N, 64, 64, 3], int64 token
ids [N, 16]) and returns probabilities [N, classes]: normalization is inside the model, so the device
feeds bytes. The exporter is torch's TorchScript-based one (``dynamo=False``): it needs no package
beyond torch and onnx, and this model (convolutions, an embedding, a masked mean) has no control flow
for the dynamo exporter to win on.

Quantization is ONNX Runtime's dynamic int8: weights of the convolutions, matrix products and the
embedding stored as uint8 with a scale, activations quantized per batch at run time. No calibration
data is needed; the accuracy cost is measured on held-out items before a bundle is written.
"""

from __future__ import annotations

import io
import logging
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from app.multimodal.model import ProductClassifier
from app.multimodal.preprocessing import ACCEPTED_FORMATS, IMAGE_SIZE, MAX_PIXELS
from app.multimodal.tokenizer import _SPLIT, MAX_TOKENS, PAD, UNK

OPSET = 17  # pinned: ONNX Runtime Mobile 1.16+ and every onnxruntime since 1.13 run it
INPUT_IMAGE, INPUT_TOKENS, OUTPUT = "image", "tokens", "probabilities"


def export_onnx(model: ProductClassifier) -> bytes:
    """The float32 graph, batch dimension dynamic."""
    model.eval()
    example = (
        torch.zeros(1, IMAGE_SIZE, IMAGE_SIZE, 3, dtype=torch.uint8),
        torch.zeros(1, MAX_TOKENS, dtype=torch.int64),
    )
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the deprecation notice of the TorchScript-based exporter
        torch.onnx.export(
            model,
            example,
            buf,  # type: ignore[arg-type]  # a file object works as well as a path
            dynamo=False,
            opset_version=OPSET,
            input_names=[INPUT_IMAGE, INPUT_TOKENS],
            output_names=[OUTPUT],
            dynamic_axes={INPUT_IMAGE: {0: "batch"}, INPUT_TOKENS: {0: "batch"}, OUTPUT: {0: "batch"}},
        )
    return compact(buf.getvalue())


def quantize_int8(onnx_bytes: bytes) -> bytes:
    """Dynamic int8 quantization (uint8 weights): about a third of the float graph's size."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "float.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(onnx_bytes)
        # The quantizer warns on the root logger that the uint8 image input is not quantized (it is
        # not meant to be: the graph casts it to float first); a job's log is not the place for it.
        previous = logging.root.manager.disable
        logging.disable(logging.WARNING)
        try:
            quantize_dynamic(src, dst, weight_type=QuantType.QUInt8)
        finally:
            logging.disable(previous)
        return compact(dst.read_bytes())


def compact(onnx_bytes: bytes) -> bytes:
    """The same graph with short tensor names and no node names, doc strings or inferred shapes.

    The exporter's and the quantizer's names ("/image/image.4/Conv_output_0_quantized", ...) are about a
    quarter of the int8 graph's size; a device gains nothing from them. The inputs and outputs keep theirs.
    """
    import onnx

    model = onnx.load_from_string(onnx_bytes)
    graph = model.graph
    keep = {v.name for v in graph.input} | {v.name for v in graph.output}
    names: dict[str, str] = {}

    def short(name: str) -> str:
        if not name or name in keep:
            return name
        return names.setdefault(name, f"t{len(names)}")

    for init in graph.initializer:
        init.name = short(init.name)
    for node in graph.node:
        node.name = ""
        node.doc_string = ""
        node.input[:] = [short(n) for n in node.input]
        node.output[:] = [short(n) for n in node.output]
    del graph.value_info[:]
    graph.doc_string = ""
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def torch_probabilities(model: ProductClassifier, images: NDArray[np.uint8], tokens: NDArray[np.int64]) -> NDArray[Any]:
    """The source model's probabilities, the reference the bundle's parity is measured against."""
    model.eval()
    with torch.no_grad():
        out: NDArray[Any] = model(torch.from_numpy(images), torch.from_numpy(tokens)).numpy()
    return out


def inputs_spec(model: ProductClassifier) -> list[dict[str, Any]]:
    return [
        {"name": INPUT_IMAGE, "dtype": "uint8", "shape": [None, IMAGE_SIZE, IMAGE_SIZE, 3], "layout": "NHWC RGB"},
        # ids index the embedding: anything above its size would fail inside the graph
        {"name": INPUT_TOKENS, "dtype": "int64", "shape": [None, MAX_TOKENS], "max_value": model.tokenizer.size - 1},
    ]


def preprocessing_spec(model: ProductClassifier) -> dict[str, Any]:
    """How a device turns an image and a title into the inputs, as app/multimodal/preprocessing.py and
    tokenizer.py do: the edge runner's preprocess_image and tokenize follow it."""
    return {
        "kind": "image+text",
        "image": {
            "size": IMAGE_SIZE,
            "mode": "RGB",
            "layout": "HWC",
            "resampling": "bilinear",
            # JPEG decoded at 1/2..1/8 scale to >= 2x the size, then an integer box reduce to >= 2x, then resize
            "jpeg_draft": True,
            "reduce": "box, by min(width, height) // (2 * size) when that is >= 2",
            "formats": list(ACCEPTED_FORMATS),
            "max_pixels": MAX_PIXELS,
            "normalization": "inside the graph (ImageNet mean and std on 0..255)",
        },
        "text": {
            "lowercase": True,
            "split_pattern": _SPLIT.pattern,
            "max_tokens": MAX_TOKENS,
            "pad_id": PAD,
            "unk_id": UNK,
            "first_word_id": 2,
            "vocabulary": list(model.tokenizer.vocabulary),
        },
    }


def export(
    model: ProductClassifier, images: NDArray[np.uint8], tokens: NDArray[np.int64], labels: NDArray[np.int64]
) -> dict[str, Any]:
    """Everything bundle.build needs for the image+text model: the float graph and its int8 variant, each
    checked on the held-out items (``images``, ``tokens``, ``labels``: made by the serving preprocessing)
    against torch: float by probabilities, int8 by accuracy."""
    from app.edge.bundle import Variant, float_parity, quantized_parity, run_onnx

    float_graph = export_onnx(model)
    int8_graph = quantize_int8(float_graph)
    expected = torch_probabilities(model, images, tokens)
    feed: dict[str, NDArray[Any]] = {INPUT_IMAGE: images, INPUT_TOKENS: tokens}
    parity = {"float": float_parity(run_onnx(float_graph, feed, OUTPUT), expected)}
    parity["int8"] = quantized_parity(run_onnx(int8_graph, feed, OUTPUT), expected, labels)
    parity["int8"]["size_ratio_to_float"] = len(int8_graph) / len(float_graph)
    return {
        "variants": [
            Variant("float", "model.onnx", float_graph),
            Variant("int8", "model.int8.onnx", int8_graph, quantization="int8 dynamic (onnxruntime, uint8 weights)"),
        ],
        "parity": parity,
        "inputs": inputs_spec(model),
        "output": {"name": OUTPUT, "dtype": "float32", "shape": [None, len(model.classes)]},
        "classes": list(model.classes),
        "preprocessing": preprocessing_spec(model),
    }
