"""Shard ownership: each shard of the event stream has one active reader at a time, so per-entity order
holds with any number of replicas.

A replica holds a shard through a lease in Redis (``<stream>:{i}:owner`` = its consumer name, with a
PX expiry of ``lease_ms``), renewed on every pass. It reads, claims and writes only the shards it holds:

- **Fair share.** Replicas register in ``<stream>:consumers`` (a sorted set of last-seen times). A replica
  takes free shards up to ``ceil(shards / live replicas)`` and, when more replicas are live (scale-out),
  lets go of the ones above its share between batches. A standby replica (more replicas than shards) holds
  none and takes over when a lease expires.
- **Crash.** A replica that stops renewing (SIGKILL, a partition) loses its shards after ``lease_ms``. A
  restarted pod with the same name (the pod name) finds its leases still its own and goes on at once.
- **Handover.** The new holder takes over the shard's pending entries at once (XAUTOCLAIM with no idle
  time), before any new entry: the shard's order is kept across the handover.
- **Fencing.** The scripts that write (the window update, the decision and acknowledgement) check, in the
  same atomic call, that the caller still holds the lease. A replica that lost its lease while scoring
  (stalled past ``lease_ms``) writes nothing; its batch stays pending for the holder.
- **SIGTERM.** The leases are released after the last batch, so a successor takes over without waiting.
"""

from __future__ import annotations

import math
import time
import zlib

from app.common.stream_keys import StreamKeys
from app.stream.scripts import Broker, Scripts

# KEYS: lease. ARGV: consumer, lease ms, may take (1/0) -> 1 held (renewed), 2 taken now, 0 not ours
_ACQUIRE = """
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not cur and ARGV[3] == '1' then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 2
end
return 0
"""

# KEYS: lease. ARGV: consumer -> 1 released, 0 not ours
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

LEASE_LOST = "LEASE_LOST"  # the error the fenced scripts raise; see FENCE_LUA

# Lua prelude of every fenced write: KEYS[1] is the shard's lease, the fence's ARGV names the caller ('' =
# unfenced, for tools and tests that write outside a scorer).
FENCE_LUA = """
local function fence(owner)
  if owner ~= '' and redis.call('GET', KEYS[1]) ~= owner then
    return redis.error_reply('LEASE_LOST the shard is held by another consumer')
  end
  return nil
end
"""


def is_lease_lost(exc: BaseException) -> bool:
    return LEASE_LOST in str(exc)


class ShardLeases:
    def __init__(self, client: Broker, keys: StreamKeys, consumer: str, lease_ms: int) -> None:
        self.client = client
        self.keys = keys
        self.consumer = consumer
        self.lease_ms = lease_ms
        self.held: set[int] = set()
        self.scripts = Scripts(client, acquire=_ACQUIRE, release=_RELEASE)
        self.registry = f"{keys.stream}:consumers"
        self._next_take = 0.0

    async def refresh(self) -> list[int]:
        """Renew what is held, take free shards up to the fair share, let go of any above it. Returns the
        shards taken in this call (their pending entries are to be taken over first)."""
        now = int(time.time() * 1000)
        pipe = self.client.pipeline(transaction=False)
        pipe.zadd(self.registry, {self.consumer: now})
        pipe.zremrangebyscore(self.registry, "-inf", now - 3 * self.lease_ms)
        pipe.zcount(self.registry, now - 2 * self.lease_ms, "+inf")
        pipe.pexpire(self.registry, 10 * self.lease_ms)
        live = max(1, int((await pipe.execute())[2]))
        share = math.ceil(self.keys.shards / live)
        held = sorted(self.held)
        renewed = await self.scripts.run_many(
            "acquire", [([self.keys.lease(s)], [self.consumer, self.lease_ms, 0]) for s in held]
        )
        self.held = {s for s, r in zip(held, renewed, strict=True) if int(r)}
        extra = sorted(self.held)[share:]
        if extra:  # scale-out: above the share, between batches; the newcomer takes them
            await self._release(extra)
            self.held -= set(extra)
        taken: list[int] = []
        if len(self.held) < share and time.monotonic() >= self._next_take:
            self._next_take = time.monotonic() + self.lease_ms / 4000
            # Start at a place of our own, so that replicas coming up together try different shards first.
            start = zlib.crc32(self.consumer.encode()) % self.keys.shards
            for i in range(self.keys.shards):
                shard = (start + i) % self.keys.shards
                if shard in self.held:
                    continue
                (r,) = await self.scripts.run_many(
                    "acquire", [([self.keys.lease(shard)], [self.consumer, self.lease_ms, 1])]
                )
                if int(r):
                    self.held.add(shard)
                    taken.append(shard)
                    if len(self.held) >= share:
                        break
        return taken

    def lost(self, shard: int) -> None:
        self.held.discard(shard)

    async def release_all(self) -> None:
        await self._release(sorted(self.held))
        self.held.clear()
        await self.client.zrem(self.registry, self.consumer)

    async def _release(self, shards: list[int]) -> None:
        await self.scripts.run_many("release", [([self.keys.lease(s)], [self.consumer]) for s in shards])
