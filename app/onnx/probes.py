"""Probe rows: the inputs where a graph and scikit-learn are most likely to disagree, built from the fitted
model itself. Random held-out rows almost never land on a split threshold; these rows do, on purpose.

- every split threshold of every tree (app/onnx/trees.py), at the threshold and its float64 and float32
  neighbours, mapped back to the raw features through the preprocessing when it is invertible (scalers),
  set into a few base rows taken from the reference rows;
- magnitudes just outside the training range and far beyond it (3, 10, 1e3 and 1e6 deviations out);
- missing values, one feature at a time, when the model accepts them.

The publisher compares the graph with ``predict_proba`` on these rows (app/onnx/publishing.py), and the
edge export does again. The set is deterministic for a given model and reference rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline

from app.onnx.pipelines import preprocessing, split
from app.onnx.trees import FLOAT32_TREES, FLOAT64_TREES, split_values

MAX_PROBE_ROWS = 20_000
BASE_ROWS = 4  # reference rows each threshold is set into: different rows reach different trees' nodes
# Deviations from the median: just outside the training range (where float32 arithmetic errs most while
# probabilities are not yet saturated) and far out.
LARGE = (3.0, 10.0, 1e3, 1e6)


def _neighbours(t: float) -> list[float]:
    f32 = np.float32(t)
    return [
        t,
        float(np.nextafter(t, -np.inf)),
        float(np.nextafter(t, np.inf)),
        float(f32),
        float(np.nextafter(f32, np.float32(-np.inf))),
        float(np.nextafter(f32, np.float32(np.inf))),
    ]


def accepts_missing(estimator: Any, rows: NDArray[np.float64]) -> bool:
    """Whether ``predict_proba`` answers a missing value in any feature (what a NaN in a request would do): one
    row per feature, that feature missing. A model that takes NaN in some columns only does not accept them."""
    if len(rows) == 0:
        return False
    width = np.asarray(rows).shape[1]
    row = np.repeat(np.nan_to_num(np.array(rows[:1], dtype=np.float64)), width, axis=0)
    row[np.arange(width), np.arange(width)] = np.nan
    try:
        out = np.asarray(estimator.predict_proba(row), dtype=np.float64)
    except Exception:  # scikit-learn raises ValueError ("Input X contains NaN") or its subclasses
        return False
    return bool(np.all(np.isfinite(out)))


def _inverse(pre: Any, z: NDArray[np.float64]) -> NDArray[np.float64]:
    """Preprocessed rows back to raw features, step by step; ValueError for a step without an exact inverse.
    An imputer is the identity on the present values that probes carry."""
    steps = pre.steps if isinstance(pre, Pipeline) else [("", pre)]
    for _, step in reversed(steps):
        if isinstance(step, SimpleImputer) and not step.add_indicator:
            if not np.all(np.isfinite(np.asarray(step.statistics_, dtype=np.float64))):
                raise ValueError("the imputer drops all-missing columns")  # its output is narrower
            continue
        if isinstance(step, Pipeline):
            z = _inverse(step, z)
        elif hasattr(step, "inverse_transform"):
            z = np.asarray(step.inverse_transform(z), dtype=np.float64)
        else:
            raise ValueError(f"{type(step).__name__} has no inverse")
    return z


FLOAT32_MAX = float(np.finfo(np.float32).max)


def max_abs_input(estimator: Any, rows: NDArray[np.float64]) -> float | None:
    """FLOAT32_MAX when ``predict_proba`` fails (or answers non-finite) past float32's range, as trees that cast
    to float32 do; None when it answers such rows."""
    if len(rows) == 0:
        return None
    row = np.full((1, np.asarray(rows).shape[1]), 1e39)
    try:
        out = np.asarray(estimator.predict_proba(row), dtype=np.float64)
    except Exception:  # scikit-learn's "Input X contains infinity or a value too large for dtype('float32')"
        return FLOAT32_MAX
    return None if bool(np.all(np.isfinite(out))) else FLOAT32_MAX


def _threshold_rows(pre: Any | None, final: Any, bases: NDArray[np.float64]) -> list[NDArray[np.float64]]:
    """Rows whose preprocessed feature sits at or next to each threshold of the final tree ensemble."""
    try:
        z = pre.transform(bases) if pre is not None else bases
        z_bases = np.asarray(z.toarray() if hasattr(z, "toarray") else z, dtype=np.float64)  # sparse one-hot
    except Exception:  # the preprocessing refuses the base rows: no threshold probes, the other probes remain
        return []
    out: list[NDArray[np.float64]] = []
    for feature, thresholds in split_values(final).items():
        values = np.array([v for t in thresholds for v in _neighbours(float(t))])
        for z in z_bases:
            block = np.repeat(z[None, :], len(values), axis=0)
            block[:, feature] = values
            if pre is None:
                out.append(block)
                continue
            try:
                raw = _inverse(pre, block)
            except Exception:  # a step without an exact inverse (one-hot columns): no threshold probes through it
                return []
            out.append(raw)
            # the inverse rounds: its float64 neighbours are the rows that land on either side after scaling
            out.append(np.nextafter(raw, np.inf))
            out.append(np.nextafter(raw, -np.inf))
    return out


def probe_rows(estimator: Any, reference: NDArray[Any], *, limit: int = MAX_PROBE_ROWS) -> NDArray[np.float64]:
    """At most ``limit`` probe rows for ``estimator`` (fitted on rows like ``reference``), deterministic."""
    ref = np.asarray(reference, dtype=np.float64)
    if ref.ndim != 2 or len(ref) == 0:
        return np.zeros((0, ref.shape[-1] if ref.ndim == 2 else 0))
    finite = np.where(np.isfinite(ref), ref, np.nan)
    median = np.nan_to_num(np.nanmedian(finite, axis=0)) if np.isfinite(finite).any() else np.zeros(ref.shape[1])
    picks = np.linspace(0, len(ref) - 1, num=min(BASE_ROWS - 1, len(ref))).astype(int)
    bases = np.vstack([median[None, :], np.nan_to_num(ref[picks])])
    blocks: list[NDArray[np.float64]] = []
    std = np.nan_to_num(np.nanstd(finite, axis=0)) if np.isfinite(finite).any() else np.ones(ref.shape[1])
    std = np.where(std > 0, std, 1.0)
    for k in LARGE:
        for sign in (1.0, -1.0):
            block = np.repeat(median[None, :], ref.shape[1], axis=0)
            block[np.arange(ref.shape[1]), np.arange(ref.shape[1])] += sign * k * std
            blocks.append(block)
    if accepts_missing(estimator, bases):
        block = np.repeat(bases, ref.shape[1], axis=0)
        block[np.arange(len(block)), np.tile(np.arange(ref.shape[1]), len(bases))] = np.nan
        blocks.append(block)
    others = np.vstack(blocks) if blocks else np.zeros((0, ref.shape[1]))
    pre, final = preprocessing(estimator), split(estimator)[1]
    at = _threshold_rows(pre, final, bases) if isinstance(final, FLOAT32_TREES + FLOAT64_TREES) else []
    thresholds = np.vstack(at) if at else np.zeros((0, ref.shape[1]))
    room = max(limit - len(others), 0)
    if len(thresholds) > room:  # an even spread over every tree's thresholds, not the first ones only
        thresholds = thresholds[np.linspace(0, len(thresholds) - 1, num=room).astype(int)]
    rows = np.vstack([thresholds, others])
    # No infinities, and nothing past float32's range: scikit-learn's float32 trees refuse such rows (requests
    # carrying them get a 400, app/runtime/value_checks.py), so they are nothing to agree on.
    keep = np.all(np.isnan(rows) | (np.abs(np.where(np.isnan(rows), 0.0, rows)) <= FLOAT32_MAX), axis=1)
    return rows[keep]
