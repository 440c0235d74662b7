from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from app.features.definitions import DefinitionError, Entity, Feature, FeatureRepo
from examples.fraud.repo import reference_repo
from tests.features.conftest import ENTITY, VIEW


def test_reference_repo_is_valid() -> None:
    repo = reference_repo()
    assert repo.resolve(["user_stats:txn_count_7d", "user_stats:amount_mean_30d", "user_stats:txn_count_7d"]) == {
        "user_stats": ["txn_count_7d", "amount_mean_30d"]
    }


def test_a_view_wildcard_is_every_feature_of_the_view_in_order() -> None:
    """Issue 23: the feature server's schema offers 'view:*'; it resolves, after and before named features."""
    repo = reference_repo()
    every = repo.view("user_stats").feature_names
    assert repo.resolve(["user_stats:*"]) == {"user_stats": every}
    named = ["user_stats:amount_mean_30d", "user_stats:*"]
    assert repo.resolve(named) == {"user_stats": ["amount_mean_30d", *[f for f in every if f != "amount_mean_30d"]]}
    with pytest.raises(DefinitionError, match="unknown feature view 'nope'"):
        repo.resolve(["nope:*"])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "Bad-Name"}, "feature view name"),
        ({"features": ()}, "has no features"),
        ({"features": (Feature("a", "int64"), Feature("a", "float32"))}, "duplicate features"),
        ({"features": (Feature("item_id", "int64"),)}, "clashes with a key column"),
        ({"features": (Feature("a", "string"),)}, "dtype"),  # type: ignore[arg-type]
        ({"ttl": timedelta(seconds=-1)}, "ttl must be >= 0"),
        ({"source": "../elsewhere"}, "relative path"),
    ],
)
def test_invalid_views_fail_at_load_time(change: dict[str, Any], message: str) -> None:
    with pytest.raises(DefinitionError, match=message):
        FeatureRepo([ENTITY], [replace(VIEW, **change)])


def test_repo_level_errors() -> None:
    with pytest.raises(DefinitionError, match="undeclared entity"):
        FeatureRepo([Entity("other", "other_id")], [VIEW])
    with pytest.raises(DefinitionError, match="duplicate feature view"):
        FeatureRepo([ENTITY], [VIEW, VIEW])
    repo = FeatureRepo([ENTITY], [VIEW])
    for refs, message in [
        (["item_stats"], "must look like"),
        (["nope:clicks"], "unknown feature view 'nope'"),
        (["item_stats:nope"], "has no feature 'nope'"),
        ([], "no features requested"),
    ]:
        with pytest.raises(DefinitionError, match=message):
            repo.resolve(refs)


def test_load_repo_from_a_spec() -> None:
    from app.features.definitions import load_repo

    assert "user_stats" in load_repo("examples.fraud.repo:reference_repo").views
    for spec, message in [
        ("nocolon", "must look like"),
        ("no.such.module:repo", "cannot import"),
        ("examples.fraud.repo:nothing", "has no function"),
        ("examples.fraud.repo:user_stats", "has no function"),  # a FeatureView object, not callable
        ("examples.fraud.transforms:REQUEST_FIELDS", "has no function"),
    ]:
        with pytest.raises(DefinitionError, match=message):
            load_repo(spec)
