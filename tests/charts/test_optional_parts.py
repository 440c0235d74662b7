"""Issue 25: the chart's optional parts as rendered, one test (or more) per finding. Each renders the case the
finding names and checks what a cluster would do with it: a Secret a pod mounts exists, a service account a
pod runs as is the one its values name, an image tag is the one the profile promises, a URL is one Triton
parses as https, a probe passes or fails as the pod's state says, a password stays, an alert can fire."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from devharness import ROOT, VENV_BIN, RedisServer
from tests.deploy.render import KEDA_API, MONITORING_API, NAMESPACE, OVERLAYS, SPARK_APIS, Render, render, tool

CHART = ROOT / "charts" / "ml-platform"
APP_VERSION = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]


def helm_template(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("helm"), "template", "mlp", str(CHART), "--namespace", NAMESPACE, *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def docs_of(*args: str) -> list[dict[str, Any]]:
    p = helm_template(*args)
    assert p.returncode == 0, p.stderr
    return [d for d in yaml.safe_load_all(p.stdout) if d]


def workload(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (d,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return d


def cron_pod(cron: dict[str, Any]) -> dict[str, Any]:
    return dict(cron["spec"]["jobTemplate"]["spec"]["template"]["spec"])


# ---- 3: no pod mounts a Secret that is not rendered ----------------------------------------------------------


def test_without_the_feature_store_nothing_mounts_the_missing_redis_secret() -> None:
    """featurestore off and predict's online features off: the stream scorer and the service's stream decisions
    still read <release>-redis, which only the featurestore chart renders. The render refuses them by name, and
    with them off every Secret any container reads exists (Render.containers() resolves each one)."""
    off = ("featurestore.enabled=false", "predict.onlineFeatures.enabled=false")
    p = helm_template(*(a for s in off for a in ("--set", s)))
    assert p.returncode != 0 and "stream.enabled" in p.stderr, p.stderr
    p = helm_template(*(a for s in (*off, "stream.enabled=false") for a in ("--set", s)))
    assert p.returncode != 0 and "predict.streamDecisions.enabled" in p.stderr, p.stderr
    r = render("default", sets=(*off, "stream.enabled=false", "predict.streamDecisions.enabled=false"))
    containers = r.containers()  # AssertionError on a Secret that is neither rendered nor external
    assert containers and not any("redis" in str(c.spec.get("env")) for c in containers)
    # with an existing Secret instead of the featurestore chart, both may stay on
    r = render("default", sets=("featurestore.enabled=false", "global.redis.existingSecret=elasticache-redis"))
    assert {c.name for c in r.containers()} >= {"predict", "scorer"}


# ---- 4: the drift CronJob runs as the service's account -------------------------------------------------------

DRIFT = (
    "predict.driftMonitoring.enabled=true",
    "predict.driftMonitoring.models={fraud}",
    "predict.driftMonitoring.prometheusUrl=http://prometheus:9090",
    "predict.driftMonitoring.pushgatewayUrl=http://pushgateway:9091",
)


@pytest.mark.parametrize(
    ("sets", "account"),
    [
        ((), "mlp-predict"),
        (("predict.serviceAccount.name=scoring",), "scoring"),
        (("predict.serviceAccount.create=false",), "default"),
        (("predict.serviceAccount.create=false", "predict.serviceAccount.name=existing"), "existing"),
    ],
)
def test_the_drift_cronjob_runs_as_the_services_account(sets: tuple[str, ...], account: str) -> None:
    docs = docs_of(*(a for s in (*DRIFT, *sets) for a in ("--set", s)))
    deployment = workload(docs, "Deployment", "mlp-predict")["spec"]["template"]["spec"]
    drift = cron_pod(workload(docs, "CronJob", "mlp-predict-drift"))
    assert deployment["serviceAccountName"] == drift["serviceAccountName"] == account
    rendered = {d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"}
    assert (account in rendered) is ("predict.serviceAccount.create=false" not in sets)


# ---- 5: the EKS profile's images are the chart's appVersion --------------------------------------------------


def test_eks_images_carry_the_charts_app_version() -> None:
    r = render("eks")
    ours = [c.spec["image"] for c in r.containers() if c.image is not None]
    assert ours and all(i.endswith(f":{APP_VERSION}") for i in ours), ours
    # kind keeps the tag `make kind-load` loads
    assert all(c.spec["image"].endswith(":dev") for c in render("kind").containers() if c.image is not None)


# ---- 6 and 1: IRSA on every account that reads S3 on EKS, Spark's included ------------------------------------


@pytest.mark.parametrize("engine", ["duckdb", "numpy", "spark"])
@pytest.mark.parametrize("operator", [False, True], ids=["plain-jobs", "spark-operator"])
def test_every_pod_reading_s3_on_eks_runs_as_an_irsa_account(engine: str, operator: bool) -> None:
    apis = (MONITORING_API, *(SPARK_APIS if operator else ()))
    sets = ("featureJob.enabled=true", f"featureJob.engine={engine}", "historical.enabled=true")
    r = render("eks", api_versions=apis, sets=(*sets, f"historical.engine={engine}"))
    accounts = {d["metadata"]["name"]: d for d in r.kind("ServiceAccount")}
    pods = [*r.containers(), *r.spark_pods()]
    jobs = [c for c in pods if c.workload.endswith(("-featurejob", "-historical"))]
    assert len({c.workload for c in jobs}) == 2, [c.ref for c in pods]
    assert any(c.workload_kind.endswith("SparkApplication") for c in jobs) is (operator and engine == "spark")
    for c in pods:
        if "FEATURES_OFFLINE_URL" not in c.env and "MODEL_STORE_URL" not in c.env:
            continue
        account = c.pod.get("serviceAccountName", "default")
        assert account in accounts, f"{c.ref} runs as {account}, which the chart does not create"
        arn = (accounts[account]["metadata"].get("annotations") or {}).get("eks.amazonaws.com/role-arn", "")
        assert arn.startswith("arn:aws:iam::"), f"{c.ref}: service account {account} has no IRSA role"


# ---- 7: Triton speaks https to an https endpoint ------------------------------------------------------------

# Triton's S3 path grammar (triton-inference-server/core, src/filesystem/implementations/s3.h).
TRITON_S3 = re.compile(r"s3://(http://|https://|)([0-9a-zA-Z\-.]+):([0-9]+)/([0-9a-z.\-]+)(((/[0-9a-zA-Z.\-_]+)*)?)")


@pytest.mark.parametrize(
    ("endpoint", "scheme", "host", "port"),
    [
        ("https://minio.example.com:9000", "https://", "minio.example.com", "9000"),
        ("https://s3.example.com/", "https://", "s3.example.com", "443"),
        ("http://s3.ml-platform.svc.cluster.local:8333", "", "s3.ml-platform.svc.cluster.local", "8333"),
        ("http://minio", "", "minio", "80"),
    ],
)
def test_triton_reads_the_model_repository_with_the_endpoints_scheme(
    endpoint: str, scheme: str, host: str, port: str
) -> None:
    docs = docs_of("--set", f"global.s3.endpointUrl={endpoint}")
    triton = workload(docs, "Deployment", "mlp-multimodal-triton")["spec"]["template"]["spec"]["containers"][0]
    (repo,) = [a.split("=", 1)[1] for a in triton["args"] if a.startswith("--model-repository=")]
    m = TRITON_S3.fullmatch(repo)
    assert m is not None, repo
    assert m.groups()[:4] == (scheme, host, port, "models") and m.group(5) == "/triton", repo
    (export,) = [d for d in docs if d["kind"] == "Job" and "-export-" in d["metadata"]["name"]]
    env = {e["name"]: e.get("value") for e in export["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["AWS_ENDPOINT_URL_S3"].startswith("https://") is (scheme == "https://")


# ---- 10: the stream scorer's liveness probe while Redis is down ---------------------------------------------


def _liveness(tmp_path: Path) -> tuple[list[str], Path]:
    (c,) = [c for c in render("kind").containers() if c.name == "scorer"]
    command = c.spec["livenessProbe"]["exec"]["command"]
    heartbeat = tmp_path / "heartbeat"
    return [a.replace("/tmp/heartbeat", str(heartbeat)) for a in command], heartbeat


def _probe(command: list[str], redis_url: str) -> int:
    env = {"PATH": f"{VENV_BIN}:/usr/bin:/bin", "STREAM_REDIS_URL": redis_url}
    return subprocess.run(command, env=env, capture_output=True, timeout=30, check=False).returncode


def test_the_scorers_liveness_probe_restarts_only_what_a_restart_helps(tmp_path: Path) -> None:
    """A fresh heartbeat passes; a stale one (or none) fails only while the broker answers: while Redis is down
    the loop is waiting for it, and a restart would only push the pod into CrashLoopBackOff."""
    command, heartbeat = _liveness(tmp_path)
    with SocketClosed() as dead_url:
        assert _probe(command, dead_url) == 0  # no heartbeat yet, broker down: the loop retries setup
        heartbeat.touch()
        old = time.time() - 600
        os.utime(heartbeat, (old, old))
        assert _probe(command, dead_url) == 0  # stale, broker down
    server = RedisServer(tmp_path / "valkey")
    try:
        assert _probe(command, server.url) == 1  # stale while the broker answers: stuck, restart it
        heartbeat.touch()
        assert _probe(command, server.url) == 0  # the loop turns
        heartbeat.unlink()
        assert _probe(command, server.url) == 1  # never turned although the broker answers
    finally:
        server.stop()


class SocketClosed:
    """A redis:// URL on a loopback port nothing listens on (bound, never listening, for the test's length)."""

    def __enter__(self) -> str:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        return f"redis://:pw@127.0.0.1:{self.sock.getsockname()[1]}/0"

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


# ---- 11: the generated Redis password does not rotate with every render --------------------------------------


def _redis_secret(docs: list[dict[str, Any]]) -> dict[str, str]:
    (s,) = [d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == "mlp-redis"]
    return {k: base64.b64decode(v).decode() for k, v in s["data"].items()}


def test_a_set_redis_password_survives_every_render() -> None:
    """GitOps renders with `helm template`, which cannot read the live Secret: featurestore.redis.password (from
    an encrypted values file) is what keeps Valkey's password and every client's URL the same across renders."""
    sets = ("--set", "featurestore.redis.password=Zr4nd0m-but-fixed.pw")
    first, second = _redis_secret(docs_of(*sets)), _redis_secret(docs_of(*sets))
    assert first == second and first["redis-password"] == "Zr4nd0m-but-fixed.pw"
    assert first["redis-url"] == "redis://:Zr4nd0m-but-fixed.pw@mlp-featurestore-redis:6379/0"
    # without it, each render generates one (helm install/upgrade keep the live one through lookup)
    assert _redis_secret(docs_of())["redis-password"] != _redis_secret(docs_of())["redis-password"]
    for bad in ("short", "has@sign-and-long-enough"):  # too short, or breaks the URL's user info
        p = helm_template("--set", f"featurestore.redis.password={bad}")
        assert p.returncode != 0 and "/redis/password" in p.stderr, p.stderr


# ---- 13: no setting renders in e-notation -------------------------------------------------------------------

BIG = """
featurestore: {featureServer: {readTimeoutMs: 2500000.5}, materialize: {lookbackMinutes: 1440000}}
predict:
  modelStore: {pollIntervalSeconds: 1000000}
  onlineFeatures: {timeoutMs: 1000000}
  batching: {maxWaitMs: 0.25}
  driftMonitoring: {servedLog: {url: s3://features/served, sampleRate: 0.001}}
multimodal: {preprocess: {tritonTimeoutMs: 1200000}}
stream:
  featureLog: {flushSeconds: 3000000}
  onlineFeatures: {timeoutMs: 1500000}
  modelStore: {pollIntervalSeconds: 2000000.25}
"""


def test_float_settings_of_a_million_or_more_render_as_plain_decimals(tmp_path: Path) -> None:
    values = tmp_path / "big.yaml"
    values.write_text(BIG)
    r = Render("big", docs_of("-f", str(values)))
    rendered = {k: v for c in r.containers() for k, v in c.env.items() if c.env_sources.get(k) == "env"}
    expected = {
        "FEATURES_READ_TIMEOUT_MS": "2500000.5",
        "PREDICT_POLL_INTERVAL_SECONDS": "1000000",
        "PREDICT_FEATURES_TIMEOUT_MS": "1000000",
        "PREDICT_MAX_BATCH_WAIT_MS": "0.25",
        "MONITORING_LOG_SAMPLE_RATE": "0.001",
        "PREPROCESS_TRITON_TIMEOUT_MS": "1200000",
        "STREAM_FEATURE_LOG_FLUSH_SECONDS": "3000000",
        "STREAM_FEATURES_TIMEOUT_MS": "1500000",
        "STREAM_POLL_INTERVAL_SECONDS": "2000000.25",
    }
    assert {k: rendered.get(k) for k in expected} == expected
    e_notation = {k: v for k, v in rendered.items() if re.fullmatch(r"-?[\d.]+e[+-]?\d+", v)}
    assert not e_notation, e_notation
    argv = [a for c in r.containers() for a in c.argv]
    assert "1440000" in argv and not any(re.fullmatch(r"[\d.]+e\+\d+", a) for a in argv)


# ---- 14: alerts on pushed metrics only where something pushes them --------------------------------------------

PUSHED = {"MaterializationFailed", "MaterializationStale", "FeatureJobFailed", "FeatureJobStale"}


@pytest.mark.parametrize("profile", ["default", "kind", "eks", "plain"])
def test_alerts_on_pushed_metrics_exist_only_where_a_pushgateway_receives_them(profile: str) -> None:
    r = render(profile)
    alerts = {rule["alert"] for d in r.kind("PrometheusRule") for g in d["spec"]["groups"] for rule in g["rules"]}
    pushing = {c.env.get("FEATURES_PUSHGATEWAY_URL") for c in r.containers() if c.name == "materialize"} - {None}
    assert (alerts >= PUSHED) is bool(pushing), (profile, alerts & PUSHED, pushing)
    assert not (PUSHED & alerts) or pushing


# ---- 9: the schemas refuse what the jobs and the API server would ---------------------------------------------


@pytest.mark.parametrize(
    ("value", "where"),
    [
        ("historical.engine=pandas", "/historical/engine"),
        ("featureJob.engine=pandas", "/featureJob/engine"),
        ("featureJob.start=yesterday", "/featureJob/start"),
        ("featureJob.start=today-3", "/featureJob/start"),
        ("stream.model=", "/model"),
        ("featureJob.concurrencyPolicy=Sometimes", "/featureJob/concurrencyPolicy"),
        ("featureJob.timeZone=Mars/Olympus", "/featureJob/timeZone"),
        ("featurestore.materialize.timeZone=UTC+2", "/materialize/timeZone"),
        ("predict.retrain.timeZone=Europe/Berlinn", "/retrain/timeZone"),
        ("common.anything=1", "/common"),
    ],
)
def test_the_schemas_refuse_values_that_fail_later(value: str, where: str) -> None:
    p = helm_template("--set", value)
    assert p.returncode != 0 and f"at '{where}'" in p.stderr, p.stderr


@pytest.mark.parametrize("start", ["today", "today-30d", "2026-01-02", "2026-01-02T03:04:05", "2026-01-02T03:04Z"])
def test_the_schema_accepts_every_start_the_feature_job_parses(start: str) -> None:
    from jobs.featurestore import _when

    _when(start)  # the job parses it
    assert helm_template("--set", f"featureJob.start={start}", "--set", "featureJob.enabled=true").returncode == 0


def test_the_start_pattern_agrees_with_the_jobs_parser() -> None:
    """Every candidate the schema's pattern accepts, the job's parser takes, and the other way round."""
    import argparse
    import json

    from jobs.featurestore import _when

    pattern = json.loads((CHART / "values.schema.json").read_text())["properties"]["featureJob"]["properties"]
    start = re.compile(pattern["start"]["pattern"])
    candidates = (
        *("today", "today-1d", "today-d", "yesterday", "today+1d", "now", "now-15m", "now-2d", "now-3w"),
        *("2026-13-45", "2026-02-03", "2026-02-03 04:05", "2026-02-03T04:05:06.123+02:00", "20260203", "2026-02-03T04"),
    )
    for candidate in candidates:
        try:
            _when(candidate)
            parses = True
        except (argparse.ArgumentTypeError, ValueError):
            parses = False
        matched = bool(start.search(candidate))
        # the pattern checks the form; the calendar (2026-13-45) is the job's to refuse
        assert matched is parses or (matched and candidate == "2026-13-45"), candidate


# ---- 8: values two subcharts must agree on -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sets", "named"),
    [
        (("stream.stream.shards=4",), ("stream.stream.shards", "predict.streamDecisions.shards")),
        (("predict.streamDecisions.outputStream=out",), ("stream.stream.outputStream", "predict.streamDecisions")),
        (("stream.offline.url=s3://features/elsewhere",), ("stream.offline.url", "featurestore.offline.url")),
        (("stream.modelStore.url=s3://models/other",), ("stream.modelStore.url", "predict.modelStore.url")),
        (("predict.onlineFeatures.repo=my.repo:defs",), ("predict.onlineFeatures.repo", "featurestore.repo")),
        (
            (*DRIFT, "predict.driftMonitoring.servedLog.url=s3://features/served",
             "predict.driftMonitoring.offlineUrl=s3://features/other"),
            ("predict.driftMonitoring.offlineUrl", "featurestore.offline.url"),
        ),
    ],
)  # fmt: skip
def test_shared_values_that_differ_fail_the_render_naming_both(sets: tuple[str, ...], named: tuple[str, str]) -> None:
    p = helm_template(*(a for s in sets for a in ("--set", s)))
    assert p.returncode != 0, "rendered although the two settings differ"
    assert all(n in p.stderr for n in named) and "must be the same" in p.stderr, p.stderr
    # set on both sides, they render
    both = {
        "stream.stream.shards=4": "predict.streamDecisions.shards=4",
        "stream.modelStore.url=s3://models/other": "predict.modelStore.url=s3://models/other",
    }
    if sets[0] in both:
        assert helm_template("--set", sets[0], "--set", both[sets[0]]).returncode == 0


def test_every_profile_keeps_its_shared_values_the_same_with_drift_on() -> None:
    for profile in ("kind", "eks", "plain"):
        render(profile, overlays=("drift-retrain",))  # fails (naming the pair) when a profile disagrees


# ---- every optional part validates against Kubernetes' schemas ------------------------------------------------

CRD_KINDS = {
    "ServiceMonitor",
    "PrometheusRule",
    "ScaledObject",
    "TriggerAuthentication",
    "SparkApplication",
    "ScheduledSparkApplication",
}


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
@pytest.mark.parametrize("profile", ["kind", "eks"])
def test_every_optional_part_validates_against_kubernetes_schemas(profile: str, overlay: str, tmp_path: Path) -> None:
    apis = (MONITORING_API, KEDA_API, *SPARK_APIS)
    r = render(profile, api_versions=apis, overlays=(overlay,))
    docs = [d for d in r.docs if d["kind"] not in CRD_KINDS]
    f = tmp_path / "manifests.yaml"
    f.write_text(yaml.safe_dump_all(docs))
    p = subprocess.run(
        [tool("kubernetes-validate"), "--strict", "--quiet", "-k", "1.35.0", str(f)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert p.returncode == 0, p.stdout + p.stderr


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
@pytest.mark.parametrize("profile", ["default", "kind", "eks", "plain"])
def test_every_optional_part_passes_helm_lint_strict(profile: str, overlay: str) -> None:
    profile_values = [] if profile == "default" else ["-f", str(CHART / "ci" / f"{profile}-values.yaml")]
    p = subprocess.run(
        [tool("helm"), "lint", "--strict", str(CHART), *profile_values, "-f", str(OVERLAYS[overlay])],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert p.returncode == 0, p.stdout + p.stderr
