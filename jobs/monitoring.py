"""Monitoring jobs: ``drift-report``, ``feature-skew`` and ``outcomes``.

``python -m jobs drift-report``: drift and schema skew of a served model version against a reference (the
chart's drift CronJob runs it). The served counts come from Prometheus (``--prometheus-url``, one result per
``--window``), from services' ``/metrics`` pages (``--metrics-url``, counts since the pods started: window
``total``) or from the sampled served-data log (``--served-log``). The reference is the version's training
profile, or with ``--reference-window START END`` the traffic served then (from the same source), binned on
the profile's bins: a production baseline, for features whose served distribution differs from training by
construction (docs/operations.md, "Choosing the reference"). It prints a readable table on stderr (stdout
holds the summary line), writes JSON, Parquet and a self-contained HTML report with ``--out``, and pushes
``model_feature_drift`` to a Pushgateway with ``--pushgateway``.

``python -m jobs feature-skew``: the sampled served rows of a model against the point-in-time training
path for the same entities and times (app/monitoring/skew.py); the share of mismatches per feature.

``python -m jobs outcomes``: live AUC, log loss and calibration per model version, from labels that
arrived later, matched to the sampled served rows (app/monitoring/outcomes.py).
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
from app.monitoring.drift import DEFAULT_THRESHOLDS, Histograms, compare, training_histograms
from app.monitoring.profile import SCORE_FEATURE, ReferenceProfile, parse_profile
from app.monitoring.report import DriftReport, WindowReport
from app.monitoring.sources import Served, fetch_text, from_metrics_text, from_prometheus, from_served_log
from jobs.featurestore import _when  # the feature jobs' date parser: one format for every job
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
    p.add_argument(
        "--between",
        nargs=2,
        metavar=("START", "END"),
        type=_when,
        help="--served-log only: rows served between two times (ISO, UTC if naive, or today-Nd) instead of "
        "the last --window",
    )
    p.add_argument(
        "--reference-window",
        nargs=2,
        metavar=("START", "END"),
        type=_when,
        help="compare with the traffic served between two times (ISO or today-Nd; --served-log or "
        "--prometheus-url) instead of the training profile: a production baseline",
    )
    p.add_argument("--thresholds", help='JSON (or @file): {"psi": 0.3} or {"<model>": {...}, "*": {...}}')
    p.add_argument("--out", type=Path, help="directory for the JSON, Parquet and HTML reports")
    p.add_argument("--pushgateway", help="push model_feature_drift and thresholds to this Pushgateway")
    p.add_argument("--fail-on-drift", action="store_true", help="exit 1 when a feature drifted")
    p.set_defaults(handler=drift_report)

    p = sub.add_parser("feature-skew", help="served feature values against the point-in-time training path")
    p.add_argument("--model", required=True)
    p.add_argument("--version", help="default: the model's latest")
    p.add_argument("--served-log", metavar="URL", help="the served-data log (default: FEATURES_OFFLINE_URL)")
    p.add_argument("--window", default="1h", help="served rows of the last WINDOW (e.g. 1h, 1d)")
    p.add_argument("--rtol", type=float, default=1e-6, help="relative difference still counted as equal")
    p.add_argument("--pushgateway", help="push model_feature_logic_skew to this Pushgateway")
    p.add_argument("--fail-on-skew", action="store_true", help="exit 1 when a feature has mismatches")
    p.set_defaults(handler=feature_skew)

    p = sub.add_parser("outcomes", help="live AUC, log loss and calibration per model version from late labels")
    p.add_argument("--model", required=True)
    p.add_argument("--labels", required=True, metavar="URL", help="Parquet file or directory: entity, ts, label")
    p.add_argument("--served-log", metavar="URL", help="the served-data log (default: FEATURES_OFFLINE_URL)")
    p.add_argument("--window", default="1d", help="labels and served rows of the last WINDOW")
    p.add_argument("--max-delay", default="1h", help="longest time from a prediction to its label's ts")
    p.add_argument("--pushgateway", help="push model_live_auc, model_live_log_loss, ... to this Pushgateway")
    p.set_defaults(handler=outcomes)


def drift_report(args: argparse.Namespace, settings: JobSettings) -> dict[str, Any]:
    store = model_store(settings)
    version = args.version or store.latest(args.model)
    if version is None:
        raise ValueError(f"model {args.model!r} has no latest version in {store.url}")
    meta = store.read_metadata(args.model, version)
    profile = parse_profile(meta.reference_profile, meta.feature_names)
    thresholds = thresholds_for(args.model, args.thresholds)
    if args.between and not args.served_log:
        raise ValueError("--between needs --served-log: Prometheus and /metrics give the last window or the total")
    if args.reference_window and args.metrics_url:
        raise ValueError("--reference-window needs --served-log or --prometheus-url: /metrics has no past windows")
    windows: list[str] = args.window or (["total"] if args.metrics_url else ["between"] if args.between else ["1h"])
    reference, reference_name = _reference(args, settings, version, profile)
    reports = []
    for window in windows:
        served = _served(args, settings, version, window, profile)
        hist = served.histograms(profile) if profile is not None else Histograms({})
        drift = compare(profile, hist, thresholds, reference) if profile is not None else []
        reports.append(WindowReport(window, served.rows, drift, hist, dict(served.schema)))
    report = DriftReport(
        args.model,
        version,
        thresholds,
        reports,
        profile,
        datetime.now(UTC).isoformat(),
        reference=reference,
        reference_name=reference_name,
    )
    sys.stderr.write(report.table())
    result = report.summary()
    if args.out:
        result["reports"] = report.write(args.out)
    if args.pushgateway:
        push(args.pushgateway, report)
    if args.fail_on_drift and any(w["drifted"] for w in result["windows"].values()):
        raise ValueError(f"drift: {json.dumps(result['windows'])}")
    return result


def _reference(
    args: argparse.Namespace, settings: JobSettings, version: str, profile: ReferenceProfile | None
) -> tuple[Histograms | None, str]:
    """The histograms drift is measured against and what they are: the training profile, or the traffic of
    ``--reference-window`` binned on its bins."""
    if profile is None:
        return None, "no reference profile"
    if not args.reference_window:
        return training_histograms(profile), "training profile"
    start, end = args.reference_window
    if end <= start:
        raise ValueError(f"--reference-window: {end.isoformat()} is not after {start.isoformat()}")
    if args.served_log:
        base = from_served_log(args.served_log, args.model, version, profile, end, start, settings.s3_endpoint_url)
    else:
        seconds = max(1, round((end - start).total_seconds()))
        base = from_prometheus(args.prometheus_url, args.model, version, f"{seconds}s", end.timestamp())
    hist = base.histograms(profile)
    if base.rows == 0 or not hist.bins:
        raise ValueError(
            f"--reference-window: no rows of {args.model} {version} served between {start.isoformat()} and "
            f"{end.isoformat()}"
        )
    return hist, f"served traffic {start.isoformat()} to {end.isoformat()} ({base.rows} rows)"


def _served(
    args: argparse.Namespace, settings: JobSettings, version: str, window: str, profile: ReferenceProfile | None
) -> Served:
    if args.metrics_url:
        if window != "total":
            raise ValueError("--metrics-url gives counts since the pods started: its only window is 'total'")
        return from_metrics_text([fetch_text(u) for u in args.metrics_url], args.model, version)
    if args.prometheus_url:
        return from_prometheus(args.prometheus_url, args.model, version, window)
    if profile is None:
        return Served()
    if args.between:
        start, end = args.between
        return from_served_log(args.served_log, args.model, version, profile, end, start, settings.s3_endpoint_url)
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
    # The missing-value rule on its own (the test on proportions against the reference's missing rate), for
    # the ModelFeatureMissing alert: relative to the reference, not an absolute share.
    missing = GaugeMetricFamily(
        "model_feature_missing_drifted",
        "1 when the served missing share differs from the reference's (missing_pvalue under its threshold)",
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
            if d.feature != SCORE_FEATURE:
                flagged = "missing_pvalue" in d.over
                missing.add_metric([report.model, report.version, d.feature, w.window], 1 if flagged else 0)
            for stat, value in d.statistics.items():
                drift.add_metric([report.model, report.version, d.feature, stat, w.window], value)
    for stat, value in report.thresholds.items():
        limits.add_metric([report.model, stat], value)
    ref.add_metric([report.model, report.version], 1 if report.profile is not None else 0)
    yield from (drift, drifted, missing, rows, limits, ref)


def push(gateway: str, report: DriftReport) -> None:
    # PUT: this model's group is replaced, so a feature or version that went away stops being reported.
    _push(gateway, "drift-report", report.model, list(drift_families(report)))


def _served_log_url(args: argparse.Namespace, settings: JobSettings) -> str:
    url: str | None = args.served_log or settings.features.offline_url
    if not url:
        raise ValueError("no served-data log: give --served-log or set FEATURES_OFFLINE_URL")
    return url


def feature_skew(args: argparse.Namespace, settings: JobSettings) -> dict[str, Any]:
    from datetime import timedelta

    import pyarrow.compute as pc

    from app.features.definitions import load_repo
    from app.features.stores import offline_store
    from app.monitoring.servedlog import REQUEST_PREFIX, read_served
    from app.monitoring.skew import feature_logic_skew
    from app.monitoring.sources import window_seconds

    store = model_store(settings)
    version = args.version or store.latest(args.model)
    if version is None:
        raise ValueError(f"model {args.model!r} has no latest version in {store.url}")
    meta = store.read_metadata(args.model, version)
    end = datetime.now(UTC)
    start = end - timedelta(seconds=window_seconds(args.window))
    spec = meta.online_features
    request_cols = [REQUEST_PREFIX + f for f in spec.request_fields] if spec else []
    served = read_served(
        _served_log_url(args, settings),
        args.model,
        start,
        end,
        ["version", "entity", *request_cols, *meta.feature_names],
        settings.s3_endpoint_url,
    )
    served = served.filter(pc.equal(served.column("version"), version))
    skew = feature_logic_skew(
        served, meta, load_repo(settings.features.require_repo()), offline_store(settings.features), rtol=args.rtol
    )
    skewed = sorted(f for f, n in skew.mismatches.items() if n)
    table = [f"feature logic skew of {args.model} {version}: {skew.rows} served rows ({skew.skipped} without entity)"]
    table += [
        f"  {f:<28} mismatch {skew.mismatch_share[f]:>7.2%}  max |diff| {skew.max_abs_diff[f]:.4g}"
        for f in meta.feature_names
    ]
    sys.stderr.write("\n".join(table) + "\n")
    if args.pushgateway:
        from prometheus_client.core import GaugeMetricFamily

        fam = GaugeMetricFamily(
            "model_feature_logic_skew",
            "Share of sampled served rows whose feature differs from the point-in-time training path",
            labels=["model", "version", "feature"],
        )
        for f, share in skew.mismatch_share.items():
            fam.add_metric([args.model, version, f], share)
        _push(args.pushgateway, "feature-skew", args.model, [fam])
    result = {
        "model": args.model,
        "version": version,
        "rows": skew.rows,
        "skipped": skew.skipped,
        "skewed": skewed,
        "mismatch_share": skew.mismatch_share,
    }
    if args.fail_on_skew and skewed:
        raise ValueError(f"feature logic skew in {skewed}: {json.dumps(skew.mismatch_share)}")
    return result


def outcomes(args: argparse.Namespace, settings: JobSettings) -> dict[str, Any]:
    from datetime import timedelta

    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    from app.features.offline import OfflineStore
    from app.monitoring.outcomes import outcomes_by_version
    from app.monitoring.servedlog import read_served
    from app.monitoring.sources import window_seconds

    end = datetime.now(UTC)
    start = end - timedelta(seconds=window_seconds(args.window))
    max_delay = window_seconds(args.max_delay)
    served = read_served(
        _served_log_url(args, settings),
        args.model,
        start - timedelta(seconds=max_delay),
        end,
        ["version", "entity", "score"],
        settings.s3_endpoint_url,
    )
    lab_store = OfflineStore(args.labels, s3_endpoint_url=settings.s3_endpoint_url)
    try:
        labels = ds.dataset(lab_store.root, filesystem=lab_store.fs, format="parquet").to_table()
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read labels at {args.labels}: {exc}") from None
    if "ts" in labels.column_names:
        ts = labels.column("ts")
        labels = labels.filter(pc.and_(pc.greater_equal(ts, pa_ts(start)), pc.less(ts, pa_ts(end))))
    results, matching = outcomes_by_version(served, labels, max_delay * 1_000_000)
    lines = [f"outcomes of {args.model} over {args.window}: {matching}"]
    for r in results:
        auc = "-" if r.auc is None else f"{r.auc:.4f}"
        lines.append(
            f"  {r.version:<32} labeled {r.labeled:>7} positives {r.positives:>6} auc {auc} "
            f"log loss {r.log_loss:.4f} calibration error {r.calibration_error:.4f}"
        )
    sys.stderr.write("\n".join(lines) + "\n")
    if args.pushgateway:
        from prometheus_client.core import GaugeMetricFamily

        fams = {
            k: GaugeMetricFamily(
                f"model_live_{k}",
                f"{k.replace('_', ' ')} of labeled served predictions",
                labels=["model", "version", "window"],
            )
            for k in ("auc", "log_loss", "calibration_error", "labeled_rows")
        }
        for r in results:
            values = {
                "auc": r.auc,
                "log_loss": r.log_loss,
                "calibration_error": r.calibration_error,
                "labeled_rows": r.labeled,
            }
            for k, v in values.items():
                if v is not None:
                    fams[k].add_metric([args.model, r.version, args.window], float(v))
        _push(args.pushgateway, "outcomes", args.model, list(fams.values()))
    return {
        "model": args.model,
        "window": args.window,
        **matching,
        "versions": {
            r.version: {
                "labeled": r.labeled,
                "positives": r.positives,
                "auc": r.auc,
                "log_loss": r.log_loss,
                "calibration_error": r.calibration_error,
                "reliability": r.reliability,
            }
            for r in results
        },
    }


def pa_ts(t: datetime) -> Any:
    import pyarrow as pa

    return pa.scalar(t, pa.timestamp("us", tz="UTC"))


def _push(gateway: str, job: str, model: str, families: list[Any]) -> None:
    from prometheus_client import CollectorRegistry, push_to_gateway
    from prometheus_client.registry import Collector

    class _Fixed(Collector):
        def collect(self) -> Iterable[Any]:
            return families

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed())
    push_to_gateway(gateway, job=job, grouping_key={"model": model}, registry=registry, timeout=10)
