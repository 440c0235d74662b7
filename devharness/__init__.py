"""The development process harness: starts and stops the real servers (gunicorn, valkey, SeaweedFS,
tritonserver, the Prometheus Pushgateway, any other binary) for the tests, the benchmarks and the demo.

It is a package of its own, installed with the project for development (pyproject: packages.find) but
never copied into an image (images/python/Dockerfile copies app, jobs and examples only); nothing under
app/ imports it (tests/test_layers.py).

- ``devharness.processes``: the registry of started processes (``Server``), waiting, free ports, and the
  leak checks (``stop_leftovers``, ``leaves_nothing_running``).
- ``devharness.servers``: one class per server.
- ``devharness.jobs``: ``python -m jobs ...`` as a Job runs it, with its summary line (``run_job``).
"""

from devharness.processes import (
    ROOT,
    VENV_BIN,
    Leftover,
    Server,
    Started,
    Stoppable,
    free_port,
    group_members,
    history,
    http_ok,
    last_seq,
    leaves_nothing_running,
    registered,
    report_leftovers,
    stop_leftovers,
    wait_http,
    wait_until,
)
from devharness.servers import (
    TRITON_CPU_ENTRYPOINT,
    GunicornService,
    Pushgateway,
    RedisServer,
    S3Server,
    TritonServer,
    debian_binary,
    valkey_binary,
    weed_binary,
)

__all__ = [
    "ROOT",
    "TRITON_CPU_ENTRYPOINT",
    "VENV_BIN",
    "GunicornService",
    "Leftover",
    "Pushgateway",
    "RedisServer",
    "S3Server",
    "Server",
    "Started",
    "Stoppable",
    "TritonServer",
    "debian_binary",
    "free_port",
    "group_members",
    "history",
    "http_ok",
    "last_seq",
    "leaves_nothing_running",
    "registered",
    "report_leftovers",
    "stop_leftovers",
    "valkey_binary",
    "wait_http",
    "wait_until",
    "weed_binary",
]
