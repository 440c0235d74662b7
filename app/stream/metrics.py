"""The stream scorer's metrics (one process per pod: no multiprocess mode)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from app.common.http_metrics import LATENCY_BUCKETS
from app.runtime.metrics import BATCH_BUCKETS

EVENTS = Counter(
    "stream_events_total",
    "Stream events handled, by outcome: scored, duplicate (redelivered, already decided), dead_letter",
    ["stream", "outcome"],
)
DEAD_LETTERS = Counter(
    "stream_dead_letters_total",
    "Events sent to the dead-letter stream, by reason: malformed, invalid_input, model_error, max_deliveries, trimmed",
    ["stream", "reason"],
)
BATCH_SIZE = Histogram("stream_batch_size_events", "Events per micro-batch", ["stream"], buckets=BATCH_BUCKETS)
DECISION_LATENCY = Histogram(
    "stream_event_to_decision_seconds",
    "From the event's append to the stream (its entry id's time) to its decision being written",
    ["stream"],
    buckets=sorted({*LATENCY_BUCKETS, 5.0, 10.0, 30.0, 60.0}),  # a set: LATENCY_BUCKETS ends at 5.0 already
)
LAG = Gauge("stream_consumer_lag_entries", "Entries of the shard not yet delivered to the group", ["stream", "shard"])
PENDING = Gauge("stream_pending_entries", "Entries delivered but not acknowledged", ["stream", "shard"])
OLDEST_PENDING_AGE = Gauge(
    "stream_oldest_pending_age_seconds", "Age of the oldest unacknowledged entry (0: none)", ["stream", "shard"]
)
FAILED_BATCHES = Counter(
    "stream_failed_batches_total", "Micro-batches left pending for retry, by error type", ["stream", "error"]
)
SHARDS_HELD = Gauge("stream_shards_held", "Event-stream shards whose lease this replica holds", ["stream"])
LEASES_LOST = Counter(
    "stream_leases_lost_total", "Batches not written because the replica lost its shard's lease meanwhile", ["stream"]
)
