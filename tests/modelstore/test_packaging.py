"""Packaging a trained model (app.modelstore.packaging): what the trainer publishes is what the prediction
service verifies before serving: digest, HMAC signature and the verification sample."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.modelstore import LocalModelStore, TrainingRun, package_sklearn, publish_sklearn
from app.modelstore.metadata import metadata_signature_ok, sha256_hex, signature_ok
from app.modelstore.packaging import VERIFICATION_ROWS, fingerprint
from app.runtime.model import ModelLoadError, SklearnModel


@pytest.fixture(scope="module")
def fitted() -> tuple[Any, TrainingRun]:
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    est = RandomForestClassifier(n_estimators=5, random_state=0).fit(x[:150], y[:150])
    run = TrainingRun(
        feature_names=["a", "b", "c"],
        target_name="positive",
        metrics={"accuracy": 0.9},
        source="generated",
        x_train=x[:150],
        y_train=y[:150],
        x_test=x[150:],
        test_probabilities=est.predict_proba(x[150:]),
        params={"n_estimators": 5},
    )
    return est, run


def test_metadata_describes_the_artifact_and_the_run(fitted: tuple[Any, TrainingRun]) -> None:
    est, run = fitted
    meta, artifact = package_sklearn(est, "toy", run, version="v1")
    assert (meta.name, meta.version, meta.sha256, meta.size_bytes) == ("toy", "v1", sha256_hex(artifact), len(artifact))
    assert meta.feature_names == ["a", "b", "c"] and meta.classes == [0, 1] and meta.target_name == "positive"
    assert meta.training_data.rows == 150
    assert meta.training_data.fingerprint == fingerprint(run.x_train, run.y_train)
    assert meta.training_data.fingerprint != fingerprint(run.x_train, run.y_train[::-1])
    assert len(meta.verification.inputs) == VERIFICATION_ROWS == len(meta.verification.probabilities)
    assert meta.verification.inputs == run.x_test[:VERIFICATION_ROWS].tolist()
    assert meta.signature is None and set(meta.library_versions) == {"python", "scikit-learn", "numpy"}
    assert package_sklearn(est, "toy", run)[0].version.endswith("-" + meta.sha256[:8])  # default: time + digest


def test_signed_packages_load_only_under_their_key(fitted: tuple[Any, TrainingRun]) -> None:
    est, run = fitted
    meta, artifact = package_sklearn(est, "toy", run, hmac_key=b"k3y")
    assert meta.signature is not None and signature_ok(meta, b"k3y") and not signature_ok(meta, b"other")
    SklearnModel(meta).load(artifact, hmac_key=b"k3y")  # digest, signature and verification sample all check
    with pytest.raises(ModelLoadError, match="signature"):
        SklearnModel(meta).load(artifact, hmac_key=b"other")


def test_publish_writes_a_version_the_store_reads_back(fitted: tuple[Any, TrainingRun], tmp_path: Path) -> None:
    est, run = fitted
    store = LocalModelStore(tmp_path)
    meta = publish_sklearn(store, est, "toy", run, version="v1", set_latest=False)
    assert store.latest("toy") is None and store.list_versions("toy") == ["v1"]
    read, artifact = store.read_version("toy", "v1")
    assert read == meta and sha256_hex(artifact) == meta.sha256


def test_the_signature_covers_the_metadata(fitted: tuple[Any, TrainingRun]) -> None:
    """Issue 23: with a key set, metadata changed after signing (a transform reference, the verification rows,
    the features) is refused before anything it names is acted on."""
    est, run = fitted
    meta, artifact = package_sklearn(est, "toy", run, hmac_key=b"k3y")
    assert metadata_signature_ok(meta, b"k3y") and not metadata_signature_ok(meta, b"other")
    tampered = [
        meta.model_copy(update={"params": {**meta.params, "x": 1}}),
        meta.model_copy(update={"target_name": "other"}),
        meta.model_copy(update={"metadata_signature": None}),
    ]
    for bad in tampered:
        assert not metadata_signature_ok(bad, b"k3y")
        with pytest.raises(ModelLoadError, match="metadata signature missing or invalid"):
            SklearnModel(bad).load(artifact, hmac_key=b"k3y")
    SklearnModel(meta).load(artifact, hmac_key=b"k3y")
