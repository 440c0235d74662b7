"""export-edge for the store's scikit-learn models: parity on the whole held-out split, the manifest, the
fraud model's request-time transform, the reference forest's size, and the errors of a bad export."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from app.edge.bundle import ParityError, float_parity, quantized_parity
from app.edge.runner import EdgeModel, InputError, read_manifest
from app.edge.sklearn_export import load_estimator
from app.modelstore import LocalModelStore, ModelMetadata
from app.modelstore.packaging import TrainingRun, publish_sklearn
from app.onnx.parity import compare_probabilities
from devharness.jobs import run_job
from jobs.train import DATASETS, train_and_publish
from tests.edge.conftest import export_in_process


@dataclass
class Source:
    meta: ModelMetadata
    estimator: Any


def reference(store: LocalModelStore, name: str) -> Source:
    """The latest version of ``name`` as the store holds it: metadata and the unpickled estimator."""
    version = store.latest(name)
    assert version is not None
    meta, artifact = store.read_version(name, version)
    return Source(meta, load_estimator(meta, artifact))


def held_out(dataset: str) -> NDArray[np.float64]:
    """The test split jobs/train.py held out (same split, same seed)."""
    data = DATASETS[dataset]()
    _, x_test, _, _ = train_test_split(data.x, data.y, test_size=0.25, random_state=0, stratify=data.y)
    return np.asarray(x_test, dtype=np.float64)


def export(store: Path, ref: str, out: Path) -> dict[str, object]:
    return run_job("--store", str(store), "export-edge", "--model", ref, "--out", str(out)).ok()


@pytest.mark.parametrize("name", ["breast-cancer", "iris"])
def test_bundle_reproduces_the_model_on_its_whole_held_out_split(
    trained_store: Path, tmp_path: Path, name: str
) -> None:
    store = LocalModelStore(trained_store)
    source = reference(store, name)
    summary = export(trained_store, name, tmp_path / name)
    assert summary["version"] == store.latest(name)

    x = held_out(name)
    assert np.array_equal(x[:32], np.asarray(source.meta.verification.inputs))  # the split the store holds out
    edge = EdgeModel(tmp_path / name)
    report = compare_probabilities(edge.predict_proba([x]), source.estimator.predict_proba(x), atol=1e-5)
    assert report.ok, report.describe()
    assert report.rows == len(x) > 32

    manifest = read_manifest(tmp_path / name)
    assert manifest["source"]["sha256"] == source.meta.sha256
    assert manifest["source"]["version"] == source.meta.version
    assert manifest["classes"] == source.meta.classes
    cols = source.meta.feature_names
    assert manifest["inputs"] == [{"name": "input", "dtype": "float64", "shape": [None, len(cols)], "columns": cols}]
    assert manifest["opset"]["ai.onnx"] == 18
    assert set(manifest["files"]) == {"model.onnx", "parity.json"}
    parity = json.loads((tmp_path / name / "parity.json").read_text())
    assert parity["float"]["passed"] and parity["float"]["max_abs_diff"] <= 1e-5


def test_re_export_replaces_the_bundle(trained_store: Path, tmp_path: Path) -> None:
    export_in_process(trained_store, "iris", tmp_path / "b")
    (tmp_path / "b" / "stray.txt").write_text("left from elsewhere")
    export_in_process(trained_store, "iris", tmp_path / "b")
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["manifest.json", "model.onnx", "parity.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["b"]  # no temporary directory left behind


def test_fraud_bundle_names_its_request_transform_and_matches_on_held_out_rows(tmp_path: Path) -> None:
    from app.features.config import FeatureStoreSettings
    from app.features.definitions import load_repo
    from app.features.stores import offline_store
    from examples.fraud.training import fraud_training_set
    from examples.fraud.transforms import TRANSFORM, fraud_v1
    from jobs.settings import REFERENCE_REPO

    env = {"FEATURES_OFFLINE_URL": str(tmp_path / "offline"), "MODEL_STORE_URL": str(tmp_path / "models")}
    for args in (
        ("seed", "--users", "300", "--days", "10", "--start", "2026-10-01"),
        ("features", "--users", "300", "--days", "10", "--start", "2026-10-01"),
        ("train", "--dataset", "fraud", "--name", "fraud", "--n-estimators", "20"),
        ("export-edge", "--model", "fraud", "--out", str(tmp_path / "bundle")),
    ):
        run_job(*args, env=env).ok()

    manifest = read_manifest(tmp_path / "bundle")
    transform = manifest["preprocessing"]["request_transform"]
    assert transform["reference"] == TRANSFORM
    assert transform["request_fields"] == list(fraud_v1.request_fields)
    assert transform["feature_refs"] == list(fraud_v1.feature_refs)
    assert manifest["inputs"][0]["columns"] == list(fraud_v1.columns)  # what the transform produces, in order

    # The time-ordered held-out quarter, built by the same transform from the offline store.
    settings = FeatureStoreSettings(offline_url=str(tmp_path / "offline"))
    ts = fraud_training_set(offline_store(settings), load_repo(REFERENCE_REPO))
    x = ts.x[int(len(ts.x) * 0.75) :]
    source = reference(LocalModelStore(tmp_path / "models"), "fraud")
    report = compare_probabilities(
        EdgeModel(tmp_path / "bundle").predict_proba([x]), source.estimator.predict_proba(x), atol=1e-5
    )
    assert report.ok and report.rows == len(x) > 100, report.describe()


def test_reference_forest_bundle_is_smaller_than_its_pickle(tmp_path: Path) -> None:
    train_and_publish(LocalModelStore(tmp_path / "store"), dataset="reference", name="reference")  # as `train`
    summary = export_in_process(tmp_path / "store", "reference", tmp_path / "bundle")
    sizes = summary["sizes"]
    assert isinstance(sizes, dict) and isinstance(summary["source_size_bytes"], int)
    assert sizes["model.onnx"] <= 1.2 * summary["source_size_bytes"], summary


def test_unknown_model_or_version_is_a_clear_error(trained_store: Path, tmp_path: Path) -> None:
    run = run_job("--store", str(trained_store), "export-edge", "--model", "churn", "--out", str(tmp_path / "b"))
    assert run.code == 1
    assert "model 'churn' is not in the store" in run.summary["error"] and "iris" in run.summary["error"]
    run = run_job("--store", str(trained_store), "export-edge", "--model", "iris:v0", "--out", str(tmp_path / "b"))
    assert run.code == 1 and "model 'iris' has no version 'v0'" in run.summary["error"]
    assert not (tmp_path / "b").exists()


def test_unsupported_step_fails_naming_it_and_writes_nothing(trained_store: Path, tmp_path: Path) -> None:
    store = LocalModelStore(tmp_path / "store")
    rng = np.random.default_rng(0)
    x, y = rng.random((200, 3)), rng.integers(0, 2, 200)
    pipe = Pipeline([("log", FunctionTransformer(np.log1p)), ("model", RandomForestClassifier(5, random_state=0))])
    pipe.fit(x, y)
    run = TrainingRun(["a", "b", "c"], "target", {}, "random", x, y, x[:10], pipe.predict_proba(x[:10]), {})
    publish_sklearn(store, pipe, "logged", run)
    job = run_job("--store", str(store.root), "export-edge", "--model", "logged", "--out", str(tmp_path / "b"))
    assert job.code == 1
    assert "pipeline step 'log' (FunctionTransformer)" in job.summary["error"], job.summary
    assert not (tmp_path / "b").exists()


def test_parity_rules() -> None:
    expected = np.array([[0.9, 0.1], [0.3, 0.7], [0.5, 0.5]])
    assert float_parity(expected + 5e-6, expected)["passed"]
    with pytest.raises(ParityError, match=r"max \|dp\| 0.0001"):
        float_parity(expected + 1e-4, expected)
    flipped = expected.copy()
    flipped[2] = [0.5 + 4e-7, 0.5 - 4e-7]  # within 1e-5, and the source's top two are tied: allowed
    assert float_parity(flipped, expected)["label_flips"] == 0
    with pytest.raises(ParityError, match="no held-out rows"):
        float_parity(np.zeros((0, 2)), np.zeros((0, 2)))
    labels = np.array([0, 1, 0])
    assert quantized_parity(expected, expected, labels)["accuracy_drop"] == 0
    worse = expected.copy()
    worse[0] = [0.2, 0.8]  # one of three rows wrong: 33 points lost
    with pytest.raises(ParityError, match=r"loses 33\.33 points"):
        quantized_parity(worse, expected, labels)


def test_runner_widens_integers_and_refuses_other_dtypes(iris_bundle: Path) -> None:
    edge = EdgeModel(iris_bundle)
    x = held_out("iris")
    assert np.array_equal(edge.predict_proba([x.astype(np.int64)]), edge.predict_proba([np.trunc(x)]))
    with pytest.raises(InputError, match="input 'input' must be float64, got bool"):
        edge.predict_proba([x > 1])
