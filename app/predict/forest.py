"""Tree ensembles compiled into flat NumPy arrays.

scikit-learn spends milliseconds in Python and joblib overhead on a single-row
``predict_proba`` of a 50-tree forest (docs/design.md); the trees themselves are tiny. Here every
tree of the ensemble is laid out in one set of arrays and all trees are walked
at once, one NumPy step per tree level, for a whole micro-batch: a few dozen
array operations however many trees or rows there are.

Exactness: scikit-learn compares ``float32(x) <= threshold`` (threshold is
float64) and averages per-tree normalised leaf values; we do the same, so the
probabilities agree to rounding (the server re-checks this on every load with
the verification rows stored in the model's metadata).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier

_LEAF = -1  # sklearn's TREE_LEAF


class CompiledTrees:
    """Classification trees as arrays; ``predict_proba`` equals the estimator's."""

    def __init__(self, trees: list[DecisionTreeClassifier], n_classes: int) -> None:
        features, thresholds, children, values, roots = [], [], [], [], []
        offset = 0
        depth = 0
        for est in trees:
            t = est.tree_
            n = t.node_count
            left = t.children_left.astype(np.intp)
            right = t.children_right.astype(np.intp)
            is_leaf = left == _LEAF
            local = np.arange(n, dtype=np.intp)
            # A leaf points to itself on both sides and never moves again, so every
            # row can take exactly `depth` steps regardless of where it stops.
            kids = np.stack([np.where(is_leaf, local, left), np.where(is_leaf, local, right)], axis=1)
            children.append(kids + offset)
            features.append(np.where(is_leaf, 0, t.feature).astype(np.intp))
            thresholds.append(np.where(is_leaf, np.inf, t.threshold))
            val = t.value[:, 0, :n_classes].astype(np.float64)
            norm = val.sum(axis=1, keepdims=True)
            norm[norm == 0.0] = 1.0
            values.append(val / norm)
            roots.append(offset)
            offset += n
            depth = max(depth, int(t.max_depth))
        self.n_trees = len(trees)
        self.depth = depth
        self.feature = np.concatenate(features)
        self.threshold = np.concatenate(thresholds)
        self.children = np.concatenate(children).reshape(-1)  # [2*node] left, [2*node+1] right
        self.values = np.concatenate(values)
        self.roots = np.asarray(roots, dtype=np.intp)

    def predict_proba(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        n, n_features = x.shape
        # sklearn's trees see float32 inputs; compare in float64 against float64 thresholds.
        flat = x.astype(np.float32).astype(np.float64).reshape(-1)
        row_base = (np.arange(n, dtype=np.intp) * n_features)[:, None]
        node = np.broadcast_to(self.roots, (n, self.n_trees)).copy()
        for _ in range(self.depth):
            go_right = flat[row_base + self.feature[node]] > self.threshold[node]
            node = self.children[2 * node + go_right]
        proba: NDArray[np.float64] = self.values[node].sum(axis=1)
        if self.n_trees > 1:
            proba /= self.n_trees
        return proba


class CompiledPipeline:
    """Optional StandardScaler steps followed by a compiled tree ensemble."""

    def __init__(self, scalers: list[StandardScaler], trees: CompiledTrees) -> None:
        self.scalers = scalers
        self.trees = trees

    def predict_proba(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        for sc in self.scalers:
            # Same operations, same order as StandardScaler.transform: identical floats.
            if sc.with_mean:
                x = x - sc.mean_
            if sc.with_std:
                x = x / sc.scale_
        return self.trees.predict_proba(x)


def compile_estimator(estimator: Any) -> CompiledPipeline | None:
    """A compiled equivalent of ``estimator.predict_proba``, or None when unsupported."""
    steps: list[Any] = [s for _, s in estimator.steps] if isinstance(estimator, Pipeline) else [estimator]
    *pre, final = steps
    scalers: list[StandardScaler] = []
    for step in pre:
        if step == "passthrough" or step is None:
            continue
        if type(step) is not StandardScaler:
            return None
        scalers.append(step)
    if type(final) in (RandomForestClassifier, ExtraTreesClassifier):
        trees = list(final.estimators_)
    elif type(final) is DecisionTreeClassifier:
        trees = [final]
    else:
        return None
    if getattr(final, "n_outputs_", 1) != 1:
        return None
    return CompiledPipeline(scalers, CompiledTrees(trees, len(final.classes_)))
