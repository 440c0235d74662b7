"""Publish-time conversion: the graph the train job stores beside the pickle, or the reason there is none.

A graph is stored only if onnxruntime reproduces scikit-learn on every held-out row the trainer has
(tolerance ONNX_ATOL, no label flip away from a tie). A model that does not convert, or converts to
a graph that disagrees, is published without one and served by scikit-learn: the reason travels in
the metadata (``onnx_unavailable``) so the service can log it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from numpy.typing import ArrayLike

from app.onnx.parity import ParityReport, verify_onnx
from app.onnx.session import OnnxGraphError

log = logging.getLogger(__name__)

# The bar, the same at publish and at load: float32 graphs land around 1e-7 (app/onnx/sklearn_convert.py).
ONNX_ATOL = 1e-5


@dataclass(frozen=True)
class OnnxExport:
    """A verified graph and its report, or ``graph is None`` and ``reason`` saying why."""

    graph: bytes | None
    reason: str | None
    report: ParityReport | None = None
    opsets: dict[str, int] | None = None
    converter: str = ""


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
    try:
        report = verify_onnx(graph, x_check, expected_proba, atol=ONNX_ATOL)
    except (OnnxGraphError, ValueError) as exc:
        reason = f"the converted graph does not run: {exc}"
        log.warning("no ONNX graph: verification failed", extra={"model": name, "reason": reason})
        return OnnxExport(graph=None, reason=reason, converter=converter)
    if not report.ok:
        reason = f"the converted graph disagrees with scikit-learn: {report.describe()}"
        log.warning("no ONNX graph: verification failed", extra={"model": name, "reason": reason})
        return OnnxExport(graph=None, reason=reason, report=report, converter=converter)
    return OnnxExport(graph=graph, reason=None, report=report, opsets=opsets_of(graph), converter=converter)
