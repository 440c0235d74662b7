"""The drift CronJob as a process (issue 25, "pods as processes beyond the kind render"): the kind render with
drift monitoring on, its container's command with its rendered environment, beside k8s/s3.yaml's S3, a real
Prometheus and Pushgateway at the addresses of the Services the values name (kube-prometheus-stack's, as
`make kind-up` installs them). The model it reports on is published first by the retrain CronJob's own train
line, run with that container's environment (its rollout line needs an API server, which tests/e2e has)."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from devharness import Pushgateway, Server, debian_binary, http_ok, wait_until
from tests.deploy.pods import LocalCluster, tail
from tests.deploy.render import Container, Render, k8s_manifests, render
from tests.deploy.test_contract import traced_jobs_lines
from tests.deploy.test_pods_as_processes import start_workloads

pytestmark = pytest.mark.timeout(900)

PROMETHEUS = ("kube-prometheus-stack-prometheus", "monitoring")
PUSHGATEWAY = ("prometheus-pushgateway", "monitoring")
SETS = (
    "predict.retrain.enabled=true",
    "predict.driftMonitoring.enabled=true",
    "predict.driftMonitoring.models={breast-cancer}",
    f"predict.driftMonitoring.prometheusUrl=http://{PROMETHEUS[0]}.{PROMETHEUS[1]}.svc.cluster.local:9090",
    f"predict.driftMonitoring.pushgatewayUrl=http://{PUSHGATEWAY[0]}.{PUSHGATEWAY[1]}.svc.cluster.local:9091",
)


@pytest.fixture(scope="module")
def with_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    local = LocalCluster(render("kind", sets=SETS), tmp_path_factory.mktemp("cronjobs"), {})
    try:
        start_workloads(local, Render("k8s/s3.yaml", k8s_manifests("s3")), {}, wait=True)
        yield local
    finally:
        local.stop()


def container(local: LocalCluster, workload: str) -> Container:
    (c,) = [c for c in local.render.containers() if c.workload == workload]
    return c


def test_the_drift_cronjob_reports_to_the_pushgateway(with_s3: LocalCluster, tmp_path: Path) -> None:
    local = with_s3
    retrain, drift = container(local, "mlp-predict-retrain"), container(local, "mlp-predict-drift")
    # the model, published as the retrain CronJob publishes it
    train, rollout = traced_jobs_lines(retrain, tmp_path / "trace")
    assert train[0] == "train" and rollout[0] == "rollout"
    pod = local.pod(retrain, root=tmp_path / "retrain")
    _, env = local.command(pod)
    publisher = Server(
        ["python", "-m", "jobs", *train], pod.root / "train.log", env=env, cwd=pod.root, inherit_env=False
    )
    try:
        assert publisher.wait(600) == 0, tail(pod.root / "train.log")
    finally:
        publisher.stop()

    prom_address, gateway_address = local.address(*PROMETHEUS), local.address(*PUSHGATEWAY)
    config = tmp_path / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 15s\n")
    prometheus = Server(
        [debian_binary("prometheus", "prometheus"), f"--config.file={config}",
         f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address={prom_address}:9090"],
        tmp_path / "prometheus.log",
    )  # fmt: skip
    gateway = None
    try:
        wait_until(lambda: http_ok(f"http://{prom_address}:9090/-/ready"), 60, "prometheus", prometheus.proc)
        gateway = Pushgateway(tmp_path / "gateway", listen=f"{gateway_address}:9091")
        code, log = local.run(local.pod(drift, root=tmp_path / "drift"), timeout=300)
        assert code == 0, f"the drift CronJob's command exited {code}:\n{log[-3000:]}"
        with urllib.request.urlopen(f"http://{gateway_address}:9091/metrics", timeout=5) as r:
            pushed = r.read().decode()
        assert 'job="drift-report"' in pushed and 'model="breast-cancer"' in pushed, pushed[-2000:]
    finally:
        if gateway is not None:
            gateway.stop()
        prometheus.stop()
