"""A scikit-learn model of the store as an edge bundle: the graph, its inputs, and its parity.

The graph is the platform's (app/onnx/sklearn_convert.py): float64 input, each step in scikit-learn's
dtypes. It is checked as the publisher checks the service's graph, on the held-out rows and on the probe rows
built from the model (app/onnx/probes.py: split thresholds and their neighbours, large values, missing
values): a bundle that disagrees on any of them is not written.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from app.edge.bundle import ExportError, Variant, float_parity, run_onnx
from app.modelstore.metadata import ModelMetadata, metadata_signature_ok, signature_ok
from app.onnx.publishing import ONNX_ATOL, checked_rows
from app.onnx.session import ONNX_INPUT, PROBABILITIES_OUTPUT

MODEL_FILE = "model.onnx"


def load_estimator(meta: ModelMetadata, artifact: bytes, *, hmac_key: bytes | None = None) -> Any:
    """The store's estimator (its sha256 already checked by the store), refused unless its signature holds
    (when a key is set) and scikit-learn here reproduces the trainer's verification probabilities: the
    bundle is checked against this estimator, so it must be the one the trainer published."""
    import io
    import pickle

    where = f"{meta.name}:{meta.version}"
    if hmac_key is not None and not (metadata_signature_ok(meta, hmac_key) and signature_ok(meta, hmac_key)):
        raise ExportError(f"{where}: signature missing or invalid for the configured artifact key")
    try:
        estimator = pickle.load(io.BytesIO(artifact))  # trusted as the store is (docs/design.md, "Artifact trust")
    except Exception as exc:
        raise ExportError(f"{where}: cannot unpickle the artifact: {exc}") from exc
    classes = [c.item() if hasattr(c, "item") else c for c in getattr(estimator, "classes_", [])]
    if classes != list(meta.classes):
        raise ExportError(f"{where}: estimator classes {classes} differ from the metadata's {meta.classes}")
    x = np.asarray(meta.verification.inputs, dtype=np.float64)
    recorded = np.asarray(meta.verification.probabilities, dtype=np.float64)
    got = source_probabilities(estimator, x)
    if got.shape != recorded.shape or not np.allclose(got, recorded, rtol=0.0, atol=1e-9):
        raise ExportError(f"{where}: scikit-learn here does not reproduce the trainer's probabilities")
    return estimator


def to_onnx(estimator: Any, n_features: int, *, name: str) -> bytes:
    """The edge graph: input ``input`` float64 [N, n_features], outputs ``label`` and ``probabilities``.
    A step the converter cannot handle raises its UnsupportedStepError, which names the step."""
    from app.onnx.sklearn_convert import sklearn_to_onnx

    return sklearn_to_onnx(estimator, n_features, name=name)


def source_probabilities(estimator: Any, x: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.asarray(estimator.predict_proba(x), dtype=np.float64)


def export(estimator: Any, meta: ModelMetadata, held_out: NDArray[np.float64]) -> dict[str, Any]:
    """Everything bundle.build needs for a store model: the float variant, its parity on ``held_out``
    (the store's held-out verification rows) against scikit-learn, inputs, output, classes, preprocessing."""
    x = np.asarray(held_out, dtype=np.float64)
    n = len(meta.feature_names)
    if x.ndim != 2 or x.shape[1] != n:
        raise ExportError(f"{meta.name}:{meta.version}: held-out rows have shape {x.shape}, the model takes {n}")
    onnx_bytes = to_onnx(estimator, n, name=meta.name.replace("-", "_"))
    rows, expected, n_probes = checked_rows(estimator, x, source_probabilities(estimator, x))
    got = run_onnx(onnx_bytes, {ONNX_INPUT: rows}, PROBABILITIES_OUTPUT)
    try:
        parity = float_parity(got, expected, atol=ONNX_ATOL)  # the publisher's bar
    except ExportError as exc:
        raise type(exc)(f"{meta.name}:{meta.version}: {exc}") from exc
    parity["probe_rows"] = n_probes
    recorded = np.asarray(meta.verification.probabilities, dtype=np.float64)
    if recorded.shape == got[: len(x)].shape:  # the trainer's own numbers, when the held-out rows are the store's
        parity["max_abs_diff_to_trainer"] = float(np.max(np.abs(got[: len(x)] - recorded)))
    online = meta.online_features
    preprocessing: dict[str, Any] = {
        "kind": "tabular",
        "columns": meta.feature_names,
        "request_transform": None,
    }
    if online is not None:
        # The transform is Python (NumPy) code of the feature repository's author: no converter makes it a
        # graph. The bundle names it and what it reads, and the device computes the columns (docs/edge.md).
        preprocessing["request_transform"] = {
            "reference": online.transform,
            "entity_key": online.entity_key,
            "feature_refs": online.feature_refs,
            "request_fields": online.request_fields,
            "in_graph": False,
            "produces": "the input's columns, in order",
        }
    return {
        "variants": [Variant("float", MODEL_FILE, onnx_bytes)],
        "parity": {"float": parity},
        "inputs": [{"name": ONNX_INPUT, "dtype": "float64", "shape": [None, n], "columns": meta.feature_names}],
        "output": {"name": PROBABILITIES_OUTPUT, "dtype": "float32", "shape": [None, len(meta.classes)]},
        "classes": list(meta.classes),
        "preprocessing": preprocessing,
    }
