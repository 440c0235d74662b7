"""Metrics of the feature server (HTTP metrics: app.common.http_metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from app.common.http_metrics import LATENCY_BUCKETS

READ_LATENCY = Histogram("online_store_read_duration_seconds", "One online-store round trip", buckets=LATENCY_BUCKETS)
READ_ERRORS = Counter("online_store_errors_total", "Online-store reads that failed or timed out")
ENTITIES = Histogram(
    "feature_request_entities", "Entities per request", buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
)
STATUSES = Counter("feature_values_total", "Entity lookups by view and status", ["view", "status"])
