"""Materialization: offline Parquet -> online Redis, the program of the CronJob.

* Reads only the window's partitions and row groups, keeps the latest row per
  entity (event time, then created time) with Arrow/NumPy, writes in pipelined
  batches through a Lua script that refuses to regress a newer stored value.
* Incremental runs start at the watermark, the newest event time actually
  loaded (never the wall clock), minus a lookback for late-arriving rows; the
  watermark moves only after every write succeeded.
* A run killed anywhere and run again leaves Redis exactly as one clean run
  would: writes are conditional and idempotent, the watermark is written last.
* Two runs of the same view and shard cannot overlap: the online store's lock
  with expiry, renewed while the run is alive.
* Shard ``i`` of ``n`` (a Kubernetes Indexed Job's ``JOB_COMPLETION_INDEX``)
  takes the entities whose hashed key falls in its slice.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from app.common.epoch import from_epoch_us
from app.features.definitions import FeatureView
from app.features.offline import OfflineStore
from app.features.online import MaterializationLockedError, OnlineStore

__all__ = [
    "MaterializationLockedError",
    "MaterializeReport",
    "latest_per_entity",
    "materialize",
    "materialize_incremental",
    "read_watermark",
    "shard_mask",
]


@dataclass
class MaterializeReport:
    view: str
    mode: str
    shard: int
    shards: int
    start: str | None
    end: str
    rows_read: int = 0
    entities: int = 0
    written: int = 0
    skipped_stale: int = 0
    unchanged: int = 0
    expired: int = 0
    watermark_before: str | None = None
    watermark_after: str | None = None
    duration_s: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def shard_mask(keys: NDArray[np.int64], shard: int, shards: int) -> NDArray[np.bool_]:
    """splitmix64 of the key, mod ``shards``: disjoint slices that cover every entity."""
    if shards == 1:
        return np.ones(len(keys), dtype=bool)
    with np.errstate(over="ignore"):
        z = keys.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    mask: NDArray[np.bool_] = (z % np.uint64(shards)) == np.uint64(shard)
    return mask


def latest_per_entity(table: pa.Table, view: FeatureView) -> pa.Table:
    """One row per entity: greatest event time, ties broken by greatest created time (then the
    last row read). Two grouped maxima instead of a three-key sort with Arrow's sort_by: several
    times faster (docs/design.md, "Materialization")."""
    if table.num_rows == 0:
        return table
    ids = np.asarray(table.column(view.entity.join_key).to_numpy(), dtype=np.int64)
    ev = _int64(table.column(view.event_timestamp_column))
    cr = _int64(table.column(view.created_timestamp_column))
    _, group = np.unique(ids, return_inverse=True)
    lowest = np.iinfo(np.int64).min
    max_ev = np.full(group.max() + 1, lowest)
    np.maximum.at(max_ev, group, ev)
    cand = np.flatnonzero(ev == max_ev[group])
    max_cr = np.full(len(max_ev), lowest)
    np.maximum.at(max_cr, group[cand], cr[cand])
    win = cand[cr[cand] == max_cr[group[cand]]]
    # exact (event, created) duplicates: keep the last row of each entity
    _, first_from_end = np.unique(group[win][::-1], return_index=True)
    return table.take(pa.array(np.sort(win[::-1][first_from_end])))


def _int64(col: pa.ChunkedArray) -> NDArray[np.int64]:
    return np.asarray(col.cast(pa.int64()).to_numpy(), dtype=np.int64)


def _fmt(t: datetime | None) -> str | None:
    return t.astimezone(UTC).isoformat() if t else None


def materialize(
    view: FeatureView,
    offline: OfflineStore,
    online: OnlineStore,
    start: datetime | None,
    end: datetime,
    *,
    shard: int = 0,
    shards: int = 1,
    lock_ttl_s: float = 120.0,
    lock_wait_s: float = 0.0,
    mode: str = "window",
    now_ms: int | None = None,
) -> MaterializeReport:
    """Load rows with ``start <= event time < end`` (start None: from the beginning)."""
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} is not in 0..{shards - 1}")
    if start is not None and start >= end:
        raise ValueError(f"empty window: start {start} >= end {end}")
    if not view.online:
        raise ValueError(f"feature view {view.name!r} is not online")
    t0 = time.perf_counter()
    report = MaterializeReport(view.name, mode, shard, shards, _fmt(start), _fmt(end) or "")
    with online.lock(view.name, shard, shards, ttl_s=lock_ttl_s, wait_s=lock_wait_s):
        cols = [
            view.entity.join_key,
            view.event_timestamp_column,
            view.created_timestamp_column,
            *view.feature_names,
        ]
        t = time.perf_counter()
        table = offline.read_window(view.source, view.event_timestamp_column, start, end, cols)
        report.extra["read_s"] = round(time.perf_counter() - t, 4)
        report.rows_read = table.num_rows
        if shards > 1 and table.num_rows:
            table = table.filter(pa.array(shard_mask(table.column(view.entity.join_key).to_numpy(), shard, shards)))
        t = time.perf_counter()
        latest = latest_per_entity(table, view)
        report.extra["dedup_s"] = round(time.perf_counter() - t, 4)
        report.entities = latest.num_rows
        t = time.perf_counter()
        res = online.write_latest(view, latest, now_ms=now_ms)
        report.extra["write_s"] = round(time.perf_counter() - t, 4)
        report.written, report.skipped_stale, report.unchanged, report.expired = (
            res.written,
            res.stale,
            res.unchanged,
            res.expired,
        )
        wm_before = online.read_watermark(view.name, shard, shards)
        report.watermark_before = _fmt(wm_before)
        newest = None
        if latest.num_rows:
            ev = latest.column(view.event_timestamp_column).cast(pa.int64()).to_numpy()
            newest = from_epoch_us(int(ev.max()))
        wm_after = max([w for w in (wm_before, newest) if w is not None], default=None)
        if wm_after is not None and wm_after != wm_before:
            # Written last: a run killed before this line is simply redone by the next run.
            online.write_watermark(view.name, shard, shards, wm_after)
        report.watermark_after = _fmt(wm_after)
    report.duration_s = round(time.perf_counter() - t0, 4)
    return report


def read_watermark(online: OnlineStore, view: FeatureView, shard: int = 0, shards: int = 1) -> datetime | None:
    return online.read_watermark(view.name, shard, shards)


def materialize_incremental(
    view: FeatureView,
    offline: OfflineStore,
    online: OnlineStore,
    *,
    lookback: timedelta = timedelta(hours=1),
    end: datetime | None = None,
    shard: int = 0,
    shards: int = 1,
    lock_ttl_s: float = 120.0,
    lock_wait_s: float = 0.0,
) -> MaterializeReport:
    """From the watermark minus ``lookback`` up to ``end`` (default now); everything on the first run."""
    end = end or datetime.now(UTC)
    wm = read_watermark(online, view, shard, shards)
    start = wm - lookback if wm is not None else None
    if start is not None and start >= end:
        start = end - lookback
    return materialize(
        view,
        offline,
        online,
        start,
        end,
        shard=shard,
        shards=shards,
        lock_ttl_s=lock_ttl_s,
        lock_wait_s=lock_wait_s,
        mode="incremental",
    )
