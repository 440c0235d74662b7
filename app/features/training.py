"""Training sets for models that read the feature store: point-in-time features plus a request-time
transform, from the same definitions and code the prediction service uses.

What is scenario-specific (which events, which label, which transform) comes from the caller: a
``module:function`` a training job names (``python -m jobs train --training-set``); docs/feature-store.md
shows how to write one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from app.features.definitions import DefinitionError, FeatureRepo
from app.features.historical import get_historical_features
from app.features.offline import OfflineStore
from app.features.request_transforms import load_transform


@dataclass
class TrainingSet:
    x: NDArray[np.float64]
    y: NDArray[np.int64]
    timestamps_us: NDArray[np.int64]
    feature_names: list[str]
    feature_refs: list[str]
    source: str
    entity_key: str = ""
    """The join key a serving request names (the views' entity)."""
    transform: str = ""
    """The ``module:attribute`` reference of the request-time transform that built ``x``."""
    request_fields: tuple[str, ...] = ()
    target_name: str = "target"


def _column(table: pa.Table, name: str) -> NDArray[np.float64]:
    return np.asarray(pc.cast(table.column(name), pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)


def point_in_time_training_set(
    events: pa.Table,
    *,
    label: str,
    transform: str,
    repo: FeatureRepo,
    offline: OfflineStore,
    timestamp_column: str = "timestamp",
    source: str,
) -> TrainingSet:
    """Each labeled event joined with its entity's features as of the event's time, then put through the
    request-time transform ``transform`` (a reference) exactly as a serving request will be: ``events``
    carries the entity key, ``timestamp_column``, the transform's request fields and ``label``."""
    t = load_transform(transform)
    refs = list(t.feature_refs)
    try:
        views = repo.resolve(refs)
    except DefinitionError as exc:
        raise ValueError(f"transform {transform!r}: {exc}") from exc
    keys = {repo.view(v).entity.join_key for v in views}
    if len(keys) != 1:
        raise ValueError(f"transform {transform!r} reads views of several entities ({sorted(keys)}): one only")
    missing = [c for c in (*keys, timestamp_column, label, *t.request_fields) if c not in events.column_names]
    if missing:
        raise ValueError(f"the events lack the columns {missing} (transform {transform!r}, label {label!r})")
    joined = get_historical_features(events, refs, repo, offline, timestamp_column=timestamp_column)
    stats = {f: _column(joined, f) for f in t.feature_names}
    request = np.column_stack([_column(joined, f) for f in t.request_fields]) if t.request_fields else None
    x = t(stats, request if request is not None else np.empty((joined.num_rows, 0)))
    return TrainingSet(
        x=x,
        y=np.asarray(joined.column(label).to_numpy(), dtype=np.int64),
        timestamps_us=np.asarray(joined.column(timestamp_column).cast(pa.int64()).to_numpy(), dtype=np.int64),
        feature_names=list(t.columns),
        feature_refs=refs,
        source=source,
        entity_key=keys.pop(),
        transform=transform,
        request_fields=t.request_fields,
        target_name=label,
    )
