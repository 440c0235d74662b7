"""The onnxruntime engine: which engine serves a version and why, refusals at load, threads, micro-batches.

Models are published the way the train job publishes them (publish_sklearn converts and verifies), to a
real local store, and loaded the way a worker loads them (ModelRegistry or SklearnModel).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from numpy.typing import NDArray
from prometheus_client import REGISTRY
from pydantic import ValidationError
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingClassifier, HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from app.modelstore import LocalModelStore, ModelMetadata, TrainingRun, publish_sklearn
from app.modelstore.metadata import sha256_hex
from app.onnx.parity import compare_probabilities
from app.onnx.session import OnnxPredictor
from app.onnx.sklearn_convert import sklearn_to_onnx
from app.predict.core.config import Settings
from app.runtime.batcher import MicroBatcher
from app.runtime.model import ModelLoadError, SklearnModel
from app.runtime.registry import ModelRegistry
from devharness import GunicornService

N_FEATURES = 6
FEATURES = ["amount", "age", "score_a", "score_b", "channel", "tenure"]


def _data(rows: int, seed: int, *, missing: bool = False) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, N_FEATURES))
    x[:, 0] = rng.lognormal(3.0, 1.0, size=rows)  # an amount: wide range, positive
    x[:, 4] = rng.integers(0, 4, size=rows)  # a channel code: one-hot encoded
    y = ((0.02 * x[:, 0] + x[:, 2] - 0.4 * x[:, 4] + 0.3 * x[:, 5]) > 0.6).astype(np.int64)
    if missing:  # training data only: age sometimes missing, imputed (JSON requests carry no NaN)
        x[rng.random(rows) < 0.05, 1] = np.nan
    return x, y


MODELS: dict[str, Callable[[], Any]] = {
    "columns-logistic": lambda: Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [
                        ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), [0, 1, 2, 3, 5]),
                        ("channel", OneHotEncoder(handle_unknown="ignore"), [4]),
                    ]
                ),
            ),
            ("clf", LogisticRegression(max_iter=500)),
        ]
    ),
    "gradient-boosting": lambda: make_pipeline(SimpleImputer(), GradientBoostingClassifier(n_estimators=40)),
    "random-forest": lambda: make_pipeline(
        SimpleImputer(), RandomForestClassifier(n_estimators=20, max_depth=8, random_state=0)
    ),
    "hist-gradient-boosting": lambda: HistGradientBoostingClassifier(max_iter=40, random_state=0),
    # A Python function in the pipeline: no ONNX equivalent, served by scikit-learn.
    "log-amount": lambda: Pipeline(
        [
            ("impute", SimpleImputer()),
            ("log_amount", FunctionTransformer(np.log1p)),
            ("clf", LogisticRegression(max_iter=500)),
        ]
    ),
}


def publish(store: LocalModelStore, name: str, est: Any, *, version: str, seed: int = 0) -> ModelMetadata:
    x, y = _data(900, seed, missing=True)
    x_train, y_train = x, y
    x_test, _ = _data(300, seed + 100)
    if name == "log-amount":
        x_train, x_test = np.abs(x_train), np.abs(x_test)
    est.fit(x_train, y_train)
    run = TrainingRun(
        feature_names=FEATURES,
        target_name="target",
        metrics={},
        source="tests",
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        test_probabilities=est.predict_proba(x_test),
        params={},
    )
    return publish_sklearn(store, est, name, run, version=version)


@pytest.fixture(scope="module")
def families(tmp_path_factory: pytest.TempPathFactory) -> LocalModelStore:
    store = LocalModelStore(tmp_path_factory.mktemp("families"))
    for name, make in MODELS.items():
        publish(store, name, make(), version="v1")
    return store


def load(store: LocalModelStore, name: str, version: str = "v1", **kw: Any) -> SklearnModel:
    meta, artifact = store.read_version(name, version)
    model = SklearnModel(meta)
    graph = store.read_onnx(meta) if meta.onnx is not None else None
    model.load(artifact, onnx_graph=graph, **kw)
    return model


@pytest.mark.parametrize("name", ["columns-logistic", "gradient-boosting", "random-forest", "hist-gradient-boosting"])
def test_family_is_served_by_onnxruntime_within_tolerance(families: LocalModelStore, name: str) -> None:
    meta = families.read_metadata(name, "v1")
    assert meta.onnx is not None and meta.onnx_unavailable is None
    assert meta.onnx.rows_checked == 300 + meta.onnx.probe_rows_checked and meta.onnx.probe_rows_checked > 0
    assert meta.onnx.max_abs_diff < 1e-6
    assert (families.root / name / "versions" / "v1" / "model.onnx").stat().st_size == meta.onnx.size_bytes

    model = load(families, name)
    assert model.engine == "onnxruntime"
    x, _ = _data(2000, seed=9)
    x[::40, 4] = 9.0  # channels never seen in training
    got = model.predict_proba(x)
    expected = model.estimator.predict_proba(x)
    assert got.dtype == np.float64 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    # A 20-tree forest has exact 0.5/0.5 rows, where float32 output may pick either class: flips away from ties.
    assert compare_probabilities(got, expected).label_flips == 0


def test_unconvertible_model_is_served_by_sklearn_and_says_why(
    families: LocalModelStore, caplog: pytest.LogCaptureFixture
) -> None:
    meta = families.read_metadata("log-amount", "v1")
    assert meta.onnx is None
    assert meta.onnx_unavailable is not None and "'log_amount' (FunctionTransformer)" in meta.onnx_unavailable
    assert not (families.root / "log-amount" / "versions" / "v1" / "model.onnx").exists()
    with caplog.at_level(logging.INFO, logger="app.runtime.model"):
        model = load(families, "log-amount")
    assert model.engine == "sklearn"
    assert "'log_amount' (FunctionTransformer)" in model.engine_reason
    loaded = [r for r in caplog.records if r.getMessage() == "model loaded"]
    assert loaded and loaded[-1].engine == "sklearn"  # type: ignore[attr-defined]
    assert "FunctionTransformer" in loaded[-1].engine_reason  # type: ignore[attr-defined]


def test_engine_setting_sklearn_ignores_the_graph(families: LocalModelStore) -> None:
    model = load(families, "gradient-boosting", engine="sklearn")
    assert (model.engine, model.engine_reason) == ("sklearn", "PREDICT_ENGINE=sklearn")
    with pytest.raises(ValidationError, match="engine"):
        Settings.model_validate({"MODEL_STORE_URL": "/tmp", "engine": "tensorflow"})


def test_metadata_from_before_onnx_still_loads(families: LocalModelStore) -> None:
    meta, artifact = families.read_version("random-forest", "v1")
    old = meta.model_dump(exclude={"onnx", "onnx_unavailable"})  # what an older publisher wrote
    legacy = ModelMetadata.model_validate(old)
    model = SklearnModel(legacy)
    model.load(artifact)
    assert model.engine == "sklearn" and "published before" in model.engine_reason


def _swap_graph(meta: ModelMetadata, graph: bytes) -> ModelMetadata:
    assert meta.onnx is not None
    entry = meta.onnx.model_copy(update={"sha256": sha256_hex(graph), "size_bytes": len(graph)})
    return meta.model_copy(update={"onnx": entry})


def _refusal(families: LocalModelStore, graph: bytes) -> str:
    meta, artifact = families.read_version("columns-logistic", "v1")
    with pytest.raises(ModelLoadError) as info:
        SklearnModel(_swap_graph(meta, graph)).load(artifact, onnx_graph=graph)
    return str(info.value)


def test_corrupt_graph_is_refused(families: LocalModelStore) -> None:
    meta = families.read_metadata("columns-logistic", "v1")
    good = families.read_onnx(meta)
    message = _refusal(families, good[: len(good) // 2])
    assert message.startswith("columns-logistic:v1: ONNX graph model.onnx: onnxruntime cannot load the graph")


def test_graph_for_other_features_is_refused(families: LocalModelStore) -> None:
    x, y = _data(300, seed=3)
    four = sklearn_to_onnx(LogisticRegression().fit(np.nan_to_num(x[:, :4]), y), 4)
    assert "the graph's input takes 4 features, the model has 6" in _refusal(families, four)
    renamed = convert_sklearn(
        LogisticRegression().fit(np.nan_to_num(x), y),
        initial_types=[("features", FloatTensorType([None, N_FEATURES]))],
        options={"zipmap": False},
        target_opset={"": 18, "ai.onnx.ml": 3},
    ).SerializeToString()
    assert "the graph's inputs are ['features'], expected exactly ['input']" in _refusal(families, renamed)


def test_graph_disagreeing_with_its_pickle_is_refused(families: LocalModelStore) -> None:
    x, y = _data(900, seed=0)
    other = make_pipeline(SimpleImputer(), LogisticRegression()).fit(x, 1 - y)  # the opposite model
    message = _refusal(families, sklearn_to_onnx(other, N_FEATURES))
    assert "disagrees with the pickle on the verification rows" in message
    assert "label flip(s)" in message and "tolerance 1e-05" in message


def test_bad_graph_version_is_refused_and_the_previous_one_keeps_serving(tmp_path: Path) -> None:
    store = LocalModelStore(tmp_path / "store")
    good = publish(store, "gradient-boosting", MODELS["gradient-boosting"](), version="v1")
    # v2: a new model whose stored graph is another model's (published and signed as if fine).
    v2 = publish(store, "gradient-boosting", MODELS["gradient-boosting"](), version="v2", seed=1)
    other = sklearn_to_onnx(
        make_pipeline(SimpleImputer(), LogisticRegression()).fit(*_flipped(_data(500, seed=4))), N_FEATURES
    )
    meta_v2 = _swap_graph(v2, other)
    vdir = store.root / "gradient-boosting" / "versions" / "v2"
    (vdir / "model.onnx").write_bytes(other)
    (vdir / "metadata.json").write_text(meta_v2.model_dump_json())

    settings = Settings.model_validate({"MODEL_STORE_URL": str(store.root), "batching_enabled": False})
    registry = ModelRegistry(settings, store)
    asyncio.run(registry.refresh())
    served = registry.models["gradient-boosting"]
    assert served.version == good.version == "v1" and served.model.engine == "onnxruntime"
    failures = REGISTRY.get_sample_value("model_load_failures_total", {"model": "gradient-boosting", "version": "v2"})
    assert failures is not None and failures >= 1
    info = REGISTRY.get_sample_value(
        "model_info", {"model": "gradient-boosting", "version": "v1", "engine": "onnxruntime"}
    )
    assert info == 1.0

    # The same version with its file truncated on disk: the store's sha256 check refuses it first.
    (vdir / "model.onnx").write_bytes(other[:100])
    store2 = LocalModelStore(store.root)
    with pytest.raises(Exception, match="sha256"):
        store2.read_onnx(meta_v2)


def _flipped(data: tuple[NDArray[np.float64], NDArray[np.int64]]) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    return data[0], 1 - data[1]


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


@pytest.mark.parametrize("intra", [1, 3])
def test_session_threads_follow_the_settings(families: LocalModelStore, intra: int) -> None:
    """intra-op threads N: onnxruntime starts N-1 pool threads (the caller's thread is the Nth); 1 starts none."""
    meta = families.read_metadata("random-forest", "v1")
    graph = families.read_onnx(meta)
    before = _threads()
    predictor = OnnxPredictor(graph, N_FEATURES, intra_op_threads=intra, inter_op_threads=1)
    predictor.predict_proba(np.zeros((64, N_FEATURES)))
    assert _threads() - before == intra - 1
    options = predictor.session.get_session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (intra, 1)
    del predictor


def test_thread_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_STORE_URL", "/tmp")
    monkeypatch.setenv("PREDICT_ORT_INTRA_OP_THREADS", "2")
    monkeypatch.setenv("PREDICT_ORT_INTER_OP_THREADS", "1")
    settings = Settings()
    assert (settings.ort_intra_op_threads, settings.ort_inter_op_threads) == (2, 1)
    monkeypatch.setenv("PREDICT_ORT_INTRA_OP_THREADS", "0")
    with pytest.raises(ValidationError, match="ort_intra_op_threads"):
        Settings()


def test_micro_batch_goes_to_the_session_as_one_tensor(families: LocalModelStore) -> None:
    model = load(families, "columns-logistic")
    session = model._predictor.session  # type: ignore[union-attr]
    calls: list[tuple[int, ...]] = []

    class Counting:
        def run(self, outputs: list[str], feeds: dict[str, NDArray[np.float32]]) -> Any:
            calls.append(feeds["input"].shape)
            return session.run(outputs, feeds)

    model._predictor.session = Counting()  # type: ignore[union-attr]
    x, _ = _data(20, seed=5)
    batcher = MicroBatcher(model.predict_proba, max_batch_size=64)

    async def concurrent() -> list[NDArray[np.float64]]:
        return await asyncio.gather(*(batcher.submit(x[i : i + 1]) for i in range(20)))

    results = asyncio.run(concurrent())
    assert calls == [(20, N_FEATURES)]
    np.testing.assert_allclose(np.vstack(results), model.estimator.predict_proba(x), atol=1e-5)


@pytest.mark.integration
def test_service_reports_each_models_engine_and_why(families: LocalModelStore, tmp_path: Path) -> None:
    """Under gunicorn: model_info{engine} per model, /v1/models, and the reason in the worker's log."""
    env = {"MODEL_STORE_URL": str(families.root), "PREDICT_MODELS": "gradient-boosting,log-amount"}
    with GunicornService(tmp_path / "svc", env).wait_ready() as srv:
        engines = {m["name"]: m["engine"] for m in httpx.get(srv.url + "/v1/models").json()["models"]}
        assert engines == {"gradient-boosting": "onnxruntime", "log-amount": "sklearn"}
        text = httpx.get(srv.url + "/metrics").text
        assert 'model_info{engine="onnxruntime",model="gradient-boosting",version="v1"} 1.0' in text
        assert 'model_info{engine="sklearn",model="log-amount",version="v1"} 1.0' in text
        x, _ = _data(3, seed=6)
        names = FEATURES
        body = {"instances": [dict(zip(names, row.tolist(), strict=True)) for row in x]}
        r = httpx.post(srv.url + "/v1/models/gradient-boosting/predict", json=body)
        assert r.status_code == 200, r.text
        expected = load(families, "gradient-boosting").estimator.predict_proba(x)
        got = np.array([[p["0"], p["1"]] for p in r.json()["probabilities"]])
        np.testing.assert_allclose(got, expected, atol=1e-5)
        log = srv.server.log_text()
    loads = {
        rec["model"]: rec
        for rec in (json.loads(line) for line in log.splitlines() if line.startswith("{"))
        if rec.get("msg") == "model loaded"
    }
    assert loads["log-amount"]["engine"] == "sklearn"
    assert "'log_amount' (FunctionTransformer)" in loads["log-amount"]["engine_reason"]
    assert loads["gradient-boosting"]["engine"] == "onnxruntime"
