"""Batch-job metrics: pushed to a Prometheus Pushgateway at the end of a run (Prometheus cannot
scrape a Job that has exited). Grouped by job and labels, so each shard keeps its own series.

The values are plain metric families, not Gauge objects: a Gauge takes its value class from
``PROMETHEUS_MULTIPROC_DIR`` (set for the gunicorn services, and in a pod's environment
possibly for a Job too) and in multiprocess mode writes mmap files into that directory, which
raises FileNotFoundError when it does not exist and so failed the run after its work was done.
A push has one process and one registry: nothing here may depend on that directory."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, pushadd_to_gateway
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)


class _Values(Collector):
    """A fixed set of gauges, collected as-is."""

    def __init__(self, families: Iterable[GaugeMetricFamily]) -> None:
        self._families = list(families)

    def collect(self) -> Iterator[Metric]:
        yield from self._families


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def families(job: str, values: dict[str, float], success: bool, now: float) -> list[GaugeMetricFamily]:
    out = [
        _gauge(f"mlplatform_job_{name}", f"{job}: {name.replace('_', ' ')} of the last run", value)
        for name, value in values.items()
    ]
    out.append(_gauge("mlplatform_job_last_run_timestamp_seconds", "end of the last run", now))
    out.append(_gauge("mlplatform_job_last_run_success", "1 if the last run succeeded", 1 if success else 0))
    if success:
        out.append(_gauge("mlplatform_job_last_success_timestamp_seconds", "end of the last successful run", now))
    return out


def push(gateway: str | None, job: str, grouping: dict[str, str], values: dict[str, float], success: bool) -> None:
    if not gateway:
        return
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Values(families(job, values, success, time.time())))
    try:
        # POST (pushadd): a failed run keeps the previous last_success timestamp.
        pushadd_to_gateway(gateway, job=job, grouping_key=grouping, registry=registry, timeout=5)
    except OSError as exc:  # metrics must not fail the job that produced the data
        log.warning("could not push metrics", extra={"gateway": gateway, "error": str(exc)})


@contextlib.contextmanager
def pushed(gateway: str | None, job: str, grouping: dict[str, str]) -> Iterator[dict[str, float]]:
    """Push the block's metrics when it ends, failed or not: its duration, the values it put in the dict it
    is given, and success if it finished without an exception."""
    started = time.monotonic()
    values: dict[str, float] = {}
    finished = False
    try:
        yield values
        finished = True
    finally:
        push(gateway, job, grouping, {"duration_seconds": time.monotonic() - started, **values}, finished)
