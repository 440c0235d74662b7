"""Materialization: offline Parquet -> online Redis, the program of the CronJob.

* Reads only the window's partitions and row groups, keeps the latest row per
  entity (event time, then created time) with Arrow/NumPy, writes in pipelined
  batches through a Lua script that refuses to regress a newer stored value.
* Incremental runs start at the watermark, the newest event time actually
  loaded (never the wall clock), minus a lookback for late-arriving rows; the
  watermark moves only after every write succeeded.
* A run killed anywhere and run again leaves Redis exactly as one clean run
  would: writes are conditional and idempotent, the watermark is written last.
* Two runs of the same view and shard cannot overlap: a Redis lock with expiry,
  renewed while the run is alive.
* Shard ``i`` of ``n`` (a Kubernetes Indexed Job's ``JOB_COMPLETION_INDEX``)
  takes the entities whose hashed key falls in its slice.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray
from redis.exceptions import LockError, RedisError

from app.features.definitions import FeatureView
from app.features.offline import OfflineStore
from app.features.online import KEY_PREFIX, OnlineStore, OnlineStoreUnavailableError

log = logging.getLogger(__name__)


class MaterializationLockedError(Exception):
    """Another run of the same view and shard holds the lock."""


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
    last row read). Two grouped maxima instead of a three-key sort: 0.11 s against 0.40 s
    (Arrow sort_by) for 1M rows and 100k entities."""
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


def _watermark_key(view: str, shard: int, shards: int) -> str:
    return f"{KEY_PREFIX}:meta:{view}:watermark:{shard}of{shards}"


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def _fmt(t: datetime | None) -> str | None:
    return t.astimezone(UTC).isoformat() if t else None


class _RenewedLock:
    """A Redis lock that a background thread keeps alive while the run is."""

    def __init__(self, online: OnlineStore, name: str, ttl_s: float, wait_s: float) -> None:
        self.lock = online.client.lock(
            name, timeout=ttl_s, blocking=wait_s > 0, blocking_timeout=wait_s or None, thread_local=False
        )
        self.name, self.ttl_s = name, ttl_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, daemon=True)

    def __enter__(self) -> _RenewedLock:
        try:
            got = self.lock.acquire(token=uuid.uuid4().hex)
        except RedisError as exc:
            raise OnlineStoreUnavailableError(f"online store unavailable: {exc}") from exc
        if not got:
            raise MaterializationLockedError(
                f"another materialization holds {self.name}; it expires within {self.ttl_s:.0f} s if that run died"
            )
        self._thread.start()
        return self

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                self.lock.extend(self.ttl_s, replace_ttl=True)
            except (LockError, RedisError):
                log.warning("could not renew the materialization lock", extra={"lock": self.name})

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        with contextlib.suppress(LockError, RedisError):  # expired or Redis gone: the TTL cleans up
            self.lock.release()


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
    wm_key = _watermark_key(view.name, shard, shards)
    with _RenewedLock(online, f"{KEY_PREFIX}:lock:{view.name}:{shard}of{shards}", lock_ttl_s, lock_wait_s):
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
        try:
            res = online.write_latest(view, latest, now_ms=now_ms)
            before = online.client.get(wm_key)
        except RedisError as exc:
            raise OnlineStoreUnavailableError(f"online store unavailable: {exc}") from exc
        report.extra["write_s"] = round(time.perf_counter() - t, 4)
        report.written, report.skipped_stale, report.unchanged, report.expired = (
            res.written,
            res.stale,
            res.unchanged,
            res.expired,
        )
        wm_before = datetime.fromisoformat(_text(before)) if before else None
        report.watermark_before = _fmt(wm_before)
        newest = None
        if latest.num_rows:
            ev = latest.column(view.event_timestamp_column).cast(pa.int64()).to_numpy()
            newest = datetime.fromtimestamp(int(ev.max()) / 1e6, UTC)
        wm_after = max([w for w in (wm_before, newest) if w is not None], default=None)
        if wm_after is not None and wm_after != wm_before:
            # Written last: a run killed before this line is simply redone by the next run.
            online.client.set(wm_key, wm_after.isoformat())
        report.watermark_after = _fmt(wm_after)
    report.duration_s = round(time.perf_counter() - t0, 4)
    return report


def read_watermark(online: OnlineStore, view: FeatureView, shard: int = 0, shards: int = 1) -> datetime | None:
    try:
        raw = online.client.get(_watermark_key(view.name, shard, shards))
    except RedisError as exc:
        raise OnlineStoreUnavailableError(f"online store unavailable: {exc}") from exc
    return datetime.fromisoformat(_text(raw)) if raw else None


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
