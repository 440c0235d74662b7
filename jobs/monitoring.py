"""``python -m jobs drift-report``: drift and schema skew of a served model version against its training
profile (the chart's drift CronJob runs it). The served counts come from Prometheus (``--prometheus-url``,
one result per ``--window``), from services' ``/metrics`` pages (``--metrics-url``, counts since the pods
started: window ``total``) or from the sampled served-data log (``--served-log``). It prints a readable
table on stderr (stdout holds the summary line), writes JSON, Parquet and a self-contained HTML report
with ``--out``, and pushes ``model_feature_drift`` to a Pushgateway with ``--pushgateway``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app.modelstore import model_store
from app.monitoring.drift import DEFAULT_THRESHOLDS, compare
from app.monitoring.profile import parse_profile
from app.monitoring.report import DriftReport, WindowReport
from app.monitoring.sources import Served, fetch_text, from_metrics_text, from_prometheus, from_served_log
from jobs.settings import JobSettings


def thresholds_for(model: str, raw: str | None) -> dict[str, float]:
    """Per-model thresholds: ``--thresholds`` is JSON, either ``{"psi": 0.3}`` (this model) or
    ``{"model-a": {"psi": 0.3}, "*": {...}}``; what it leaves out keeps the default."""
    out = dict(DEFAULT_THRESHOLDS)
    if not raw:
        return out
    try:
        spec = json.loads(Path(raw[1:]).read_text() if raw.startswith("@") else raw)
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"--thresholds: not JSON (or @file of JSON): {exc}") from None
    if not isinstance(spec, dict):
        raise ValueError("--thresholds: want a JSON object")
    nested = any(isinstance(v, dict) for v in spec.values())
    for part in [spec.get("*", {}), spec.get(model, {})] if nested else [spec]:
        for k, v in part.items():
            if k not in DEFAULT_THRESHOLDS:
                raise ValueError(f"--thresholds: unknown statistic {k!r}; known: {sorted(DEFAULT_THRESHOLDS)}")
            if not isinstance(v, int | float) or v < 0:
                raise ValueError(f"--thresholds: {k} must be a non-negative number, got {v!r}")
            out[k] = float(v)
    return out


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("drift-report", help="drift and schema skew of a served model against its training profile")
    p.add_argument("--model", required=True)
    p.add_argument("--version", help="default: the model's latest")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prometheus-url", help="Prometheus base URL: the counters summed over pods, per window")
    src.add_argument(
        "--metrics-url", action="append", help="a service's /metrics (repeat per pod): counts since start-up"
    )
    src.add_argument("--served-log", metavar="URL", help="the sampled served-data log (dir or s3://...)")
    p.add_argument(
        "--window", action="append", help="look-back windows, e.g. 1h and 1d (default 1h; --metrics-url: total)"
    )
    p.add_argument("--thresholds", help='JSON (or @file): {"psi": 0.3} or {"<model>": {...}, "*": {...}}')
    p.add_argument("--out", type=Path, help="directory for the JSON, Parquet and HTML reports")
    p.add_argument("--pushgateway", help="push model_feature_drift and thresholds to this Pushgateway")
    p.add_argument("--fail-on-drift", action="store_true", help="exit 1 when a feature drifted")
    p.set_defaults(handler=drift_report)


def drift_report(args: argparse.Namespace, settings: JobSettings) -> dict[str, Any]:
    store = model_store(settings)
    version = args.version or store.latest(args.model)
    if version is None:
        raise ValueError(f"model {args.model!r} has no latest version in {store.url}")
    meta = store.read_metadata(args.model, version)
    profile = parse_profile(meta.reference_profile, meta.feature_names)
    thresholds = thresholds_for(args.model, args.thresholds)
    windows: list[str] = args.window or (["total"] if args.metrics_url else ["1h"])
    reports = []
    for window in windows:
        served = _served(args, settings, version, window, profile)
        arrays = served.arrays(profile) if profile is not None else {}
        drift = compare(profile, arrays, thresholds) if profile is not None else []
        reports.append(WindowReport(window, served.rows, drift, arrays, dict(served.schema)))
    report = DriftReport(args.model, version, thresholds, reports, profile, datetime.now(UTC).isoformat())
    sys.stderr.write(report.table())
    result = report.summary()
    if args.out:
        result["reports"] = report.write(args.out)
    if args.pushgateway:
        push(args.pushgateway, report)
    if args.fail_on_drift and any(w["drifted"] for w in result["windows"].values()):
        raise ValueError(f"drift: {json.dumps(result['windows'])}")
    return result


def _served(args: argparse.Namespace, settings: JobSettings, version: str, window: str, profile: Any) -> Served:
    if args.metrics_url:
        if window != "total":
            raise ValueError("--metrics-url gives counts since the pods started: its only window is 'total'")
        return from_metrics_text([fetch_text(u) for u in args.metrics_url], args.model, version)
    if args.prometheus_url:
        return from_prometheus(args.prometheus_url, args.model, version, window)
    if profile is None:
        return Served()
    return from_served_log(
        args.served_log, args.model, version, profile, datetime.now(UTC), window, settings.s3_endpoint_url
    )


def drift_families(report: DriftReport) -> Iterator[Any]:
    from prometheus_client.core import GaugeMetricFamily

    drift = GaugeMetricFamily(
        "model_feature_drift",
        "Drift statistic of a feature (or __score__) against the training profile",
        labels=["model", "version", "feature", "statistic", "window"],
    )
    drifted = GaugeMetricFamily(
        "model_feature_drifted",
        "1 when a statistic passed its threshold",
        labels=["model", "version", "feature", "window"],
    )
    rows = GaugeMetricFamily(
        "model_drift_window_rows", "Served rows in the window", labels=["model", "version", "window"]
    )
    limits = GaugeMetricFamily(
        "model_feature_drift_threshold", "The model's drift threshold per statistic", labels=["model", "statistic"]
    )
    ref = GaugeMetricFamily(
        "model_drift_reference", "1 when the version has a reference profile", labels=["model", "version"]
    )
    for w in report.windows:
        rows.add_metric([report.model, report.version, w.window], w.rows)
        for d in w.drift:
            drifted.add_metric([report.model, report.version, d.feature, w.window], 1 if d.drifted else 0)
            for stat, value in d.statistics.items():
                drift.add_metric([report.model, report.version, d.feature, stat, w.window], value)
    for stat, value in report.thresholds.items():
        limits.add_metric([report.model, stat], value)
    ref.add_metric([report.model, report.version], 1 if report.profile is not None else 0)
    yield from (drift, drifted, rows, limits, ref)


def push(gateway: str, report: DriftReport) -> None:
    from prometheus_client import CollectorRegistry, push_to_gateway
    from prometheus_client.registry import Collector

    class _Report(Collector):
        def collect(self) -> Iterable[Any]:
            return drift_families(report)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Report())
    # PUT: this model's group is replaced, so a feature or version that went away stops being reported.
    push_to_gateway(gateway, job="drift-report", grouping_key={"model": report.model}, registry=registry, timeout=10)
