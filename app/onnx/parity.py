"""Does an ONNX graph reproduce scikit-learn's probabilities? The check the publisher and the service share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from app.onnx.session import ONNX_INPUT, PROBABILITIES_OUTPUT, OnnxGraphError, input_dtype, make_session

# Two classes whose expected probabilities are this close are a tie: either label is right, and float32
# rounding in the graph may pick the other one without anything being wrong.
TIE_EPSILON = 1e-6


@dataclass(frozen=True)
class ParityReport:
    """How far the graph's probabilities are from the expected ones, on ``rows`` rows."""

    rows: int
    max_abs_diff: float
    # Rows whose most probable class differs, not counting rows where the expected top two are tied.
    label_flips: int
    atol: float

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.atol and self.label_flips == 0

    def describe(self) -> str:
        return (
            f"max |dp| {self.max_abs_diff:.3g} (tolerance {self.atol:g}), "
            f"{self.label_flips} label flip(s) away from ties, {self.rows} rows"
        )


def compare_probabilities(got: ArrayLike, expected: ArrayLike, *, atol: float = 1e-5) -> ParityReport:
    """Compare two [rows, classes] probability matrices; raises ValueError when the shapes differ."""
    g = np.asarray(got, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    if g.shape != e.shape or e.ndim != 2:
        raise ValueError(f"probabilities have shape {g.shape}, expected {e.shape} ([rows, classes])")
    rows = int(e.shape[0])
    if rows == 0:
        return ParityReport(rows=0, max_abs_diff=0.0, label_flips=0, atol=atol)
    max_abs = float(np.max(np.abs(g - e)))
    flips = np.argmax(g, axis=1) != np.argmax(e, axis=1)
    if e.shape[1] > 1:
        top2 = np.sort(e, axis=1)[:, -2:]
        tied = (top2[:, 1] - top2[:, 0]) <= TIE_EPSILON
        flips &= ~tied
    return ParityReport(rows=rows, max_abs_diff=max_abs, label_flips=int(np.sum(flips)), atol=atol)


def verify_onnx(onnx_bytes: bytes, x: ArrayLike, expected_proba: ArrayLike, *, atol: float = 1e-5) -> ParityReport:
    """Run the graph on ``x`` (one tensor, in the dtype the graph's input declares) and compare with ``expected_proba``.

    Raises OnnxGraphError when the bytes are not a loadable graph or lack the "input"/"probabilities" pair.
    The caller decides what a failed report means (the publisher stores no graph, the service falls back).
    """
    session = make_session(onnx_bytes, intra_op_threads=1, inter_op_threads=1)
    rows: NDArray[np.floating[Any]] = np.ascontiguousarray(np.asarray(x, dtype=input_dtype(session)))
    if rows.ndim != 2:
        raise ValueError(f"verification inputs must be [rows, features], got shape {rows.shape}")
    try:
        (proba,) = session.run([PROBABILITIES_OUTPUT], {ONNX_INPUT: rows})
    except Exception as exc:  # onnxruntime raises its own exception types for shape/type errors
        raise OnnxGraphError(f"the graph fails on the verification rows: {exc}") from exc
    return compare_probabilities(proba, expected_proba, atol=atol)
