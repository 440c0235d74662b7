"""HTTP metrics every service exports, and the multiprocess-aware /metrics route.

Under gunicorn each worker writes its samples to files in
``PROMETHEUS_MULTIPROC_DIR`` and a scrape of any worker sums them all (see
gunicorn_conf.py, which also removes a dead worker's live gauges).
"""

from __future__ import annotations

import os

from fastapi import APIRouter
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.responses import Response

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

REQUESTS = Counter(
    "http_requests_total", "HTTP requests by route template, method and status", ["route", "method", "status"]
)
REQUEST_LATENCY = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency by route template and method",
    ["route", "method"],
    buckets=LATENCY_BUCKETS,
)


def render() -> tuple[bytes, str]:
    """The exposition text: all live and dead workers when multiprocess, else this process."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


router = APIRouter(tags=["metrics"])


@router.get("/metrics")
def prometheus_metrics() -> Response:
    # A sync route: reading every worker's files is blocking I/O, keep it off the event loop.
    body, content_type = render()
    return Response(body, media_type=content_type)
