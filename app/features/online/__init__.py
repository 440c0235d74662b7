"""Online store: the latest feature values per entity in Redis (or Redis Cluster, or Valkey).

Layout, one string per (view, entity)::

    key    fs:<view>:{<entity id>}          the hash tag keeps an entity's views in one cluster slot
    value  EEEEEEEEEEEEEEEECCCCCCCCCCCCCCCC  event and created time, 16 decimal digits each (µs)
           B...                              null bitmap, one bit per feature
           <packed little-endian record>     the view's features in declaration order

About 90 bytes of value for 10 features, against ~200 bytes of protobuf per value
in Feast. The text time prefix lets a Lua script compare versions inside Redis:
a write lands only if its (event, created) time is newer than the stored one, so
an older row never overwrites a newer one and re-running a load is a no-op. Keys
expire at event time + TTL + grace: reads within the grace report EXPIRED,
after it MISSING.

The store also owns its bookkeeping keys (``fs:meta:...`` watermarks, ``fs:lock:...`` locks).

Modules, by concern:

* ``keys``: every key name the store uses;
* ``codec``: one view's values packed and unpacked;
* ``writer``: the conditional (newer-wins) batch write, Lua included;
* ``decoder``: raw MGET replies into vectors with statuses;
* ``lock``: the renewed lock that keeps two loads of one view and shard apart;
* ``store``: the synchronous store (writes, reads, watermarks, locks) for jobs and tools;
* ``reader``: the asynchronous reader for the services' event loops.
"""

from app.features.online.codec import HEADER, Codec
from app.features.online.decoder import Decoder, FeatureVector, Status
from app.features.online.errors import OnlineStoreUnavailableError
from app.features.online.keys import KEY_PREFIX, entity_key, read_keys
from app.features.online.lock import MaterializationLockedError
from app.features.online.reader import AsyncOnlineReader
from app.features.online.store import OnlineStore, connect
from app.features.online.writer import PXAT_DIGITS, WRITE_NEWER_LUA, WriteResult

__all__ = [
    "HEADER",
    "KEY_PREFIX",
    "PXAT_DIGITS",
    "WRITE_NEWER_LUA",
    "AsyncOnlineReader",
    "Codec",
    "Decoder",
    "FeatureVector",
    "MaterializationLockedError",
    "OnlineStore",
    "OnlineStoreUnavailableError",
    "Status",
    "WriteResult",
    "connect",
    "entity_key",
    "read_keys",
]
