"""The kind walkthrough of the README, minus Docker: `make deploy`'s objects (the S3 credentials Secret,
k8s/s3.yaml, then the chart's kind render) run as local processes with their rendered commands and
environments (tests/deploy/pods.py says what stands in for the cluster). Everything starts at once, as
`helm install --wait --wait-for-jobs` would create it, and must converge: every Job completes, every
Deployment and StatefulSet becomes ready on its own probes. Then the materializer CronJob's command runs once
with the Pushgateway set, the feature job and the training data Job run twice each, and every helm test pod's
command passes."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devharness import Pushgateway, Server, wait_until
from tests.deploy.pods import LocalCluster, Pod, tail
from tests.deploy.render import EXTERNAL_SERVICES, Container, Render, k8s_manifests, render

CONVERGE_SECONDS = 900  # the bootstrap Job trains four models and seeds 14 days; the export Job trains torch

pytestmark = pytest.mark.timeout(CONVERGE_SECONDS + 300)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalCluster, dict[str, Pod]]]:
    chart = render("kind")
    s3 = Render("k8s/s3.yaml", k8s_manifests("s3"))
    local = LocalCluster(chart, tmp_path_factory.mktemp("kind"), {})
    pods: dict[str, Pod] = {}
    try:
        # make deploy: k8s/s3.yaml first (SeaweedFS and its buckets), then the chart.
        start_workloads(local, s3, pods, wait=True)
        chart_pods: dict[str, Pod] = {}
        starts = start_workloads(local, chart, chart_pods, wait=False)
        converge(local, chart_pods, starts)
        yield local, {**pods, **chart_pods}
    finally:
        local.stop()


class PodStart(threading.Thread):
    """One pod as the kubelet starts it: init containers one by one to completion, then every container,
    then their postStart hooks. In a thread, so that an init container may wait for another workload (Triton's
    waits for the export Job's output)."""

    def __init__(self, local: LocalCluster, r: Render, workload: str, containers: list[Container]) -> None:
        super().__init__(name=f"pod-{workload}", daemon=True)
        self.local, self.error = local, ""
        root = local.workdir / workload
        self.inits = [local.pod(c, r.docs, root=root) for c in containers if c.init]
        self.mains = [local.pod(c, r.docs, root=root) for c in containers if not c.init]

    def run(self) -> None:
        try:
            for pod in self.inits:
                code, log = self.local.run(pod, timeout=CONVERGE_SECONDS)
                if code != 0:
                    self.error = f"init container {pod.container.ref} exited {code}:\n{log[-3000:]}"
                    return
            for pod in self.mains:
                self.local.start(pod)
            for pod in self.mains:
                for hook in post_start_commands(pod.container):
                    run_in_pod(self.local, pod, hook)
        except BaseException as exc:  # reported by converge()
            self.error = f"{type(exc).__name__}: {exc}"


def start_workloads(local: LocalCluster, r: Render, pods: dict[str, Pod], wait: bool) -> list[PodStart]:
    """Every Deployment, StatefulSet and Job of a render, each pod started as the kubelet would."""
    by_workload: dict[tuple[str, str], list[Container]] = {}
    for c in r.containers():
        if c.workload_kind in {"Deployment", "StatefulSet", "Job"}:
            by_workload.setdefault((c.workload_kind, c.workload), []).append(c)
    starts = []
    for (_, workload), containers in sorted(by_workload.items()):
        start = PodStart(local, r, workload, containers)
        for pod in start.mains:
            pods[workload if len(start.mains) == 1 else f"{workload}/{pod.container.name}"] = pod
        start.start()
        starts.append(start)
    if wait:
        converge(local, {k: p for k, p in pods.items() if any(p in s.mains for s in starts)}, starts)
    return starts


def post_start_commands(c: Container) -> list[list[str]]:
    hook = ((c.spec.get("lifecycle") or {}).get("postStart") or {}).get("exec")
    return [hook["command"]] if hook else []


def run_in_pod(local: LocalCluster, pod: Pod, command: list[str]) -> None:
    """A postStart hook: the kubelet runs it once the container started, retrying is the hook's business."""
    argv = [local.rewrite(a, pod) for a in command]
    _, env = local.command(pod)
    log = pod.root / "post-start.log"
    proc = Server(argv, log, env=env, cwd=pod.root, inherit_env=False)
    code = proc.wait(180)
    proc.stop()
    assert code == 0, f"postStart of {pod.container.ref} exited {code}:\n{tail(log)}"


def converge(local: LocalCluster, pods: dict[str, Pod], starts: list[PodStart]) -> None:
    deadline = time.monotonic() + CONVERGE_SECONDS
    pending = dict(pods)
    while pending:
        failed = [s.error for s in starts if s.error]
        assert not failed, "\n".join(failed)
        for key, pod in list(pending.items()):
            if pod.server is None:
                continue  # its init containers are still running
            code = pod.server.proc.poll()
            if pod.container.workload_kind == "Job":
                if code is not None:
                    assert code == 0, f"Job {key} failed with {code}:\n{tail(pod.log)}"
                    del pending[key]
            elif code is not None:
                raise AssertionError(f"{key} exited with {code} (a crash loop in a cluster):\n{tail(pod.log)}")
            elif local.probe(pod, "startupProbe") and local.probe(pod, "readinessProbe"):
                del pending[key]
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {k}:\n{tail(p.log, 1500)}" for k, p in pending.items())
            raise AssertionError(f"not converged after {CONVERGE_SECONDS}s: {sorted(pending)}\n{logs}")
        time.sleep(0.5)


def test_every_job_completed_and_every_pod_is_ready(cluster: tuple[LocalCluster, dict[str, Pod]]) -> None:
    local, pods = cluster
    kinds = {p.container.workload_kind for p in pods.values()}
    assert {"Deployment", "StatefulSet", "Job"} <= kinds
    for key, pod in pods.items():
        if pod.container.workload_kind != "Job":
            assert local.probe(pod, "readinessProbe"), key
            # the kubelet probes liveness too: a probe that fails on a healthy pod is a restart loop
            assert local.probe(pod, "livenessProbe"), f"{key}: liveness fails on a ready pod"


def test_the_materializer_cronjob_runs_with_the_pushgateway(
    cluster: tuple[LocalCluster, dict[str, Pod]], tmp_path: Path
) -> None:
    local, _ = cluster
    (c,) = [c for c in local.render.containers() if c.workload_kind == "CronJob" and "materialize" in c.workload]
    assert "FEATURES_PUSHGATEWAY_URL" in c.env, "the kind profile pushes the materializer's metrics"
    (gateway_key,) = [k for k in EXTERNAL_SERVICES if k[0] == "prometheus-pushgateway"]
    address = local.address(*gateway_key)
    gateway = Pushgateway(tmp_path / "gateway", listen=f"{address}:9091")
    try:
        for run in (1, 2):  # a CronJob run is safe to repeat
            code, log = local.run(local.pod(c, root=tmp_path / f"run{run}"), timeout=300)
            assert code == 0, f"materializer run {run} exited {code}:\n{log[-3000:]}"
            summary = json.loads([line for line in log.splitlines() if line.startswith("{")][-1])
            assert summary.get("status", "ok") == "ok", summary
        assert "materialize" in gateway.metrics()
    finally:
        gateway.stop()


def test_the_feature_job_and_a_training_data_job_run_on_the_installed_platform(
    cluster: tuple[LocalCluster, dict[str, Pod]], tmp_path: Path
) -> None:
    """The kind profile's scheduled feature job (a CronJob), and the point-in-time training data Job as
    `helm upgrade --set historical.enabled=true` adds it: each container's command with its rendered
    environment, against the installed S3 and the bootstrap's tables, run twice (a re-run replaces what
    the first wrote: the same rows, a newer table version)."""
    local, _ = cluster
    (features,) = [c for c in local.render.containers() if c.workload_kind == "CronJob" and "featurejob" in c.workload]
    assert "FEATURES_PUSHGATEWAY_URL" in features.env, "the feature job pushes its metrics, for its alerts"
    upgraded = render("kind", sets=("historical.enabled=true",))
    (historical,) = [c for c in upgraded.containers() if c.workload_kind == "Job" and "historical" in c.workload]
    (gateway_key,) = [k for k in EXTERNAL_SERVICES if k[0] == "prometheus-pushgateway"]
    gateway = Pushgateway(tmp_path / "gateway", listen=f"{local.address(*gateway_key)}:9091")
    try:
        for c, docs in ((features, local.render.docs), (historical, upgraded.docs)):
            runs = []
            for run in (1, 2):
                code, log = local.run(local.pod(c, docs, root=tmp_path / f"{c.workload}-{run}"), timeout=600)
                assert code == 0, f"{c.ref} run {run} exited {code}:\n{log[-3000:]}"
                summary = json.loads([line for line in log.splitlines() if line.startswith("{")][-1])
                assert summary["status"] == "ok" and summary["rows"] > 0, summary
                runs.append(summary)
            assert runs[0]["rows"] == runs[1]["rows"], runs
            if "output_version" in runs[0]:
                assert runs[1]["output_version"] > runs[0]["output_version"], runs
        pushed = [ln for ln in gateway.metrics().splitlines() if 'job="features"' in ln]
        assert any(ln.startswith("mlplatform_job_last_run_success{") and ln.endswith(" 1") for ln in pushed), pushed
    finally:
        gateway.stop()


def test_every_helm_test_pod_passes(cluster: tuple[LocalCluster, dict[str, Pod]], tmp_path: Path) -> None:
    local, _ = cluster
    tests = [c for c in local.render.containers() if c.workload_kind == "Pod"]
    assert len(tests) >= 3, [c.ref for c in tests]
    for c in tests:
        assert (local.render.get("Pod", c.workload)["metadata"]["annotations"] or {}).get("helm.sh/hook") == "test"
        code, log = local.run(local.pod(c, root=tmp_path / c.workload), timeout=120)
        assert code == 0, f"helm test {c.ref} failed with {code}:\n{log[-3000:]}"


def test_the_fraud_model_scores_a_user_by_id_through_the_services(cluster: tuple[LocalCluster, dict[str, Pod]]) -> None:
    """What the walkthrough's port-forward + curl shows: the bootstrap's data, materialized to the chart's Redis,
    joined at request time by the prediction service."""
    _, pods = cluster
    predict = next(p for k, p in pods.items() if k.endswith("-predict"))
    body = json.dumps({"instances": [{"user_id": 7, "amount": 250.0, "merchant_category": 8}]}).encode()
    url = f"http://{predict.address}:8080/v1/models/fraud/predict"
    # The bootstrap Job publishes fraud last; each worker picks it up within the poll interval.
    assert predict.server is not None
    wait_until(lambda: http_status(url, body) == 200, 60, "fraud served", predict.server.proc)
    answer = json.load(urllib.request.urlopen(urllib.request.Request(url, body), timeout=10))
    assert answer["model"] == "fraud" and len(answer["probabilities"]) == 1, answer


def http_status(url: str, body: bytes) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, body), timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def test_the_stream_scorer_decides_an_event_as_the_http_api_does(cluster: tuple[LocalCluster, dict[str, Pod]]) -> None:
    """An event appended to the chart's stream is scored by the chart's scorer Deployment, with the model the
    bootstrap published and the features it materialized: the same probabilities as the HTTP API's."""
    import redis

    local, pods = cluster
    scorer = next(p for k, p in pods.items() if k.endswith("-stream"))
    predict = next(p for k, p in pods.items() if k.endswith("-predict"))
    _, env = local.command(scorer)
    client = redis.Redis.from_url(env["STREAM_REDIS_URL"], decode_responses=True)
    fields: dict[Any, Any] = {"user_id": 7, "amount": 250.0, "merchant_category": 8}
    client.xadd("transactions:{0}", {"event_id": "deploy-1", "event_time_ms": int(time.time() * 1000), **fields})
    assert scorer.server is not None
    wait_until(lambda: client.exists("decisions:{0}:deploy-1") == 1, 60, "decision", scorer.server.proc, scorer.log)
    decision = json.loads(client.get("decisions:{0}:deploy-1") or "{}")
    body = json.dumps({"instances": [fields]}).encode()
    url = f"http://{predict.address}:8080/v1/models/fraud/predict"
    answer = json.load(urllib.request.urlopen(urllib.request.Request(url, body), timeout=10))
    assert decision["model"] == "fraud" and decision["version"] == answer["version"]
    assert decision["probabilities"] == answer["probabilities"][0]
    assert decision["feature_status"] == answer["feature_status"][0]
