"""``python -m app.stream``: one stream scorer process (the chart's ``stream-scorer`` Deployment).

SIGTERM (a rollout, a scale-in) sets the stop flag: the micro-batch in hand is scored, written and
acknowledged, then the process exits 0. Whatever it had not read stays in the stream for the others.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

import redis.asyncio as aioredis
from prometheus_client import start_http_server
from redis.asyncio.cluster import RedisCluster
from redis.connection import HiredisRespSerializer
from redis.utils import HIREDIS_AVAILABLE

from app.common.app_factory import freeze_startup_objects
from app.common.logging import configure_logging
from app.features.offline import OfflineStore
from app.features.stores import DEFAULT_REGION
from app.modelstore import model_store
from app.runtime.registry import ModelRegistry
from app.stream.core.config import Settings as StreamSettings
from app.stream.scorer import StreamScorer
from app.stream.scripts import Broker

log = logging.getLogger("app.stream")


class _HiredisPacking:
    """Commands packed by hiredis, in C. redis-py's asyncio connection packs them in Python (its sync one uses
    hiredis when installed): with a micro-batch's hundreds of keys that was a fifth of the scorer's time under
    load. The bytes are the same."""

    _packer = HiredisRespSerializer()

    def pack_command(self, *args: Any) -> list[bytes]:
        packed: list[bytes] = self._packer.pack(*args)
        return packed


class _Connection(_HiredisPacking, aioredis.Connection):
    pass


def connect(settings: StreamSettings) -> Broker:
    if settings.redis_cluster:  # redis-py's cluster client takes no connection class: it packs in Python
        return RedisCluster.from_url(settings.redis_url, socket_timeout=5.0, socket_connect_timeout=2.0)
    kwargs: dict[str, Any] = {}
    if HIREDIS_AVAILABLE and settings.redis_url.startswith("redis://"):  # rediss:// and unix:// keep their own
        kwargs["connection_class"] = _Connection
    return aioredis.Redis.from_url(
        settings.redis_url, socket_timeout=5.0, socket_connect_timeout=2.0, health_check_interval=10, **kwargs
    )


def offline_log(settings: StreamSettings) -> OfflineStore | None:
    if not settings.offline_url:
        return None
    region = settings.s3_region or DEFAULT_REGION
    return OfflineStore(settings.offline_url, s3_endpoint_url=settings.s3_endpoint_url, s3_region=region)


async def serve(settings: StreamSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    registry = ModelRegistry(settings, model_store(settings))
    client = connect(settings)
    await registry.start()
    freeze_startup_objects()  # the models and modules live as long as the process: no full-GC scans of them
    log.info(
        "stream scorer started",
        extra={"consumer": settings.consumer, "stream": settings.stream, "shards": settings.shards},
    )
    try:
        await StreamScorer(settings, client, registry, offline_log(settings)).run(stop)
    finally:
        await registry.stop()
        await client.aclose()
    log.info("stream scorer stopped", extra={"consumer": settings.consumer})


def main() -> None:
    settings = StreamSettings()
    configure_logging(settings.log_level)
    if not settings.model:
        raise SystemExit("STREAM_MODEL is not set: name the model that scores the events")
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.metrics_address)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
