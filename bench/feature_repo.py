"""Feature definitions of the benchmark's reference table (FEATURES_REPO=bench.feature_repo:repo)."""

from __future__ import annotations

from datetime import timedelta

from app.features.definitions import Entity, Feature, FeatureRepo, FeatureView

entity = Entity(name="entity", join_key="entity_id")
bench_table = FeatureView(
    name="bench_table",
    entity=entity,
    source="bench/table",
    ttl=timedelta(0),
    features=(*(Feature(f"f{i}", "float32") for i in range(10)), Feature("i0", "int64"), Feature("i1", "int64")),
)


def repo() -> FeatureRepo:
    return FeatureRepo([entity], [bench_table])
