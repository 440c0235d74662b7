from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import numpy as np
import pyarrow as pa
import pytest

from app.features.definitions import DefinitionError, FeatureRepo, FeatureView
from app.features.historical import get_historical_features, join_view, point_in_time_indices
from app.features.offline import OfflineStore
from tests.features.conftest import ENTITY, T0, TS, VIEW, random_rows, rows

H = timedelta(hours=1)


def entities(*items: tuple[int, object]) -> pa.Table:
    return pa.table(
        {
            "item_id": pa.array([i for i, _ in items], pa.int64()),
            "event_timestamp": pa.array([t for _, t in items], TS),
        }
    )


def clicks(entity_rows: pa.Table, view_rows: pa.Table, view: FeatureView = VIEW) -> list[int | None]:
    joined: list[int | None] = join_view(entity_rows, "item_id", "event_timestamp", view, view_rows, ["clicks"])[
        "clicks"
    ].to_pylist()
    return joined


def test_as_of_join_edges() -> None:
    feats = rows(
        (1, T0, T0, 10, 1.0, 0.0),
        (1, T0 + 2 * H, T0 + 2 * H, 20, 1.0, 0.0),
        (2, T0 + H, T0 + H, 30, 1.0, 0.0),
    )
    ent = entities(
        (1, T0 - H),  # before any feature row: null
        (1, T0),  # exactly at the feature time: included
        (1, T0 + H),  # between: the earlier row
        (1, T0 + 2 * H),  # exactly at the second
        (2, T0 + 3 * H),
        (3, T0 + 3 * H),  # unknown entity: null
        (1, T0 + H),  # duplicate entity row: kept, same answer
    )
    assert clicks(ent, feats) == [None, 10, 10, 20, 30, None, 10]


def test_ttl_window_is_inclusive_and_zero_means_unbounded() -> None:
    ttl = VIEW.ttl
    feats = rows((1, T0, T0, 10, 1.0, 0.0))
    ent = entities((1, T0 + ttl), (1, T0 + ttl + timedelta(microseconds=1)))
    assert clicks(ent, feats) == [10, None]
    assert clicks(ent, feats, replace(VIEW, ttl=timedelta(0))) == [10, 10]


def test_created_timestamp_breaks_ties_whatever_the_input_order() -> None:
    late = rows((1, T0, T0 + 2 * H, 99, 1.0, 0.0))
    early = rows((1, T0, T0 + H, 11, 1.0, 0.0))
    ent = entities((1, T0 + H))
    assert clicks(ent, pa.concat_tables([late, early])) == [99]
    assert clicks(ent, pa.concat_tables([early, late])) == [99]


def test_output_order_and_count_match_input() -> None:
    feats = random_rows(3000, 40, days=4, seed=1)
    rng = np.random.default_rng(2)
    n = 2000
    ent = pa.table(
        {
            "item_id": pa.array(rng.integers(0, 50, n), pa.int64()),  # some ids have no feature rows
            "event_timestamp": pa.array(
                int(T0.timestamp() * 1e6) + rng.integers(-86_400_000_000, 6 * 86_400_000_000, n), TS
            ),
            "row": pa.array(np.arange(n)),
        }
    )
    got = join_view(ent, "item_id", "event_timestamp", VIEW, feats, ["clicks", "price"])
    assert len(got["clicks"]) == n
    # brute force reference, row by row
    fk = feats.column("item_id").to_numpy()
    fe = feats.column("event_timestamp").cast(pa.int64()).to_numpy()
    fc = feats.column("created_timestamp").cast(pa.int64()).to_numpy()
    fclicks = feats.column("clicks").to_numpy()
    ttl = int(VIEW.ttl / timedelta(microseconds=1))
    ek = ent.column("item_id").to_numpy()
    et = ent.column("event_timestamp").cast(pa.int64()).to_numpy()
    expected: list[int | None] = []
    for k, t in zip(ek, et, strict=True):
        cand = np.flatnonzero((fk == k) & (fe <= t) & (fe >= t - ttl))
        if len(cand) == 0:
            expected.append(None)
            continue
        best = max(cand, key=lambda i: (fe[i], fc[i]))
        expected.append(int(fclicks[best]))
    assert got["clicks"].to_pylist() == expected


def test_indices_empty_inputs() -> None:
    e = np.array([], dtype=np.int64)
    assert point_in_time_indices(np.array([1]), np.array([5]), e, e, e, timedelta(0)).tolist() == [-1]
    assert point_in_time_indices(e, e, np.array([1]), np.array([1]), np.array([1]), timedelta(0)).tolist() == []


def test_get_historical_features_from_the_offline_store(offline: OfflineStore) -> None:
    feats = random_rows(4000, 100, days=6, seed=3)
    offline.write_partitioned(VIEW.source, feats, "event_timestamp")
    repo = FeatureRepo([ENTITY], [VIEW])
    ent = pa.table(
        {
            "item_id": pa.array([5, 6, 7, 999], pa.int64()),
            "event_timestamp": pa.array([T0 + timedelta(days=d) for d in (1, 3, 5, 5)], TS),
        }
    )
    got = get_historical_features(ent, ["item_stats:clicks", "item_stats:score"], repo, offline)
    assert got.num_rows == 4 and got.column_names == ["item_id", "event_timestamp", "clicks", "score"]
    direct = join_view(ent, "item_id", "event_timestamp", VIEW, feats, ["clicks", "score"])
    assert got.column("clicks").to_pylist() == direct["clicks"].to_pylist()
    assert got.column("clicks")[3].as_py() is None


def test_bad_entity_rows_are_clear_errors(local_offline: OfflineStore) -> None:
    repo = FeatureRepo([ENTITY], [VIEW])
    local_offline.write_partitioned(VIEW.source, random_rows(10, 5, days=1), "event_timestamp")
    naive = pa.table(
        {
            "item_id": pa.array([1], pa.int64()),
            "event_timestamp": pa.array([T0.replace(tzinfo=None)], pa.timestamp("us")),
        }
    )
    with pytest.raises(DefinitionError, match="timezone-aware"):
        get_historical_features(naive, ["item_stats:clicks"], repo, local_offline)
    no_key = pa.table({"event_timestamp": pa.array([T0], TS)})
    with pytest.raises(DefinitionError, match="no column 'item_id'"):
        get_historical_features(no_key, ["item_stats:clicks"], repo, local_offline)
    with pytest.raises(DefinitionError, match="collide"):
        clash = entities((1, T0)).append_column("clicks", pa.array([1]))
        get_historical_features(clash, ["item_stats:clicks"], repo, local_offline)
