"""A scikit-learn model of the store as an edge bundle: the graph, its inputs, and its parity.

The graph comes from the platform's converter (app/onnx/sklearn_convert.py, skl2onnx): one float32
input. A bundle's input is float64 instead, with the first steps done in double precision inside the
graph, because that is what scikit-learn computes: a StandardScaler scales the float64 rows, and only
then do the trees compare ``float32(x) <= threshold``. Scaling in float32 first moves some values
across a threshold (a whole tree's vote, 1/n_trees of probability: far beyond the 1e-5 parity rule).
So leading StandardScaler steps become Sub/Div in double, then a Cast to float, then the converter's
graph of the remaining steps. Any other pipeline goes through the converter whole and the parity check
decides.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from app.edge.bundle import ExportError, Variant, float_parity, run_onnx
from app.modelstore.metadata import ModelMetadata, signature_ok
from app.onnx.session import ONNX_INPUT, PROBABILITIES_OUTPUT

MODEL_FILE = "model.onnx"


def load_estimator(meta: ModelMetadata, artifact: bytes, *, hmac_key: bytes | None = None) -> Any:
    """The store's estimator (its sha256 already checked by the store), refused unless its signature holds
    (when a key is set) and scikit-learn here reproduces the trainer's verification probabilities: the
    bundle is checked against this estimator, so it must be the one the trainer published."""
    import io
    import pickle

    where = f"{meta.name}:{meta.version}"
    if hmac_key is not None and not signature_ok(meta, hmac_key):
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


def _leading_scalers(estimator: Any) -> tuple[list[Any], Any]:
    """The fitted StandardScaler steps a Pipeline starts with, and the rest of it (a Pipeline or the
    final estimator)."""
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    if not isinstance(estimator, Pipeline):
        return [], estimator
    steps = list(estimator.steps)
    scalers: list[Any] = []
    while len(steps) > 1 and isinstance(steps[0][1], StandardScaler):
        scalers.append(steps.pop(0)[1])
    rest = steps[0][1] if len(steps) == 1 else Pipeline(steps)
    return scalers, rest


def to_onnx(estimator: Any, n_features: int, *, name: str) -> bytes:
    """The edge graph: input ``input`` float64 [N, n_features], outputs ``label`` and ``probabilities``.
    A step the converter cannot handle raises its UnsupportedStepError, which names the step."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from app.onnx.sklearn_convert import sklearn_to_onnx

    whole = sklearn_to_onnx(estimator, n_features, name=name)  # every step checked, errors name the step
    scalers, rest = _leading_scalers(estimator)
    graph_bytes = whole if not scalers else sklearn_to_onnx(rest, n_features, name=name)
    model = onnx.load_from_string(graph_bytes)
    graph = model.graph
    inner = "input_float32"
    for node in graph.node:
        node.input[:] = [inner if i == ONNX_INPUT else i for i in node.input]
    prefix: list[onnx.NodeProto] = []
    current = ONNX_INPUT
    for k, scaler in enumerate(scalers):
        # Exactly StandardScaler.transform on float64 rows: subtract the mean, divide by the scale.
        mean = scaler.mean_ if scaler.with_mean else np.zeros(n_features)
        scale = scaler.scale_ if scaler.with_std and scaler.scale_ is not None else np.ones(n_features)
        graph.initializer.extend(
            [
                numpy_helper.from_array(np.asarray(mean, dtype=np.float64), f"scaler{k}_mean"),
                numpy_helper.from_array(np.asarray(scale, dtype=np.float64), f"scaler{k}_scale"),
            ]
        )
        prefix += [
            helper.make_node("Sub", [current, f"scaler{k}_mean"], [f"scaler{k}_centred"]),
            helper.make_node("Div", [f"scaler{k}_centred", f"scaler{k}_scale"], [f"scaler{k}_out"]),
        ]
        current = f"scaler{k}_out"
    prefix.append(helper.make_node("Cast", [current], [inner], to=TensorProto.FLOAT))
    nodes = prefix + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    graph.input[0].type.tensor_type.elem_type = TensorProto.DOUBLE
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


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
    expected = source_probabilities(estimator, x)
    got = run_onnx(onnx_bytes, {ONNX_INPUT: x}, PROBABILITIES_OUTPUT)
    try:
        parity = float_parity(got, expected)
    except ExportError as exc:
        raise type(exc)(f"{meta.name}:{meta.version}: {exc}") from exc
    recorded = np.asarray(meta.verification.probabilities, dtype=np.float64)
    if recorded.shape == got.shape:  # the trainer's own numbers, when the held-out rows are the store's
        parity["max_abs_diff_to_trainer"] = float(np.max(np.abs(got - recorded)))
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
