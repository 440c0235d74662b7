"""Settings of the stream scorer: environment variables prefixed ``STREAM_``.

The scorer serves models with the model runtime the prediction service uses (app/runtime: hot reload,
verification, fallback to the previous version), so it reads the runtime's settings too, under its own
prefix (``STREAM_POLL_INTERVAL_SECONDS``, ...), and the shared names (``MODEL_STORE_URL``, ``FEATURES_REDIS_URL``,
``FEATURES_REPO``, ...) unprefixed, like every other program.
"""

from __future__ import annotations

import os
import socket
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from app.common.stream_keys import StreamKeys
from app.runtime.settings import RuntimeSettings
from app.stream.windows import Window, parse_windows


class Settings(RuntimeSettings):
    model_config = SettingsConfigDict(env_prefix="STREAM_", use_attribute_docstrings=True, extra="ignore")

    redis_url: str = "redis://localhost:6379/0"
    """The broker: the Redis (or Redis Cluster) that holds the event, decision and dead-letter streams."""

    redis_cluster: bool = False
    """The broker is a Redis Cluster: the streams are sharded with a hash tag per shard."""

    stream: str = "transactions"
    """Name of the event stream; shard ``i`` of ``shards`` is the key ``<stream>:{i}``."""

    shards: int = Field(default=1, ge=1, le=1024)
    """Number of event-stream shards (events of one entity always go to one shard: entity id mod shards)."""

    group: str = "scorer"
    """Consumer group; every replica of the scorer is a consumer of it, on the shards whose lease it holds."""

    consumer: str = Field(default_factory=lambda: os.environ.get("POD_NAME") or socket.gethostname())
    """This consumer's name: stable across restarts (the pod name), so a restarted scorer takes back its
    own pending events first."""

    model: str = ""
    """The model that scores the events; the scorer refuses to start without one (the platform names no
    model of its own). Producers (``jobs replay``) read these settings too and need none."""

    event_id_field: str = "event_id"
    """Field holding the event's unique id; decisions and feature updates are keyed by it."""

    event_time_field: str = "event_time_ms"
    """Field holding the event time, in milliseconds since the epoch (UTC)."""

    entity_field: str = "user_id"
    """The entity whose streaming features an event updates (an integer id)."""

    value_field: str = "amount"
    """The numeric field that the windows sum."""

    windows: str = "10m,1h"
    """Sliding event-time windows of the streaming features: counts and sums of ``value_field``."""

    allowed_lateness_ms: int = Field(default=300_000, ge=0)
    """How far behind an entity's newest event an event may arrive and still be counted."""

    batch_size: int = Field(default=256, ge=1, le=10_000)
    """Most events read and scored as one micro-batch (one XREADGROUP, one predict call)."""

    block_ms: int = Field(default=200, ge=1, le=60_000)
    """How long one XREADGROUP waits for new events when the stream is idle."""

    shard_lease_ms: int = Field(default=10_000, ge=200)
    """A replica holds each shard it reads through a lease renewed on every pass; one that stops renewing
    (killed, partitioned) loses its shards after this long and another replica takes them over."""

    claim_idle_ms: int = Field(default=30_000, ge=100)
    """A pending event idle this long belongs to a crashed consumer: XAUTOCLAIM takes it over."""

    max_deliveries: int = Field(default=5, ge=1)
    """An event delivered this many times without success goes to the dead-letter stream."""

    output_stream: str = "decisions"
    """Stream of decisions (shard ``i``: ``<output_stream>:{i}``)."""

    dead_letter_stream: str = "dead-letters"
    """Stream of events that could not be scored, with the reason (shard ``i``: ``<name>:{i}``)."""

    output_maxlen: int = Field(default=1_000_000, ge=1000)
    """Approximate cap (MAXLEN ~) of the decision and dead-letter streams."""

    decision_ttl_seconds: int = Field(default=7 * 86_400, ge=60)
    """How long a decision stays readable by event id."""

    batching_enabled: bool = False
    """The prediction service's request coalescing: off, a micro-batch is already one predict call."""

    missing_entity_policy: Literal["error", "zeros"] = "zeros"
    """An entity with no batch features (a new user) is scored as one with no history; "error" would leave
    its events pending until they are dead-lettered."""

    offline_url: str | None = Field(default=None, validation_alias="FEATURES_OFFLINE_URL")
    """The offline store that the streaming features are appended to (``FEATURES_OFFLINE_URL``, the feature
    store's own name); unset: they are not logged."""

    feature_log_dataset: str = "features/stream_activity"
    """Offline dataset (a Delta table) of the streaming features as served."""

    feature_log_flush_seconds: float = Field(default=30.0, gt=0)
    """Longest time a served row waits before it is appended to the offline store."""

    feature_log_max_rows: int = Field(default=50_000, ge=1)
    """Rows buffered before an append, at most."""

    heartbeat_file: str | None = None
    """Touched after every pass over the shards: the liveness probe checks its age (a stuck loop fails it)."""

    metrics_port: int = Field(default=9100, ge=0, le=65535)
    """Port of the scorer's /metrics (0: no metrics server)."""

    metrics_address: str = "0.0.0.0"
    """Address the metrics server listens on."""

    @field_validator("windows")
    @classmethod
    def _windows_parse(cls, value: str) -> str:
        parse_windows(value)
        return value

    @property
    def keys(self) -> StreamKeys:
        return StreamKeys(self.stream, self.output_stream, self.dead_letter_stream, self.shards)

    @property
    def window_list(self) -> tuple[Window, ...]:
        return parse_windows(self.windows)
