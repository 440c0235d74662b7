"""Monitoring in the real service (gunicorn, two workers): bin counts summed across workers, the
drift report over /metrics and over the served-data log, a version without profile served as
'no reference', and a corrupt profile refused while the previous version keeps serving."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

from app.modelstore import LocalModelStore
from devharness import (
    GunicornService,
    Pushgateway,
    Server,
    Stoppable,
    debian_binary,
    free_port,
    http_ok,
    wait_until,
)
from devharness.jobs import run_job
from jobs.train import train_and_publish
from tests.monitoring.test_drift_chart import ENABLED, drift_objects, objects

pytestmark = pytest.mark.integration
ROWS_PER_REQUEST = 3


def metric_sum(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith((name + "{", name + " ")) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def edit_metadata(store: LocalModelStore, name: str, version: str, edit: Callable[[dict[str, Any]], object]) -> None:
    """Change a published version's metadata.json in place (the artifact's digest does not cover it)."""
    path = store.root / name / "versions" / version / "metadata.json"
    raw = json.loads(path.read_text())
    edit(raw)
    path.write_text(json.dumps(raw))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> LocalModelStore:
    s = LocalModelStore(tmp_path_factory.mktemp("mon-store"))
    train_and_publish(s, dataset="iris", name="iris", n_estimators=10, max_depth=4)
    # A version published before profiles existed: its metadata has no reference_profile.
    legacy = train_and_publish(s, dataset="iris", name="legacy", n_estimators=10, max_depth=4)
    edit_metadata(s, "legacy", legacy.version, lambda m: m.pop("reference_profile"))
    return s


@pytest.fixture(scope="module")
def service(store: LocalModelStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GunicornService, Path]]:
    work = tmp_path_factory.mktemp("mon-svc")
    offline = work / "offline"
    srv = GunicornService(
        work,
        {
            "MODEL_STORE_URL": str(store.root),
            "MONITORING_FLUSH_SECONDS": "0",
            "MONITORING_LOG_URL": str(offline),
            "MONITORING_LOG_SAMPLE_RATE": "1",
            "MONITORING_LOG_FLUSH_SECONDS": "0.3",
        },
    )
    try:
        yield srv.wait_ready(), offline
    finally:
        srv.stop()


def _traffic(srv: GunicornService, store: LocalModelStore, model: str, requests: int, shift: float = 0.0) -> None:
    meta = store.read_metadata(model, str(store.latest(model)))
    x = np.asarray(meta.verification.inputs)[:ROWS_PER_REQUEST]
    x[:, 2] += shift  # petal length only
    body = {"instances": [dict(zip(meta.feature_names, row, strict=True)) for row in x.tolist()]}
    for i in range(requests):
        with httpx.Client() as c:  # a new connection each, so both workers serve some
            if i % 2:
                r = c.post(f"{srv.url}/v1/models/{model}/predict", json=body)
            else:
                r = c.post(
                    f"{srv.url}/v2/models/{model}/infer",
                    json={
                        "inputs": [
                            {"name": "input-0", "shape": list(x.shape), "datatype": "FP64", "data": x.ravel().tolist()}
                        ]
                    },
                )
            assert r.status_code == 200, r.text


def test_bins_are_summed_over_workers_and_the_report_reads_them(
    service: tuple[GunicornService, Path], store: LocalModelStore, tmp_path: Path
) -> None:
    srv, offline = service
    _traffic(srv, store, "iris", 40, shift=6.0)  # past the training max
    version = store.latest("iris")
    assert version is not None
    text = httpx.get(srv.url + "/metrics").text
    pids = {p.name.rsplit("_", 1)[-1] for p in srv.multiproc_dir.glob("counter_*.db")}
    assert len(pids) >= 2, "one worker served everything: the sum across workers is not tested"
    rows = 40 * ROWS_PER_REQUEST
    assert metric_sum(text, "model_monitored_rows_total", model="iris", version=version) == rows
    for feature in ["sepal_length_cm", "petal_length_cm", "__score__"]:
        assert metric_sum(text, "model_feature_bin_total", model="iris", feature=feature) == rows
    assert metric_sum(text, "model_feature_schema_violations_total", feature="petal_length_cm", kind="above_max") > 0
    assert metric_sum(text, "model_reference_profile", model="iris", version=version) == 1

    out = tmp_path / "report"
    run = run_job(
        "--store",
        str(store.root),
        "drift-report",
        "--model",
        "iris",
        "--metrics-url",
        srv.url + "/metrics",
        "--out",
        str(out),
    )
    summary = run.ok()
    assert summary["reference"] is True and summary["windows"]["total"]["rows"] == rows
    assert "petal_length_cm" in summary["windows"]["total"]["drifted"]
    assert "petal_length_cm" in run.stderr and "DRIFT" in run.stderr  # the readable table
    page = Path(summary["reports"]["html"]).read_text()
    assert "<svg" in page and "<script" not in page and "src=" not in page and "href=" not in page
    import pyarrow.parquet as pq

    table = pq.read_table(summary["reports"]["parquet"]).to_pylist()
    petal = next(r for r in table if r["feature"] == "petal_length_cm")
    assert petal["drifted"] and petal["psi"] > 0.2 and petal["schema_above_max"] > 0

    # The sampled log (rate 1 here) holds the same rows: the report over it agrees on the rows served.
    wait_until(lambda: len(list((offline / "served" / "iris").rglob("*.parquet"))) >= 2, 10, "served log files")

    def logged() -> int:
        r = run_job(
            "--store",
            str(store.root),
            "drift-report",
            "--model",
            "iris",
            "--served-log",
            str(offline),
            "--window",
            "1h",
        )
        return int(r.ok()["windows"]["1h"]["rows"])

    wait_until(lambda: logged() == rows, 10, "every served row in the log")


def test_a_version_without_profile_serves_and_reports_no_reference(
    service: tuple[GunicornService, Path], store: LocalModelStore
) -> None:
    srv, _ = service
    _traffic(srv, store, "legacy", 4)
    version = store.latest("legacy")
    text = httpx.get(srv.url + "/metrics").text
    assert metric_sum(text, "model_reference_profile", model="legacy", version=str(version)) == 0
    assert metric_sum(text, "model_monitored_rows_total", model="legacy") == 4 * ROWS_PER_REQUEST
    assert metric_sum(text, "model_feature_bin_total", model="legacy") == 0
    run = run_job(
        "--store", str(store.root), "drift-report", "--model", "legacy", "--metrics-url", srv.url + "/metrics"
    )
    assert run.ok()["reference"] is False and "no reference profile" in run.stderr


def test_a_corrupt_profile_is_refused_and_the_previous_version_keeps_serving(
    service: tuple[GunicornService, Path], store: LocalModelStore
) -> None:
    srv, _ = service
    good = store.latest("iris")
    assert good is not None
    bad = train_and_publish(store, dataset="iris", name="iris", n_estimators=10, max_depth=4, version="corrupt-profile")

    def corrupt(m: dict[str, Any]) -> None:
        m["reference_profile"]["features"]["petal_length_cm"]["counts"] = [1, 2]  # 2 counts for 9 edges

    edit_metadata(store, "iris", bad.version, corrupt)

    def failures() -> float:
        return metric_sum(httpx.get(srv.url + "/metrics").text, "model_load_failures_total", version="corrupt-profile")

    wait_until(lambda: failures() >= 2, 15, "both workers refuse the corrupt profile")
    assert httpx.get(srv.url + "/v1/models/iris").json()["version"] == good
    _traffic(srv, store, "iris", 2)
    assert "corrupt reference profile at features.petal_length_cm" in (srv.server.log.read_text())


class Prometheus(Stoppable):
    """A real Prometheus scraping the service every second (Debian's binary; skipped without it)."""

    def __init__(self, workdir: Path, target: str) -> None:
        binary = debian_binary("prometheus", "prometheus")
        workdir.mkdir(parents=True, exist_ok=True)
        self.url = f"http://127.0.0.1:{free_port()}"
        config = {
            "global": {"scrape_interval": "1s"},
            "scrape_configs": [{"job_name": "predict", "static_configs": [{"targets": [target]}]}],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.server = Server(
            [
                binary,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address={self.url.removeprefix('http://')}",
            ],
            workdir / "prometheus.log",
        )
        try:
            wait_until(lambda: http_ok(self.url + "/-/ready"), 30, "prometheus", self.server.proc, self.server.log)
        except BaseException:
            self.server.stop()
            raise

    def value(self, expr: str) -> float | None:
        """The expression's one value; None while it has no series."""
        with httpx.Client() as c:
            result = c.get(self.url + "/api/v1/query", params={"query": expr}).json()["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    def stop(self) -> None:
        self.server.stop()


@pytest.mark.timed
def test_the_cronjob_path_from_prometheus_to_the_pushgateway(
    service: tuple[GunicornService, Path], store: LocalModelStore, tmp_path: Path
) -> None:
    """What the chart's CronJob runs: counts summed by Prometheus over a window, statistics pushed."""
    srv, _ = service
    with ExitStack() as stack:
        pgw = stack.enter_context(Pushgateway(tmp_path / "pgw"))
        prom = stack.enter_context(Prometheus(tmp_path / "prom", srv.url.removeprefix("http://")))
        rows = 'sum(model_monitored_rows_total{model="iris"})'
        binned = 'sum(model_feature_bin_total{model="iris",feature="petal_length_cm"})'
        wait_until(lambda: prom.value(rows) is not None, 20, "first scrape")
        before, before_binned = prom.value(rows) or 0.0, prom.value(binned) or 0.0
        _traffic(srv, store, "iris", 40, shift=6.0)
        sent = 40 * ROWS_PER_REQUEST  # past MIN_ROWS: fewer are reported, never flagged
        # Wait for the samples the report needs (every row counted and binned), not for a fixed time.
        wait_until(lambda: (prom.value(rows) or 0.0) >= before + sent, 30, "rows scraped")
        wait_until(lambda: (prom.value(binned) or 0.0) >= before_binned + sent, 30, "bins scraped")
        serving = httpx.get(srv.url + "/v1/models/iris").json()["version"]  # latest may be the refused one
        summary = run_job(
            "--store",
            str(store.root),
            "drift-report",
            "--model",
            "iris",
            "--version",
            serving,
            "--prometheus-url",
            prom.url,
            "--window",
            "5m",
            "--pushgateway",
            pgw.url,
            "--thresholds",
            '{"iris": {"psi": 0.5}}',
        ).ok()
        window = summary["windows"]["5m"]
        # Exact: counted from the counters' samples, not increase()'s extrapolation (which gave 156 for 120)
        assert window["rows"] == sent
        assert "petal_length_cm" in window["drifted"]
        pushed = pgw.metrics()
        version = summary["version"]
        assert re.search(
            rf'model_feature_drift\{{[^}}]*feature="petal_length_cm"[^}}]*statistic="psi"[^}}]*version="{version}"'
            r'[^}]*window="5m"[^}]*\} [0-9.e+]+',
            pushed,
        ), pushed[:2000]
        assert re.search(r'model_feature_drift_threshold\{[^}]*model="iris"[^}]*statistic="psi"[^}]*\} 0\.5', pushed)

        # The chart's schema-skew alert, as rendered, fires on the feature served past its training range.
        (rule,) = [d for d in drift_objects(objects(*ENABLED)) if d["kind"] == "PrometheusRule"]
        expr = next(r["expr"] for g in rule["spec"]["groups"] for r in g["rules"] if r["alert"] == "ModelSchemaSkew")
        with httpx.Client() as c:
            firing = c.get(prom.url + "/api/v1/query", params={"query": expr}).json()["data"]["result"]
        assert {(r["metric"]["feature"], r["metric"]["kind"]) for r in firing} >= {("petal_length_cm", "above_max")}
