"""The streaming features as served, appended to the offline store: training sees what serving saw.

A second consumer group (``<group>-feature-log``) reads the decision streams, which carry each event's
streaming features, event time and decision time. Rows are buffered up to ``feature_log_max_rows`` or
``feature_log_flush_seconds`` and appended to the offline store's Delta table in one commit (a
conflicting commit from another writer is retried by the store), then acknowledged. Columns: the entity,
``event_timestamp`` (the event's time), ``created_timestamp`` (when the scorer decided), the event id and
the window features: exactly the point-in-time layout a feature view reads (a view whose source is this
dataset; the reference scenario's is ``user_activity``).

Exactly one row per decision:
- an entry is buffered once, however often it is read (own pending entries are read forward, not from the
  start on every loop);
- entries another consumer read and never acknowledged (a crash, or a pod replaced under a new name) are
  taken over with XAUTOCLAIM after ``claim_idle_ms``;
- an entry delivered before (own pending, or taken over) may have been committed by a flush that crashed
  before its XACK: its event id is looked up in the table over its event-time span, and left out if there.
  Two consumers flushing the same entries at once (one stalled past ``claim_idle_ms``) can still both
  commit; the event id column identifies such rows.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
from redis.exceptions import ResponseError

from app.features.offline import OfflineStore, OfflineStoreError
from app.stream.core.config import Settings
from app.stream.scripts import Broker, text

log = logging.getLogger(__name__)

EVENT_TS = "event_timestamp"
CREATED_TS = "created_timestamp"


class FeatureLog:
    def __init__(self, settings: Settings, client: Broker, offline: OfflineStore, feature_names: Sequence[str]) -> None:
        self.s = settings
        self.client = client
        self.offline = offline
        self.group = f"{settings.group}-feature-log"
        self.feature_names = list(feature_names)
        self.rows: list[dict[str, Any]] = []
        self.ids: dict[int, list[str]] = {}  # shard -> entry ids buffered, acknowledged after the commit
        self.buffered: set[str] = set()  # event ids in the buffer: an entry read twice adds one row
        self.suspects: set[str] = set()  # event ids delivered before: maybe appended by a crashed flush
        self._since = time.monotonic()
        self._next_claim = 0.0
        self._reset_cursors()

    def _reset_cursors(self) -> None:
        # Own pending entries first, read forward from "0" (an id, not ">"): each read starts after the last
        # entry read, so a pending entry is buffered once, not once per loop as before (issue 24).
        self._cursor: dict[int, str | None] = dict.fromkeys(range(self.s.shards), "0")

    def key(self, shard: int) -> str:
        return f"{self.s.output_stream}:{{{shard}}}"

    async def setup(self) -> None:
        for shard in range(self.s.shards):
            try:
                await self.client.xgroup_create(self.key(shard), self.group, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def step(self) -> int:
        """Read what the decision streams hold; flush when the buffer is full or old. Returns rows read."""
        read = 0
        if time.monotonic() >= self._next_claim:
            self._next_claim = time.monotonic() + self.s.claim_idle_ms / 2000
            for shard in range(self.s.shards):
                read += await self._claim(shard)
        for shard in range(self.s.shards):
            cursor = self._cursor[shard]
            reply: Any = await self.client.xreadgroup(
                self.group, self.s.consumer, {self.key(shard): cursor or ">"}, count=self.s.batch_size * 4
            )
            entries = [(text(eid), fields) for _, msgs in (reply or []) for eid, fields in msgs]
            if cursor is not None:  # own pending entries: delivered before, maybe already appended
                self._cursor[shard] = entries[-1][0] if entries else None
            self._buffer(shard, entries, suspect=cursor is not None)
            read += len(entries)
        if self.rows and (
            len(self.rows) >= self.s.feature_log_max_rows
            or time.monotonic() - self._since >= self.s.feature_log_flush_seconds
        ):
            await self.flush()
        return read

    async def _claim(self, shard: int) -> int:
        """Entries another consumer read and never acknowledged (it crashed, or was replaced under a new
        name: a pod's name changes with its ReplicaSet), taken over once idle for ``claim_idle_ms``. Without
        this they stayed pending forever and their rows never reached the offline store (issue 24)."""
        start, claimed = "0-0", 0
        while True:
            reply = await self.client.xautoclaim(
                self.key(shard), self.group, self.s.consumer, self.s.claim_idle_ms, start, count=self.s.batch_size
            )
            start = text(reply[0])
            entries = [(text(eid), fields) for eid, fields in reply[1] if fields is not None]
            deleted = [text(d) for d in reply[2]]
            if deleted:  # trimmed from the decision stream before it was logged: nothing left to append
                await self.client.xack(self.key(shard), self.group, *deleted)
            self._buffer(shard, entries, suspect=True)
            claimed += len(entries)
            if start == "0-0":
                return claimed

    def _buffer(self, shard: int, entries: Sequence[tuple[str, Any]], *, suspect: bool) -> None:
        for entry_id, fields in entries:
            self.ids.setdefault(shard, []).append(entry_id)
            if not fields:
                continue
            row = self._row(json.loads(fields.get(b"decision") or fields.get("decision")))
            if row["event_id"] in self.buffered:
                continue
            self.buffered.add(row["event_id"])
            if suspect:
                self.suspects.add(row["event_id"])
            self.rows.append(row)

    def _row(self, d: dict[str, Any]) -> dict[str, Any]:
        return {
            self.s.entity_field: int(d["entity"]),
            EVENT_TS: int(d["event_time_ms"]),
            CREATED_TS: int(d["decided_ms"]),
            "event_id": str(d["event_id"]),
            **{f: float(d["streaming_features"][f]) for f in self.feature_names},
        }

    def table(self) -> pa.Table:
        cols: dict[str, pa.Array] = {
            self.s.entity_field: pa.array([r[self.s.entity_field] for r in self.rows], pa.int64()),
            EVENT_TS: pa.array([r[EVENT_TS] for r in self.rows], pa.timestamp("ms", tz="UTC")).cast(
                pa.timestamp("us", tz="UTC")
            ),
            CREATED_TS: pa.array([r[CREATED_TS] for r in self.rows], pa.timestamp("ms", tz="UTC")).cast(
                pa.timestamp("us", tz="UTC")
            ),
            "event_id": pa.array([r["event_id"] for r in self.rows], pa.string()),
        }
        for f in self.feature_names:
            cols[f] = pa.array([r[f] for r in self.rows], pa.float64())
        return pa.table(cols)

    def _already_logged(self) -> set[str]:
        """Of the suspects, the event ids the table already holds: a flush that committed and crashed before
        its XACK. Read only over the suspects' event-time span (day partitions pruned), so the check costs
        nothing in the steady state, where there are no suspects."""
        rows = [r for r in self.rows if r["event_id"] in self.suspects]
        if not rows:
            return set()
        times = [r[EVENT_TS] for r in rows]
        start = datetime.fromtimestamp(min(times) / 1000, UTC)
        end = datetime.fromtimestamp(max(times) / 1000, UTC) + timedelta(milliseconds=1)
        try:
            got = self.offline.read_window(self.s.feature_log_dataset, EVENT_TS, start, end, ["event_id"])
        except OfflineStoreError as exc:
            if "not found" in str(exc):
                return set()  # no table yet: nothing was appended
            raise
        return set(got.column("event_id").to_pylist()) & self.suspects

    async def flush(self) -> None:
        """One commit for the buffer, then the acknowledgements; on failure the rows stay pending. Exactly one
        row per decision: rows a crashed flush already committed are left out."""
        self._since = time.monotonic()
        if not self.rows and not self.ids:
            return
        if self.rows:
            logged = await asyncio.to_thread(self._already_logged)
            if logged:
                self.rows = [r for r in self.rows if r["event_id"] not in logged]
                log.info("feature log: rows already appended by an earlier flush", extra={"rows": len(logged)})
            table = self.table()
            version = await asyncio.to_thread(self.offline.append, self.s.feature_log_dataset, table, EVENT_TS)
            log.info("feature log appended", extra={"rows": table.num_rows, "version": version})
        for shard, ids in self.ids.items():
            if ids:
                await self.client.xack(self.key(shard), self.group, *ids)
        self._clear()

    def _clear(self) -> None:
        self.rows.clear()
        self.ids.clear()
        self.buffered.clear()
        self.suspects.clear()

    def drop_buffer(self) -> None:
        """After a failed flush: forget the buffer; the entries are still pending and are read again."""
        self._clear()
        self._reset_cursors()
