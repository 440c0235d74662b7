"""Drift statistics on binned histograms: against their textbook formulas and scipy, and as detectors
(a 0.5 std shift on one feature flagged within one 5,000-row window, on that feature alone; no false alarm
over 100 windows of no-drift data at the default thresholds). Missing values and the other drift kinds:
tests/monitoring/test_missing_drift.py."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from app.monitoring.drift import (
    DEFAULT_THRESHOLDS,
    Histograms,
    chi_square,
    compare,
    js_distance,
    ks_statistic,
    psi,
    wasserstein_normalized,
)
from app.monitoring.profile import SCORE_FEATURE, ReferenceProfile, compute_profile
from app.monitoring.sources import from_rows

RNG = np.random.default_rng(7)


def test_psi_is_the_textbook_sum() -> None:
    ref = np.array([[100.0, 200.0, 300.0, 400.0]])
    cur = np.array([[150.0, 150.0, 350.0, 350.0]])
    p, q = ref[0] / ref.sum(), cur[0] / cur.sum()
    assert psi(ref, cur)[0] == pytest.approx(float(np.sum((q - p) * np.log(q / p))), abs=1e-12)
    assert psi(ref, ref)[0] == 0.0


def test_psi_floors_empty_bins_instead_of_dividing_by_zero() -> None:
    value = psi(np.array([[10.0, 0.0]]), np.array([[5.0, 5.0]]))[0]
    assert np.isfinite(value) and value > 1.0


def test_js_distance_matches_scipy_per_row_with_padding() -> None:
    ref = RNG.integers(0, 50, size=(5, 12)).astype(float)
    cur = RNG.integers(0, 50, size=(5, 12)).astype(float)
    ref[:, -2:] = cur[:, -2:] = 0  # padding: empty in both
    got = js_distance(ref, cur)
    for i in range(5):
        assert got[i] == pytest.approx(jensenshannon(ref[i], cur[i]), abs=1e-12)


def test_wasserstein_matches_scipy_on_values_at_the_bin_positions() -> None:
    pos = np.array([[0.5, 1.0, 2.5, 4.0, 7.0]])
    ref = np.array([[10.0, 20.0, 30.0, 25.0, 15.0]])
    cur = np.array([[5.0, 10.0, 20.0, 40.0, 25.0]])
    ref_values = np.repeat(pos[0], ref[0].astype(int))
    cur_values = np.repeat(pos[0], cur[0].astype(int))
    expected = stats.wasserstein_distance(ref_values, cur_values) / np.std(ref_values)
    assert wasserstein_normalized(ref, cur, pos)[0] == pytest.approx(expected, abs=1e-12)


def test_ks_is_the_largest_gap_between_cumulative_shares() -> None:
    ref = np.array([[50.0, 50.0, 0.0]])
    cur = np.array([[0.0, 50.0, 50.0]])
    assert ks_statistic(ref, cur)[0] == pytest.approx(0.5)


def test_chi_square_is_scipys_test_of_homogeneity() -> None:
    ref = np.array([[300.0, 500.0, 200.0, 0.0]])  # the last bin (unknown category) never seen in training
    cur = np.array([[40.0, 40.0, 20.0, 3.0]])
    stat, p = chi_square(ref, cur)
    want = stats.chi2_contingency(np.vstack([ref[0], cur[0]]), correction=False)
    assert stat[0] == pytest.approx(want.statistic) and p[0] == pytest.approx(want.pvalue)


def window(profile: ReferenceProfile, x: np.ndarray, scores: np.ndarray | None = None) -> Histograms:
    """Rows counted as serving counts them, as the drift job's histograms."""
    return from_rows(profile, x, scores).histograms(profile)


def _profile(features: int = 20, rows: int = 200_000) -> tuple[ReferenceProfile, list[str]]:
    x = RNG.normal(size=(rows, features))
    names = [f"f{i}" for i in range(features)]
    return compute_profile(x, names, RNG.uniform(size=rows)), names


def test_a_half_std_shift_on_one_feature_is_flagged_on_that_feature_alone() -> None:
    profile, names = _profile()
    x = RNG.normal(size=(5000, 20))
    x[:, 3] += 0.5
    result = compare(profile, window(profile, x, RNG.uniform(size=5000)))
    flagged = [d.feature for d in result if d.drifted]
    assert flagged == ["f3"], [(d.feature, d.statistics) for d in result]
    assert {d.feature for d in result} == {*names, SCORE_FEATURE}


def test_no_drift_windows_raise_no_false_alarm() -> None:
    # Deterministic (RNG's fixed seed). The distances' no-drift values at 5,000 rows are far below their
    # thresholds; the missing test (alpha 1e-6 per feature) has nothing missing to test here.
    profile, _ = _profile()
    alarms = 0
    for _ in range(100):
        x = RNG.normal(size=(5000, 20))
        result = compare(profile, window(profile, x, RNG.uniform(size=5000)))
        alarms += any(d.drifted for d in result)
    assert alarms == 0


def test_categorical_features_get_chi_square_and_unknown_categories_drift() -> None:
    x = RNG.integers(0, 4, size=(20_000, 1)).astype(float)
    profile = compute_profile(x, ["cat"], RNG.uniform(size=20_000))
    assert profile.features["cat"].kind == "categorical"
    same = compare(profile, window(profile, RNG.integers(0, 4, size=(5000, 1)).astype(float)))
    assert not same[0].drifted
    assert set(same[0].statistics) == {"psi", "js", "chi2", "chi2_pvalue", "missing_share", "missing_pvalue"}
    new = RNG.integers(0, 6, size=(5000, 1)).astype(float)  # categories 4 and 5 never seen in training
    assert window(profile, new).bins["cat"][-1] > 0
    assert compare(profile, window(profile, new))[0].drifted


def test_small_windows_are_reported_but_never_flagged() -> None:
    profile, _ = _profile(2, 10_000)
    x = RNG.normal(size=(50, 2)) + 3
    result = compare(profile, window(profile, x))
    assert all(not d.drifted for d in result) and result[0].statistics["psi"] > 1


def test_thresholds_are_checked_by_name() -> None:
    profile, _ = _profile(2, 10_000)
    with pytest.raises(ValueError, match="unknown drift statistic"):
        compare(profile, Histograms({}), {"pis": 0.1})
    x = RNG.normal(size=(5000, 2))
    x[:, 0] += 0.05
    loose = compare(profile, window(profile, x))
    strict = compare(profile, window(profile, x), {"psi": 1e-6})
    assert not loose[0].drifted and strict[0].drifted and strict[0].over == ["psi"]
    assert DEFAULT_THRESHOLDS["psi"] == 0.2


def test_a_histogram_with_the_wrong_number_of_bins_is_refused() -> None:
    profile, _ = _profile(2, 10_000)
    with pytest.raises(ValueError, match=r"f0.*3 served bins, the profile has 10"):
        compare(profile, Histograms({"f0": np.ones(3)}))
