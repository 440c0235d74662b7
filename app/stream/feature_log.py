"""The streaming features as served, appended to the offline store: training sees what serving saw.

A second consumer group (``<group>-feature-log``) reads the decision streams, which carry each event's
streaming features, event time and decision time. Rows are buffered up to ``feature_log_max_rows`` or
``feature_log_flush_seconds`` and appended to the offline store's Delta table in one commit (a
conflicting commit from another writer is retried by the store), then acknowledged. Columns: the entity,
``event_timestamp`` (the event's time), ``created_timestamp`` (when the scorer decided), the event id and
the window features: exactly the point-in-time layout a feature view reads (a view whose source is this
dataset; the reference scenario's is ``user_activity``).

Delivery is at least once: a crash between the commit and the XACK appends the same rows again. They are
identical (same event id, times and values), so a point-in-time join picks the same values; the event id
column lets a compaction drop them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
from redis.exceptions import ResponseError

from app.features.offline import OfflineStore
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
        self._since = time.monotonic()
        self._recovering = dict.fromkeys(range(settings.shards), True)

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
        for shard in range(self.s.shards):
            recovering = self._recovering[shard]
            start = "0" if recovering else ">"
            reply: Any = await self.client.xreadgroup(
                self.group, self.s.consumer, {self.key(shard): start}, count=self.s.batch_size * 4
            )
            entries = [(eid, fields) for _, msgs in (reply or []) for eid, fields in msgs]
            if recovering and not entries:
                self._recovering[shard] = False
            for entry_id, fields in entries:
                self.ids.setdefault(shard, []).append(text(entry_id))
                if fields:
                    self.rows.append(self._row(json.loads(fields.get(b"decision") or fields.get("decision"))))
            read += len(entries)
            if recovering and entries:
                break  # own pending first, a batch at a time
        if self.rows and (
            len(self.rows) >= self.s.feature_log_max_rows
            or time.monotonic() - self._since >= self.s.feature_log_flush_seconds
        ):
            await self.flush()
        return read

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

    async def flush(self) -> None:
        """One commit for the buffer, then the acknowledgements; on failure the rows stay pending."""
        self._since = time.monotonic()
        if not self.rows and not self.ids:
            return
        if self.rows:
            table = self.table()
            version = await asyncio.to_thread(self.offline.append, self.s.feature_log_dataset, table, EVENT_TS)
            log.info("feature log appended", extra={"rows": table.num_rows, "version": version})
        for shard, ids in self.ids.items():
            if ids:
                await self.client.xack(self.key(shard), self.group, *ids)
        self.rows.clear()
        self.ids.clear()

    def drop_buffer(self) -> None:
        """After a failed flush: forget the buffer; the entries are still pending and are read again."""
        self.rows.clear()
        self.ids.clear()
        self._recovering = dict.fromkeys(self._recovering, True)
