"""Graphs that compute what scikit-learn computes, on inputs this project did not choose: generated data at
mixed scales (1e-4 to 1e5, integer-valued columns, an epoch-seconds column, missing values), across model
families, checked against scikit-learn's ``predict_proba`` (the oracle) on held-out rows and on the probe
rows (every split threshold and its float64 and float32 neighbours, large magnitudes, missing values)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import (
    BaggingClassifier,
    ExtraTreesClassifier,
    GradientBoostingClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
    StackingClassifier,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import (
    MaxAbsScaler,
    MinMaxScaler,
    PolynomialFeatures,
    PowerTransformer,
    RobustScaler,
    StandardScaler,
)
from sklearn.tree import DecisionTreeClassifier

from app.onnx.parity import compare_probabilities
from app.onnx.probes import accepts_missing, probe_rows
from app.onnx.publishing import ONNX_ATOL, checked_rows, export_verified
from app.onnx.session import make_session
from app.onnx.sklearn_convert import sklearn_to_onnx
from app.onnx.trees import split_values

FAMILIES: dict[str, Callable[[], Any]] = {
    "standard+forest": lambda: make_pipeline(StandardScaler(), RandomForestClassifier(8, max_depth=6, random_state=0)),
    "minmax+gbm": lambda: make_pipeline(MinMaxScaler(), GradientBoostingClassifier(n_estimators=15, random_state=0)),
    "robust+extra-trees": lambda: make_pipeline(RobustScaler(), ExtraTreesClassifier(8, random_state=0)),
    "maxabs+tree": lambda: make_pipeline(MaxAbsScaler(), DecisionTreeClassifier(max_depth=8, random_state=0)),
    "impute+standard+forest": lambda: make_pipeline(
        SimpleImputer(strategy="median"), StandardScaler(), RandomForestClassifier(8, max_depth=6, random_state=0)
    ),
    "hist-gbm": lambda: HistGradientBoostingClassifier(max_iter=15, random_state=0),
    "forest (NaN in the trees)": lambda: RandomForestClassifier(8, max_depth=6, random_state=0),
    "gbm": lambda: GradientBoostingClassifier(n_estimators=15, random_state=0),
    "impute+standard+logistic": lambda: make_pipeline(SimpleImputer(), StandardScaler(), LogisticRegression()),
    "impute+logistic": lambda: make_pipeline(SimpleImputer(), LogisticRegression(max_iter=50)),
    "impute+standard+mlp": lambda: make_pipeline(
        SimpleImputer(), StandardScaler(), MLPClassifier((8,), max_iter=60, random_state=0)
    ),
    "impute+standard+calibrated": lambda: make_pipeline(
        SimpleImputer(), StandardScaler(), CalibratedClassifierCV(LogisticRegression(), cv=3)
    ),
}
NAN_NATIVE = {"hist-gbm", "forest (NaN in the trees)"}


def generated(seed: int, rows: int, classes: int, nan_share: float) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Columns at different scales: tiny, integer counts, large amounts, epoch seconds, unit normal."""
    rng = np.random.default_rng(seed)
    x = np.column_stack(
        [
            rng.normal(0, 1e-4, rows),
            rng.integers(0, 50, rows).astype(np.float64),
            rng.lognormal(10, 1.5, rows),
            rng.uniform(1.1e9, 1.8e9, rows).round(),
            rng.normal(size=rows),
        ]
    )
    score = x[:, 0] * 1e4 + x[:, 1] / 25 + (x[:, 3] > 1.45e9) + x[:, 4] + rng.normal(0, 0.5, rows)
    y = np.digitize(score, np.quantile(score, np.linspace(0, 1, classes + 1)[1:-1])).astype(np.int64)
    if nan_share:
        x[rng.random(rows) < nan_share, 2] = np.nan
    return x, y


@settings(max_examples=24, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    family=st.sampled_from(sorted(FAMILIES)),
    seed=st.integers(0, 2**16),
    classes=st.sampled_from([2, 2, 4]),
    nan_share=st.sampled_from([0.0, 0.1]),
)
def test_the_graph_computes_what_scikit_learn_computes(family: str, seed: int, classes: int, nan_share: float) -> None:
    if nan_share and not (family.startswith("impute") or family in NAN_NATIVE):
        nan_share = 0.0  # the model cannot take them: scikit-learn refuses NaN itself
    x, y = generated(seed, 700, classes, nan_share)
    est = FAMILIES[family]().fit(x[:500], y[:500])
    held = x[500:]
    graph = sklearn_to_onnx(est, x.shape[1], name="m")
    rows, expected, n_probes = checked_rows(est, held, est.predict_proba(held))
    assert n_probes > 0
    session = make_session(graph, intra_op_threads=1, inter_op_threads=1)
    (got,) = session.run(["probabilities"], {"input": rows})
    report = compare_probabilities(got, expected, atol=ONNX_ATOL)
    assert report.ok, f"{family}: {report.describe()}"


def test_the_probes_find_what_random_rows_miss() -> None:
    """The old graph (everything in float32) fails on hundreds of probe rows; the new graph passes the same
    check. (On this data the old graph also fails on some random rows: scaling in float32 is that fragile.)"""
    x, y = generated(7, 3000, 2, 0.0)
    x = x[:, [0, 1, 2, 4]]  # without epoch seconds, which float32 breaks on most random rows
    est = make_pipeline(StandardScaler(), RandomForestClassifier(30, random_state=0)).fit(x[:2000], y[:2000])
    old = convert_sklearn(
        est,
        initial_types=[("input", FloatTensorType([None, x.shape[1]]))],
        options={id(est.steps[-1][1]): {"zipmap": False}},
        target_opset={"": 18, "ai.onnx.ml": 3},
    ).SerializeToString()
    session = make_session(old, intra_op_threads=1, inter_op_threads=1)

    held = x[2000:]
    probes = probe_rows(est, held)
    (got,) = session.run([session.get_outputs()[1].name], {"input": probes.astype(np.float32)})
    assert np.sum(np.max(np.abs(got - est.predict_proba(probes)), axis=1) > ONNX_ATOL) > 100
    new = export_verified(est, x.shape[1], held, est.predict_proba(held), name="m")
    assert new.graph is not None and new.report is not None and new.report.ok, new.reason
    assert new.probe_rows == len(probes)


def test_hist_gbm_compares_in_float64_between_floor32_and_the_threshold() -> None:
    """Values in (floor32(t), t]: float32 thresholds send them right, scikit-learn (float64) sends them left."""
    x, y = generated(11, 2000, 2, 0.0)
    est = HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(x, y)
    session = make_session(sklearn_to_onnx(est, x.shape[1]), intra_op_threads=1, inter_op_threads=1)
    base = np.median(x, axis=0)
    rows = []
    for feature, thresholds in split_values(est).items():
        for t in thresholds:
            f32 = float(np.float32(t))
            below = float(np.nextafter(np.float32(t), np.float32(-np.inf))) if f32 > t else f32
            for v in (t, (below + t) / 2, float(np.nextafter(t, -np.inf))):
                if below < v <= t:
                    row = base.copy()
                    row[feature] = v
                    rows.append(row)
    assert len(rows) > 100
    probe = np.array(rows)
    (got,) = session.run(["probabilities"], {"input": probe})
    assert compare_probabilities(got, est.predict_proba(probe), atol=ONNX_ATOL).ok


@pytest.mark.parametrize("family", sorted(NAN_NATIVE | {"impute+standard+forest"}))
def test_missing_values_are_routed_as_scikit_learn_routes_them(family: str) -> None:
    x, y = generated(3, 1500, 2, 0.2)
    x[np.random.default_rng(4).random(len(x)) < 0.2, 0] = np.nan
    est = FAMILIES[family]().fit(x[:1000], y[:1000])
    assert accepts_missing(est, x[:5])
    rows = np.repeat(x[1000:1100], x.shape[1], axis=0)
    rows[np.arange(len(rows)), np.tile(np.arange(x.shape[1]), 100)] = np.nan  # each feature missing in turn
    session = make_session(sklearn_to_onnx(est, x.shape[1]), intra_op_threads=1, inter_op_threads=1)
    (got,) = session.run(["probabilities"], {"input": rows})
    assert compare_probabilities(got, est.predict_proba(rows), atol=ONNX_ATOL).ok


def test_a_model_without_missing_value_support_is_said_to_refuse_them() -> None:
    x, y = generated(5, 300, 2, 0.0)
    assert not accepts_missing(make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y), x[:3])


REFUSED: dict[str, tuple[Callable[[], Any], str]] = {
    # found by attacking the converter: accepted graphs that were wrong at split thresholds (|dp| 0.37, 0.56)
    "polynomial+hist-gbm": (
        lambda: make_pipeline(PolynomialFeatures(2), HistGradientBoostingClassifier(max_iter=10)),
        "no float64 kernel",
    ),
    "stacking with a tree": (
        lambda: StackingClassifier([("t", DecisionTreeClassifier(max_depth=4))], LogisticRegression()),
        "holds DecisionTreeClassifier",
    ),
    # ... a linear model behind a float32-only step, 7e-6 off just outside the training range
    "power+logistic": (lambda: make_pipeline(PowerTransformer(), LogisticRegression()), "cannot be converted"),
    # ... and errors that escaped export_verified instead of becoming a reason
    "bagging": (lambda: BaggingClassifier(n_estimators=3, random_state=0), "holds DecisionTreeClassifier"),
    "imputer dropping an all-missing column": (
        lambda: make_pipeline(SimpleImputer(), RandomForestClassifier(5, random_state=0)),
        "SimpleImputer",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_what_cannot_be_exact_gets_no_graph_and_a_reason(case: str) -> None:
    make, reason = REFUSED[case]
    x, y = generated(21, 600, 2, 0.0)
    x = np.abs(x[:, [1, 2, 4]]) + 1.0
    if case.startswith("imputer"):
        x[:, 1] = np.nan
    est = make().fit(x[:400], y[:400])
    export = export_verified(est, x.shape[1], x[400:], est.predict_proba(x[400:]), name="m")
    assert export.graph is None and export.reason is not None and reason in export.reason, export.reason
