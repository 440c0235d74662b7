"""Tree ensembles as scikit-learn evaluates them: exact float64 split thresholds in the graph, missing values
routed as the fitted trees route them, and the thresholds themselves (for probe rows, app/onnx/probes.py).

scikit-learn compares in two ways:

- decision trees, random forests, extra trees and gradient boosting cast X to float32, then compare that
  float32 value with a float64 threshold (``X32 <= t64``);
- HistGradientBoosting compares the float64 value with a float64 threshold (``X64 <= t64``).

skl2onnx writes every threshold as a float32 attribute, the largest float32 not above ``t64``. For float32
input that is exact; for HistGradientBoosting's float64 input it is not: values between ``floor32(t64)`` and
``t64`` take the other branch (its thresholds are float64 midpoints, and an epoch-seconds feature has many
such values). ai.onnx.ml 3 has ``nodes_values_as_tensor``, which holds float64 thresholds; onnxruntime then
compares the input with them exactly as scikit-learn does. Every ensemble gets them, so that one rule holds.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import helper, numpy_helper
from sklearn.ensemble import (
    ExtraTreesClassifier,
    GradientBoostingClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.tree import DecisionTreeClassifier, ExtraTreeClassifier

# Estimators that cast their input to float32 before comparing (scikit-learn's tree DTYPE).
FLOAT32_TREES = (DecisionTreeClassifier, ExtraTreeClassifier, RandomForestClassifier, ExtraTreesClassifier,
                 GradientBoostingClassifier)  # fmt: skip
# Estimators that compare the float64 input itself.
FLOAT64_TREES = (HistGradientBoostingClassifier,)


@dataclass(frozen=True)
class Split:
    """One split node: tree, node id in that tree, feature index, float64 threshold, NaN goes left."""

    tree: int
    node: int
    feature: int
    threshold: float
    missing_left: bool


def _sk_tree_splits(tree: Any, tree_id: int) -> Iterator[Split]:
    t = tree.tree_
    missing = getattr(t, "missing_go_to_left", np.zeros(t.node_count, np.uint8))
    for node in np.flatnonzero(t.children_left != -1):
        yield Split(tree_id, int(node), int(t.feature[node]), float(t.threshold[node]), bool(missing[node]))


def _hgb_splits(predictor: Any, tree_id: int) -> Iterator[Split]:
    nodes = predictor.nodes
    for node in np.flatnonzero(~nodes["is_leaf"].astype(bool)):
        n = nodes[node]
        yield Split(tree_id, int(node), int(n["feature_idx"]), float(n["num_threshold"]), bool(n["missing_go_to_left"]))


def tree_orders(estimator: Any) -> list[list[Split]]:
    """Candidate numberings of every split of a fitted ensemble, one list per way a converter may number the
    trees (skl2onnx's order is checked against the graph by ``double_thresholds``)."""
    if isinstance(estimator, (DecisionTreeClassifier, ExtraTreeClassifier)):
        return [list(_sk_tree_splits(estimator, 0))]
    if isinstance(estimator, (RandomForestClassifier, ExtraTreesClassifier)):
        return [[s for i, e in enumerate(estimator.estimators_) for s in _sk_tree_splits(e, i)]]
    if isinstance(estimator, GradientBoostingClassifier):
        grid = estimator.estimators_  # [iterations, trees per iteration]
        n_iter, k = grid.shape
        by_iter = [s for i in range(n_iter) for j in range(k) for s in _sk_tree_splits(grid[i, j], i * k + j)]
        by_class = [s for j in range(k) for i in range(n_iter) for s in _sk_tree_splits(grid[i, j], j * n_iter + i)]
        return [by_iter, by_class]
    if isinstance(estimator, HistGradientBoostingClassifier):
        preds = estimator._predictors  # [iterations][trees per iteration]
        n_iter, k = len(preds), len(preds[0]) if preds else 0
        by_iter = [s for i in range(n_iter) for j in range(k) for s in _hgb_splits(preds[i][j], i * k + j)]
        by_class = [s for j in range(k) for i in range(n_iter) for s in _hgb_splits(preds[i][j], j * n_iter + i)]
        return [by_iter, by_class]
    raise TypeError(f"{type(estimator).__name__} is not a supported tree ensemble")


def splits(estimator: Any) -> list[Split]:
    """Every split of a fitted tree ensemble (for probe rows)."""
    return tree_orders(estimator)[0]


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def double_thresholds(proto: onnx.ModelProto, estimator: Any) -> int:
    """Replace the float32 thresholds of the graph's tree ensemble by the estimator's float64 ones, and its
    missing-value routing by the estimator's. Returns the number of splits patched.

    Raises ValueError unless every split of the graph is identified with one of the estimator's (same tree,
    node, feature and ``f32(threshold)``): a converter that numbers trees another way is refused, not
    patched wrong."""
    nodes = [n for n in proto.graph.node if n.op_type in ("TreeEnsembleClassifier", "TreeEnsembleRegressor")]
    if len(nodes) != 1:
        raise ValueError(f"expected one tree ensemble node in the converted graph, found {len(nodes)}")
    (node,) = nodes
    a = _attrs(node)
    modes = [m.decode() if isinstance(m, bytes) else m for m in a["nodes_modes"]]
    graph_keys = [(t, n) for t, n, m in zip(a["nodes_treeids"], a["nodes_nodeids"], modes, strict=True) if m != "LEAF"]
    values = np.asarray(a["nodes_values"], dtype=np.float32)
    features = a["nodes_featureids"]
    for order in tree_orders(estimator):
        by_key = {(s.tree, s.node): s for s in order}
        if len(by_key) != len(graph_keys) or set(by_key) != set(graph_keys):
            continue
        ok = all(
            m == "LEAF"
            or (by_key[(t, n)].feature == f and v in _float32_near(by_key[(t, n)].threshold) and m == "BRANCH_LEQ")
            for t, n, m, f, v in zip(a["nodes_treeids"], a["nodes_nodeids"], modes, features, values, strict=True)
        )
        if not ok:
            continue
        thresholds = np.zeros(len(modes), np.float64)
        missing = np.zeros(len(modes), np.int64)
        for i, (t, n, m) in enumerate(zip(a["nodes_treeids"], a["nodes_nodeids"], modes, strict=True)):
            if m != "LEAF":
                s = by_key[(t, n)]
                thresholds[i], missing[i] = s.threshold, int(s.missing_left)  # BRANCH_LEQ: true = left
        _set(node, "nodes_values", None)
        _set(node, "nodes_values_as_tensor", numpy_helper.from_array(thresholds))
        _set(node, "nodes_missing_value_tracks_true", missing.tolist())
        return len(graph_keys)
    raise ValueError(f"the graph's trees could not be matched split by split to the {type(estimator).__name__}")


def _float32_near(t: float) -> tuple[np.float32, np.float32]:
    """The float32 values a converter may write for ``t``: the nearest, and the largest not above it (skl2onnx's
    choice, exact for float32 input: ``x32 <= t64`` iff ``x32 <= floor32(t64)``)."""
    nearest = np.float32(t)
    floor = nearest if float(nearest) <= t else np.nextafter(nearest, np.float32(-np.inf))
    return nearest, floor


def _set(node: onnx.NodeProto, name: str, value: Any) -> None:
    kept = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend(kept)
    if value is not None:
        node.attribute.append(helper.make_attribute(name, value))


def split_values(estimator: Any) -> dict[int, NDArray[np.float64]]:
    """feature index -> the distinct float64 thresholds the ensemble splits it at."""
    out: dict[int, set[float]] = {}
    for s in splits(estimator):
        out.setdefault(s.feature, set()).add(s.threshold)
    return {f: np.array(sorted(v), np.float64) for f, v in out.items()}
