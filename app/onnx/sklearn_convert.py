"""scikit-learn estimator -> serialized ONNX graph, with the step that cannot be converted named.

The graph keeps one contract (app.onnx.session): a single input "input" of shape [None, n_features],
outputs "label" and "probabilities" ([None, n_classes], plain tensors, no ZipMap).

Why float32 input, deliberately: scikit-learn's tree models (forests, gradient boosting, the
histogram booster) cast every feature to float32 before comparing it with a split threshold, so a
float32 input reproduces their split decisions exactly, where a float64 input would compare the
unrounded value and can take the other branch for values that round across a threshold. onnxruntime's
tree operator (ai.onnx.ml TreeEnsembleClassifier) also only accepts double input when the whole
graph is double, which skl2onnx cannot build for gradient boosting. Linear models then compute in
float32: measured here, |dp| about 2e-7 against scikit-learn, well inside the 1e-5 tolerance the
service verifies; a model whose features are too large for float32 fails that verification and is
served by scikit-learn instead of being served wrong.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import onnx
from skl2onnx import convert_sklearn
from skl2onnx._supported_operators import sklearn_operator_name_map
from skl2onnx.common.data_types import FloatTensorType
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.preprocessing import FunctionTransformer

from app.onnx.parity import ParityReport, compare_probabilities, verify_onnx
from app.onnx.session import LABEL_OUTPUT, ONNX_INPUT, PROBABILITIES_OUTPUT

__all__ = [
    "ONNX_ML_OPSET",
    "ONNX_OPSET",
    "ParityReport",
    "UnsupportedStepError",
    "compare_probabilities",
    "opsets_of",
    "sklearn_to_onnx",
    "verify_onnx",
]

# Pinned so that a graph published today loads in the onnxruntime of every image: opset 18 is
# supported by onnxruntime >= 1.14 and by skl2onnx's tested range; ai.onnx.ml 3 is the version of
# TreeEnsembleClassifier that every onnxruntime since 1.10 runs (HistGradientBoosting converts at it).
ONNX_OPSET = 18
ONNX_ML_OPSET = 3


class UnsupportedStepError(ValueError):
    """A step of the estimator cannot become ONNX; the message names the step and its class."""


def sklearn_to_onnx(estimator: Any, n_features: int, *, name: str = "model") -> bytes:
    """Convert a fitted classifier (or a Pipeline ending in one) to a serialized ONNX ModelProto.

    The estimator must have been fitted on a numeric [rows, n_features] array (column transformers
    select columns by position): that is what the service passes it.
    """
    if isinstance(n_features, bool) or not isinstance(n_features, int) or n_features < 1:
        raise ValueError(f"n_features must be a positive integer, got {n_features!r}")
    if not hasattr(estimator, "predict_proba"):
        raise UnsupportedStepError(
            f"the model ({type(estimator).__name__}) has no predict_proba: the graph's probabilities output needs it"
        )
    fitted_width = getattr(estimator, "n_features_in_", None)
    if fitted_width is not None and fitted_width != n_features:
        raise ValueError(f"the estimator was fitted on {fitted_width} features, n_features is {n_features}")
    _check_steps(estimator)
    final = _final_estimator(estimator)
    try:
        proto = convert_sklearn(
            estimator,
            name=name,
            initial_types=[(ONNX_INPUT, FloatTensorType([None, n_features]))],
            # ZipMap turns probabilities into a list of dicts; the service wants one [rows, classes] tensor.
            options={id(final): {"zipmap": False}},
            target_opset={"": ONNX_OPSET, "ai.onnx.ml": ONNX_ML_OPSET},
        )
    except Exception as exc:  # skl2onnx raises RuntimeError, NotImplementedError, KeyError, ... per converter
        raise UnsupportedStepError(f"{_blame(estimator, str(exc))} cannot be converted to ONNX: {exc}") from exc
    _name_outputs(proto)
    onnx.checker.check_model(proto)
    return bytes(proto.SerializeToString())


def opsets_of(onnx_bytes: bytes) -> dict[str, int]:
    """The opset imports of a serialized graph, {"": 18, "ai.onnx.ml": 3}: what the metadata records."""
    proto = onnx.load_from_string(onnx_bytes)
    return {imp.domain or "": int(imp.version) for imp in proto.opset_import}


def _steps(estimator: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every (path, step) of nested pipelines, column transformers and feature unions, outermost first."""
    label = path or "the model"
    yield label, estimator
    children: list[tuple[str, Any]] = []
    if isinstance(estimator, Pipeline):
        children = [(n, s) for n, s in estimator.steps]
    elif isinstance(estimator, ColumnTransformer):
        fitted = getattr(estimator, "transformers_", estimator.transformers)
        children = [(n, t) for n, t, _cols in fitted]
    elif isinstance(estimator, FeatureUnion):
        children = list(estimator.transformer_list)
    for child_name, child in children:
        if child is None or isinstance(child, str):  # "drop" / "passthrough"
            continue
        yield from _steps(child, f"{path}/{child_name}" if path else child_name)


def _describe(path: str, step: Any) -> str:
    if path == "the model":
        return f"the model ({type(step).__name__})"
    return f"pipeline step {path!r} ({type(step).__name__})"


def _check_steps(estimator: Any) -> None:
    for path, step in _steps(estimator):
        if isinstance(step, (Pipeline, ColumnTransformer, FeatureUnion)):
            continue
        if type(step) not in sklearn_operator_name_map:
            raise UnsupportedStepError(f"{_describe(path, step)} has no ONNX converter (skl2onnx knows no such class)")
        categorical = getattr(step, "is_categorical_", None)
        if isinstance(step, HistGradientBoostingClassifier) and categorical is not None and categorical.any():
            # skl2onnx 1.20 converts it without an error, but routes categories as if they were thresholds:
            # measured |dp| 0.64 and 320 label flips in 500 rows. Refused here so the reason is the real one.
            raise UnsupportedStepError(
                f"{_describe(path, step)} uses categorical_features, whose category splits skl2onnx does not "
                "convert faithfully (one-hot encode the column before it instead)"
            )
        if isinstance(step, FunctionTransformer) and step.func is not None:
            raise UnsupportedStepError(
                f"{_describe(path, step)} wraps the Python function {getattr(step.func, '__name__', step.func)!r}, "
                "which has no ONNX equivalent"
            )


def _blame(estimator: Any, message: str) -> str:
    """The deepest step whose class the converter's message mentions; else the whole model."""
    blamed = "the model"
    for path, step in _steps(estimator):
        if type(step).__name__ in message:
            blamed = _describe(path, step)
    return blamed if blamed != "the model" else _describe("the model", estimator)


def _final_estimator(estimator: Any) -> Any:
    while isinstance(estimator, Pipeline):
        estimator = estimator.steps[-1][1]
    return estimator


def _name_outputs(proto: onnx.ModelProto) -> None:
    """Give the two outputs the contract's names, whatever skl2onnx called them, and shape [None, classes]."""
    outputs = list(proto.graph.output)
    if len(outputs) != 2:
        raise UnsupportedStepError(f"the converted graph has {len(outputs)} outputs, expected label and probabilities")
    renames = {outputs[0].name: LABEL_OUTPUT, outputs[1].name: PROBABILITIES_OUTPUT}
    for node in proto.graph.node:
        for i, out in enumerate(node.output):
            if out in renames:
                node.output[i] = renames[out]
    for out in outputs:
        out.name = renames[out.name]
