"""The model interface the server uses: load, predict, unload.

A ``SklearnModel`` is created from a store version, checks the artifact's signature when a key is
configured, unpickles it and proves on the metadata's verification rows that scikit-learn reproduces
what the trainer computed. Then it picks its engine:

* ``onnxruntime`` when the version carries an ONNX graph (converted and verified by the publisher,
  app/onnx/publishing.py). The graph is checked again here against the same rows (tolerance
  ``onnx_tolerance``, no label flip away from a tie); a graph that is corrupt, whose input does not
  match the model's features, or that disagrees with the pickle refuses the whole version: something
  is wrong with what was published or with this image's onnxruntime, and the previous version keeps
  serving (app/runtime/registry.py).
* ``sklearn`` otherwise: the model did not convert at publish time (the reason is in the metadata), it
  was published before graphs existed, or the service is told to (PREDICT_ENGINE=sklearn). The reason
  is logged with the load and kept in ``engine_reason``.
"""

from __future__ import annotations

import hmac
import io
import logging
import pickle
import time
from typing import Any, Literal, Protocol

import numpy as np
from numpy.typing import NDArray

from app.modelstore.metadata import ModelMetadata, metadata_signature_ok, sign, signature_ok
from app.runtime.value_checks import STRICT, ValueRules

log = logging.getLogger(__name__)

Engine = Literal["onnxruntime", "sklearn", "edge-bundle"]


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
        self.engine_reason = ""
        self.value_rules: ValueRules = STRICT

    def load(
        self,
        artifact: bytes,
        *,
        hmac_key: bytes | None = None,
        tolerance: float = 1e-9,
        onnx_graph: bytes | None = None,
        engine: Engine = "onnxruntime",
        onnx_tolerance: float = 1e-5,
        intra_op_threads: int = 1,
        inter_op_threads: int = 1,
    ) -> None:
        """Deserialize and verify; ``onnx_graph`` is the version's graph (metadata ``onnx``) when ``engine`` is
        onnxruntime. Raises ModelLoadError; never leaves a half-loaded model."""
        start = time.perf_counter()
        if hmac_key is not None and not metadata_signature_ok(self.meta, hmac_key):
            raise ModelLoadError(
                f"{self.name}:{self.version}: metadata signature missing or invalid for the configured artifact key"
            )
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
        x, expected = self._verification_rows()
        # The pickle first: it is the reference the graph is held to, and the fallback.
        reference = _SklearnPredictor(estimator)
        self._verify_sklearn(reference, x, expected, tolerance)

        predictor: Predictor = reference
        engine_name, reason = "sklearn", self._sklearn_reason(engine)
        chosen = self.meta.engine_choice
        if engine == "onnxruntime" and self.meta.onnx is not None and chosen is not None and chosen.engine == "sklearn":
            reason = f"chosen at publish: {chosen.reason}"
        elif engine == "onnxruntime" and self.meta.onnx is not None:
            if onnx_graph is None:
                raise ModelLoadError(f"{self.name}:{self.version}: the metadata lists an ONNX graph but none was read")
            predictor = self._onnx_predictor(
                onnx_graph, hmac_key, x, expected, onnx_tolerance, intra_op_threads, inter_op_threads
            )
            engine_name, reason = "onnxruntime", f"ONNX graph verified at load ({self.meta.onnx.converter})"
        self.value_rules = self._value_rules(estimator, x)
        self.estimator = estimator
        self._predictor = predictor
        self.engine = engine_name
        self.engine_reason = reason
        log.info(
            "model loaded",
            extra={
                "model": self.name,
                "version": self.version,
                "engine": self.engine,
                "engine_reason": self.engine_reason,
                "load_ms": round((time.perf_counter() - start) * 1000, 1),
            },
        )

    def _value_rules(self, estimator: Any, x: NDArray[np.float64]) -> ValueRules:
        """What requests may carry: the metadata's answer, or the estimator's own for older metadata."""
        from app.onnx.probes import accepts_missing, max_abs_input

        meta = self.meta
        missing = meta.accepts_missing if meta.accepts_missing is not None else accepts_missing(estimator, x)
        limit = meta.max_abs_input if meta.accepts_missing is not None else max_abs_input(estimator, x)
        return ValueRules(accepts_missing=missing, max_abs=limit if limit is not None else float("inf"))

    def serve_with(self, predictor: Predictor, engine: str, reason: str) -> None:
        """Serve through another engine, already verified by its owner on this version's rows (the registry's
        edge bundles); the pickle, checked by load(), stays the reference."""
        if self._predictor is None:
            raise RuntimeError(f"{self.name}:{self.version} is not loaded")
        self._predictor = predictor
        self.engine = engine
        self.engine_reason = reason
        log.info(
            "model engine", extra={"model": self.name, "version": self.version, "engine": engine, "reason": reason}
        )

    def _sklearn_reason(self, engine: Engine) -> str:
        if engine == "sklearn":
            return "PREDICT_ENGINE=sklearn"
        if self.meta.onnx_unavailable:
            return f"no ONNX graph: {self.meta.onnx_unavailable}"
        return "no ONNX graph: the version was published before the publisher converted models"

    def _verification_rows(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        sample = self.meta.verification
        x = np.asarray(sample.inputs, dtype=np.float64)
        expected = np.asarray(sample.probabilities, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_features or expected.shape != (len(x), len(self.classes)):
            raise ModelLoadError(f"{self.name}:{self.version}: verification sample has the wrong shape")
        return x, expected

    def _verify_sklearn(
        self, predictor: Predictor, x: NDArray[np.float64], expected: NDArray[np.float64], tolerance: float
    ) -> None:
        got = predictor.predict_proba(x)
        if got.shape != expected.shape or not np.allclose(got, expected, rtol=0.0, atol=tolerance):
            worst = float(np.max(np.abs(got - expected))) if got.shape == expected.shape else float("nan")
            raise ModelLoadError(
                f"{self.name}:{self.version}: predictions do not reproduce the trainer's "
                f"(max difference {worst:.3g} > {tolerance:g}); library versions differ?"
            )

    def _onnx_predictor(
        self,
        graph: bytes,
        hmac_key: bytes | None,
        x: NDArray[np.float64],
        expected: NDArray[np.float64],
        onnx_tolerance: float,
        intra_op_threads: int,
        inter_op_threads: int,
    ) -> Predictor:
        """The graph as a predictor, verified on the same rows as the pickle; ModelLoadError says what is wrong."""
        from app.onnx.parity import compare_probabilities
        from app.onnx.session import OnnxGraphError, OnnxPredictor

        entry = self.meta.onnx
        assert entry is not None
        where = f"{self.name}:{self.version}: ONNX graph {entry.file}"
        if hmac_key is not None and (
            entry.signature is None or not hmac.compare_digest(entry.signature, sign(entry.sha256, hmac_key))
        ):
            raise ModelLoadError(f"{where}: signature missing or invalid for the configured artifact key")
        try:
            predictor = OnnxPredictor(
                graph, self.n_features, intra_op_threads=intra_op_threads, inter_op_threads=inter_op_threads
            )
            report = compare_probabilities(predictor.predict_proba(x), expected, atol=onnx_tolerance)
        except (OnnxGraphError, ValueError) as exc:
            raise ModelLoadError(f"{where}: {exc}") from exc
        except Exception as exc:  # onnxruntime's own errors when a graph loads but cannot run these rows
            raise ModelLoadError(f"{where}: fails on the verification rows: {exc}") from exc
        if not report.ok:
            raise ModelLoadError(f"{where} disagrees with the pickle on the verification rows: {report.describe()}")
        return predictor

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
