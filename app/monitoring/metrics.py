"""The metrics serving writes for monitoring. All are counters (or a livemax gauge), so the
multiprocess collector sums them over gunicorn workers and Prometheus over pods: drift is computed
from the summed bin counts (jobs/monitoring.py), never inside one worker."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

FEATURE_BINS = Counter(
    "model_feature_bin",
    "Served rows per reference bin of each feature (feature __score__: the prediction score)",
    ["model", "version", "feature", "bin"],
)
SCHEMA_SKEW = Counter(
    "model_feature_schema_violations",
    "Served values outside the training range (below_min, above_max), unknown categories and missing values",
    ["model", "version", "feature", "kind"],
)
MONITORED_ROWS = Counter("model_monitored_rows", "Served rows binned for monitoring", ["model", "version"])
REFERENCE = Gauge(
    "model_reference_profile",
    "1 when the version being served has a reference profile, 0 for 'no reference'",
    ["model", "version"],
    multiprocess_mode="livemax",
)
LOGGED_ROWS = Counter("model_served_log_rows", "Rows written to the sampled served-data log", ["model"])
LOG_DROPPED = Counter(
    "model_served_log_dropped_rows",
    "Sampled rows the served-data log dropped (buffer_full, write_error)",
    ["model", "reason"],
)
