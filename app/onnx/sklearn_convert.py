"""scikit-learn estimator -> serialized ONNX graph that computes what scikit-learn computes, step by step, in
scikit-learn's dtypes; the step that cannot be converted is named.

The graph keeps one contract (app.onnx.session): a single input "input" of shape [None, n_features],
float64 (float32 in graphs published before dtype-faithful graphs; the service feeds each its own type);
outputs "label" and "probabilities" ([None, n_classes], plain tensors, no ZipMap).

How each part computes, and why:

- preprocessing (scalers, encoders, column transformers) in float64, as scikit-learn runs it on float64
  input. In float32 a scaled value near a split threshold lands on the other side (issue 22);
- tree ensembles that cast to float32 (trees, forests, extra trees, gradient boosting): a Cast to float32
  right before the ensemble, then float64 thresholds (app/onnx/trees.py): ``f32(x) <= t64`` as in scikit-learn;
- HistGradientBoosting: float64 input against float64 thresholds, missing values routed as the fitted trees
  route them;
- every other final estimator (linear models, SVC, MLP, kNN, calibrated classifiers): the whole pipeline in
  float64.

Where skl2onnx or onnxruntime has no float64 kernel for a step (PowerTransformer, PolynomialFeatures), and where
trees sit inside another estimator (stacking, voting, bagging, calibration), there is no graph: a float32 one
does not compute what scikit-learn computes, and scikit-learn serves the model.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import onnx
from onnx import TensorProto, compose, helper
from skl2onnx import convert_sklearn
from skl2onnx._supported_operators import sklearn_operator_name_map
from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.preprocessing import FunctionTransformer

from app.onnx.float64_steps import CONVERTERS
from app.onnx.parity import ParityReport, compare_probabilities, verify_onnx
from app.onnx.pipelines import nested_trees, split
from app.onnx.session import LABEL_OUTPUT, ONNX_INPUT, PROBABILITIES_OUTPUT
from app.onnx.trees import FLOAT32_TREES, FLOAT64_TREES, double_thresholds

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
    pre, final = split(estimator)
    inside = nested_trees(final)
    if inside:
        raise UnsupportedStepError(
            f"{_describe('the model', final)} holds {', '.join(inside)}: trees inside another estimator compare "
            "in float32 where a float64 graph would not, and their thresholds cannot be probed"
        )
    if isinstance(final, FLOAT32_TREES + FLOAT64_TREES):
        proto = _tree_graph(estimator, pre, final, n_features, name)
    else:
        proto = _whole_graph(estimator, final, n_features, name)
    _name_outputs(proto)
    onnx.checker.check_model(proto)
    return bytes(proto.SerializeToString())


def _convert(estimator: Any, final: Any, input_type: Any, name: str) -> onnx.ModelProto:
    try:
        proto: onnx.ModelProto = convert_sklearn(
            estimator,
            name=name,
            initial_types=[(ONNX_INPUT, input_type)],
            # ZipMap turns probabilities into a list of dicts; the service wants one [rows, classes] tensor.
            options={id(final): {"zipmap": False}} if final is not None else None,
            target_opset={"": ONNX_OPSET, "ai.onnx.ml": ONNX_ML_OPSET},
            custom_conversion_functions=CONVERTERS,
        )
    except Exception as exc:  # skl2onnx raises RuntimeError, NotImplementedError, KeyError, ... per converter
        raise UnsupportedStepError(f"{_blame(estimator, str(exc))} cannot be converted to ONNX: {exc}") from exc
    return proto


def _runs(proto: onnx.ModelProto) -> bool:
    """Whether onnxruntime has a kernel for every node (skl2onnx emits some float64 nodes it has none for)."""
    import onnxruntime as ort

    try:
        ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception:  # onnxruntime's NOT_IMPLEMENTED and type errors share no useful base class
        return False
    return True


def _whole_graph(estimator: Any, final: Any, n_features: int, name: str) -> onnx.ModelProto:
    """The pipeline in float64 end to end. Where skl2onnx or onnxruntime has no float64 kernel for a step, there
    is no graph: a float32 one was measured 7e-6 off just outside the training range (issue 22)."""
    proto = _convert(estimator, final, DoubleTensorType([None, n_features]), name)
    if not _runs(proto):
        raise UnsupportedStepError(f"{_no_float64(estimator)}: onnxruntime has no float64 kernel for it")
    return proto


def _tree_graph(estimator: Any, pre: list[tuple[str, Any]], final: Any, n_features: int, name: str) -> onnx.ModelProto:
    """float64 preprocessing, then the cast scikit-learn makes, then the ensemble with float64 thresholds."""
    width = int(getattr(final, "n_features_in_", n_features))
    tree = _convert(final, final, FloatTensorType([None, width]), name)
    try:
        double_thresholds(tree, final)
        # nodes_values_as_tensor is ai.onnx.ml 3's; skl2onnx imports the lowest version a graph needs
        for imp in tree.opset_import:
            if imp.domain == "ai.onnx.ml":
                imp.version = ONNX_ML_OPSET
    except ValueError as exc:
        raise UnsupportedStepError(f"{_describe('the model', final)}: {exc}") from exc
    # onnxruntime compares in float64 only when the ensemble's input is float64: retype it, and round through
    # float32 first where scikit-learn does (``f32(x) <= t64``).
    tree_in = tree.graph.input[0].name
    consumers = [n.op_type for n in tree.graph.node if tree_in in n.input]
    if any(not op.startswith("TreeEnsemble") for op in consumers):
        raise UnsupportedStepError(f"{_describe('the model', final)}: its graph reads the input outside the trees")
    tree.graph.input[0].type.tensor_type.elem_type = TensorProto.DOUBLE
    if pre:
        front = _convert(Pipeline(pre), None, DoubleTensorType([None, n_features]), name)
        if not _runs(front):  # in float32 a preprocessed value near a split lands on the other side
            raise UnsupportedStepError(f"{_no_float64(Pipeline(pre))}: onnxruntime has no float64 kernel for it")
    else:
        front = _identity(n_features, tree)
    return _join(front, tree, via_float32=isinstance(final, FLOAT32_TREES))


def _no_float64(estimator: Any) -> str:
    """The steps of ``estimator`` whose float64 graph onnxruntime cannot run, named (else the whole model)."""
    failing = []
    for path, step in _steps(estimator):
        if isinstance(step, (Pipeline, ColumnTransformer, FeatureUnion)) or path == "the model":
            continue
        try:
            width = int(getattr(step, "n_features_in_", 0))
            if width and not _runs(_convert(step, None, DoubleTensorType([None, width]), "step")):
                failing.append(_describe(path, step))
        except Exception:
            continue
    return ", ".join(failing) if failing else _describe("the model", estimator)


def _identity(width: int, like: onnx.ModelProto) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Identity", [ONNX_INPUT], ["features"])],
        "input",
        [helper.make_tensor_value_info(ONNX_INPUT, TensorProto.DOUBLE, [None, width])],
        [helper.make_tensor_value_info("features", TensorProto.DOUBLE, [None, width])],
    )
    return helper.make_model(graph, opset_imports=list(like.opset_import), ir_version=like.ir_version)


def _join(front: onnx.ModelProto, tree: onnx.ModelProto, *, via_float32: bool = False) -> onnx.ModelProto:
    """``front``'s one output into ``tree``'s input: cast to its type where they differ, and rounded to float32
    on the way when ``via_float32``."""
    (out,) = front.graph.output
    casts = [TensorProto.FLOAT] if via_float32 else []
    casts.append(tree.graph.input[0].type.tensor_type.elem_type)
    shape = [d.dim_value or None for d in out.type.tensor_type.shape.dim]
    current, current_type = out.name, out.type.tensor_type.elem_type
    for i, to in enumerate(casts):
        if to != current_type:
            front.graph.node.append(helper.make_node("Cast", [current], [f"front_cast{i}"], to=to))
            current, current_type = f"front_cast{i}", to
    if current != out.name:
        del front.graph.output[:]
        front.graph.output.append(helper.make_tensor_value_info(current, current_type, shape))
        out = front.graph.output[0]
    tree.ir_version = front.ir_version = max(tree.ir_version, front.ir_version)
    domains: dict[str, int] = {}
    for o in [*front.opset_import, *tree.opset_import]:
        domains[o.domain] = max(domains.get(o.domain, 0), o.version)
    for m in (front, tree):
        del m.opset_import[:]
        m.opset_import.extend(helper.make_opsetid(d, v) for d, v in domains.items())
    return compose.merge_models(front, tree, io_map=[(out.name, tree.graph.input[0].name)], prefix2="tree_")


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


def _name_outputs(proto: onnx.ModelProto) -> None:
    """Give the two outputs the contract's names, whatever skl2onnx called them, and shape [None, classes]."""
    outputs = list(proto.graph.output)
    if len(outputs) != 2:
        raise UnsupportedStepError(f"the converted graph has {len(outputs)} outputs, expected label and probabilities")
    renames = {outputs[0].name: LABEL_OUTPUT, outputs[1].name: PROBABILITIES_OUTPUT}
    for node in proto.graph.node:  # producers and any node that reads them (an ArgMax over probabilities)
        for i, out in enumerate(node.output):
            if out in renames:
                node.output[i] = renames[out]
        for i, inp in enumerate(node.input):
            if inp in renames:
                node.input[i] = renames[inp]
    for out in outputs:
        out.name = renames[out.name]
