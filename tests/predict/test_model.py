from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from app.modelstore import LocalModelStore
from app.modelstore.metadata import sha256_hex, sign, with_metadata_signature
from app.runtime.model import ModelLoadError, SklearnModel


def _load(store: LocalModelStore, name: str = "breast-cancer", **kw: object) -> SklearnModel:
    v = store.latest(name)
    assert v is not None
    meta, data = store.read_version(name, v)
    m = SklearnModel(meta)
    m.load(data, onnx_graph=store.read_onnx(meta), **kw)  # type: ignore[arg-type]
    return m


def test_loads_verified_with_onnx_engine(store_copy: LocalModelStore) -> None:
    m = _load(store_copy)
    assert m.engine == "onnxruntime" and "verified" in m.engine_reason
    x = np.asarray(m.meta.verification.inputs)
    np.testing.assert_allclose(m.predict_proba(x), m.estimator.predict_proba(x), atol=1e-5)


def test_reproduction_failure_is_refused(store_copy: LocalModelStore) -> None:
    v = store_copy.latest("iris")
    assert v is not None
    meta, data = store_copy.read_version("iris", v)
    bad = meta.model_copy(deep=True)
    bad.verification.probabilities[0] = (
        [1.0, 0.0, 0.0] if bad.verification.probabilities[0][0] < 0.5 else [0.0, 1.0, 0.0]
    )
    with pytest.raises(ModelLoadError, match="do not reproduce"):
        SklearnModel(bad).load(data)


def test_signature_required_when_key_configured(store_copy: LocalModelStore) -> None:
    with pytest.raises(ModelLoadError, match="signature"):
        _load(store_copy, hmac_key=b"secret")


def test_valid_signature_loads(store_copy: LocalModelStore) -> None:
    v = store_copy.latest("iris")
    assert v is not None
    meta, data = store_copy.read_version("iris", v)
    graph = store_copy.read_onnx(meta)
    assert meta.onnx is not None
    signed_onnx = meta.onnx.model_copy(update={"signature": sign(meta.onnx.sha256, b"secret")})
    signed = with_metadata_signature(
        meta.model_copy(update={"signature": sign(meta.sha256, b"secret"), "onnx": signed_onnx}), b"secret"
    )
    m = SklearnModel(signed)
    m.load(data, hmac_key=b"secret", onnx_graph=graph)
    assert m.engine == "onnxruntime"
    with pytest.raises(ModelLoadError, match="signature"):
        SklearnModel(signed).load(data, hmac_key=b"other", onnx_graph=graph)
    # The pickle signed, the graph not: the graph is refused, not silently skipped.
    half = with_metadata_signature(meta.model_copy(update={"signature": sign(meta.sha256, b"secret")}), b"secret")
    with pytest.raises(ModelLoadError, match=r"ONNX graph model.onnx: signature missing"):
        SklearnModel(half).load(data, hmac_key=b"secret", onnx_graph=graph)


def test_garbage_and_wrong_estimators_are_refused(store_copy: LocalModelStore) -> None:
    v = store_copy.latest("iris")
    assert v is not None
    meta, _ = store_copy.read_version("iris", v)
    with pytest.raises(ModelLoadError, match="cannot unpickle"):
        SklearnModel(meta).load(b"not a pickle")
    other = pickle.dumps(LogisticRegression().fit([[0.0, 1.0], [1.0, 0.0]], ["a", "b"]))
    with pytest.raises(ModelLoadError, match="classes"):
        SklearnModel(meta.model_copy(update={"sha256": sha256_hex(other)})).load(other)


def test_sklearn_fallback_engine(tmp_path: object) -> None:
    from sklearn.datasets import load_iris

    from app.modelstore import FeatureSpec, ModelMetadata, VerificationSample
    from app.modelstore.metadata import TrainingData

    x, y = load_iris(return_X_y=True)
    est = LogisticRegression(max_iter=500).fit(x, y)
    art = pickle.dumps(est)
    meta = ModelMetadata(
        name="lr",
        version="1",
        created_at="now",
        sha256=sha256_hex(art),
        size_bytes=len(art),
        features=[FeatureSpec(name=f"f{i}") for i in range(4)],
        classes=[0, 1, 2],
        training_data=TrainingData(source="iris", rows=150, fingerprint="-"),
        library_versions={},
        verification=VerificationSample(inputs=x[:5].tolist(), probabilities=est.predict_proba(x[:5]).tolist()),
    )
    m = SklearnModel(meta)
    m.load(art)
    assert m.engine == "sklearn"
    assert m.predict_proba(x[:2]).shape == (2, 3)
