"""``python -m jobs replay``: replay the offline store's transactions into the event stream.

Events go out in event-time order, at a chosen rate (0: as fast as Redis takes them), each to the shard
of its entity (``entity mod STREAM_SHARDS``), the order the scorer relies on for one entity. The stream is
capped with ``MAXLEN ~`` so that a replay cannot fill Redis. Re-running a replay re-sends the same event
ids: the scorer's effects are keyed by event id, so it decides nothing twice.
"""

from __future__ import annotations

import argparse
import time
from datetime import timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from app.features.stores import offline_store
from app.stream.core.config import Settings as StreamSettings
from jobs.settings import JobSettings

PIPELINE = 500  # events per round trip


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from jobs.featurestore import _when  # the feature jobs' date parser: one format for every job

    p = sub.add_parser("replay", help="replay offline transactions into the event stream (Redis Streams)")
    p.add_argument("--dataset", default="transactions", help="offline dataset of events")
    p.add_argument("--time-column", default="timestamp", help="the events' event-time column")
    p.add_argument("--id-column", default="transaction_id", help="the events' unique id column")
    p.add_argument("--exclude", default="is_fraud", help="comma-separated columns not sent (labels)")
    p.add_argument("--start", type=_when, required=True, help="first day replayed (UTC, YYYY-MM-DD)")
    p.add_argument("--days", type=int, default=1, help="days replayed")
    p.add_argument("--rate", type=float, default=0.0, help="events per second (0: as fast as possible)")
    p.add_argument("--limit", type=int, default=0, help="replay at most this many events (0: all)")
    p.add_argument("--maxlen", type=int, default=1_000_000, help="approximate cap of each shard's stream")
    p.set_defaults(handler=replay)


def replay(args: argparse.Namespace, settings: JobSettings) -> dict[str, Any]:
    import redis

    if args.rate < 0 or args.limit < 0 or args.days < 1:
        raise ValueError("--rate and --limit must be >= 0, --days >= 1")
    stream = StreamSettings()
    off = offline_store(settings.features)
    table = off.read_window(args.dataset, args.time_column, args.start, args.start + timedelta(days=args.days))
    for column in (args.id_column, args.time_column, stream.entity_field):
        if column not in table.column_names:
            raise ValueError(f"dataset {args.dataset!r} has no column {column!r}; it has {table.column_names}")
    table = table.sort_by(args.time_column)
    if args.limit:
        table = table.slice(0, args.limit)
    excluded = {c.strip() for c in args.exclude.split(",") if c.strip()} | {args.id_column, args.time_column}
    columns = {
        stream.event_id_field: pc.cast(table.column(args.id_column), pa.string()).to_pylist(),
        stream.event_time_field: _epoch_ms(table.column(args.time_column)),
    }
    columns |= {c: table.column(c).to_pylist() for c in table.column_names if c not in excluded}
    entities = np.asarray(table.column(stream.entity_field).to_numpy(), dtype=np.int64)
    keys = stream.keys
    client = (
        redis.RedisCluster.from_url(stream.redis_url)
        if stream.redis_cluster
        else redis.Redis.from_url(stream.redis_url)
    )
    names = list(columns)
    start = time.monotonic()
    sent = 0
    try:
        pipe = client.pipeline(transaction=False)
        for i in range(table.num_rows):
            fields = {n: str(columns[n][i]) for n in names}
            pipe.xadd(keys.events(keys.shard_of(int(entities[i]))), fields, maxlen=args.maxlen, approximate=True)  # type: ignore[arg-type]
            if len(pipe) >= PIPELINE or i == table.num_rows - 1:
                pipe.execute()
                sent = i + 1
                if args.rate:
                    ahead = sent / args.rate - (time.monotonic() - start)
                    if ahead > 0:
                        time.sleep(ahead)
    finally:
        client.close()
    elapsed = time.monotonic() - start
    return {
        "events": sent,
        "shards": stream.shards,
        "stream": stream.stream,
        "seconds": round(elapsed, 3),
        "rate": round(sent / elapsed, 1) if elapsed > 0 else None,
    }


def _epoch_ms(column: pa.ChunkedArray) -> list[int]:
    """Event times as milliseconds since the epoch, whatever the timestamp's unit."""
    if not pa.types.is_timestamp(column.type):
        raise ValueError(f"the time column is {column.type}, not a timestamp")
    tz = column.type.tz
    ms = pc.cast(column, pa.timestamp("ms", tz=tz), safe=False)
    return [int(v) for v in pc.cast(ms, pa.int64()).to_pylist()]
