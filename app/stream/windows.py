"""Streaming features: per-entity counts and sums over sliding event-time windows, in Redis.

Each entity keeps the events of the last ``horizon`` (longest window + allowed lateness) as a sorted set
(event id -> event time) and a hash (event id -> value), under its shard's hash tag so that one script call
updates a whole micro-batch atomically on the Redis Cluster node that holds the shard. A window's features
at time ``t`` are always recomputed from the set, over ``(t - w, t]``. Two properties follow:

- idempotent: the event id is the member, so a redelivered event is not counted twice (``ZADD NX``), and it
  gets back the values it was first served with (kept per event id for the horizon): recomputed, they could
  count an earlier-timed event that arrived after it, and a retried batch would not equal a clean run;
- no regression on late or out-of-order events: a late event joins the set and every later read sees it;
  nothing is an incremental counter that an out-of-order update could corrupt.

An event more than the allowed lateness behind its entity's newest event is *too late*: it is still scored,
with status ``LATE``, but not kept (its windows may reach past what is kept: the longest window plus the
allowed lateness behind the newest event).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from app.stream.leases import FENCE_LUA
from app.stream.scripts import Broker, Scripts, text

KEY_PREFIX = "sf"

# Lua shared by both scripts.
_WINDOWS = """
-- Lists go to commands in slices of 1,000: unpack() of thousands of values overflows Lua's C stack.
local function slices(list)
  local i = -999
  return function()
    i = i + 1000
    if i <= #list then return {unpack(list, i, math.min(i + 999, #list))} end
  end
end
-- The entity's count and sum over each window (ts - w, ts], from one read of the longest window: the
-- events in time order, a shorter window a filter of them, so its sum adds the same values in the same
-- order as a read of its own would.
local function windows_at(kev, kval, ts, wins, longest)
  local rows = redis.call('ZRANGEBYSCORE', kev, '(' .. (ts - longest), ts, 'WITHSCORES')
  local ids, times, vals = {}, {}, {}
  for i = 1, #rows, 2 do
    ids[#ids + 1] = rows[i]
    times[#times + 1] = tonumber(rows[i + 1])
  end
  for part in slices(ids) do
    for _, v in ipairs(redis.call('HMGET', kval, unpack(part))) do vals[#vals + 1] = v end
  end
  local out = {}
  for w = 1, #wins do
    local from, n, sum = ts - wins[w], 0, 0
    for i = 1, #ids do
      if times[i] > from then
        n = n + 1
        sum = sum + tonumber(vals[i])
      end
    end
    out[#out + 1] = n
    out[#out + 1] = tostring(sum)
  end
  return out
end
"""

# One call per micro-batch of a shard. KEYS: the shard's lease, then per event its entity's events zset, values
# hash and served hash (3 keys each, all under the shard's hash tag). ARGV: horizon ms, ttl ms, allowed
# lateness ms, number of windows, window lengths ms..., one JSON array of [event id, event time ms, value as
# text] per event (one argument: the client packs arguments one by one, which cost more than the script),
# then the caller's consumer name for the fence ('' = unfenced; app/stream/leases.py). Returns per event
# {status, count_1, sum_1, ...}; sums as strings (Lua numbers reply as integers).
# A redelivered event gets the values it was first served with (the served hash): with events out of order,
# recomputing them could count an earlier-timed event that arrived after it. The served hash keeps the
# status with the values ("NEW,3,12.5,..."), so a batch retried after a crash between this script and its
# decision decides with the status it was first served, not "DUPLICATE" (issue 24).
_UPDATE = (
    _WINDOWS
    + FENCE_LUA
    + """
local horizon, ttl, lateness, nwin = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local wins, longest = {}, 0
for w = 1, nwin do
  wins[w] = tonumber(ARGV[4 + w])
  longest = math.max(longest, wins[w])
end
local events = cjson.decode(ARGV[5 + nwin])
local fenced = fence(ARGV[6 + nwin])
if fenced then return fenced end
local per = tonumber(ARGV[7 + nwin])  -- keys per event: 3, or 4 with the event id's decision key
local result = {}
for j = 1, (#KEYS - 1) / per do
  local base = 1 + per * (j - 1)
  local kev, kval, kserved = KEYS[base + 1], KEYS[base + 2], KEYS[base + 3]
  local eid, ts, value = events[j][1], events[j][2], events[j][3]
  local status = 'NEW'
  local served = nil
  local top = redis.call('ZRANGE', kev, -1, -1, 'WITHSCORES')
  local newest = top[2] and tonumber(top[2])
  if per == 4 and redis.call('EXISTS', KEYS[base + 4]) == 1 then
    -- The id is decided already: this is a repeat, maybe under another entity (a producer reusing an id).
    -- It changes no window: counted, it would be an event nobody decided (issue 24).
    status = 'DECIDED'
  elseif newest and ts < newest - lateness then
    -- Later than allowed: its windows may reach past what is kept (the horizon is the longest window plus
    -- the lateness), so it is scored as LATE and not kept.
    status = 'LATE'
  elseif redis.call('ZADD', kev, 'NX', ts, eid) == 1 then
    redis.call('HSET', kval, eid, value)
    -- Only a new newest time moves the horizon: nothing behind it is left after every addition.
    if newest and ts > newest then
      local old = redis.call('ZRANGEBYSCORE', kev, '-inf', '(' .. (ts - horizon))
      if #old > 0 then
        redis.call('ZREMRANGEBYSCORE', kev, '-inf', '(' .. (ts - horizon))
        for part in slices(old) do
          redis.call('HDEL', kval, unpack(part))
          redis.call('HDEL', kserved, unpack(part))
        end
      end
    end
  else
    status = 'DUPLICATE'
    served = redis.call('HGET', kserved, eid)
  end
  local out = {status}
  if status == 'DECIDED' then
    for _ = 1, 2 * nwin do out[#out + 1] = '0' end
  elseif served then
    for v in string.gmatch(served, '[^,]+') do out[#out + 1] = v end
    if tonumber(out[2]) ~= nil then
      out[1] = 'NEW'  -- written before the status was kept: only NEW events are kept
    else
      table.remove(out, 1)  -- leaves the status it was first served with, then its values
    end
  else
    for _, v in ipairs(windows_at(kev, kval, ts, wins, longest)) do out[#out + 1] = v end
    if status == 'NEW' then
      redis.call('HSET', kserved, eid, table.concat(out, ','))
      redis.call('PEXPIRE', kev, ttl)
      redis.call('PEXPIRE', kval, ttl)
      redis.call('PEXPIRE', kserved, ttl)
    end
  end
  result[j] = out
end
return result
"""
)

# KEYS: events zset, values hash. ARGV: time ms, windows ms... -> {count_1, sum_1, ...}
_READ = (
    _WINDOWS
    + """
local wins, longest = {}, 0
for i = 2, #ARGV do
  wins[#wins + 1] = tonumber(ARGV[i])
  longest = math.max(longest, wins[#wins])
end
return windows_at(KEYS[1], KEYS[2], tonumber(ARGV[1]), wins, longest)
"""
)


@dataclass(frozen=True)
class Window:
    """A sliding window ``(t - length, t]``; its features are ``<entity>_count_<name>`` and ``..._sum_<name>``."""

    name: str  # e.g. "10m"
    length_ms: int


def parse_windows(spec: str) -> tuple[Window, ...]:
    """``"10m,1h"`` -> windows; units s, m, h, d. ValueError names a bad entry."""
    units = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
    out: list[Window] = []
    for raw in (p.strip() for p in spec.split(",")):
        if not raw:
            continue
        num, unit = raw[:-1], raw[-1:]
        if unit not in units or not num.isdigit() or int(num) <= 0:
            raise ValueError(f"window {raw!r}: expected a positive integer and a unit s, m, h or d, e.g. 10m")
        out.append(Window(raw, int(num) * units[unit]))
    if not out:
        raise ValueError("no windows configured")
    if len({w.name for w in out}) != len(out):
        raise ValueError(f"duplicate windows in {spec!r}")
    return tuple(sorted(out, key=lambda w: w.length_ms))


@dataclass(frozen=True)
class WindowValues:
    # NEW, or LATE (past the allowed lateness: scored, not kept); a redelivery gets its first status; DECIDED:
    # the id has a decision already (a repeat), nothing changed
    status: str
    values: dict[str, float]


class StreamingFeatures:
    """Counts and sums of one numeric event field per entity over ``windows`` (asyncio client)."""

    def __init__(
        self,
        client: Broker,
        windows: Sequence[Window],
        *,
        value_field: str,
        allowed_lateness_ms: int,
        shards: int = 1,
        prefix: str = KEY_PREFIX,
        lease_key: Callable[[int], str] | None = None,
    ) -> None:
        self.client = client
        self.shards = shards
        self.windows = tuple(windows)
        self.value_field = value_field
        self.allowed_lateness_ms = allowed_lateness_ms
        # Kept: the longest window behind the latest event an entity may still accept (allowed lateness).
        self.horizon_ms = max(w.length_ms for w in self.windows) + allowed_lateness_ms
        self.ttl_ms = self.horizon_ms + 86_400_000  # a quiet entity's keys go a day after its window
        self.prefix = prefix
        # The shard's lease key, checked by the update when a consumer name is given (same hash tag).
        self.lease_key = lease_key or (lambda shard: f"{prefix}:{{{shard}}}:owner")
        self.scripts = Scripts(client, update=_UPDATE, read=_READ)
        self.feature_names = [n for w in self.windows for n in (f"count_{w.name}", f"{value_field}_sum_{w.name}")]

    def keys(self, entity: int) -> list[str]:
        """The entity's events (id -> time), values (id -> value) and served windows (id -> what it got), under
        its shard's hash tag (the event stream's shard: entity mod shards), so that one script updates a whole
        micro-batch on whichever Redis Cluster node holds the shard."""
        tag = f"{self.prefix}:{{{entity % self.shards}}}:{entity}"
        return [f"{tag}:ev", f"{tag}:val", f"{tag}:served"]

    async def update(
        self,
        events: Sequence[tuple[str, int, int, float]],
        owner: str = "",
        decision_key: Callable[[int, str], str] | None = None,
    ) -> list[WindowValues]:
        """Add ``(event id, entity, event time ms, value)`` events (one script call per shard among them, one
        round trip) and return each one's features at its own event time, itself included. With ``owner``,
        nothing is written unless it holds the shard's lease (LEASE_LOST is raised). With ``decision_key``
        ((shard, event id) -> key), an event whose id is decided already changes nothing (status DECIDED)."""
        head = [
            self.horizon_ms,
            self.ttl_ms,
            self.allowed_lateness_ms,
            len(self.windows),
            *(w.length_ms for w in self.windows),
        ]
        by_shard: dict[int, list[int]] = {}
        for i, (_, entity, _, _) in enumerate(events):
            by_shard.setdefault(entity % self.shards, []).append(i)
        calls = []
        for shard, positions in by_shard.items():
            keys: list[str] = [self.lease_key(shard)]
            batch: list[tuple[str, int, str]] = []
            for i in positions:
                eid, entity, ts, value = events[i]
                keys += self.keys(entity)
                if decision_key is not None:
                    keys.append(decision_key(shard, eid))
                batch.append((eid, ts, repr(float(value))))
            calls.append((keys, [*head, orjson.dumps(batch), owner, 3 if decision_key is None else 4]))
        replies = await self.scripts.run_many("update", calls)
        out: list[WindowValues | None] = [None] * len(events)
        for positions, reply in zip(by_shard.values(), replies, strict=True):
            for i, r in zip(positions, reply, strict=True):
                out[i] = self._values(r[1:], text(r[0]))
        return [v for v in out if v is not None]

    async def read(self, entity: int, at_ms: int) -> dict[str, float]:
        """The entity's features at event time ``at_ms`` from what has arrived."""
        args: list[str | int] = [at_ms, *(w.length_ms for w in self.windows)]
        (raw,) = await self.scripts.run_many("read", [(self.keys(entity)[:2], args)])
        return self._values(raw, "NEW").values

    def _values(self, raw: list[Any], status: str) -> WindowValues:
        # float() reads the reply's bytes (sums) and integers (counts) as they are
        values = {name: float(v) for name, v in zip(self.feature_names, raw, strict=True)}
        return WindowValues(status, values)
