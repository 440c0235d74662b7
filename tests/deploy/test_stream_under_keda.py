"""The stream scorer as KEDA scales it (issue 25, findings 2 and 10), without a cluster: the kind render with
KEDA's API, its Valkey StatefulSet and scorer Deployment started as local processes with their rendered
commands and environments (tests/deploy/pods.py says what stands in for the cluster), beside k8s/s3.yaml's S3.

- KEDA gets its metric: the address and password the TriggerAuthentication names, read from the rendered
  Secret as KEDA's operator reads them, reach Valkey, and every trigger's stream has the trigger's consumer group,
  whose lag KEDA reads.
- The liveness probe, evaluated as well as readiness: it passes while the loop turns, keeps passing while
  Valkey is down (a restart could not help), and the scorer is not restarted by it."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devharness import wait_until
from tests.deploy.pods import LocalCluster, Pod, tail
from tests.deploy.render import KEDA_API, MONITORING_API, Render, k8s_manifests, render
from tests.deploy.test_pods_as_processes import converge, start_workloads

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def scorer_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalCluster, dict[str, Pod]]]:
    chart = render("kind", api_versions=(MONITORING_API, KEDA_API))
    wanted = {"mlp-featurestore-redis", "mlp-stream"}
    subset = Render(
        chart.profile,
        [d for d in chart.docs if d["kind"] in {"Secret", "Service"} or d["metadata"]["name"] in wanted],
    )
    local = LocalCluster(chart, tmp_path_factory.mktemp("keda"), {})
    pods: dict[str, Pod] = {}
    try:
        start_workloads(local, Render("k8s/s3.yaml", k8s_manifests("s3")), {}, wait=True)
        starts = start_workloads(local, subset, pods, wait=False)
        converge(local, pods, starts)
        yield local, pods
    finally:
        local.stop()


def test_keda_reads_the_lag_with_what_the_trigger_authentication_names(
    scorer_cluster: tuple[LocalCluster, dict[str, Pod]],
) -> None:
    import redis

    local, pods = scorer_cluster
    chart = local.render
    (auth,) = chart.kind("TriggerAuthentication")
    (scaled,) = chart.kind("ScaledObject")
    params = {t["parameter"]: chart.secrets[t["name"]][t["key"]] for t in auth["spec"]["secretTargetRef"]}
    # KEDA's operator resolves the fully-qualified name from its own namespace; here, to the Service's address
    host, port = local.rewrite(params["address"], pods["mlp-featurestore-redis"]).rsplit(":", 1)
    client = redis.Redis(host=host, port=int(port), password=params["password"], decode_responses=True)
    scorer = pods["mlp-stream"]
    assert scorer.server is not None
    for trigger in scaled["spec"]["triggers"]:
        meta = trigger["metadata"]

        def has_group(meta: dict[str, str] = meta) -> bool:
            try:
                return any(g["name"] == meta["consumerGroup"] for g in client.xinfo_groups(meta["stream"]))
            except redis.ResponseError:
                return False  # the stream does not exist yet

        wait_until(has_group, 60, f"group {meta['consumerGroup']} on {meta['stream']}", scorer.server.proc, scorer.log)
        (group,) = [g for g in client.xinfo_groups(meta["stream"]) if g["name"] == meta["consumerGroup"]]
        assert group["lag"] is not None and int(group["lag"]) >= 0  # what KEDA's lag trigger reads
    client.close()


def test_the_liveness_probe_holds_while_valkey_is_down(scorer_cluster: tuple[LocalCluster, dict[str, Pod]]) -> None:
    local, pods = scorer_cluster
    scorer, valkey = pods["mlp-stream"], pods["mlp-featurestore-redis"]
    assert scorer.server is not None and valkey.server is not None
    heartbeat = local.volume(scorer, "tmp") / "heartbeat"
    wait_until(heartbeat.exists, 60, "the first heartbeat", scorer.server.proc, scorer.log)
    assert local.probe(scorer, "livenessProbe") and local.probe(scorer, "readinessProbe")
    errors = scorer.log.read_text(errors="replace").count("broker error")
    valkey.server.stop()
    try:
        # the loop has met the broker's absence (no pass in flight can touch the heartbeat after this)
        wait_until(
            lambda: scorer.log.read_text(errors="replace").count("broker error") > errors,
            60,
            "the scorer to notice Valkey is down",
            scorer.server.proc,
            scorer.log,
        )
        # what a minute of Valkey's absence looks like to the probe: no heartbeat since
        old = time.time() - 300
        os.utime(heartbeat, (old, old))
        assert local.probe(scorer, "livenessProbe"), "liveness failed while the broker was down: a restart loop"
        assert scorer.server.proc.poll() is None, tail(scorer.log)
    finally:
        local.start(valkey)
    wait_until(lambda: local.probe(valkey, "readinessProbe"), 60, "valkey back", valkey.server.proc, valkey.log)
    # the loop reconnects and turns again: a fresh heartbeat
    wait_until(lambda: time.time() - heartbeat.stat().st_mtime < 30, 90, "a fresh heartbeat", scorer.server.proc)
    assert local.probe(scorer, "livenessProbe")


def test_the_liveness_probe_fails_a_stuck_loop_while_valkey_answers(
    scorer_cluster: tuple[LocalCluster, dict[str, Pod]], tmp_path: Path
) -> None:
    """The probe is not always-pass: the scorer stopped (SIGSTOP: a loop that no longer turns) while Valkey
    answers makes its heartbeat stale, and the probe fails."""
    import signal

    local, pods = scorer_cluster
    scorer = pods["mlp-stream"]
    assert scorer.server is not None
    heartbeat = local.volume(scorer, "tmp") / "heartbeat"
    scorer.server.signal(signal.SIGSTOP)
    try:
        old = time.time() - 300
        os.utime(heartbeat, (old, old))
        assert not local.probe(scorer, "livenessProbe")
    finally:
        scorer.server.signal(signal.SIGCONT)
