"""The Helm charts, checked without a cluster: lint, schemas of two Kubernetes versions, and what
schemas cannot see (selectors, ports, probes, targets, commands, security)."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from devharness import ROOT, VENV_BIN
from jobs.__main__ import build_parser

CHART = ROOT / "charts" / "ml-platform"
PROFILES = {
    "default": None,
    **{f.name.removesuffix("-values.yaml"): f for f in sorted((CHART / "ci").glob("*-values.yaml"))},
}
K8S_VERSIONS = ["1.29.0", "1.35.0"]  # oldest and newest minor we support
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
WORKLOADS = {"Deployment", "StatefulSet"}


def tool(name: str) -> str:
    path = shutil.which(name, path=str(VENV_BIN)) or shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not installed: `make setup` installs it (k8s/install_tools.py, dev extras)")
    return path


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("helm"), *args], capture_output=True, text=True, check=False, timeout=120)


def assert_valid_manifests(version: str, *files: Path) -> None:
    """kubernetes-validate --strict on ``files`` against Kubernetes ``version``'s schemas."""
    p = subprocess.run(
        [tool("kubernetes-validate"), "--strict", "--quiet", "-k", version, *map(str, files)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert p.returncode == 0, p.stdout + p.stderr


def values_args(profile: str) -> list[str]:
    f = PROFILES[profile]
    return ["-f", str(f)] if f else []


_RENDERED: dict[str, list[dict[str, Any]]] = {}


# A cluster with kube-prometheus-stack serves this API; without it the chart renders no ServiceMonitor/PrometheusRule.
MONITORING_API = ("--api-versions", "monitoring.coreos.com/v1")


def render(*args: str, monitoring: bool = True) -> list[dict[str, Any]]:
    """`helm template mlp` of the umbrella chart in namespace ml; fails the test when helm fails."""
    extra = MONITORING_API if monitoring else ()
    p = helm("template", "mlp", str(CHART), "--namespace", "ml", *extra, *args)
    assert p.returncode == 0, p.stderr
    return [d for d in yaml.safe_load_all(p.stdout) if d]


def rendered(profile: str) -> list[dict[str, Any]]:
    """The profile as installed next to kube-prometheus-stack (kind and EKS both run it)."""
    if profile not in _RENDERED:
        _RENDERED[profile] = render(*values_args(profile))
    return _RENDERED[profile]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def jobs_of(docs: list[dict[str, Any]], component: str) -> list[dict[str, Any]]:
    """The Jobs of one component (their names carry a hash of the pod template)."""
    return [j for j in by_kind(docs, "Job") if j["metadata"]["labels"]["app.kubernetes.io/name"] == component]


def pod_specs(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(name, pod template metadata, pod spec) of every workload, CronJob and test Pod."""
    out = []
    for d in docs:
        if d["kind"] in WORKLOADS:
            out.append((d["metadata"]["name"], d["spec"]["template"]["metadata"], d["spec"]["template"]["spec"]))
        elif d["kind"] == "CronJob":
            t = d["spec"]["jobTemplate"]["spec"]["template"]
            out.append((d["metadata"]["name"], t["metadata"], t["spec"]))
        elif d["kind"] == "Job":
            t = d["spec"]["template"]
            out.append((d["metadata"]["name"], t["metadata"], t["spec"]))
        elif d["kind"] == "Pod":
            out.append((d["metadata"]["name"], d["metadata"], d["spec"]))
    return out


@pytest.mark.parametrize("profile", list(PROFILES))
def test_helm_lint_strict(profile: str) -> None:
    p = helm("lint", "--strict", str(CHART), *values_args(profile))
    assert p.returncode == 0, p.stdout + p.stderr


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("profile", list(PROFILES))
def test_manifests_validate_against_kubernetes_schemas(profile: str, version: str, tmp_path: Path) -> None:
    docs = [d for d in rendered(profile) if d["kind"] not in CRD_KINDS]
    f = tmp_path / "manifests.yaml"
    f.write_text(yaml.safe_dump_all(docs))
    assert_valid_manifests(version, f)
    assert len(docs) >= 10


@pytest.mark.parametrize("profile", list(PROFILES))
def test_selectors_ports_probes_and_targets(profile: str) -> None:
    docs = rendered(profile)
    workloads = [d for d in docs if d["kind"] in WORKLOADS]
    pods = {d["metadata"]["name"]: d["spec"]["template"] for d in workloads}
    for d in workloads:
        sel = d["spec"]["selector"]["matchLabels"]
        labels = d["spec"]["template"]["metadata"]["labels"]
        assert sel.items() <= labels.items(), d["metadata"]["name"]
        assert len(sel) <= 2, "selector labels kept minimal (name + instance)"
        for c in d["spec"]["template"]["spec"]["containers"]:
            names = {p["name"] for p in c.get("ports", [])} | {p["containerPort"] for p in c.get("ports", [])}
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                port = (c.get(probe) or {}).get("httpGet", (c.get(probe) or {}).get("tcpSocket", {})).get("port")
                assert port is None or port in names, f"{d['metadata']['name']} {probe} port {port}"
    for svc in by_kind(docs, "Service"):
        matches = [t for t in pods.values() if svc["spec"]["selector"].items() <= t["metadata"]["labels"].items()]
        assert matches, f"service {svc['metadata']['name']} selects no pod"
        for port in svc["spec"]["ports"]:
            cports = {p.get("name") for t in matches for c in t["spec"]["containers"] for p in c.get("ports", [])}
            assert port["targetPort"] in cports, f"{svc['metadata']['name']} targets {port['targetPort']}"
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for hpa in by_kind(docs, "HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        assert (ref["kind"], ref["name"]) in names, f"HPA targets missing {ref}"
    for pdb in by_kind(docs, "PodDisruptionBudget"):
        assert any(
            pdb["spec"]["selector"]["matchLabels"].items() <= t["metadata"]["labels"].items() for t in pods.values()
        )


@pytest.mark.parametrize("profile", list(PROFILES))
def test_service_monitors_select_our_services(profile: str) -> None:
    docs = rendered(profile)
    services = by_kind(docs, "Service")
    monitors = by_kind(docs, "ServiceMonitor")
    assert len(monitors) == 5  # predict, feature server, preprocess, Triton's metrics port, stream scorer
    for sm in monitors:
        assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        selected = [
            s for s in services if sm["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
        ]
        assert selected, f"{sm['metadata']['name']} selects no service"
        port_names = {p["name"] for s in selected for p in s["spec"]["ports"]}
        assert all(e["port"] in port_names for e in sm["spec"]["endpoints"])
    for rule in by_kind(docs, "PrometheusRule"):
        assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        assert all(r["expr"] for g in rule["spec"]["groups"] for r in g["rules"])


@pytest.mark.parametrize("profile", list(PROFILES))
def test_cronjob_runs_a_real_jobs_subcommand(profile: str) -> None:
    (cron,) = [c for c in by_kind(rendered(profile), "CronJob") if c["metadata"]["name"].endswith("-materialize")]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid" and cron["spec"]["timeZone"]
    job = cron["spec"]["jobTemplate"]["spec"]
    assert job["backoffLimit"] >= 0 and job["activeDeadlineSeconds"] > 0
    argv = job["template"]["spec"]["containers"][0]["command"]
    assert argv[:3] == ["python", "-m", "jobs"]
    args = build_parser().parse_args(argv[3:])  # SystemExit on anything the CLI does not accept
    assert args.command == "materialize-incremental"
    shards = int(
        next(e["value"] for e in job["template"]["spec"]["containers"][0]["env"] if e["name"] == "MATERIALIZE_SHARDS")
    )
    if shards > 1:
        assert job["completionMode"] == "Indexed" and job["completions"] == job["parallelism"] == shards
    else:
        assert "completionMode" not in job
    assert profile != "eks" or shards == 4, shlex.join(argv)


@pytest.mark.parametrize("profile", list(PROFILES))
def test_pods_are_locked_down(profile: str) -> None:
    for name, _, spec in pod_specs(rendered(profile)):
        psc = spec.get("securityContext", {})
        assert psc.get("runAsNonRoot") is True, name
        assert psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", name
        # only the retrain job talks to the API server (its Role: get/patch on one Deployment)
        assert spec.get("automountServiceAccountToken") is name.endswith("-retrain"), name
        for c in spec["containers"]:
            sc = c.get("securityContext", {})
            assert sc.get("allowPrivilegeEscalation") is False, name
            assert sc.get("readOnlyRootFilesystem") is True, name
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], name
            assert c.get("resources", {}).get("limits"), f"{name}: no resource limits"


@pytest.mark.parametrize("profile", list(PROFILES))
def test_rolling_updates_drop_nothing(profile: str) -> None:
    for d in by_kind(rendered(profile), "Deployment"):
        spec = d["spec"]["template"]["spec"]
        c = spec["containers"][0]
        if not any(p["name"] == "http" for p in c.get("ports", [])):
            continue  # takes no requests (the stream scorer: test_the_stream_scorer_drains_on_sigterm)
        assert d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
        pre_stop = int(c["lifecycle"]["preStop"]["exec"]["command"][1])
        assert spec["terminationGracePeriodSeconds"] > pre_stop + 25  # preStop + the server's own drain
        assert c["readinessProbe"]["httpGet"]["path"] in ("/readyz", "/v2/health/ready")


@pytest.mark.parametrize("profile", list(PROFILES))
def test_the_stream_scorer_drains_on_sigterm_and_is_restarted_when_stuck(profile: str) -> None:
    """It takes no requests: a rollout's SIGTERM lets it finish and acknowledge its micro-batch (the process
    test proves the exit), and a loop that stops turning fails the heartbeat liveness probe."""
    (d,) = [d for d in by_kind(rendered(profile), "Deployment") if d["metadata"]["name"] == "mlp-stream"]
    spec = d["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    assert c["command"] == ["python", "-m", "app.stream"]
    assert spec["terminationGracePeriodSeconds"] >= 10
    env = {e["name"]: e for e in c["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"  # stable consumer name
    assert "/tmp/heartbeat" in " ".join(c["livenessProbe"]["exec"]["command"])
    assert env["STREAM_HEARTBEAT_FILE"]["value"] == "/tmp/heartbeat"


def env_of(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for _, _, s in pod_specs(docs) for c in s["containers"] for e in c.get("env", [])}


def env_of_workload(docs: list[dict[str, Any]], name: str) -> dict[str, dict[str, Any]]:
    """The environment of one workload's containers (the services share variable names now)."""
    (spec,) = [s for n, _, s in pod_specs(docs) if n == name]
    return {e["name"]: e for c in spec["containers"] for e in c.get("env", [])}


def test_profiles_differ_where_they_should() -> None:
    kind = rendered("kind")
    eks = rendered("eks")
    for workload in ("mlp-featurestore-featureserver", "mlp-predict"):  # one name, FEATURES_REDIS_URL, for both
        eks_env, kind_env = env_of_workload(eks, workload), env_of_workload(kind, workload)
        secret = {"name": "elasticache-redis", "key": "redis-url"}
        assert eks_env["FEATURES_REDIS_URL"]["valueFrom"]["secretKeyRef"] == secret, workload
        assert kind_env["FEATURES_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {"name": "mlp-redis", "key": "redis-url"}
    assert not by_kind(eks, "StatefulSet") and by_kind(kind, "StatefulSet")
    assert not [s for s in by_kind(eks, "Secret")]  # ElastiCache's URL is in the operator's Secret
    sas = {d["metadata"]["name"]: d for d in by_kind(eks, "ServiceAccount")}
    assert all("eks.amazonaws.com/role-arn" in sa["metadata"]["annotations"] for sa in sas.values())
    assert "nvidia.com/gpu" not in yaml.safe_dump_all(kind)  # no GPU resources on the CPU profile
    # credentials only ever come from Secrets or IRSA, never from values
    for docs in (kind, eks):
        for _, _, spec in pod_specs(docs):
            for c in spec["containers"]:
                for e in c.get("env", []):
                    assert "@" not in str(e.get("value", "")), e
                    assert not e["name"].startswith("AWS_SECRET"), e


def test_disabling_a_subchart_removes_it() -> None:
    # everything that reads Redis off too (the stream scorer, the service's decisions: issue 25 finding 3)
    off = ("featurestore.enabled=false", "predict.onlineFeatures.enabled=false", "stream.enabled=false")
    kinds = [
        d["kind"] for d in render(*(a for s in (*off, "predict.streamDecisions.enabled=false") for a in ("--set", s)))
    ]
    assert "CronJob" not in kinds and "StatefulSet" not in kinds and "Deployment" in kinds
    # predict without an online store would install and never serve feature models: refused, naming the fix
    p = helm("template", "mlp", str(CHART), "--set", "featurestore.enabled=false")
    assert p.returncode != 0 and "predict.onlineFeatures.enabled" in p.stderr


@pytest.mark.parametrize("profile", ["kind", "eks"])
def test_alert_rules_pass_promtool(profile: str, tmp_path: Path) -> None:
    from devharness import debian_binary

    promtool = debian_binary("promtool", "prometheus")
    groups = [g for r in by_kind(rendered(profile), "PrometheusRule") for g in r["spec"]["groups"]]
    names = {g["name"] for g in groups}
    assert {"ml-platform-predict", "ml-platform-featurestore", "ml-platform-stream"} <= names
    f = tmp_path / "rules.yaml"
    f.write_text(yaml.safe_dump({"groups": groups}))
    p = subprocess.run([promtool, "check", "rules", str(f)], capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"SUCCESS: {sum(len(g['rules']) for g in groups)} rules found" in p.stdout


def test_bootstrap_job_only_where_enabled_and_runs_real_subcommands() -> None:
    assert not jobs_of(rendered("eks"), "bootstrap")
    (job,) = jobs_of(rendered("kind"), "bootstrap")
    script = job["spec"]["template"]["spec"]["containers"][0]["args"][0]
    lines = [ln.strip() for ln in script.splitlines() if ln.strip()]
    assert len(lines) == 6
    for line in lines:
        argv = shlex.split(line.replace('"$(date', "DATE").split(" DATE")[0])
        assert argv[:3] == ["python", "-m", "jobs"]
        build_parser().parse_args([a for a in argv[3:] if a != "--start"])


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_cluster_addons_validate(version: str) -> None:
    assert_valid_manifests(version, ROOT / "k8s" / "namespace.yaml", ROOT / "k8s" / "s3.yaml")


def test_gpu_settings_only_in_the_gpu_profile() -> None:
    def triton(profile: str) -> dict[str, Any]:
        return next(d for d in by_kind(rendered(profile), "Deployment") if d["metadata"]["name"].endswith("-triton"))

    def export_script(profile: str) -> str:
        (job,) = jobs_of(rendered(profile), "export")
        return str(job["spec"]["template"]["spec"]["containers"][0]["args"][0])

    gpu, cpu = triton("eks")["spec"]["template"]["spec"], triton("kind")["spec"]["template"]["spec"]
    assert gpu["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert gpu["nodeSelector"] == {"ml-platform.io/pool": "gpu", "eks.amazonaws.com/capacityType": "ON_DEMAND"}
    assert any(t["key"] == "nvidia.com/gpu" for t in gpu["tolerations"])
    assert "nvidia.com/gpu" not in yaml.safe_dump(cpu) and "tolerations" not in cpu
    assert cpu["nodeSelector"] == {"ml-platform.io/pool": "inference"}
    assert "--gpu --backend pytorch" in export_script("eks") and "--gpu" not in export_script("kind")
    for profile in ("kind", "eks"):
        c = triton(profile)["spec"]["template"]["spec"]["containers"][0]
        assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
        assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    kind_repo = triton("kind")["spec"]["template"]["spec"]["containers"][0]["args"][0]
    assert kind_repo == "--model-repository=s3://s3.ml-platform.svc.cluster.local:8333/models/triton"


def test_export_job_runs_real_subcommands() -> None:
    (job,) = jobs_of(rendered("eks"), "export")
    for line in [ln.strip() for ln in job["spec"]["template"]["spec"]["containers"][0]["args"][0].splitlines() if ln]:
        argv = shlex.split(line)
        assert argv[:3] == ["python", "-m", "jobs"]
        build_parser().parse_args(argv[3:])


def test_dashboards_are_configmaps_for_the_grafana_sidecar() -> None:
    import json

    maps = [
        d for d in by_kind(rendered("kind"), "ConfigMap") if d["metadata"]["labels"].get("grafana_dashboard") == "1"
    ]
    assert {m["metadata"]["name"] for m in maps} == {
        f"mlp-dashboard-{n}" for n in ("overview", "predict", "featurestore", "multimodal", "stream")
    }
    for m in maps:
        ((fname, text),) = m["data"].items()
        board = json.loads(text)
        assert fname.endswith(".json") and board["uid"].startswith("ml-platform-")
        assert board["panels"] and all(p["targets"][0]["expr"] for p in board["panels"])
    p = helm("template", "mlp", str(CHART), "--set", "dashboards.enabled=false")
    assert "grafana_dashboard" not in p.stdout


def test_retrain_cronjob_has_a_least_privilege_role() -> None:
    p = helm("template", "mlp", str(CHART), "--set", "predict.retrain.enabled=true")
    assert p.returncode == 0, p.stderr
    docs = [d for d in yaml.safe_load_all(p.stdout) if d]
    (role,) = by_kind(docs, "Role")
    assert all(r["verbs"] in (["get", "patch"], ["get"]) for r in role["rules"])
    assert all(r["resourceNames"] == ["mlp-predict"] and r["apiGroups"] == ["apps"] for r in role["rules"])
    (binding,) = by_kind(docs, "RoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    cron = next(c for c in by_kind(docs, "CronJob") if c["metadata"]["name"] == "mlp-predict-retrain")
    spec = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == binding["subjects"][0]["name"]
    lines = [ln for ln in spec["containers"][0]["args"][0].splitlines() if ln.strip()]
    for line in lines:
        argv = shlex.split(line.split(" --reason")[0])
        assert argv[:3] == ["python", "-m", "jobs"]
        build_parser().parse_args(argv[3:] + (["--reason", "x"] if "rollout" in argv else []))
    assert "--deployment mlp-predict" in lines[1]


# Environment variables read with int(): gunicorn's config and the materializer's shard count.
INT_ENV = {"PORT", "WEB_CONCURRENCY", "GRACEFUL_TIMEOUT", "MATERIALIZE_SHARDS"}


def int_settings_env() -> set[str]:
    """Every environment variable the services' settings classes parse as an int."""
    from app.featureserver.core.config import Settings as FeatureServerSettings
    from app.predict.core.config import Settings as PredictSettings
    from app.preprocess.core.config import Settings as PreprocessSettings

    names = set(INT_ENV)
    for cls in (PredictSettings, FeatureServerSettings, PreprocessSettings):
        prefix = cls.model_config.get("env_prefix", "")
        names |= {f"{prefix}{n}".upper() for n, f in cls.model_fields.items() if f.annotation is int}
    return names


def test_integer_values_render_as_integers() -> None:
    """Helm reads YAML numbers as float64 and prints 1e+07-style past a million; the settings reject that."""
    big = {
        "multimodal.preprocess.maxImageBytes": 10485760,
        "featurestore.featureServer.maxEntities": 5000000,
        "predict.batching.maxBatchSize": 100000,
        "bootstrap.users": 2000000,
        "bootstrap.enabled": "true",
    }
    sets = [a for k, v in big.items() for a in ("--set", f"{k}={v}")]
    p = helm("template", "mlp", str(CHART), *sets)
    assert p.returncode == 0, p.stderr
    docs = [d for d in yaml.safe_load_all(p.stdout) if d]
    int_env = int_settings_env()
    assert "PREPROCESS_MAX_IMAGE_BYTES" in int_env and "FEATURES_MAX_ENTITIES" in int_env
    env = {e["name"]: e.get("value") for _, _, s in pod_specs(docs) for c in s["containers"] for e in c.get("env", [])}
    assert env["PREPROCESS_MAX_IMAGE_BYTES"] == "10485760"
    assert env["FEATURES_MAX_ENTITIES"] == "5000000"
    assert env["PREDICT_MAX_BATCH_SIZE"] == "100000"
    for profile in PROFILES:
        for name, _, spec in pod_specs(rendered(profile) + docs):
            for c in spec["containers"]:
                for e in c.get("env", []):
                    if e["name"] in int_env and "value" in e:
                        assert e["value"].lstrip("-").isdigit(), f"{profile} {name}: {e['name']}={e['value']!r}"
    (script,) = jobs_of(docs, "bootstrap")
    assert "--users 2000000 " in script["spec"]["template"]["spec"]["containers"][0]["args"][0]


@pytest.mark.parametrize("profile", list(PROFILES))
def test_monitoring_crds_only_where_the_api_exists(profile: str) -> None:
    """A plain `helm install` on a cluster without the Prometheus Operator must not fail on unknown kinds."""
    plain = {d["kind"] for d in render(*values_args(profile), monitoring=False)}
    assert not plain & CRD_KINDS
    assert "Deployment" in plain and "NetworkPolicy" in plain
    with_operator = {d["kind"] for d in rendered(profile)}
    assert with_operator >= CRD_KINDS


@pytest.mark.parametrize("profile", list(PROFILES))
def test_no_install_hooks_so_wait_for_jobs_converges(profile: str) -> None:
    """Hooks run only after --wait sees every pod ready, and readiness needs what bootstrap/export publish."""
    for d in rendered(profile):
        hook = d["metadata"].get("annotations", {}).get("helm.sh/hook")
        assert hook in (None, "test"), f"{d['kind']} {d['metadata']['name']} is a {hook} hook"
    for job in by_kind(rendered(profile), "Job"):
        assert "ttlSecondsAfterFinished" not in job["spec"], "Helm would recreate a Job the TTL deleted"
    # the hash in a Job's name follows its pod template: unchanged upgrades keep the finished Job
    (a,) = jobs_of(rendered("kind"), "export")
    (b,) = jobs_of(render(*values_args("kind")), "export")
    (c,) = jobs_of(render(*values_args("kind"), "--set", "multimodal.modelRepository.url=s3://models/other"), "export")
    assert a["metadata"]["name"] == b["metadata"]["name"] != c["metadata"]["name"]


def test_make_deploy_waits_for_jobs() -> None:
    recipe = (ROOT / "Makefile").read_text().split("\ndeploy:")[1].split("\n\n")[0]
    assert "--wait" in recipe and "--wait-for-jobs" in recipe


@pytest.mark.parametrize("profile", list(PROFILES))
def test_every_service_admits_prometheus_on_its_metrics_port(profile: str) -> None:
    docs = rendered(profile)
    policies = by_kind(docs, "NetworkPolicy")
    workloads = [d for d in docs if d["kind"] in WORKLOADS]
    for svc in by_kind(docs, "Service"):
        (pod,) = [
            w["spec"]["template"]
            for w in workloads
            if svc["spec"]["selector"].items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        labels = pod["metadata"]["labels"]
        mine = [p for p in policies if p["spec"]["podSelector"]["matchLabels"].items() <= labels.items()]
        assert mine, f"no NetworkPolicy for {svc['metadata']['name']}"
        if labels["app.kubernetes.io/name"] == "redis":
            continue  # no metrics endpoint; only this release's pods may connect
        metrics_port = "metrics" if labels["app.kubernetes.io/name"] in {"triton", "stream"} else "http"
        admitted = [
            rule
            for p in mine
            for rule in p["spec"]["ingress"]
            if {"port": metrics_port, "protocol": "TCP"} in rule["ports"]
            and {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}} in rule["from"]
        ]
        assert admitted, f"{svc['metadata']['name']}: Prometheus in namespace monitoring cannot scrape {metrics_port}"
    other = render(*values_args(profile), "--set", "global.networkPolicy.monitoringNamespace=observability")
    assert "observability" in yaml.safe_dump_all(by_kind(other, "NetworkPolicy"))


S3_MARKERS = ("s3://", "S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "MODEL_STORE_URL", "OFFLINE_URL")


def test_every_pod_touching_s3_has_an_irsa_service_account_on_eks() -> None:
    docs = render(*values_args("eks"), "--set", "bootstrap.enabled=true", "--set", "global.redis.existingSecret=x")
    accounts = {sa["metadata"]["name"]: sa for sa in by_kind(docs, "ServiceAccount")}
    touching = [(name, spec) for name, _, spec in pod_specs(docs) if any(m in yaml.safe_dump(spec) for m in S3_MARKERS)]
    names = {name for name, _ in touching}
    assert any("triton" in n for n in names) and any("export" in n for n in names)
    assert any("bootstrap" in n for n in names) and any("retrain" in n for n in names)
    for name, spec in touching:
        sa = accounts.get(spec.get("serviceAccountName", "default"))
        assert sa is not None, f"{name} runs as {spec.get('serviceAccountName', 'default')}, not ours"
        assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::"), name


def test_every_model_publisher_signs_with_the_key_predict_verifies() -> None:
    docs = render(*values_args("eks"), "--set", "bootstrap.enabled=true")
    verify = env_of_workload(docs, "mlp-predict")["MODEL_STORE_HMAC_KEY"]["valueFrom"]["secretKeyRef"]
    publishers = [
        (name, spec) for name, _, spec in pod_specs(docs) if "python -m jobs train " in yaml.safe_dump(spec, width=1000)
    ]
    assert {n.split("-")[1] for n, _ in publishers} >= {"predict", "bootstrap"}  # retrain CronJob, bootstrap Job
    for name, spec in publishers:
        env = {e["name"]: e for c in spec["containers"] for e in c.get("env", [])}
        assert env["MODEL_STORE_HMAC_KEY"]["valueFrom"]["secretKeyRef"] == verify, name


def test_redis_auth_reaches_every_client_from_one_secret() -> None:
    import base64

    docs = rendered("kind")
    (secret,) = by_kind(docs, "Secret")
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    password = data["redis-password"]
    assert len(password) >= 32
    assert data["redis-url"] == f"redis://:{password}@mlp-featurestore-redis:6379/0"
    (redis,) = by_kind(docs, "StatefulSet")
    c = redis["spec"]["template"]["spec"]["containers"][0]
    assert '--requirepass "$REDIS_PASSWORD"' in c["args"][0]
    assert {e["name"]: e["valueFrom"]["secretKeyRef"]["key"] for e in c["env"]} == {
        "REDIS_PASSWORD": "redis-password",
        "REDISCLI_AUTH": "redis-password",
    }
    clients = {}
    for name, _, spec in pod_specs(docs):
        for ct in spec["containers"]:
            for e in ct.get("env", []):
                if e["name"].endswith("REDIS_URL"):
                    clients[name] = e["valueFrom"]["secretKeyRef"]
    assert len(clients) == 5, clients  # feature server, materializer, bootstrap, predict, stream scorer
    assert all(ref == {"name": secret["metadata"]["name"], "key": "redis-url"} for ref in clients.values())
    predict, server = env_of_workload(docs, "mlp-predict"), env_of_workload(docs, "mlp-featurestore-featureserver")
    assert predict["FEATURES_REDIS_CLUSTER"]["value"] == server["FEATURES_REDIS_CLUSTER"]["value"] == "false"
    clustered = render(*values_args("eks"), "--set", "global.redis.cluster=true")
    predict = env_of_workload(clustered, "mlp-predict")
    server = env_of_workload(clustered, "mlp-featurestore-featureserver")
    assert predict["FEATURES_REDIS_CLUSTER"]["value"] == server["FEATURES_REDIS_CLUSTER"]["value"] == "true"
    p = helm("template", "mlp", str(CHART), "--set", "featurestore.redis.enabled=false")
    assert p.returncode != 0 and "global.redis.existingSecret" in p.stderr


def _service_hosts(docs: list[dict[str, Any]]) -> set[str]:
    import base64

    hosts = set()
    secrets = {s["metadata"]["name"]: s.get("data", {}) for s in by_kind(docs, "Secret")}
    for _, _, spec in pod_specs(docs):
        for c in spec["containers"]:
            for e in c.get("env", []):
                value = e.get("value")
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref and ref["name"] in secrets:
                    value = base64.b64decode(secrets[ref["name"]][ref["key"]]).decode()
                if value and "://" in value and not value.startswith("s3://"):
                    hosts.add(value.split("://")[1].split("@")[-1].split(":")[0].split("/")[0])
                elif e["name"] == "PREPROCESS_TRITON_URL":
                    hosts.add(value.split(":")[0])
            for arg in c.get("args", []):
                hosts |= {h.split(":")[0] for h in re.findall(r"http://([\w.-]+:\d+)", arg)}
    return hosts


def test_fullname_overrides_keep_every_referenced_service() -> None:
    docs = render(
        *values_args("kind"),
        "--set",
        "predict.fullnameOverride=scoring",
        "--set",
        "featurestore.fullnameOverride=fs",
        "--set",
        "multimodal.nameOverride=mm",
        "--set",
        "fullnameOverride=platform",
    )
    services = {s["metadata"]["name"] for s in by_kind(docs, "Service")}
    assert {"scoring", "fs-featureserver", "fs-redis", "mlp-mm-triton", "mlp-mm-preprocess"} <= services
    in_cluster = {h for h in _service_hosts(docs) if not h.endswith(".svc.cluster.local")}
    assert in_cluster and in_cluster <= services, in_cluster - services
    assert "fs-redis" in in_cluster and "mlp-mm-triton" in in_cluster
    assert jobs_of(docs, "bootstrap")[0]["metadata"]["name"].startswith("platform-bootstrap-")


def test_eks_puts_stateless_pods_on_spot_and_stateful_on_demand() -> None:
    docs = rendered("eks")
    deployments = {d["metadata"]["labels"]["app.kubernetes.io/name"]: d for d in by_kind(docs, "Deployment")}
    pdbs = by_kind(docs, "PodDisruptionBudget")
    for name in ("predict", "featureserver", "preprocess", "triton"):
        spec = deployments[name]["spec"]["template"]["spec"]
        capacity = spec["nodeSelector"]["eks.amazonaws.com/capacityType"]
        assert capacity == ("ON_DEMAND" if name == "triton" else "SPOT"), name
        if capacity == "SPOT":
            assert any(t["key"] == "ml-platform.io/spot" for t in spec["tolerations"]), name
        keys = {c["topologyKey"] for c in spec["topologySpreadConstraints"]}
        assert "topology.kubernetes.io/zone" in keys, name
        labels = spec["topologySpreadConstraints"][0]["labelSelector"]["matchLabels"]
        assert labels == deployments[name]["spec"]["selector"]["matchLabels"], name
        assert any(p["spec"]["selector"]["matchLabels"] == labels for p in pdbs), f"{name}: no PDB"
    (cron,) = [c for c in by_kind(docs, "CronJob") if "materialize" in c["metadata"]["name"]]
    assert (
        cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["nodeSelector"]["eks.amazonaws.com/capacityType"]
        == "ON_DEMAND"
    )


def test_pull_secrets_and_storage_class_reach_every_pod() -> None:
    docs = render(
        *values_args("kind"),
        "--set",
        "global.imagePullSecrets={regcred}",
        "--set",
        "featurestore.redis.persistence.storageClass=gp3",
    )
    for name, _, spec in pod_specs(docs):
        assert spec.get("imagePullSecrets") == [{"name": "regcred"}], name
    (redis,) = by_kind(docs, "StatefulSet")
    assert redis["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"] == "gp3"
    for d in by_kind(rendered("default"), "Deployment"):
        assert d["spec"]["template"]["spec"]["topologySpreadConstraints"], d["metadata"]["name"]


def test_s3_setup_creates_the_charts_buckets_idempotently(tmp_path: Path) -> None:
    """k8s/s3.yaml's "buckets" container, run as a process against a real SeaweedFS, twice."""
    import os

    from devharness import free_port, wait_until

    (deploy,) = [d for d in yaml.safe_load_all((ROOT / "k8s" / "s3.yaml").read_text()) if d["kind"] == "Deployment"]
    (c,) = [c for c in deploy["spec"]["template"]["spec"]["containers"] if c["name"] == "buckets"]
    env = {e["name"]: e["value"] for e in c["env"]}
    assert set(env["BUCKETS"].split()) == {"models", "features"}
    assert c["readinessProbe"]["exec"]["command"] == ["cat", env["READY_FILE"]]
    # the buckets of every profile's values exist in it
    for profile in ("kind", "plain"):
        urls = [v for v in yaml.safe_dump_all(rendered(profile)).split() if v.strip("'\"").startswith("s3://")]
        assert urls and {u.strip("'\"").split("/")[2] for u in urls} <= set(env["BUCKETS"].split()), urls

    ports = {n: free_port() for n in ("master", "mg", "volume", "vg", "filer", "fg", "s3", "sg")}
    weed = subprocess.Popen(
        [tool("weed"), "server", f"-dir={tmp_path}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
         f"-master.port={ports['master']}", f"-master.port.grpc={ports['mg']}",
         f"-volume.port={ports['volume']}", f"-volume.port.grpc={ports['vg']}",
         f"-filer.port={ports['filer']}", f"-filer.port.grpc={ports['fg']}",
         "-s3", f"-s3.port={ports['s3']}", f"-s3.port.grpc={ports['sg']}", "-s3.port.iceberg=0",
         "-s3.port.lance=0", "-volume.max=0"],
        stdout=(tmp_path / "weed.log").open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        for run in range(2):  # the second run finds both buckets and creates nothing
            ready = tmp_path / f"ready-{run}"
            run_env = {
                **os.environ,
                **env,
                "WEED_MASTER": f"127.0.0.1:{ports['master']}.{ports['mg']}",
                "READY_FILE": str(ready),
            }
            run_env["PATH"] = f"{VENV_BIN}:{run_env['PATH']}"
            proc = subprocess.Popen([*c["command"], *c["args"]], env=run_env, stdout=subprocess.PIPE)
            try:
                wait_until(ready.exists, 120, "buckets container", proc, tmp_path / "weed.log")
            finally:
                proc.terminate()
                out = proc.communicate(timeout=10)[0].decode()
            assert proc.returncode == 0, out
            assert ("created bucket" in out) is (run == 0), out
        listing = subprocess.run(
            [tool("weed"), "shell", f"-master=127.0.0.1:{ports['master']}.{ports['mg']}"],
            input="s3.bucket.list\n",
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        assert {ln.split()[0] for ln in listing.splitlines() if ln.strip()} == {"models", "features"}
    finally:
        weed.kill()
        weed.wait(10)


def _objects(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = []
    if schema.get("properties"):
        out.append((path, schema))
        for k, v in schema["properties"].items():
            out += _objects(v, f"{path}.{k}")
    return out


def test_values_schemas_reject_unknown_keys() -> None:
    p = subprocess.run(
        [str(VENV_BIN / "python"), str(ROOT / "charts" / "build_schemas.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert p.returncode == 0, p.stdout + p.stderr  # committed schemas are what the generator writes
    import json

    subcharts = sorted(p.parent.name for p in (CHART / "charts").glob("*/values.yaml"))
    files = [CHART / "values.schema.json", *(CHART / "charts" / s / "values.schema.json" for s in subcharts)]
    assert all(f.exists() for f in files), files  # every subchart with values has a schema
    for f in files:
        for path, node in _objects(json.loads(f.read_text())):
            # the umbrella leaves a subchart's section to that subchart's own schema
            if f.parent == CHART and path in ("", *(f".{s}" for s in subcharts)):
                continue
            assert node.get("additionalProperties") is False, f"{f.relative_to(ROOT)}{path or ' (root)'}"
    for typo, word in (
        ("predict.replicaCont=3", "replicaCont"),
        ("global.imge.tag=x", "imge"),
        ("featurestore.featureServer.autoscaling.maxReplica=3", "maxReplica"),
        ("multimodal.triton.image.repo=x", "repo"),
        ("bootstrap.user=3", "user"),
    ):
        p = helm("template", "mlp", str(CHART), "--set", typo)
        assert p.returncode != 0 and f"additional properties '{word}' not allowed" in p.stderr, p.stderr


def test_default_images_are_what_make_images_builds() -> None:
    p = subprocess.run(["make", "-s", "print-images"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stderr
    built = {t for line in p.stdout.splitlines() for t in shlex.split(line.split(":", 1)[1]) if "/" in t and ":" in t}
    built = {t for t in built if not t.startswith("-")}
    assert "localhost/ml-platform/predict:dev" in built, built

    def ours(docs: list[dict[str, Any]]) -> set[str]:
        third_party = ("valkey/", "chrislusf/")
        return {
            c["image"] for _, _, s in pod_specs(docs) for c in s["containers"] if not c["image"].startswith(third_party)
        }

    for profile in ("default", "kind", "plain"):
        images = ours(rendered(profile))
        assert images and images <= built, images - built
        assert "localhost/ml-platform/triton-cpu:dev" in images  # the CPU fallback, no NGC image on kind
    gpu = ours(render("--set", "multimodal.gpu.enabled=true"))
    assert "localhost/ml-platform/triton:dev" in gpu and gpu <= built
    # EKS: every image from the ECR registry the profile names, nothing from elsewhere
    assert all(i.startswith("123456789012.dkr.ecr.") for i in ours(rendered("eks")))
    p = helm("template", "mlp", str(CHART), "--set", "global.image.registry=")
    assert p.returncode != 0 and "/global/image/registry" in p.stderr


def test_default_buckets_are_the_ones_k8s_s3_creates() -> None:
    (deploy,) = [d for d in yaml.safe_load_all((ROOT / "k8s" / "s3.yaml").read_text()) if d["kind"] == "Deployment"]
    (c,) = [c for c in deploy["spec"]["template"]["spec"]["containers"] if c["name"] == "buckets"]
    buckets = set(next(e["value"] for e in c["env"] if e["name"] == "BUCKETS").split())
    for profile in ("default", "kind", "plain"):
        text = yaml.safe_dump_all(rendered(profile), width=10000)
        used = set(re.findall(r"s3://(?:s3\.[\w.-]+:\d+/)?([a-z0-9][a-z0-9.-]+)/", text))
        assert used and used <= buckets, (profile, used)
    eks = yaml.safe_dump_all(rendered("eks"), width=10000)
    assert "acme" not in eks and "s3://123456789012-ml-platform-models/" in eks


def test_custom_metric_autoscalers_are_off_by_default_and_the_adapter_serves_their_metrics() -> None:
    for profile in PROFILES:
        for hpa in by_kind(rendered(profile), "HorizontalPodAutoscaler"):
            assert {m["type"] for m in hpa["spec"]["metrics"]} == {"Resource"}, (profile, hpa["metadata"]["name"])
    docs = render(
        "--set",
        "predict.autoscaling.requestsPerSecond.enabled=true",
        "--set",
        "multimodal.triton.autoscaling.queueTime.enabled=true",
    )
    wanted = {
        m["pods"]["metric"]["name"]
        for h in by_kind(docs, "HorizontalPodAutoscaler")
        for m in h["spec"]["metrics"]
        if m["type"] == "Pods"
    }
    adapter = yaml.safe_load((ROOT / "k8s" / "prometheus-adapter-values.yaml").read_text())
    served = {r["name"]["as"]: r for r in adapter["rules"]["custom"]}
    assert wanted == {"http_requests_per_second", "triton_queue_time_us"} and wanted <= served.keys()
    for rule in served.values():
        assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}  # per-pod: the HPA's Pods metrics
        assert "<<.LabelMatchers>>" in rule["metricsQuery"] and "<<.GroupBy>>" in rule["metricsQuery"]
