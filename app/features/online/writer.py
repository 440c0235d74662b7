"""The conditional batch write: a value lands only if it is newer than the stored one.

A Lua script compares the (event, created) time prefix of the new and the stored value inside
Redis, so an older row never overwrites a newer one and re-running a load is a no-op.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import redis
from redis.cluster import RedisCluster

from app.features.online.codec import Codec, fixed_digits, timestamps_us
from app.features.online.keys import entity_key

# KEYS: entity keys. ARGV[1]: value size; ARGV[2]: the values, concatenated; ARGV[3]: expiry times
# (ms since epoch, 14 digits each), concatenated. Three arguments per batch instead of two per key
# halves the client's encoding work. Returns {written, stale, unchanged}.
PXAT_DIGITS = 14
WRITE_NEWER_LUA = """
local size = tonumber(ARGV[1])
local values, expiries = ARGV[2], ARGV[3]
local written, stale, unchanged = 0, 0, 0
for i, key in ipairs(KEYS) do
  local val = string.sub(values, (i - 1) * size + 1, i * size)
  -- Redis parses integers strictly: no leading zeros
  local pxat = string.match(string.sub(expiries, (i - 1) * 14 + 1, i * 14), "^0*(%d+)$")
  local cur = redis.call('GET', key)
  local write = true
  if cur then
    local ce, ne = tonumber(string.sub(cur, 1, 16)), tonumber(string.sub(val, 1, 16))
    local cc, nc = tonumber(string.sub(cur, 17, 32)), tonumber(string.sub(val, 17, 32))
    if ne < ce or (ne == ce and nc < cc) then
      stale = stale + 1; write = false
    elseif ne == ce and nc == cc and cur == val then
      unchanged = unchanged + 1; write = false
    end
  end
  if write then
    redis.call('SET', key, val, 'PXAT', pxat)
    written = written + 1
  end
end
return {written, stale, unchanged}
"""
FOREVER_MS = 10 * 365 * 86_400_000  # a view without TTL: "forever", renewed by every load


@dataclass
class WriteResult:
    written: int = 0
    stale: int = 0
    unchanged: int = 0
    expired: int = 0


class LatestWriter:
    """Writes one view's latest rows in pipelined batches of script calls (split by slot on a cluster)."""

    def __init__(self, client: redis.Redis | RedisCluster) -> None:
        self.client = client
        self.cluster = isinstance(client, RedisCluster)
        self._script = client.register_script(WRITE_NEWER_LUA)

    def write(self, codec: Codec, rows: pa.Table, *, expiry_grace: timedelta, batch: int, now_ms: int) -> WriteResult:
        """Keys expire at event time + TTL + ``expiry_grace``; rows already past that are not written."""
        view = codec.view
        result = WriteResult()
        if rows.num_rows == 0:
            return result
        ids = rows.column(view.entity.join_key).to_numpy()
        ev_ms = timestamps_us(rows.column(view.event_timestamp_column)) // 1000
        if view.ttl > timedelta(0):
            keep_ms = int((view.ttl + expiry_grace) / timedelta(milliseconds=1))
            pxat = ev_ms + keep_ms
        else:
            pxat = np.full(len(ids), now_ms + FOREVER_MS, dtype=np.int64)
        alive = pxat > now_ms
        result.expired = int((~alive).sum())
        if not alive.all():
            rows = rows.filter(pa.array(alive))
            ids, pxat = ids[alive], pxat[alive]
        values = codec.pack(rows)
        expiries = fixed_digits(pxat, PXAT_DIGITS)
        keys = [entity_key(view.name, int(i)) for i in ids.tolist()]
        if self.cluster:
            self._write_cluster(keys, values, expiries, codec.size, result)
            return result
        pipe = self.client.pipeline(transaction=False)
        size = codec.size
        for lo in range(0, len(keys), batch):
            hi = min(lo + batch, len(keys))
            args: list[Any] = [size, values[lo * size : hi * size], expiries[lo * PXAT_DIGITS : hi * PXAT_DIGITS]]
            self._script(keys=keys[lo:hi], args=args, client=pipe)
        for w, s, u in pipe.execute():
            result.written += w
            result.stale += s
            result.unchanged += u
        return result

    def _write_cluster(self, keys: list[str], values: bytes, expiries: bytes, size: int, result: WriteResult) -> None:
        # A script may only touch keys of one slot, and redis-py's cluster pipeline refuses scripts:
        # group keys by slot, then pipeline one script call per slot on each primary's own connection.
        cluster: RedisCluster = self.client  # type: ignore[assignment]
        by_node: dict[str, dict[int, list[int]]] = {}
        nodes: dict[str, Any] = {}
        for i, k in enumerate(keys):
            slot = cluster.keyslot(k)  # type: ignore[no-untyped-call]
            node = cluster.nodes_manager.get_node_from_slot(slot)
            nodes[node.name] = node
            by_node.setdefault(node.name, {}).setdefault(slot, []).append(i)
        for name, slots in by_node.items():
            pipe = cluster.get_redis_connection(nodes[name]).pipeline(transaction=False)
            for idx in slots.values():
                vals = b"".join(values[i * size : (i + 1) * size] for i in idx)
                exps = b"".join(expiries[i * PXAT_DIGITS : (i + 1) * PXAT_DIGITS] for i in idx)
                self._script(keys=[keys[i] for i in idx], args=[size, vals, exps], client=pipe)
            for w, s, u in pipe.execute():
                result.written += w
                result.stale += s
                result.unchanged += u
