"""Batch-job metrics: pushed to a Prometheus Pushgateway at the end of a run (Prometheus cannot
scrape a Job that has exited). Grouped by job and labels, so each shard keeps its own series."""

from __future__ import annotations

import logging
import time

from prometheus_client import CollectorRegistry, Gauge, pushadd_to_gateway

log = logging.getLogger(__name__)


def push(gateway: str | None, job: str, grouping: dict[str, str], values: dict[str, float], success: bool) -> None:
    if not gateway:
        return
    registry = CollectorRegistry()
    for name, value in values.items():
        Gauge(f"mlplatform_job_{name}", f"{job}: {name.replace('_', ' ')} of the last run", registry=registry).set(
            value
        )
    Gauge("mlplatform_job_last_run_timestamp_seconds", "end of the last run", registry=registry).set(time.time())
    Gauge("mlplatform_job_last_run_success", "1 if the last run succeeded", registry=registry).set(1 if success else 0)
    if success:
        Gauge(
            "mlplatform_job_last_success_timestamp_seconds",
            "end of the last successful run",
            registry=registry,
        ).set(time.time())
    try:
        # POST (pushadd): a failed run keeps the previous last_success timestamp.
        pushadd_to_gateway(gateway, job=job, grouping_key=grouping, registry=registry, timeout=5)
    except OSError as exc:  # metrics must not fail the job that produced the data
        log.warning("could not push metrics", extra={"gateway": gateway, "error": str(exc)})
