"""A Redis lock with expiry that a background thread renews while its holder is alive.

Two loads of the same view and shard cannot overlap; a holder that dies releases the lock
when its expiry passes.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid

import redis
from redis.cluster import RedisCluster
from redis.exceptions import LockError, RedisError

from app.features.online.errors import OnlineStoreUnavailableError

log = logging.getLogger(__name__)


class MaterializationLockedError(Exception):
    """Another run of the same view and shard holds the lock."""


class RenewedLock:
    """Held between ``__enter__`` and ``__exit__``; ``ttl_s`` is how long it outlives a dead holder."""

    def __init__(self, client: redis.Redis | RedisCluster, name: str, ttl_s: float, wait_s: float) -> None:
        self.lock = client.lock(
            name, timeout=ttl_s, blocking=wait_s > 0, blocking_timeout=wait_s or None, thread_local=False
        )
        self.name, self.ttl_s = name, ttl_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, daemon=True)

    def __enter__(self) -> RenewedLock:
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
