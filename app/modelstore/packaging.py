"""Packaging a trained model for the store: the artifact's bytes, its metadata, its signature and the
verification sample.

A trainer hands over the fitted estimator and what it knows of the training run; this module writes
what the prediction service checks before it serves a version (app/runtime/model.py): the sha256 of
the artifact, the HMAC-SHA256 signature of that digest under the store's key, and held-out rows with
the probabilities the trainer computed for them, which the service must reproduce.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray

from app.modelstore.metadata import (
    EngineChoice,
    FeatureSpec,
    ModelMetadata,
    OnlineFeatures,
    OnnxArtifact,
    TrainingData,
    VerificationSample,
    sha256_hex,
    sign,
    with_metadata_signature,
)
from app.modelstore.store import ModelStore

VERIFICATION_ROWS = 32  # held-out rows the service reproduces at load: enough to catch a skew, cheap to check


@dataclass(frozen=True)
class TrainingRun:
    """What a trainer knows of one run, beside the fitted estimator."""

    feature_names: Sequence[str]
    target_name: str
    metrics: dict[str, float]
    source: str  # where the training data came from
    x_train: NDArray[Any]
    y_train: NDArray[Any]
    x_test: NDArray[Any]  # held out: the verification sample's rows come from here
    test_probabilities: NDArray[Any]  # the estimator's predict_proba on x_test
    params: dict[str, Any]
    online_features: OnlineFeatures | None = None
    reference_profile: dict[str, Any] | None = None  # app.monitoring.profile.ReferenceProfile, dumped
    table_versions: dict[str, int] | None = None  # offline tables read -> version (jobs train --as-of-version)
    entity_fingerprint: str | None = None  # of the point-in-time join's entity rows


def fingerprint(x: NDArray[Any], y: NDArray[Any]) -> str:
    """sha256 over the training matrix and labels: two runs on the same data record the same value."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(x).tobytes())
    h.update(np.ascontiguousarray(y).tobytes())
    return h.hexdigest()


def package_sklearn(
    estimator: Any,
    name: str,
    run: TrainingRun,
    *,
    hmac_key: bytes | None = None,
    version: str | None = None,
) -> tuple[ModelMetadata, bytes]:
    """The artifact (the estimator pickled, protocol 5) and its metadata. ``version`` defaults to the
    creation time and the digest's prefix; with ``hmac_key`` the metadata carries the signature."""
    import sklearn  # the trainer's scikit-learn, recorded so the service can refuse a mismatch

    from app.onnx.probes import accepts_missing, max_abs_input

    buf = io.BytesIO()
    pickle.dump(estimator, buf, protocol=5)
    artifact = buf.getvalue()
    digest = sha256_hex(artifact)
    now = datetime.now(UTC)
    meta = ModelMetadata(
        name=name,
        version=version or f"{now:%Y%m%dT%H%M%S}-{digest[:8]}",
        created_at=now.isoformat(),
        sha256=digest,
        size_bytes=len(artifact),
        signature=sign(digest, hmac_key) if hmac_key else None,
        features=[FeatureSpec(name=f, dtype="float64") for f in run.feature_names],
        classes=[c.item() for c in estimator.classes_],
        target_name=run.target_name,
        metrics=run.metrics,
        training_data=TrainingData(
            source=run.source,
            rows=len(run.x_train),
            fingerprint=fingerprint(run.x_train, run.y_train),
            table_versions=run.table_versions or {},
            entity_fingerprint=run.entity_fingerprint,
        ),
        library_versions={
            "python": platform.python_version(),
            "scikit-learn": sklearn.__version__,
            "numpy": np.__version__,
        },
        params=run.params,
        online_features=run.online_features,
        reference_profile=run.reference_profile,
        accepts_missing=accepts_missing(estimator, run.x_test),
        max_abs_input=max_abs_input(estimator, run.x_test),
        verification=VerificationSample(
            inputs=run.x_test[:VERIFICATION_ROWS].tolist(),
            probabilities=run.test_probabilities[:VERIFICATION_ROWS].tolist(),
        ),
    )
    return (with_metadata_signature(meta, hmac_key) if hmac_key else meta), artifact


def package_onnx(
    estimator: Any, meta: ModelMetadata, run: TrainingRun, *, hmac_key: bytes | None = None
) -> tuple[ModelMetadata, bytes | None]:
    """The metadata with its ``onnx`` entry and the graph, verified on every held-out row (app/onnx/publishing.py);
    or, when the model does not convert or the graph disagrees, with ``onnx_unavailable`` saying why and no graph."""
    from app.onnx.engine_choice import choose
    from app.onnx.publishing import export_verified
    from app.onnx.session import OnnxPredictor

    export = export_verified(estimator, len(run.feature_names), run.x_test, run.test_probabilities, name=meta.name)
    if export.graph is None or export.report is None:
        meta = meta.model_copy(update={"onnx_unavailable": export.reason})
        return (with_metadata_signature(meta, hmac_key) if hmac_key else meta), None
    digest = sha256_hex(export.graph)
    entry = OnnxArtifact(
        sha256=digest,
        size_bytes=len(export.graph),
        signature=sign(digest, hmac_key) if hmac_key else None,
        opsets=export.opsets or {},
        converter=export.converter,
        max_abs_diff=export.report.max_abs_diff,
        rows_checked=export.report.rows,
        probe_rows_checked=export.probe_rows,
    )
    # One thread each, as the service's workers run them (PREDICT_ORT_INTRA_OP_THREADS defaults to 1).
    graph = OnnxPredictor(export.graph, len(run.feature_names), intra_op_threads=1, inter_op_threads=1)
    picked = choose(estimator, graph.predict_proba, np.asarray(run.x_test, dtype=np.float64))
    choice = EngineChoice(engine=picked.engine, reason=picked.reason, seconds=picked.seconds)  # type: ignore[arg-type]
    meta = meta.model_copy(update={"onnx": entry, "engine_choice": choice})
    # signed last: the metadata signature covers every field, the graph's entry included
    return (with_metadata_signature(meta, hmac_key) if hmac_key else meta), export.graph


def publish_sklearn(
    store: ModelStore,
    estimator: Any,
    name: str,
    run: TrainingRun,
    *,
    hmac_key: bytes | None = None,
    version: str | None = None,
    set_latest: bool = True,
    onnx: bool = True,
) -> ModelMetadata:
    """Package the estimator and publish it to ``store`` (metadata written last, then ``latest``); with ``onnx``
    (the default) the ONNX graph the service runs is stored beside the pickle when the model converts."""
    meta, artifact = package_sklearn(estimator, name, run, hmac_key=hmac_key, version=version)
    graph = None
    if onnx:
        meta, graph = package_onnx(estimator, meta, run, hmac_key=hmac_key)
    store.publish(meta, artifact, set_latest=set_latest, onnx_graph=graph)
    return meta
