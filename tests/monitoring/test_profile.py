"""Reference profiles: what training records, what a corrupt or mismatched one looks like at load."""

from __future__ import annotations

import numpy as np
import pytest

from app.monitoring.profile import ProfileError, compute_profile, parse_profile

RNG = np.random.default_rng(3)


def test_numeric_profile_has_quantile_bins_counts_missing_and_range() -> None:
    x = RNG.normal(size=(10_000, 2))
    x[:100, 1] = np.nan
    profile = compute_profile(x, ["a", "b"], RNG.uniform(size=500))
    a = profile.features["a"]
    assert a.kind == "numeric" and len(a.edges) == 9 and len(a.counts) == 10
    assert max(a.counts) - min(a.counts) <= 1  # deciles: equal counts
    assert a.min == x[:, 0].min() and a.max == x[:, 0].max() and a.missing == 0
    b = profile.features["b"]
    assert b.missing == 100 and sum(b.counts) == 9900
    assert len(profile.score.counts) == 10 and sum(profile.score.counts) == 500


def test_profile_round_trips_through_json() -> None:
    profile = compute_profile(RNG.normal(size=(1000, 3)), ["a", "b", "c"], RNG.uniform(size=100))
    assert parse_profile(profile.model_dump(), ["a", "b", "c"]) == profile


def test_no_profile_is_no_reference() -> None:
    assert parse_profile(None, ["a"]) is None


def test_a_corrupt_profile_names_the_problem() -> None:
    raw = compute_profile(RNG.normal(size=(1000, 1)), ["a"], RNG.uniform(size=100)).model_dump()
    raw["features"]["a"]["counts"] = raw["features"]["a"]["counts"][:-1]
    with pytest.raises(ProfileError, match=r"corrupt reference profile at features\.a\.numeric.*9 bin counts for 9"):
        parse_profile(raw, ["a"])
    with pytest.raises(ProfileError, match="corrupt reference profile at features: Field required"):
        parse_profile({"bogus": 1}, ["a"])  # type: ignore[dict-item]


def test_a_profile_of_other_features_is_refused() -> None:
    raw = compute_profile(RNG.normal(size=(1000, 2)), ["a", "b"], RNG.uniform(size=100)).model_dump()
    with pytest.raises(ProfileError, match=r"missing \['c'\], unknown \['b'\]"):
        parse_profile(raw, ["a", "c"])
    with pytest.raises(ProfileError, match="order differs"):
        parse_profile(raw, ["b", "a"])


def test_a_constant_feature_keeps_its_mass_in_one_bin() -> None:
    profile = compute_profile(np.full((100, 1), 2.5), ["k"], RNG.uniform(size=10), numeric=["k"])
    k = profile.features["k"]
    assert k.kind == "numeric" and k.edges == [2.5] and k.counts == [0, 100]


def test_declared_types_win_and_the_guess_is_only_the_fallback() -> None:
    x = np.column_stack([RNG.integers(0, 300, 5000), RNG.integers(0, 3, 5000), RNG.integers(0, 3, 5000)])
    profile = compute_profile(
        x.astype(float), ["zip", "level", "flag"], RNG.uniform(size=10), categorical=["zip"], numeric=["level"]
    )
    zip_, level, flag = (profile.features[n] for n in ("zip", "level", "flag"))
    assert zip_.kind == "categorical" and zip_.typed_by == "declared" and len(zip_.categories) == 300
    assert level.kind == "numeric" and level.typed_by == "declared"  # 3 integers: the guess would say categorical
    assert flag.kind == "categorical" and flag.typed_by == "guessed"
    assert parse_profile(profile.model_dump(), ["zip", "level", "flag"]) == profile


def test_a_declaration_naming_no_feature_or_both_types_is_refused() -> None:
    x = RNG.normal(size=(100, 2))
    with pytest.raises(ProfileError, match=r"categorical features \['c'\] are not among the features"):
        compute_profile(x, ["a", "b"], RNG.uniform(size=10), categorical=["c"])
    with pytest.raises(ProfileError, match=r"features \['a'\] are declared both categorical and numeric"):
        compute_profile(x, ["a", "b"], RNG.uniform(size=10), categorical=["a"], numeric=["a", "b"])


def test_a_profile_from_before_declared_types_reads_as_guessed() -> None:
    raw = compute_profile(RNG.normal(size=(1000, 1)), ["a"], RNG.uniform(size=100)).model_dump()
    del raw["features"]["a"]["typed_by"]
    assert parse_profile(raw, ["a"]).features["a"].typed_by == "guessed"  # type: ignore[union-attr]
