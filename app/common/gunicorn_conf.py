"""gunicorn settings for the prediction service: the container's CMD and the tests use this file.

Everything is overridable with GUNICORN_CMD_ARGS or the env vars below.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

from uvicorn_worker import UvicornWorker

# libuv (under uvloop) accepts one connection per wake-up instead of draining the
# backlog, so keep-alive connections spread evenly over workers instead of one
# worker grabbing most of them (the bimodal throughput seen with plain gunicorn).
os.environ.setdefault("UV_TCP_SINGLE_ACCEPT", "1")

# Metrics from all workers are summed at scrape time through files in this directory.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="prom-multiproc-")

bind = os.environ.get("BIND", f"0.0.0.0:{os.environ.get('PORT', '8080')}")
workers = int(os.environ.get("WEB_CONCURRENCY", str(os.cpu_count() or 1)))
worker_class = "app.common.gunicorn_conf.LimitedUvicornWorker"
# Backpressure (docs/operations.md, "Guarantees: HTTP limits and worst cases"): past this many
# open connections or in-flight requests in one worker, uvicorn answers 503 at once and closes the
# connection instead of queueing the request behind the others (unlimited, p99 grew to seconds at
# 1,000 keep-alive connections: the measurement is in that section). 256 per worker stays above
# the 128 connections the benchmarks drive per pod even if every one lands on the same worker.
worker_connections = int(os.environ.get("WORKER_CONNECTIONS", "256"))
# In-flight requests get this long to finish after SIGTERM (keep below the pod's
# terminationGracePeriodSeconds minus its preStop sleep).
graceful_timeout = int(os.environ.get("GRACEFUL_TIMEOUT", "25"))
timeout = int(os.environ.get("WORKER_TIMEOUT", "60"))
keepalive = int(os.environ.get("KEEPALIVE", "75"))  # above typical LB idle timeouts (60 s)
# Connections the kernel holds before a worker accepts them. Workers accept at once and refuse
# with 503 past worker_connections, so this only absorbs a burst of connects; a deeper queue
# would let a stalled pod collect connections that wait for seconds.
backlog = int(os.environ.get("BACKLOG", "512"))
accesslog = None  # the app logs requests itself, as JSON with the request id
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None  # heartbeat off the (read-only) disk
# gunicorn 23+ opens a control socket under $HOME: not wanted on a read-only root filesystem.
control_socket_disable = True
# The master's own lines are JSON too, through the same formatter as the workers'.
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "app.common.logging.JsonFormatter"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
    "root": {"level": "INFO", "handlers": ["stderr"]},
    "loggers": {"gunicorn.error": {"level": "INFO", "handlers": [], "propagate": True}},
}


def on_starting(server: Any) -> None:
    # Stale files from a previous run would resurrect old samples.
    path = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    os.makedirs(path, exist_ok=True)
    for entry in os.listdir(path):
        full = os.path.join(path, entry)
        if os.path.isdir(full):
            shutil.rmtree(full, ignore_errors=True)
        else:
            os.unlink(full)


def child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


class LimitedUvicornWorker(UvicornWorker):  # type: ignore[misc]  # uvicorn_worker ships no type hints
    """The uvicorn worker with gunicorn's ``worker_connections`` as uvicorn's ``limit_concurrency``
    (gunicorn applies it to its own async workers only; uvicorn's worker ignores it)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config.limit_concurrency = self.cfg.worker_connections
