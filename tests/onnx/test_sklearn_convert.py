"""The scikit-learn -> ONNX converter: the families people use, the graph contract, named refusals."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pytest
from numpy.typing import NDArray
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    GradientBoostingClassifier,
    HistGradientBoostingClassifier,
    IsolationForest,
    RandomForestClassifier,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import NearestCentroid
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, MinMaxScaler, OneHotEncoder, StandardScaler

from app.onnx.session import make_session
from app.onnx.sklearn_convert import (
    ONNX_ML_OPSET,
    ONNX_OPSET,
    UnsupportedStepError,
    compare_probabilities,
    opsets_of,
    sklearn_to_onnx,
    verify_onnx,
)

N_FEATURES = 6


def _data(rows: int, seed: int) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Numeric features 0-3, a small-integer category in 4, a wide-range amount in 5; some NaNs in 1."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, N_FEATURES))
    x[:, 4] = rng.integers(0, 4, size=rows)
    x[:, 5] = rng.lognormal(3.0, 1.0, size=rows)
    y = ((x[:, 0] + 0.5 * x[:, 2] * (x[:, 4] - 1.5) + 0.01 * x[:, 5]) > 0.4).astype(np.int64)
    x[rng.random(rows) < 0.05, 1] = np.nan
    return x, y


def _imputed(est: Any) -> Pipeline:
    return make_pipeline(SimpleImputer(strategy="median"), est)


FAMILIES: dict[str, Any] = {
    "scaler+logistic": lambda: _imputed(make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))),
    "minmax+logistic": lambda: _imputed(make_pipeline(MinMaxScaler(), LogisticRegression(max_iter=500))),
    "columns: impute+scale numeric, one-hot category": lambda: Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [
                        ("num", make_pipeline(SimpleImputer(), StandardScaler()), [0, 1, 2, 3, 5]),
                        ("cat", OneHotEncoder(handle_unknown="ignore"), [4]),
                    ]
                ),
            ),
            ("clf", LogisticRegression(max_iter=500)),
        ]
    ),
    "gradient-boosting": lambda: _imputed(GradientBoostingClassifier(n_estimators=30, max_depth=3, random_state=0)),
    "random-forest": lambda: _imputed(RandomForestClassifier(n_estimators=20, max_depth=8, random_state=0)),
    # NaNs go to the booster itself: it learns where missing values go, and the graph must too.
    "hist-gradient-boosting": lambda: HistGradientBoostingClassifier(max_iter=30, random_state=0),
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_converts_with_parity(family: str) -> None:
    x, y = _data(1500, seed=1)
    est = FAMILIES[family]().fit(x, y)
    graph = sklearn_to_onnx(est, N_FEATURES, name=family)

    x_new, _ = _data(3000, seed=2)
    x_new[:, 4] = np.where(np.arange(len(x_new)) % 50 == 0, 7.0, x_new[:, 4])  # categories never seen in training
    report = verify_onnx(graph, x_new, est.predict_proba(x_new))
    assert report.rows == 3000
    assert report.ok, report.describe()
    assert report.max_abs_diff < 1e-5


def test_graph_keeps_the_contract() -> None:
    x, y = _data(500, seed=3)
    est = FAMILIES["scaler+logistic"]().fit(x, y)
    graph = sklearn_to_onnx(est, N_FEATURES)
    proto = onnx.load_from_string(graph)
    assert [i.name for i in proto.graph.input] == ["input"]
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [0, N_FEATURES] and not dims[0].dim_value  # [None, n_features]
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.DOUBLE  # scikit-learn's input
    assert [o.name for o in proto.graph.output] == ["label", "probabilities"]
    assert all(n.op_type != "ZipMap" for n in proto.graph.node)
    opsets = opsets_of(graph)
    assert opsets[""] <= ONNX_OPSET and opsets.get("ai.onnx.ml", 0) <= ONNX_ML_OPSET

    session = make_session(graph, intra_op_threads=1, inter_op_threads=1)
    label, proba = session.run(None, {"input": x[:7]})
    assert proba.shape == (7, 2)
    np.testing.assert_array_equal(label, est.predict(x[:7]))


def test_string_classes_come_out_as_labels() -> None:
    x, y = _data(400, seed=4)
    names = np.array(["legit", "fraud"])[y]
    est = make_pipeline(SimpleImputer(), LogisticRegression()).fit(x, names)
    session = make_session(sklearn_to_onnx(est, N_FEATURES), intra_op_threads=1, inter_op_threads=1)
    label, proba = session.run(None, {"input": x[:20]})
    assert list(label) == list(est.predict(x[:20]))
    assert proba.shape == (20, 2)


def test_unsupported_step_is_named_with_its_class() -> None:
    x, y = _data(300, seed=5)
    est = Pipeline(
        [("impute", SimpleImputer()), ("log_amount", FunctionTransformer(np.log1p)), ("clf", LogisticRegression())]
    ).fit(np.abs(x), y)
    with pytest.raises(UnsupportedStepError, match=r"'log_amount' \(FunctionTransformer\)"):
        sklearn_to_onnx(est, N_FEATURES)


class _HomeMadeScaler(StandardScaler):  # type: ignore[misc]  # scikit-learn ships no type hints
    """A subclass skl2onnx has never heard of: conversion must name it, not fail deep inside."""


def test_unknown_class_inside_column_transformer_is_named_by_path() -> None:
    x, y = _data(300, seed=6)
    est = Pipeline(
        [
            ("prep", ColumnTransformer([("num", _HomeMadeScaler(), [0, 2, 3]), ("rest", "passthrough", [4])])),
            ("clf", LogisticRegression()),
        ]
    ).fit(np.nan_to_num(x), y)
    with pytest.raises(UnsupportedStepError, match=r"'prep/num' \(_HomeMadeScaler\)"):
        sklearn_to_onnx(est, N_FEATURES)


def test_models_without_probabilities_are_refused() -> None:
    x, _ = _data(200, seed=7)
    with pytest.raises(UnsupportedStepError, match=r"IsolationForest.*predict_proba"):
        sklearn_to_onnx(IsolationForest(n_estimators=5).fit(np.nan_to_num(x)), N_FEATURES)
    x2, y2 = _data(200, seed=7)
    with pytest.raises(UnsupportedStepError, match="NearestCentroid"):
        sklearn_to_onnx(NearestCentroid().fit(np.nan_to_num(x2), y2), N_FEATURES)


def test_bad_feature_count_is_refused() -> None:
    x, y = _data(200, seed=8)
    est = FAMILIES["scaler+logistic"]().fit(x, y)
    with pytest.raises(ValueError, match="fitted on 6 features, n_features is 5"):
        sklearn_to_onnx(est, 5)
    with pytest.raises(ValueError, match="positive integer"):
        sklearn_to_onnx(est, 0)


def test_parity_report_counts_flips_but_not_ties() -> None:
    expected = np.array([[0.9, 0.1], [0.5, 0.5], [0.5000004, 0.4999996], [0.3, 0.7]])
    got = np.array([[0.1, 0.9], [0.4999, 0.5001], [0.4999996, 0.5000004], [0.3, 0.7]])
    report = compare_probabilities(got, expected)
    # Row 0 flips; rows 1 and 2 flip too, but their expected top two are within 1e-6: ties, not counted.
    assert report.label_flips == 1
    assert not report.ok
    with pytest.raises(ValueError, match="shape"):
        compare_probabilities(got[:, :1], expected)


def test_hist_gradient_boosting_with_categorical_splits_is_refused() -> None:
    """skl2onnx converts it without complaint and gets it wrong: the converter must say so by name."""
    rng = np.random.default_rng(9)
    x = rng.normal(size=(400, 3))
    x[:, 2] = rng.integers(0, 5, size=400)
    y = ((x[:, 0] + (x[:, 2] == 3)) > 0.5).astype(np.int64)
    est = Pipeline([("gbm", HistGradientBoostingClassifier(max_iter=10, categorical_features=[2]))]).fit(x, y)
    with pytest.raises(UnsupportedStepError, match=r"'gbm' \(HistGradientBoostingClassifier\) uses categorical"):
        sklearn_to_onnx(est, 3)
