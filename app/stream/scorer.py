"""The stream scorer: read a consumer group in micro-batches, update streaming features, score, decide, ack.

Per micro-batch of one shard:

1. parse the events; malformed ones, and ones delivered ``max_deliveries`` times, become dead letters;
2. update each event's entity's streaming features (app.stream.windows) and read them at its event time;
3. build the model inputs exactly as the HTTP API does (``LoadedModel.prepare``: the online store's batch
   features and the model's request-time transform), and score the batch in one predict call;
4. write each decision, keyed by event id, to a key the HTTP API reads and to the decision stream, and
5. XACK the batch, only now that every effect is written (4 and 5 are one script call).

Every effect is keyed by event id (the decision key is set only if absent, in the same script that appends
to the decision stream; the windows' members are event ids), so an event delivered twice, after a crash
between steps 2 and 5, changes nothing: at least once delivery, exactly one decision. A batch that fails
(the online store or the model is unavailable) stays pending and is read again; a crashed consumer's
pending events are taken over with XAUTOCLAIM once idle for ``claim_idle_ms``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray
from redis.exceptions import RedisError, ResponseError

from app.common.errors import ApiError, UnavailableError
from app.features.offline import OfflineStore, OfflineStoreError
from app.runtime.registry import LoadedModel, ModelNotReadyError, ModelRegistry, UnknownModelError
from app.runtime.value_checks import row_problems
from app.stream import metrics
from app.stream.core.config import Settings as StreamSettings
from app.stream.events import Event, EventSchema
from app.stream.feature_log import FeatureLog
from app.stream.leases import FENCE_LUA, ShardLeases, is_lease_lost
from app.stream.scripts import Broker, Scripts, text
from app.stream.windows import StreamingFeatures

log = logging.getLogger(__name__)

# KEYS: marker key, stream. ARGV: ttl ms, maxlen, marker value, field, value, ... -> 1 written, 0 already there
_APPEND_ONCE = """
if redis.call('SET', KEYS[1], ARGV[3], 'NX', 'PX', ARGV[1]) then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 4))
  return 1
end
return 0
"""

# One call per micro-batch, which also acknowledges it: the acknowledgement is in the same atomic script as the
# effects it follows, and costs no round trip of its own. KEYS: the shard's lease, its decision stream, its event
# stream, then each event's decision key (all under the shard's hash tag). ARGV: ttl ms, maxlen, group, a JSON
# array of [event id, decision JSON] per event, a JSON array of the entry ids to acknowledge (one argument each:
# packing thousands of arguments cost the client more than the script), the caller's consumer name for the
# fence. A decision is written, and appended to the stream, only if its key is absent: per event 1 written, 0
# already decided.
_DECIDE = (
    FENCE_LUA
    + """
local fenced = fence(ARGV[6])
if fenced then return fenced end
local ttl, maxlen, group = ARGV[1], ARGV[2], ARGV[3]
local items, ids = cjson.decode(ARGV[4]), cjson.decode(ARGV[5])
local out = {}
for j, item in ipairs(items) do
  local eid, body = item[1], item[2]
  if redis.call('SET', KEYS[j + 3], body, 'NX', 'PX', ttl) then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', maxlen, '*', 'event_id', eid, 'decision', body)
    out[j] = 1
  else
    out[j] = 0
  end
end
for i = 1, #ids, 1000 do
  redis.call('XACK', KEYS[3], group, unpack(ids, i, math.min(i + 999, #ids)))
end
return out
"""
)

Entry = tuple[str, Mapping[bytes | str, bytes | str]]
Dead = tuple[str, Mapping[bytes | str, bytes | str], str]  # entry id, its fields, the reason

# Not the events' fault: the batch stays pending and is read again (dead-lettered after max_deliveries).
UNAVAILABLE: tuple[type[Exception], ...] = (ApiError, UnavailableError, ModelNotReadyError, UnknownModelError)


class BatchFailedError(Exception):
    """Every event of the batch failed in the model on its own: more likely the model than the events, so
    the batch is left pending like an unavailable dependency."""


@dataclass
class Scored:
    """The events a batch could score, by position in the batch, with their model inputs and answers."""

    positions: NDArray[np.intp]
    xm: NDArray[np.float64]
    status: list[str] | None
    proba: NDArray[np.float64]

    def select(self, rows: list[int]) -> Scored:
        return Scored(
            self.positions[rows],
            self.xm[rows],
            [self.status[i] for i in rows] if self.status is not None else None,
            self.proba[rows],
        )


def _first_of_each_id(events: Sequence[Event]) -> list[int]:
    seen: set[str] = set()
    out = []
    for i, e in enumerate(events):
        if e.event_id not in seen:
            seen.add(e.event_id)
            out.append(i)
    return out


@dataclass
class BatchResult:
    scored: int = 0
    duplicates: int = 0
    dead: int = 0


class StreamScorer:
    def __init__(
        self, settings: StreamSettings, client: Broker, registry: ModelRegistry, offline: OfflineStore | None = None
    ) -> None:
        self.s = settings
        self.client = client
        self.registry = registry
        self.keys = settings.keys
        self.features = StreamingFeatures(
            client,
            settings.window_list,
            value_field=settings.value_field,
            allowed_lateness_ms=settings.allowed_lateness_ms,
            shards=settings.shards,
            lease_key=self.keys.lease,
        )
        self.leases = ShardLeases(client, self.keys, settings.consumer, settings.shard_lease_ms)
        self.scripts = Scripts(client, append_once=_APPEND_ONCE, decide=_DECIDE)
        self.feature_log = (
            FeatureLog(settings, client, offline, self.features.feature_names) if offline is not None else None
        )
        self.ttl_ms = settings.decision_ttl_seconds * 1000
        self._recovering = dict.fromkeys(range(settings.shards), True)  # read our own pending entries first
        self._next_claim = 0.0
        self._next_gauges = 0.0

    # -- setup ---------------------------------------------------------------------------------
    async def setup(self) -> None:
        await self.scripts.load()
        await self.features.scripts.load()
        for shard in range(self.s.shards):
            await self._create_group(shard)
        if self.feature_log is not None:
            await self.feature_log.setup()

    async def _create_group(self, shard: int) -> None:
        try:
            # From the stream's start: events appended before the first scorer came up are scored too.
            await self.client.xgroup_create(self.keys.events(shard), self.s.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    # -- the loop ------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Score until ``stop`` is set; the batch in hand is finished and acknowledged first."""
        await self._retrying(self.setup, stop)
        heartbeat = Path(self.s.heartbeat_file) if self.s.heartbeat_file else None
        while not stop.is_set():
            try:
                await self.step()
                await self._log_features()
                if heartbeat is not None:
                    heartbeat.touch()
            except (RedisError, OSError) as exc:
                # Redis restarted or unreachable: redis-py reconnects on the next command; nothing was acked.
                log.warning("broker error; retrying", extra={"error": str(exc)})
                self._recovering = dict.fromkeys(self._recovering, True)
                if self.feature_log is not None:
                    self.feature_log.drop_buffer()
                await _sleep_or_stop(stop, 0.5)
                if "NOGROUP" in str(exc):
                    await self._retrying(self.setup, stop)

        if self.feature_log is not None:
            with contextlib.suppress(RedisError, OSError, OfflineStoreError):
                await self.feature_log.flush()  # what was decided is logged before the process goes
        with contextlib.suppress(RedisError, OSError):
            await self.leases.release_all()  # a successor takes the shards over without waiting for expiry

    async def _log_features(self) -> None:
        if self.feature_log is None:
            return
        try:
            await self.feature_log.step()
        except OfflineStoreError as exc:  # the rows stay pending in the decision stream: read again later
            log.warning("feature log append failed; retrying", extra={"error": str(exc)})
            metrics.FAILED_BATCHES.labels(self.s.stream, "feature_log").inc()
            self.feature_log.drop_buffer()

    async def _retrying(self, fn: Any, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await fn()
                return
            except (RedisError, OSError) as exc:
                log.warning("broker not ready; retrying", extra={"error": str(exc)})
                await _sleep_or_stop(stop, 0.5)

    async def step(self) -> int:
        """One pass over the shards: take over stale pending entries, read, score. Returns events handled."""
        handled = 0
        for shard in await self.leases.refresh():
            # Taken over: the previous holder's pending entries first (its lease is gone: no idle time to
            # wait), then our own, then new ones, so that the shard's order holds across the handover.
            self._recovering[shard] = True
            handled += await self._claim(shard, idle_ms=0)
        held = sorted(self.leases.held)
        metrics.SHARDS_HELD.labels(self.s.stream).set(len(held))
        now = time.monotonic()
        if now >= self._next_claim:
            self._next_claim = now + self.s.claim_idle_ms / 2000
            for shard in held:
                handled += await self._claim(shard, idle_ms=self.s.claim_idle_ms)
        if not held:  # a standby replica: more replicas than shards
            await asyncio.sleep(self.s.block_ms / 1000)
        block = max(1, self.s.block_ms // max(1, len(held)))
        for shard in held:
            key = self.keys.events(shard)
            recovering = self._recovering[shard]
            reply = await self.client.xreadgroup(
                self.s.group,
                self.s.consumer,
                {key: "0" if recovering else ">"},
                count=self.s.batch_size,
                block=None if recovering else block,
            )
            entries = _entries(reply)
            if recovering and not entries:
                self._recovering[shard] = False
                continue
            counts = await self._delivery_counts(shard, entries) if recovering else {}
            handled += await self._handle(shard, entries, counts)
        if time.monotonic() >= self._next_gauges:
            self._next_gauges = time.monotonic() + 1.0
            await self.update_gauges()
        return handled

    async def _claim(self, shard: int, idle_ms: int) -> int:
        key = self.keys.events(shard)
        start, handled = "0-0", 0
        while True:
            reply = await self.client.xautoclaim(
                key, self.s.group, self.s.consumer, idle_ms, start, count=self.s.batch_size
            )
            start, entries, deleted = text(reply[0]), _entries([[key, reply[1]]]), [text(d) for d in reply[2]]
            if deleted:  # trimmed away while pending: cannot be scored, say so
                why = "trimmed: the entry was removed from the stream before it was scored"
                await self._dead(shard, [(d, {}, why) for d in deleted])
                await self.client.xack(key, self.s.group, *deleted)
                metrics.DEAD_LETTERS.labels(self.s.stream, "trimmed").inc(len(deleted))
            if entries:
                log.info("took over pending events", extra={"shard": shard, "events": len(entries)})
                handled += await self._handle(shard, entries, await self._delivery_counts(shard, entries))
            if start == "0-0":
                return handled

    async def _delivery_counts(self, shard: int, entries: Sequence[Entry]) -> dict[str, int]:
        if not entries:
            return {}
        ids = [e[0] for e in entries]
        # Ours only: entries of other consumers in the same id range must not crowd ours out of the page.
        rows = await self.client.xpending_range(
            self.keys.events(shard),
            self.s.group,
            min=ids[0],
            max=ids[-1],
            count=len(ids) + 10,
            consumername=self.s.consumer,
        )
        return {text(r["message_id"]): int(r["times_delivered"]) for r in rows}

    # -- one batch -----------------------------------------------------------------------------
    async def _handle(self, shard: int, entries: Sequence[Entry], counts: Mapping[str, int]) -> int:
        if not entries:
            return 0
        try:
            result = await self.process(shard, entries, counts)
        except ResponseError as exc:
            if not is_lease_lost(exc):
                raise
            # Stalled past the lease: another replica holds the shard now and takes these entries over.
            log.warning("shard lease lost; nothing written", extra={"shard": shard, "events": len(entries)})
            self.leases.lost(shard)
            metrics.LEASES_LOST.labels(self.s.stream).inc()
            return len(entries)
        except (RedisError, OSError):
            raise  # the broker: run() waits for it and reads again from the pending entries
        except Exception as exc:
            # An unavailable dependency (online store, model), or an error nobody foresaw: never the end of
            # the process. The events stay pending, are read again, and go to the dead-letter stream with
            # this reason after max_deliveries.
            error = type(exc).__name__
            if not isinstance(exc, (*UNAVAILABLE, BatchFailedError)):
                log.exception("unexpected error in a batch; left pending", extra={"shard": shard})
            # (entries past max_deliveries were dead-lettered before the failure: nothing to remember)
            live = [entry_id for entry_id, _ in entries if counts.get(entry_id, 1) <= self.s.max_deliveries]
            await self._remember_failure(shard, live, f"{error}: {exc}")
            metrics.FAILED_BATCHES.labels(self.s.stream, error).inc()
            log.warning("batch left pending", extra={"shard": shard, "events": len(entries), "error": str(exc)})
            self._recovering[shard] = True
            await asyncio.sleep(0.2)
            return len(entries)  # handled: read and left for retry (a pass that read nothing is idle)
        metrics.EVENTS.labels(self.s.stream, "scored").inc(result.scored)
        metrics.EVENTS.labels(self.s.stream, "duplicate").inc(result.duplicates)
        metrics.EVENTS.labels(self.s.stream, "dead_letter").inc(result.dead)
        metrics.BATCH_SIZE.labels(self.s.stream).observe(len(entries))
        return len(entries)

    async def _remember_failure(self, shard: int, entry_ids: Sequence[str], why: str) -> None:
        """Why these entries' last delivery failed, in Redis: the consumer that dead-letters them after
        max_deliveries may be another process (after a crash or a takeover) and still names the reason."""
        if not entry_ids:
            return
        key = self.keys.failures(shard)
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(key, mapping=dict.fromkeys(entry_ids, why[:500]))
        pipe.pexpire(key, self.ttl_ms)
        await pipe.execute()

    async def process(self, shard: int, entries: Sequence[Entry], counts: Mapping[str, int]) -> BatchResult:
        """Score one shard's entries and acknowledge them (see the module's docstring for the steps)."""
        dead: list[Dead] = []
        fresh: list[Entry] = []
        redelivered = [entry_id for entry_id, _ in entries if counts.get(entry_id, 1) > 1]
        reasons = await self._failure_reasons(shard, redelivered)
        for entry_id, fields in entries:
            delivered = counts.get(entry_id, 1)
            if delivered > self.s.max_deliveries:
                why = reasons.get(entry_id, "unknown")
                dead.append((entry_id, fields, f"delivered {delivered} times without success; last error: {why}"))
                metrics.DEAD_LETTERS.labels(self.s.stream, "max_deliveries").inc()
            else:
                fresh.append((entry_id, fields))
        try:
            lm = self.registry.get(self.s.model)
        except (ModelNotReadyError, UnknownModelError):
            await self._settle(shard, dead, redelivered)  # those are done with, whatever the model does
            raise
        schema = EventSchema(
            self.s.event_id_field, self.s.event_time_field, self.s.entity_field, self.s.value_field, lm.input_names
        )
        parsed = schema.parse_batch(fresh)
        for entry_id, fields, why in parsed.malformed:
            dead.append((entry_id, fields, why))
            metrics.DEAD_LETTERS.labels(self.s.stream, "malformed").inc()
        events = parsed.events
        result = BatchResult()
        ids = [entry_id for entry_id, _ in entries]
        if events:
            scored, failed = await self._score(lm, parsed.x)
            if failed:  # each such event alone: its neighbours are decided (issue 24)
                fields_of = dict(fresh)
                for i, (reason, why) in failed.items():
                    dead.append((events[i].entry_id, fields_of[events[i].entry_id], why))
                    metrics.DEAD_LETTERS.labels(self.s.stream, reason).inc()
                events = [events[i] for i in scored.positions.tolist()]
        result.dead = len(dead)
        if events:
            # Only events that were scored join the windows: a dead letter is not something the user did. Nor
            # does a repeated id: only its first arrival counts (in this batch here, in earlier ones through
            # the decision key in the script); a repeat under another user would be an event nobody decided.
            first = _first_of_each_id(events)
            if len(first) < len(events):
                result.duplicates += len(events) - len(first)
                events = [events[i] for i in first]
                scored = scored.select(first)
            windows = await self.features.update(
                [(e.event_id, e.entity, e.event_time_ms, e.value) for e in events],
                owner=self.s.consumer,
                decision_key=self.keys.decision,
            )
            repeats = [i for i, w in enumerate(windows) if w.status == "DECIDED"]
            if repeats:
                keep = [i for i, w in enumerate(windows) if w.status != "DECIDED"]
                result.duplicates += len(repeats)
                events, windows = [events[i] for i in keep], [windows[i] for i in keep]
                scored = scored.select(keep)
        if events:
            xm, status, proba = scored.xm, scored.status, scored.proba
            if lm.monitor is not None:  # drift and schema-skew counts, recorded as the HTTP routes record them
                lm.monitor.observe(xm, proba, parsed.x[scored.positions] if lm.online is not None else None)
            idx = proba.argmax(axis=1)
            lm.count_predictions(idx)
            decided_ms = int(time.time() * 1000)
            keys = [self.keys.lease(shard), self.keys.decisions(shard), self.keys.events(shard)]
            items: list[tuple[str, str]] = []
            names = [str(c) for c in lm.model.classes]
            for i, e in enumerate(events):
                decision = {
                    "event_id": e.event_id,
                    "model": lm.model.name,
                    "version": lm.version,
                    "prediction": lm.model.classes[int(idx[i])],
                    "probabilities": dict(zip(names, proba[i].tolist(), strict=True)),
                    "feature_status": status[i] if status is not None else "NONE",
                    "streaming_features": windows[i].values,
                    "streaming_status": windows[i].status,
                    "entity": e.entity,
                    "event_time_ms": e.event_time_ms,
                    "decided_ms": decided_ms,
                }
                keys.append(self.keys.decision(shard, e.event_id))
                items.append((e.event_id, orjson.dumps(decision, option=orjson.OPT_SERIALIZE_NUMPY).decode()))
            await self._dead(shard, dead)
            args = [
                self.ttl_ms,
                self.s.output_maxlen,
                self.s.group,
                orjson.dumps(items),
                orjson.dumps(ids),
                self.s.consumer,
            ]
            (written,) = await self.scripts.run_many("decide", [(keys, args)])
            result.scored = sum(int(w) for w in written)
            result.duplicates += len(events) - result.scored
            now_s = time.time()
            latency = metrics.DECISION_LATENCY.labels(self.s.stream)
            for e in events:
                latency.observe(max(0.0, now_s - _entry_ms(e.entry_id) / 1000))
        else:
            await self._dead(shard, dead)
            await self.client.xack(self.keys.events(shard), self.s.group, *ids)
        if redelivered:
            await self.client.hdel(self.keys.failures(shard), *redelivered)
        return result

    async def _score(self, lm: LoadedModel, x: NDArray[np.float64]) -> tuple[Scored, dict[int, tuple[str, str]]]:
        """The batch's model inputs and probabilities, with each event that cannot be scored set apart:
        position -> (metric reason, dead-letter reason). A value the model cannot take (past float32 where it
        computes in float32) is named; any other error in the transform or the model is found by bisecting
        the batch, so one poison event costs O(log n) extra calls and fails alone. An unavailable dependency
        raises: not the events' fault."""
        failed: dict[int, tuple[str, str]] = {}
        parts: list[Scored] = []
        errors = 0

        async def run(pos: NDArray[np.intp]) -> None:
            nonlocal errors
            try:
                xm, status = await lm.prepare(x[pos])
                bad = row_problems(xm, lm.model.feature_names, lm.model.value_rules, "{1}")
                if bad:
                    for i, why in bad.items():
                        failed[int(pos[i])] = ("invalid_input", f"invalid input: {why}")
                    keep = np.array([i for i in range(len(pos)) if i not in bad], dtype=np.intp)
                    pos, xm = pos[keep], xm[keep]
                    status = [status[i] for i in keep.tolist()] if status is not None else None
                    if not len(pos):
                        return
                proba = await lm.predict_proba(xm)
            except UNAVAILABLE:
                raise
            except Exception as exc:
                if len(pos) > 1:
                    mid = len(pos) // 2
                    await run(pos[:mid])
                    await run(pos[mid:])
                    return
                errors += 1
                failed[int(pos[0])] = ("model_error", f"model error: {type(exc).__name__}: {exc}"[:500])
                return
            parts.append(Scored(pos, xm, status, proba))

        await run(np.arange(len(x), dtype=np.intp))
        if not parts and errors:
            # Nothing in the batch scored and the model raised on its own events: the model, not the events,
            # most likely; retried, then dead-lettered after max_deliveries with this reason.
            raise BatchFailedError(next(why for kind, why in failed.values() if kind == "model_error"))
        if not parts:
            return Scored(np.empty(0, np.intp), np.empty((0, 0)), None, np.empty((0, 0))), failed
        if len(parts) == 1:
            return parts[0], failed
        positions = np.concatenate([p.positions for p in parts])
        order = np.argsort(positions, kind="stable")
        statuses = None if parts[0].status is None else [s for p in parts for s in (p.status or [])]
        return (
            Scored(
                positions[order],
                np.concatenate([p.xm for p in parts])[order],
                [statuses[i] for i in order.tolist()] if statuses is not None else None,
                np.concatenate([p.proba for p in parts])[order],
            ),
            failed,
        )

    async def _failure_reasons(self, shard: int, entry_ids: Sequence[str]) -> dict[str, str]:
        if not entry_ids:
            return {}
        got = await self.client.hmget(self.keys.failures(shard), list(entry_ids))
        return {e: text(r) for e, r in zip(entry_ids, got, strict=True) if r is not None}

    async def _settle(self, shard: int, dead: Sequence[Dead], redelivered: Sequence[str]) -> None:
        """Dead-letter and acknowledge these entries."""
        if dead:
            await self._dead(shard, dead)
            await self.client.xack(self.keys.events(shard), self.s.group, *(d[0] for d in dead))
            gone = {d[0] for d in dead}
            if any(e in gone for e in redelivered):
                await self.client.hdel(self.keys.failures(shard), *gone)

    async def _dead(self, shard: int, dead: Sequence[Dead]) -> None:
        calls = []
        for entry_id, fields, reason in dead:
            original = json.dumps({text(k): text(v) for k, v in fields.items()}, separators=(",", ":"))
            entry = ["entry_id", entry_id, "reason", reason, "event", original]
            calls.append(
                (
                    [self.keys.dead_marker(shard, entry_id), self.keys.dead_letters(shard)],
                    [self.ttl_ms, self.s.output_maxlen, reason, *entry],
                )
            )
        await self.scripts.run_many("append_once", calls)

    # -- operations ----------------------------------------------------------------------------
    async def update_gauges(self) -> None:
        now_ms = time.time() * 1000
        for shard in range(self.s.shards):
            key, label = self.keys.events(shard), str(shard)
            groups = await self.client.xinfo_groups(key)
            group = next((g for g in groups if text(g["name"]) == self.s.group), None)
            if group is None:
                continue
            lag = group.get("lag")
            metrics.LAG.labels(self.s.stream, label).set(float(lag) if lag is not None else float("nan"))
            summary = await self.client.xpending(key, self.s.group)
            metrics.PENDING.labels(self.s.stream, label).set(int(summary["pending"]))
            oldest = summary.get("min")
            age = (now_ms - _entry_ms(text(oldest))) / 1000 if oldest else 0.0
            metrics.OLDEST_PENDING_AGE.labels(self.s.stream, label).set(max(0.0, age))

    async def decision(self, event_id: str) -> dict[str, Any] | None:
        """The decision of an event, by id (any shard)."""
        for shard in range(self.s.shards):
            raw = await self.client.get(self.keys.decision(shard, event_id))
            if raw is not None:
                out: dict[str, Any] = json.loads(raw)
                return out
        return None


def _entries(reply: Any) -> list[Entry]:
    """XREADGROUP's reply (a list or, with RESP3, a dict) -> [(entry id, fields)]."""
    if not reply:
        return []
    streams = reply.items() if isinstance(reply, dict) else reply
    out: list[Entry] = []
    for _, messages in streams:
        for msg in messages or []:
            entry_id, fields = msg
            if fields is None:  # pending entry already deleted from the stream
                fields = {}
            out.append((text(entry_id), fields))
    return out


def _entry_ms(entry_id: str) -> int:
    return int(entry_id.split("-", 1)[0])


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
