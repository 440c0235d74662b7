"""The model interface the server uses: load, predict, unload.

A ``SklearnModel`` is created from a store version, checks the artifact's
signature when a key is configured, unpickles it, picks the compiled tree path
when the estimator supports one, and proves on the metadata's verification rows
that what it serves reproduces what the trainer computed.
"""

from __future__ import annotations

import io
import logging
import pickle
import time
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from app.modelstore.metadata import ModelMetadata, signature_ok
from app.predict.forest import compile_estimator

log = logging.getLogger(__name__)


class ModelLoadError(Exception):
    """An artifact that must not be served; the message says why."""


class Predictor(Protocol):
    def predict_proba(self, x: NDArray[np.float64]) -> NDArray[np.float64]: ...


class SklearnModel:
    """One loaded, verified version of a model."""

    def __init__(self, meta: ModelMetadata) -> None:
        self.meta = meta
        self.name = meta.name
        self.version = meta.version
        self.feature_names = meta.feature_names
        self.n_features = len(self.feature_names)
        self.classes: list[int | str] = list(meta.classes)
        # Integer labels travel as INT64 tensors, anything else as BYTES.
        ints = all(isinstance(c, int) for c in self.classes)
        self.classes_array = np.asarray(self.classes, dtype=np.int64 if ints else object)
        self.estimator: Any = None
        self._predictor: Predictor | None = None
        self.engine = "unloaded"

    def load(self, artifact: bytes, *, hmac_key: bytes | None = None, tolerance: float = 1e-9) -> None:
        """Deserialize and verify. Raises ModelLoadError; never leaves a half-loaded model."""
        start = time.perf_counter()
        if hmac_key is not None and not signature_ok(self.meta, hmac_key):
            raise ModelLoadError(
                f"{self.name}:{self.version}: signature missing or invalid for the configured artifact key"
            )
        try:
            # Trusted only because the store is: see docs/design.md "Artifact trust".
            estimator = pickle.load(io.BytesIO(artifact))
        except Exception as exc:
            raise ModelLoadError(f"{self.name}:{self.version}: cannot unpickle artifact: {exc}") from exc
        if not hasattr(estimator, "predict_proba"):
            raise ModelLoadError(f"{self.name}:{self.version}: estimator has no predict_proba")
        est_classes = [c.item() if hasattr(c, "item") else c for c in getattr(estimator, "classes_", [])]
        if est_classes != self.classes:
            raise ModelLoadError(
                f"{self.name}:{self.version}: estimator classes {est_classes} != metadata {self.classes}"
            )
        n_in = getattr(estimator, "n_features_in_", self.n_features)
        if n_in != self.n_features:
            raise ModelLoadError(
                f"{self.name}:{self.version}: estimator expects {n_in} features, metadata lists {self.n_features}"
            )
        compiled = compile_estimator(estimator)
        predictor: Predictor = compiled if compiled is not None else _SklearnPredictor(estimator)
        self._verify(predictor, tolerance)
        self.estimator = estimator
        self._predictor = predictor
        self.engine = "compiled-trees" if compiled is not None else "sklearn"
        log.info(
            "model loaded",
            extra={
                "model": self.name,
                "version": self.version,
                "engine": self.engine,
                "load_ms": round((time.perf_counter() - start) * 1000, 1),
            },
        )

    def _verify(self, predictor: Predictor, tolerance: float) -> None:
        sample = self.meta.verification
        x = np.asarray(sample.inputs, dtype=np.float64)
        expected = np.asarray(sample.probabilities, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_features or expected.shape != (len(x), len(self.classes)):
            raise ModelLoadError(f"{self.name}:{self.version}: verification sample has the wrong shape")
        got = predictor.predict_proba(x)
        if got.shape != expected.shape or not np.allclose(got, expected, rtol=0.0, atol=tolerance):
            worst = float(np.max(np.abs(got - expected))) if got.shape == expected.shape else float("nan")
            raise ModelLoadError(
                f"{self.name}:{self.version}: predictions do not reproduce the trainer's "
                f"(max difference {worst:.3g} > {tolerance:g}); library versions differ?"
            )

    def predict_proba(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        if self._predictor is None:
            raise RuntimeError(f"{self.name}:{self.version} is not loaded")
        return self._predictor.predict_proba(x)

    def unload(self) -> None:
        self._predictor = None
        self.estimator = None
        self.engine = "unloaded"


class _SklearnPredictor:
    """The reference path: scikit-learn itself (any estimator with predict_proba)."""

    def __init__(self, estimator: Any) -> None:
        self.estimator = estimator

    def predict_proba(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.asarray(self.estimator.predict_proba(x), dtype=np.float64)
