"""Model metrics of the prediction service (HTTP metrics: app.common.http_metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from app.common.http_metrics import LATENCY_BUCKETS

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

PREDICTIONS = Counter(
    "model_predictions_total",
    "Predicted rows by model, version and predicted class",
    ["model", "version", "class"],
)
BATCH_SIZE = Histogram("model_batch_size_rows", "Rows per vectorized predict call", ["model"], buckets=BATCH_BUCKETS)
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
ENGINE_LATENCY = Gauge(
    "model_engine_latency_seconds",
    "Median seconds per predict call of each engine, timed by the publisher on 1 and 64 rows (why this engine)",
    ["model", "version", "engine", "rows"],
    multiprocess_mode="livemax",
)
MODELS_READY = Gauge(
    "models_ready", "1 when every configured model is loaded and verified", multiprocess_mode="livemin"
)
