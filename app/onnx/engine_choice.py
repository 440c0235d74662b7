"""Which engine serves a version: onnxruntime when its graph is exact (app/onnx/publishing.py) and not slower.

A graph that agrees is not always faster: skl2onnx turns a k-nearest-neighbours search into brute-force
distances against every training row, where scikit-learn walks a KD-tree (measured in issue 22: 11.9 ms per
row in onnxruntime against 0.6 ms). So the publisher times both engines on 1 row and on 64 rows, as the
service calls them, and keeps scikit-learn when it is faster at both sizes. The figures travel in the
metadata (``engine_choice``) and the service exports them (``model_engine_latency_seconds``).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

BATCH_SIZES = (1, 64)
BUDGET_S = 0.1  # per engine and batch size: enough repetitions for a stable median, cheap at publish


@dataclass(frozen=True)
class Choice:
    engine: str  # "onnxruntime" or "sklearn"
    reason: str
    seconds: dict[str, dict[int, float]]  # engine -> batch size -> median seconds per call


def _median_seconds(call: Callable[[], Any]) -> float:
    call()  # warm: first calls allocate
    times: list[float] = []
    deadline = time.perf_counter() + BUDGET_S
    while len(times) < 5 or (time.perf_counter() < deadline and len(times) < 2000):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def choose(estimator: Any, onnx_predict: Callable[[NDArray[np.float64]], Any], rows: NDArray[np.float64]) -> Choice:
    """Time ``estimator.predict_proba`` and ``onnx_predict`` on 1 and 64 of ``rows`` (repeated as needed)."""
    x = np.asarray(rows, dtype=np.float64)
    seconds: dict[str, dict[int, float]] = {"sklearn": {}, "onnxruntime": {}}
    for n in BATCH_SIZES:
        batch = np.ascontiguousarray(np.resize(x, (n, x.shape[1])))
        seconds["sklearn"][n] = _median_seconds(functools.partial(estimator.predict_proba, batch))
        seconds["onnxruntime"][n] = _median_seconds(functools.partial(onnx_predict, batch))
    figures = ", ".join(
        f"{n} row{'s' if n > 1 else ''}: onnxruntime {seconds['onnxruntime'][n] * 1e6:.0f} µs, "
        f"scikit-learn {seconds['sklearn'][n] * 1e6:.0f} µs"
        for n in BATCH_SIZES
    )
    if all(seconds["sklearn"][n] < seconds["onnxruntime"][n] for n in BATCH_SIZES):
        return Choice("sklearn", f"scikit-learn is faster at publish ({figures})", seconds)
    return Choice("onnxruntime", f"ONNX graph exact on every checked row and not slower ({figures})", seconds)
