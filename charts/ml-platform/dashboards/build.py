"""Generate the Grafana dashboards (JSON) from one list of panels per system: ``python charts/ml-platform/dashboards/build.py``.

The PromQL lives here once; tests/monitoring checks every expression against a real Prometheus
scraping the real services under traffic (each must return data).
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).parent
PREDICT_ROUTES = "/v1/models/{name}/predict|/v1/predict|/v2/models/{name}/infer"

DASHBOARDS: dict[str, tuple[str, list[tuple[str, str, str]]]] = {
    "overview": (
        "ml-platform overview",
        [
            ("Requests/s by route", "timeseries", "sum by (route) (rate(http_requests_total[1m]))"),
            (
                "5xx share of requests (%)",
                "stat",
                '100 * (sum(rate(http_requests_total{status=~"5.."}[5m])) or vector(0)) / clamp_min(sum(rate(http_requests_total[5m])), 1e-9)',
            ),
            (
                "p99 latency by route (s)",
                "timeseries",
                "histogram_quantile(0.99, sum by (le, route) (rate(http_request_duration_seconds_bucket[5m])))",
            ),
            ("Targets up", "stat", "sum by (job) (up)"),
        ],
    ),
    "predict": (
        "ml-platform prediction service",
        [
            (
                "Prediction requests/s by route and status",
                "timeseries",
                f'sum by (route, status) (rate(http_requests_total{{route=~"{PREDICT_ROUTES}"}}[1m]))',
            ),
            (
                "p50 / p99 prediction latency (s)",
                "timeseries",
                f'histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{{route=~"{PREDICT_ROUTES}"}}[5m])))',
            ),
            (
                "Predictions/s by model and class",
                "timeseries",
                "sum by (model, class) (rate(model_predictions_total[5m]))",
            ),
            (
                "Median micro-batch (rows)",
                "timeseries",
                "histogram_quantile(0.5, sum by (le, model) (rate(model_batch_size_rows_bucket[5m])))",
            ),
            (
                "Model time per batch p99 (s)",
                "timeseries",
                "histogram_quantile(0.99, sum by (le, model) (rate(model_predict_duration_seconds_bucket[5m])))",
            ),
            ("Serving versions", "table", "max by (model, version, engine) (model_info) == 1"),
            ("Rejected model versions (1h)", "stat", "sum(increase(model_load_failures_total[1h])) or vector(0)"),
            ("Models ready", "stat", "min(models_ready)"),
        ],
    ),
    "featurestore": (
        "ml-platform feature store",
        [
            (
                "Feature requests/s",
                "timeseries",
                'sum by (status) (rate(http_requests_total{route="/v1/features"}[1m]))',
            ),
            (
                "Online read p99 (s)",
                "timeseries",
                "histogram_quantile(0.99, sum by (le) (rate(online_store_read_duration_seconds_bucket[5m])))",
            ),
            ("Lookups by view and status", "timeseries", "sum by (view, status) (rate(feature_values_total[5m]))"),
            (
                "Entities per request (median)",
                "stat",
                "histogram_quantile(0.5, sum by (le) (rate(feature_request_entities_bucket[5m])))",
            ),
            ("Online store errors/s", "stat", "sum(rate(online_store_errors_total[5m])) or vector(0)"),
            (
                "Since last successful materialization (s)",
                "stat",
                'time() - max by (view, shard) (mlplatform_job_last_success_timestamp_seconds{job="materialize"})',
            ),
            (
                "Entities written by the last run",
                "stat",
                'max by (view, shard) (mlplatform_job_entities_written{job="materialize"})',
            ),
            (
                "Watermark lag (s)",
                "stat",
                'time() - max by (view) (mlplatform_job_watermark_timestamp_seconds{job="materialize"})',
            ),
        ],
    ),
    "stream": (
        "ml-platform stream scorer",
        [
            ("Events/s by outcome", "timeseries", "sum by (outcome) (rate(stream_events_total[1m]))"),
            ("Consumer lag (entries) by shard", "timeseries", "max by (shard) (stream_consumer_lag_entries)"),
            ("Pending entries by shard", "timeseries", "sum by (shard) (stream_pending_entries)"),
            ("Oldest pending entry (s)", "stat", "max(stream_oldest_pending_age_seconds)"),
            (
                "Append to decision p50 / p99 (s)",
                "timeseries",
                "histogram_quantile(0.99, sum by (le) (rate(stream_event_to_decision_seconds_bucket[5m])))",
            ),
            (
                "Median micro-batch (events)",
                "timeseries",
                "histogram_quantile(0.5, sum by (le) (rate(stream_batch_size_events_bucket[5m])))",
            ),
            (
                "Dead letters/s by reason",
                "timeseries",
                "sum by (reason) (rate(stream_dead_letters_total[5m])) or vector(0)",
            ),
        ],
    ),
    "multimodal": (
        "ml-platform multimodal inference",
        [
            (
                "Classify requests/s by status",
                "timeseries",
                'sum by (status) (rate(http_requests_total{route="/v1/classify"}[1m]))',
            ),
            (
                "Median time per stage (s)",
                "timeseries",
                "histogram_quantile(0.5, sum by (le, stage) (rate(preprocess_stage_duration_seconds_bucket[5m])))",
            ),
            (
                "Rejected inputs/s by reason",
                "timeseries",
                "sum by (reason) (rate(preprocess_rejected_inputs_total[5m])) or vector(0)",
            ),
            ("Triton errors/s", "stat", "sum(rate(triton_errors_total[5m])) or vector(0)"),
            (
                "Triton queue time per request (us)",
                "timeseries",
                "sum(rate(nv_inference_queue_duration_us[5m])) / clamp_min(sum(rate(nv_inference_request_success[5m])), 1e-9)",
            ),
            (
                "Triton mean batch size",
                "timeseries",
                "sum(rate(nv_inference_count[5m])) / clamp_min(sum(rate(nv_inference_exec_count[5m])), 1e-9)",
            ),
            ("Predictions/s by class", "timeseries", "sum by (class) (rate(multimodal_predictions_total[5m]))"),
        ],
    ),
}


def dashboard(uid: str, title: str, panels: list[tuple[str, str, str]]) -> dict[str, object]:
    out = []
    for i, (name, kind, expr) in enumerate(panels):
        out.append(
            {
                "id": i + 1,
                "title": name,
                "type": kind,
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
                "targets": [{"refId": "A", "expr": expr, "legendFormat": "__auto"}],
            }
        )
    return {
        "uid": f"ml-platform-{uid}",
        "title": title,
        "tags": ["ml-platform"],
        "schemaVersion": 39,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "templating": {"list": [{"name": "datasource", "type": "datasource", "query": "prometheus"}]},
        "panels": out,
    }


def main() -> None:
    for uid, (title, panels) in DASHBOARDS.items():
        (HERE / f"{uid}.json").write_text(json.dumps(dashboard(uid, title, panels), indent=2) + "\n")


if __name__ == "__main__":
    main()
