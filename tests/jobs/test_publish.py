"""`python -m jobs publish`: a model the user trained and saved themselves, published in one command, then
served as the service serves it. Bad input gets a clear error and nothing is published."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
import sklearn.base
import skops.io as sio
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from app.modelstore import LocalModelStore
from app.runtime.model import SklearnModel
from devharness import ROOT
from devharness.jobs import run_job
from jobs.__main__ import main as jobs_main

FEATURES = ["amount", "count", "ts", "tiny"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    rng = np.random.default_rng(0)
    n = 2000
    df = pd.DataFrame(
        {
            "amount": rng.lognormal(5, 2, n),
            "count": rng.integers(0, 40, n),
            "ts": rng.uniform(1.1e9, 1.8e9, n).round(),
            "tiny": rng.normal(0, 1e-4, n),
        }
    )
    df["label"] = ((df["amount"] > 200) ^ (df["count"] > 20)).astype(int)
    root = tmp_path_factory.mktemp("own")
    df.to_parquet(root / "train.parquet")
    df.to_csv(root / "train.csv", index=False)
    return root, df


def publish(store: Path, *args: str) -> Any:
    return run_job("--store", str(store), "publish", *args, timeout=600)


def served(store: Path, name: str) -> SklearnModel:
    s = LocalModelStore(store)
    meta, artifact = s.read_version(name, s.latest(name) or "")
    model = SklearnModel(meta)
    model.load(artifact, onnx_graph=s.read_onnx(meta) if meta.onnx else None)
    return model


@pytest.mark.parametrize("fmt", ["skops", "joblib", "pkl"])
def test_a_saved_pipeline_is_published_and_served_exactly(
    fmt: str, data: tuple[Path, pd.DataFrame], tmp_path: Path
) -> None:
    root, df = data
    est = make_pipeline(StandardScaler(), RandomForestClassifier(20, random_state=0)).fit(df[FEATURES], df["label"])
    path = tmp_path / f"model.{fmt}"
    {"skops": lambda: sio.dump(est, path), "joblib": lambda: joblib.dump(est, path)}.get(
        fmt, lambda: path.write_bytes(pickle.dumps(est))
    )()
    reference = root / ("train.csv" if fmt == "pkl" else "train.parquet")
    out = publish(
        tmp_path / "store", "--model", str(path), "--name", "churn", "--reference", str(reference), "--target", "label"
    ).ok()
    assert out["engine"] == "onnxruntime" and out["features"] == FEATURES and out["classes"] == [0, 1]
    assert out["parity"]["max_abs_diff"] <= 1e-6 and out["parity"]["probe_rows"] > 1000
    assert out["metrics"]["accuracy"] > 0.9
    model = served(tmp_path / "store", "churn")
    assert model.engine == "onnxruntime"
    x = df[FEATURES].to_numpy(dtype=np.float64)
    np.testing.assert_allclose(model.predict_proba(x), est.predict_proba(df[FEATURES]), rtol=0, atol=1e-6)


def test_missing_values_publish_and_read_back(data: tuple[Path, pd.DataFrame], tmp_path: Path) -> None:
    """Issue 22: a model whose reference rows hold NaN could not be published (metadata wrote null)."""
    _, df = data
    df = df.copy()
    df.loc[df.index % 7 == 0, "amount"] = np.nan
    df.to_parquet(tmp_path / "nan.parquet")
    est = HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(df[FEATURES], df["label"])
    sio.dump(est, tmp_path / "hgb.skops")
    args = ["--model", str(tmp_path / "hgb.skops"), "--name", "hgb", "--reference", str(tmp_path / "nan.parquet")]
    out = publish(tmp_path / "store", *args, "--target", "label").ok()
    assert out["engine"] == "onnxruntime"
    model = served(tmp_path / "store", "hgb")
    x = df[FEATURES].to_numpy(dtype=np.float64)
    np.testing.assert_allclose(model.predict_proba(x), est.predict_proba(df[FEATURES]), rtol=0, atol=1e-6)


@pytest.mark.timed
def test_a_model_scikit_learn_serves_faster_stays_on_scikit_learn(
    data: tuple[Path, pd.DataFrame], tmp_path: Path
) -> None:
    root, df = data
    est = make_pipeline(StandardScaler(), KNeighborsClassifier()).fit(df[FEATURES], df["label"])
    sio.dump(est, tmp_path / "knn.skops")
    args = ["--model", str(tmp_path / "knn.skops"), "--name", "knn", "--reference", str(root / "train.parquet")]
    out = publish(tmp_path / "store", *args, "--target", "label").ok()
    assert out["engine"] == "sklearn" and "scikit-learn is faster" in out["why"], out
    model = served(tmp_path / "store", "knn")
    assert model.engine == "sklearn" and "chosen at publish" in model.engine_reason


def shifted(x: Any) -> Any:
    """A user's own function in a pipeline: skops must not load it without being told to trust it."""
    return x + 1


def _saved_by_another_version(est: Any, path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sklearn.base, "__version__", "1.0.2")  # what __getstate__ records
    path.write_bytes(pickle.dumps(est))
    monkeypatch.undo()


def test_bad_input_is_refused_with_a_clear_error_and_nothing_published(
    data: tuple[Path, pd.DataFrame], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root, df = data
    ref = str(root / "train.parquet")
    good = make_pipeline(StandardScaler(), LogisticRegression()).fit(df[FEATURES].to_numpy(), df["label"])
    (tmp_path / "notes.txt").write_text("not a model")
    (tmp_path / "regressor.pkl").write_bytes(pickle.dumps(LinearRegression().fit(df[FEATURES], df["amount"])))
    (tmp_path / "good.pkl").write_bytes(pickle.dumps(good))
    _saved_by_another_version(good, tmp_path / "old.pkl", monkeypatch)
    custom = make_pipeline(FunctionTransformer(shifted), LogisticRegression()).fit(df[FEATURES], df["label"])
    sio.dump(custom, tmp_path / "custom.skops")
    cases = [
        (["--model", str(tmp_path / "notes.txt"), "--reference", ref], "not a model file"),
        (["--model", str(tmp_path / "regressor.pkl"), "--reference", ref], "LinearRegression has no predict_proba"),
        (["--model", str(tmp_path / "good.pkl"), "--reference", ref], "the model takes 4 features, the reference"),
        (
            ["--model", str(tmp_path / "good.pkl"), "--reference", ref, "--features", "amount,count,ts,nope"],
            "features ['nope'] are not in the reference data",
        ),
        (
            ["--model", str(tmp_path / "old.pkl"), "--reference", ref, "--target", "label"],
            "saved by scikit-learn 1.0.2",
        ),
        (
            ["--model", str(tmp_path / "custom.skops"), "--reference", ref, "--target", "label"],
            "tests.jobs.test_publish.shifted",
        ),
        (["--model", str(tmp_path / "nope.skops"), "--reference", ref], "no such file"),
        (["--model", str(tmp_path / "good.pkl"), "--reference", str(tmp_path / "none.csv")], "no such file"),
    ]
    # In this process (the command's code path, without a Python start per case), leaving pytest's logging be.
    monkeypatch.setattr("jobs.__main__.configure_logging", lambda *a, **k: None)
    for args, error in cases:
        code = jobs_main(["--store", str(tmp_path / "store"), "publish", "--name", "bad", *args])
        summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert code == 1 and error in summary["error"], (args, summary)
    assert not (tmp_path / "store" / "bad").exists()


def test_the_train_job_fits_your_own_estimator_on_your_file(data: tuple[Path, pd.DataFrame], tmp_path: Path) -> None:
    """`jobs train --estimator module:function --data FILE --target COL`: the CronJob trains the user's pipeline."""
    root, _ = data
    (tmp_path / "my_models.py").write_text(
        "from sklearn.pipeline import make_pipeline\n"
        "from sklearn.preprocessing import MinMaxScaler\n"
        "from sklearn.ensemble import GradientBoostingClassifier\n"
        "def churn():\n"
        "    return make_pipeline(MinMaxScaler(), GradientBoostingClassifier(n_estimators=20, random_state=0))\n"
        "def not_a_classifier():\n"
        "    return MinMaxScaler()\n"
    )
    env = {"PYTHONPATH": f"{tmp_path}:{ROOT}"}
    args = ["--data", str(root / "train.parquet"), "--target", "label", "--name", "churn"]
    store = ("--store", str(tmp_path / "store"), "train")
    out = run_job(*store, "--estimator", "my_models:churn", *args, env=env).ok()
    assert out["engine"] == "onnxruntime" and out["metrics"]["accuracy"] > 0.9
    meta = LocalModelStore(tmp_path / "store").read_metadata("churn", out["version"])
    assert meta.feature_names == FEATURES and meta.params["estimator"] == "my_models:churn"
    bad = run_job(
        "--store", str(tmp_path / "store"), "train", "--estimator", "my_models:not_a_classifier", *args, env=env
    )
    assert bad.code == 1 and "not a classifier with predict_proba" in bad.summary["error"]
    missing = run_job(*store, "--estimator", "my_models:nope", *args, env=env)
    assert missing.code == 1 and "has no attribute 'nope'" in missing.summary["error"]
