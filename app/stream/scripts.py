"""Lua scripts run by SHA in pipelines, reloaded when the server has forgotten them.

A Redis restart (or a failover to a replica that never saw SCRIPT LOAD) empties the script cache; the
first EVALSHA then fails with NOSCRIPT. The scorer must survive that without losing events, so every
batch that hits NOSCRIPT loads the scripts again (on every primary of a cluster) and runs once more:
the scripts are idempotent, so running a batch twice is safe.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError

Broker = aioredis.Redis | RedisCluster
Call = tuple[Sequence[str], Sequence[Any]]


class Scripts:
    def __init__(self, client: Broker, **sources: str) -> None:
        self.client = client
        self.sources = sources
        self.shas = {name: hashlib.sha1(src.encode()).hexdigest() for name, src in sources.items()}

    async def load(self) -> None:
        # On a cluster, SCRIPT LOAD goes to every primary (redis-py's default for that command).
        for src in self.sources.values():
            await self.client.script_load(src)

    async def run_many(self, name: str, calls: Sequence[Call]) -> list[Any]:
        """Run script ``name`` once per ``(keys, args)`` in one pipeline; replies in order."""
        if not calls:
            return []
        try:
            return await self._pipeline(name, calls)
        except NoScriptError:
            await self.load()
            return await self._pipeline(name, calls)

    async def _pipeline(self, name: str, calls: Sequence[Call]) -> list[Any]:
        sha = self.shas[name]
        pipe = self.client.pipeline(transaction=False)
        for keys, args in calls:
            # execute_command, not evalsha: a cluster pipeline refuses the method but routes the command by its keys
            pipe.execute_command("EVALSHA", sha, len(keys), *keys, *args)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        for r in replies:
            if isinstance(r, NoScriptError):
                raise r
            if isinstance(r, Exception):
                raise r
        return replies


def text(v: Any) -> str:
    """A reply or field as text: Redis gives bytes (str with decode_responses); undecodable bytes from a
    producer are replaced, never raised on, so a bad field name cannot stop the scorer."""
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
