"""Feature logic skew: the model inputs a service computed, against what training would have computed for
the same entity at the same time.

Each sampled served row (app/monitoring/servedlog.py) carries the entity id, the serving time, the
request-time fields and the model input the service built. The same entity and time go through the
point-in-time join of the offline store (app/features/historical.py) and the request-time transform the
model version names: the training path. A feature whose served and recomputed values differ (beyond
floating-point noise) on some rows has logic skew: different transform code in the serving image, a
materialization that wrote other values than the offline features, an online store lagging behind.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from app.features.definitions import FeatureRepo
from app.features.historical import get_historical_features
from app.features.offline import OfflineStore
from app.features.request_transforms import load_transform
from app.modelstore.metadata import ModelMetadata
from app.monitoring.servedlog import REQUEST_PREFIX

ROW = "__served_row"


@dataclass
class FeatureSkew:
    rows: int  # served rows compared (with an entity id)
    skipped: int  # served rows without an entity id
    mismatch_share: dict[str, float]
    mismatches: dict[str, int]
    max_abs_diff: dict[str, float]


def _floats(col: pa.ChunkedArray | pa.Array) -> NDArray[np.float64]:
    return np.asarray(pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)


def feature_logic_skew(
    served: pa.Table,
    meta: ModelMetadata,
    repo: FeatureRepo,
    offline: OfflineStore,
    *,
    rtol: float = 1e-6,
    atol: float = 1e-9,
) -> FeatureSkew:
    """Mismatch share per model feature between ``served`` (rows of the served-data log of ``meta``'s
    version) and the training path's values for the same entities and times."""
    spec = meta.online_features
    if spec is None:
        raise ValueError(
            f"model {meta.name!r} {meta.version!r} does not read the feature store: its inputs come from the "
            "request as they are, there is no feature logic to compare"
        )
    t = load_transform(spec.transform)
    if list(t.columns) != meta.feature_names:
        raise ValueError(
            f"transform {spec.transform!r} outputs {list(t.columns)}, the model takes {meta.feature_names}"
        )
    need = ["entity", "ts", *meta.feature_names, *(REQUEST_PREFIX + f for f in t.request_fields)]
    missing = [c for c in need if c not in served.column_names]
    if missing:
        raise ValueError(f"the served-data log lacks the columns {missing}")
    with_entity = served.filter(pc.is_valid(served.column("entity")))
    skipped = served.num_rows - with_entity.num_rows
    names = meta.feature_names
    if with_entity.num_rows == 0:
        zero = dict.fromkeys(names, 0)
        return FeatureSkew(0, skipped, dict.fromkeys(names, 0.0), zero, dict.fromkeys(names, 0.0))
    entity_rows = pa.table(
        {
            spec.entity_key: pc.cast(with_entity.column("entity"), pa.int64()),
            "ts": with_entity.column("ts"),
            ROW: pa.array(np.arange(with_entity.num_rows)),
            **{f: with_entity.column(REQUEST_PREFIX + f) for f in t.request_fields},
        }
    )
    joined = get_historical_features(entity_rows, list(t.feature_refs), repo, offline, timestamp_column="ts")
    joined = joined.sort_by([(ROW, "ascending")])  # whatever order the join engine returns
    stats = {f: _floats(joined.column(f)) for f in t.feature_names}
    request = (
        np.column_stack([_floats(joined.column(f)) for f in t.request_fields])
        if t.request_fields
        else np.empty((joined.num_rows, 0))
    )
    recomputed = t(stats, request)
    served_x = np.column_stack([_floats(with_entity.column(f)) for f in names])
    differs = ~np.isclose(served_x, recomputed, rtol=rtol, atol=atol, equal_nan=True)
    counts = differs.sum(axis=0)
    gap = np.where(differs, np.abs(served_x - recomputed), 0.0)
    return FeatureSkew(
        rows=with_entity.num_rows,
        skipped=skipped,
        mismatch_share={n: float(c) / with_entity.num_rows for n, c in zip(names, counts, strict=True)},
        mismatches={n: int(c) for n, c in zip(names, counts, strict=True)},
        max_abs_diff={n: float(np.nanmax(g)) if g.size else 0.0 for n, g in zip(names, gap.T, strict=True)},
    )
