from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.ensemble import ExtraTreesClassifier, GradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler
from sklearn.tree import DecisionTreeClassifier

from app.predict.forest import compile_estimator


def _data(n_classes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    x, y = make_classification(n_samples=3000, n_features=12, n_informative=6, n_classes=n_classes, random_state=1)
    return x, y


@pytest.mark.parametrize(
    "estimator",
    [
        RandomForestClassifier(n_estimators=50, max_depth=8, random_state=0),
        RandomForestClassifier(n_estimators=7, max_depth=None, random_state=0),  # deep, uneven trees
        ExtraTreesClassifier(n_estimators=20, max_depth=6, random_state=0),
        DecisionTreeClassifier(max_depth=5, random_state=0),
        Pipeline([("s", StandardScaler()), ("m", RandomForestClassifier(n_estimators=10, random_state=0))]),
    ],
    ids=["rf-depth8", "rf-unbounded", "extra-trees", "single-tree", "scaler-pipeline"],
)
@pytest.mark.parametrize("n_classes", [2, 3])
def test_compiled_matches_sklearn(estimator: object, n_classes: int) -> None:
    x, y = _data(n_classes)
    estimator.fit(x[:2000], y[:2000])  # type: ignore[attr-defined]
    compiled = compile_estimator(estimator)
    assert compiled is not None
    rng = np.random.default_rng(0)
    # held-out rows, far out-of-distribution rows, and rows exactly on thresholds
    probe = np.vstack([x[2000:], rng.normal(0, 10, size=(200, 12)), np.zeros((3, 12))])
    expected = estimator.predict_proba(probe)  # type: ignore[attr-defined]
    got = compiled.predict_proba(probe)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    assert (got.argmax(1) == expected.argmax(1)).all()
    # one row at a time gives the same as a batch
    np.testing.assert_allclose(compiled.predict_proba(probe[:1]), expected[:1], rtol=0, atol=1e-12)


def test_threshold_edges_follow_float32_semantics() -> None:
    tree = DecisionTreeClassifier(random_state=0).fit(np.array([[0.1], [0.2], [0.3], [0.4]]), [0, 0, 1, 1])
    thr = tree.tree_.threshold[0]
    compiled = compile_estimator(tree)
    assert compiled is not None
    edges = np.array([[thr], [np.nextafter(thr, 1)], [np.nextafter(thr, 0)], [float(np.float32(thr))]])
    np.testing.assert_array_equal(compiled.predict_proba(edges), tree.predict_proba(edges))


@pytest.mark.parametrize(
    "estimator",
    [
        LogisticRegression(),
        GradientBoostingClassifier(n_estimators=5),
        Pipeline([("s", MinMaxScaler()), ("m", DecisionTreeClassifier())]),
    ],
)
def test_unsupported_estimators_fall_back(estimator: object) -> None:
    x, y = _data()
    estimator.fit(x, y)  # type: ignore[attr-defined]
    assert compile_estimator(estimator) is None
