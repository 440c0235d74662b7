"""The plain profile (charts/ml-platform/ci/plain-values.yaml: a cluster without the Prometheus Operator and
without node pools) run as processes, as tests/deploy/test_pods_as_processes.py runs the kind profile (issue 25,
"pods as processes beyond the kind render"): k8s/s3.yaml, then the chart's render without monitoring.coreos.com/v1,
everything started at once; every Job completes, every pod becomes ready and stays live on its own probes, and
every helm test pod's command passes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.pods import LocalCluster, Pod
from tests.deploy.render import Render, k8s_manifests, render
from tests.deploy.test_pods_as_processes import CONVERGE_SECONDS, converge, start_workloads

pytestmark = pytest.mark.timeout(CONVERGE_SECONDS + 300)


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalCluster, dict[str, Pod]]]:
    chart = render("plain", api_versions=())  # no Prometheus Operator in this cluster
    assert not chart.kind("ServiceMonitor") and not chart.kind("PrometheusRule")
    local = LocalCluster(chart, tmp_path_factory.mktemp("plain"), {})
    pods: dict[str, Pod] = {}
    try:
        start_workloads(local, Render("k8s/s3.yaml", k8s_manifests("s3")), {}, wait=True)
        starts = start_workloads(local, chart, pods, wait=False)
        converge(local, pods, starts)
        yield local, pods
    finally:
        local.stop()


def test_the_plain_profile_converges_ready_and_live(plain: tuple[LocalCluster, dict[str, Pod]]) -> None:
    local, pods = plain
    kinds = {p.container.workload_kind for p in pods.values()}
    assert {"Deployment", "StatefulSet", "Job"} <= kinds
    for key, pod in pods.items():
        if pod.container.workload_kind != "Job":
            assert local.probe(pod, "readinessProbe"), key
            assert local.probe(pod, "livenessProbe"), f"{key}: liveness fails on a ready pod"


def test_every_helm_test_pod_passes_on_plain(plain: tuple[LocalCluster, dict[str, Pod]], tmp_path: Path) -> None:
    local, _ = plain
    tests = [c for c in local.render.containers() if c.workload_kind == "Pod"]
    assert len(tests) >= 3, [c.ref for c in tests]
    for c in tests:
        code, log = local.run(local.pod(c, root=tmp_path / c.workload), timeout=120)
        assert code == 0, f"helm test {c.ref} failed with {code}:\n{log[-3000:]}"
