"""A fitted pipeline as (preprocessing steps, final estimator), nested pipelines flattened: the one split the
converter (app/onnx/sklearn_convert.py) and the probe builder (app/onnx/probes.py) share."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.pipeline import Pipeline

from app.onnx.trees import FLOAT32_TREES, FLOAT64_TREES


def split(estimator: Any) -> tuple[list[tuple[str, Any]], Any]:
    if not isinstance(estimator, Pipeline):
        return [], estimator
    pre = [(n, s) for n, s in estimator.steps[:-1] if s is not None and s != "passthrough"]
    inner_pre, final = split(estimator.steps[-1][1])
    return pre + inner_pre, final


def preprocessing(estimator: Any) -> Pipeline | None:
    """The preprocessing steps as one Pipeline (sharing the fitted steps), or None."""
    pre, _ = split(estimator)
    return Pipeline(pre) if pre else None


def nested_trees(final: Any) -> list[str]:
    """Tree ensembles inside a final estimator that is not itself one (stacking, voting, bagging, calibration):
    their float32 comparisons are neither reproduced by a float64 graph nor probed at their thresholds."""
    if isinstance(final, FLOAT32_TREES + FLOAT64_TREES) or not hasattr(final, "get_params"):
        return []
    inside: list[Any] = list(final.get_params(deep=True).values())
    for attr in ("estimators_", "estimator_", "calibrated_classifiers_"):  # fitted ones, defaults included
        got = getattr(final, attr, None)
        inside += list(np.ravel(np.asarray(got, dtype=object))) if got is not None else []
    inside += [getattr(c, "estimator", None) for c in getattr(final, "calibrated_classifiers_", [])]
    return sorted({type(v).__name__ for v in inside if isinstance(v, FLOAT32_TREES + FLOAT64_TREES)})
