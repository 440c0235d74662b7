"""Metrics of the preprocessing service (HTTP metrics: app.common.http_metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from app.common.http_metrics import LATENCY_BUCKETS

STAGE_LATENCY = Histogram(
    "preprocess_stage_duration_seconds",
    "Time per stage: decode, resize, tokenize, triton",
    ["stage"],
    buckets=LATENCY_BUCKETS,
)
TRITON_ERRORS = Counter("triton_errors_total", "Failed Triton calls by kind", ["kind"])
REJECTED_INPUTS = Counter("preprocess_rejected_inputs_total", "Inputs refused with a 4xx, by reason", ["reason"])
PREDICTIONS = Counter("multimodal_predictions_total", "Predictions by class", ["class"])
