"""Publish-time conversion: the graph the train job stores beside the pickle, or the reason there is none.

A graph is stored only if onnxruntime reproduces scikit-learn on every held-out row the trainer has and on
the probe rows built from the model (app/onnx/probes.py: every split threshold and its float64 and float32
neighbours, large magnitudes, missing values), within ONNX_ATOL and with no label flip away from a tie.
A model that does not convert, or converts to a graph that disagrees, is published without one and served
by scikit-learn: the reason travels in the metadata (``onnx_unavailable``) so the service can log it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from app.onnx.parity import ParityReport, verify_onnx

log = logging.getLogger(__name__)

# The bar at publish: graphs that compute in scikit-learn's dtypes land within 2e-7 of it (float32 is only the
# ensembles' output type), so 1e-6 leaves room for rounding and none for a wrong branch.
ONNX_ATOL = 1e-6


@dataclass(frozen=True)
class OnnxExport:
    """A verified graph and its report, or ``graph is None`` and ``reason`` saying why."""

    graph: bytes | None
    reason: str | None
    report: ParityReport | None = None
    opsets: dict[str, int] | None = None
    converter: str = ""
    probe_rows: int = 0  # of report.rows, how many were probes (the rest are held-out rows)


def checked_rows(
    estimator: Any, x_check: ArrayLike, expected_proba: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64], int]:
    """The held-out rows and the model's probe rows, with scikit-learn's probabilities for each (the oracle),
    and how many probes there are. A probe scikit-learn itself refuses (a value too large for its float32
    trees) is left out: there is nothing to agree with."""
    from app.onnx.probes import probe_rows

    held = np.asarray(x_check, dtype=np.float64)
    probes = probe_rows(estimator, held)
    try:
        probe_proba = np.asarray(estimator.predict_proba(probes), dtype=np.float64) if len(probes) else None
    except Exception:  # scikit-learn's ValueError for a value it cannot represent: keep the rows it answers
        kept = []
        for row in probes:
            try:
                kept.append((row, np.asarray(estimator.predict_proba(row[None, :]), dtype=np.float64)[0]))
            except Exception:
                continue
        probes = np.array([r for r, _ in kept]).reshape(-1, held.shape[1])
        probe_proba = np.array([p for _, p in kept]) if kept else None
    expected = np.asarray(expected_proba, dtype=np.float64)
    if probe_proba is None:
        return held, expected, 0
    return np.vstack([held, probes]), np.vstack([expected, probe_proba]), len(probes)


def export_verified(
    estimator: Any, n_features: int, x_check: ArrayLike, expected_proba: ArrayLike, *, name: str
) -> OnnxExport:
    """Convert ``estimator`` and verify it on ``x_check``; never raises for a model that cannot be served so."""
    import skl2onnx

    from app.onnx.sklearn_convert import UnsupportedStepError, opsets_of, sklearn_to_onnx

    converter = f"skl2onnx {skl2onnx.__version__}"
    try:
        graph = sklearn_to_onnx(estimator, n_features, name=name)
    except (UnsupportedStepError, ValueError) as exc:
        log.warning("no ONNX graph: conversion failed", extra={"model": name, "reason": str(exc)})
        return OnnxExport(graph=None, reason=str(exc), converter=converter)
    except Exception as exc:  # a converter or checker error not foreseen: no graph, never a failed publish
        reason = f"conversion failed unexpectedly ({type(exc).__name__}): {exc}"
        log.warning("no ONNX graph: conversion failed", extra={"model": name, "reason": reason})
        return OnnxExport(graph=None, reason=reason, converter=converter)
    try:
        rows, expected, n_probes = checked_rows(estimator, x_check, expected_proba)
        report = verify_onnx(graph, rows, expected, atol=ONNX_ATOL)
    except Exception as exc:  # OnnxGraphError, ValueError, onnxruntime's own errors on these rows
        reason = f"the converted graph does not run: {exc}"
        log.warning("no ONNX graph: verification failed", extra={"model": name, "reason": reason})
        return OnnxExport(graph=None, reason=reason, converter=converter)
    if not report.ok:
        reason = f"the converted graph disagrees with scikit-learn: {report.describe()}"
        log.warning("no ONNX graph: verification failed", extra={"model": name, "reason": reason})
        return OnnxExport(graph=None, reason=reason, report=report, converter=converter)
    return OnnxExport(
        graph=graph, reason=None, report=report, opsets=opsets_of(graph), converter=converter, probe_rows=n_probes
    )
