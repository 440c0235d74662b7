"""Every Prometheus metric the prediction service exports, in one place.

Under gunicorn each worker writes its samples to files in
``PROMETHEUS_MULTIPROC_DIR`` and a scrape of any worker sums them all (see
gunicorn_conf.py, which also removes a dead worker's live gauges).
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

REQUESTS = Counter(
    "http_requests_total", "HTTP requests by route template, method and status", ["route", "method", "status"]
)
REQUEST_LATENCY = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency by route template and method",
    ["route", "method"],
    buckets=LATENCY_BUCKETS,
)
PREDICTIONS = Counter(
    "model_predictions_total",
    "Predicted rows by model, version and predicted class",
    ["model", "version", "class"],
)
BATCH_SIZE = Histogram(
    "model_batch_size_rows", "Rows per vectorized predict call", ["model"], buckets=BATCH_BUCKETS
)
PREDICT_LATENCY = Histogram(
    "model_predict_duration_seconds",
    "Time in one vectorized predict call",
    ["model"],
    buckets=LATENCY_BUCKETS,
)
MODEL_LOAD_FAILURES = Counter(
    "model_load_failures_total", "Model versions that failed to load or verify", ["model", "version"]
)
MODEL_LOADS = Counter("model_loads_total", "Model versions loaded and verified", ["model", "version"])
MODEL_INFO = Gauge(
    "model_info",
    "1 for the model version being served, 0 for replaced ones",
    ["model", "version", "engine"],
    multiprocess_mode="livemax",
)
MODELS_READY = Gauge(
    "models_ready", "1 when every configured model is loaded and verified", multiprocess_mode="livemin"
)


def render() -> tuple[bytes, str]:
    """The exposition text: all live and dead workers when multiprocess, else this process."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
