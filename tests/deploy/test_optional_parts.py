"""Every optional part in CI (issue 25): each profile (default, kind, eks, plain) rendered with each overlay of
charts/ml-platform/ci/optional on (feature job and training data on every engine, the Spark operator, KEDA,
drift and retrain, the edge-bundle engine, Redis Cluster, name overrides), with the operators' APIs passed where
the part needs them, and every container checked as tests/deploy/test_contract.py checks the base profiles:
the environment parses and nothing in it is ignored, every `python -m jobs` line parses, every Service a
container names exists. The Spark operator's driver and executors are containers too.

Then what the rendered NetworkPolicies let through: every client and server pair the containers name, the
Prometheus Operator's scrapes, KEDA reading the stream's lag, and the Spark driver and its executors."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from jobs.__main__ import build_parser
from tests.deploy.images import IMAGES
from tests.deploy.netpol import Peer, allowed
from tests.deploy.pods import pod_labels
from tests.deploy.render import (
    KEDA_API,
    MONITORING_API,
    NAMESPACE,
    OVERLAYS,
    PROFILES,
    SPARK_APIS,
    Container,
    Render,
    render,
)
from tests.deploy.test_contract import (
    OUR_CODE_READS,
    RUNTIME_ENV,
    ignored_variables,
    jobs_settings,
    named_services,
    readers,
    settings_env_names,
    traced_jobs_lines,
)

VARIANTS: list[tuple[str, str, tuple[str, ...]]] = []
for _profile in PROFILES:
    for _overlay in OVERLAYS:
        VARIANTS.append((_profile, _overlay, (MONITORING_API,)))
    VARIANTS.append((_profile, "spark", (MONITORING_API, *SPARK_APIS)))  # through the operator
    VARIANTS.append((_profile, "redis-cluster", (MONITORING_API, KEDA_API)))  # KEDA's cluster trigger
    VARIANTS.append((_profile, "name-overrides", (MONITORING_API, KEDA_API)))
    VARIANTS.append((_profile, "drift-retrain", (KEDA_API,)))  # no Prometheus Operator, KEDA
IDS = [f"{p}+{o}{'+operator' if any('spark' in a for a in apis) else ''}{'+keda' if KEDA_API in apis else ''}"
       + ("" if MONITORING_API in apis else "-monitoring") for p, o, apis in VARIANTS]  # fmt: skip


def rendered(profile: str, overlay: str, apis: tuple[str, ...]) -> Render:
    return render(profile, api_versions=apis, overlays=(overlay,))


def every_container(r: Render) -> list[Container]:
    return [*r.containers(), *r.spark_pods()]


def executor_ignored(c: Container) -> list[str]:
    """A Spark executor runs no command of ours: its Python workers run the jobs' code (the readers of the
    driver's `python -m jobs`), so the driver's readers are the executor's."""
    known = RUNTIME_ENV | OUR_CODE_READS | set().union(*(settings_env_names(cls) for cls in jobs_settings()))
    return sorted(k for k, source in c.env_sources.items() if source != "image" and k not in known)


@pytest.mark.parametrize(("profile", "overlay", "apis"), VARIANTS, ids=IDS)
def test_every_container_of_every_optional_part_keeps_the_contract(
    profile: str, overlay: str, apis: tuple[str, ...], tmp_path: Path
) -> None:
    r = rendered(profile, overlay, apis)
    services = r.services
    checked = 0
    for i, c in enumerate(every_container(r)):
        if c.image is None:
            continue
        scratch = tmp_path / str(i)
        ignored = executor_ignored(c) if c.name == "executor" else ignored_variables(c, scratch)
        assert not ignored, f"{r.profile}: {c.ref} sets variables nothing reads: {ignored}"
        with mock.patch.dict(os.environ, c.env, clear=True):
            for cls in readers(c, scratch)[0]:
                cls()
            for argv in traced_jobs_lines(c, scratch):
                try:
                    build_parser().parse_args(argv)
                except SystemExit as e:
                    pytest.fail(f"{r.profile}: {c.ref}: `python -m jobs {' '.join(argv)}` does not parse ({e})")
        for name, ns, port in set().union(*(named_services(t) for t in [*c.env.values(), *c.argv])):
            assert (name, ns) in services, f"{r.profile}: {c.ref} names Service {name}.{ns}, not rendered"
            assert port in services[(name, ns)], f"{r.profile}: {c.ref} uses {name}.{ns}:{port}"
        checked += 1
    assert checked >= 8, f"{r.profile}: only {checked} containers of our images"


def test_the_overlays_switch_on_what_they_name() -> None:
    """The overlays are not empty promises: each part is in its render."""
    kinds = {o: {d["kind"] for d in rendered("kind", o, (MONITORING_API,)).docs} for o in OVERLAYS}
    assert {"CronJob", "Job"} <= kinds["featurejob-duckdb"]
    operator = rendered("kind", "spark", (MONITORING_API, *SPARK_APIS))
    assert {"SparkApplication", "ScheduledSparkApplication", "Role"} <= {d["kind"] for d in operator.docs}
    keda = rendered("kind", "name-overrides", (MONITORING_API, KEDA_API))
    assert {"ScaledObject", "TriggerAuthentication"} <= {d["kind"] for d in keda.docs}
    drift = rendered("eks", "drift-retrain", (MONITORING_API,))
    assert {"mlp-predict-drift", "mlp-predict-retrain"} <= {d["metadata"]["name"] for d in drift.kind("CronJob")}
    edge = {c.env.get("PREDICT_ENGINE") for c in rendered("plain", "edge-bundle", (MONITORING_API,)).containers()}
    assert "edge-bundle" in edge


# ---- KEDA (finding 2) ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", ["name-overrides", "redis-cluster"])
def test_keda_reads_the_lag_from_the_rendered_redis_by_its_full_name(overlay: str) -> None:
    r = rendered("kind", overlay, (MONITORING_API, KEDA_API))
    (auth,) = r.kind("TriggerAuthentication")
    refs = {t["parameter"]: t for t in auth["spec"]["secretTargetRef"]}
    cluster = overlay == "redis-cluster"
    address_ref = refs["addresses" if cluster else "address"]
    address = r.secrets[address_ref["name"]][address_ref["key"]]
    host, port = address.rsplit(":", 1)
    name, ns, *rest = host.split(".")
    assert rest == ["svc", "cluster", "local"] and ns == NAMESPACE, address  # KEDA resolves from its namespace
    assert (name, ns) in r.services and int(port) in r.services[(name, ns)], address
    assert name == ("fs-redis" if overlay == "name-overrides" else "mlp-featurestore-redis")
    (scaled,) = r.kind("ScaledObject")
    for trigger in scaled["spec"]["triggers"]:
        assert trigger["type"] == ("redis-cluster-streams" if cluster else "redis-streams")
        assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
        assert "address" not in trigger["metadata"] and "addresses" not in trigger["metadata"]
    target = scaled["spec"]["scaleTargetRef"]["name"]
    assert target in {d["metadata"]["name"] for d in r.kind("Deployment")}
    # the password the trigger authenticates with is Valkey's
    password_ref = refs["password"]
    assert r.secrets[password_ref["name"]][password_ref["key"]] == r.secrets["mlp-redis"]["redis-password"]


def test_keda_on_eks_uses_the_elasticache_endpoint_given() -> None:
    r = render("eks", api_versions=(MONITORING_API, KEDA_API))
    (scaled,) = r.kind("ScaledObject")
    for trigger in scaled["spec"]["triggers"]:
        assert trigger["metadata"]["address"].endswith(".cache.amazonaws.com:6379")
        assert trigger["metadata"]["enableTLS"] == "true"
    (auth,) = r.kind("TriggerAuthentication")
    assert [t["parameter"] for t in auth["spec"]["secretTargetRef"]] == ["password"]


# ---- NetworkPolicy reachability -----------------------------------------------------------------------------

PROMETHEUS = Peer("monitoring", {"app.kubernetes.io/name": "prometheus", "prometheus": "kube-prometheus-stack"})
KEDA_OPERATOR = Peer("keda", {"app": "keda-operator", "app.kubernetes.io/name": "keda-operator"})
ELSEWHERE = Peer("default", {"app": "curious"})


def _policies(r: Render) -> list[dict[str, Any]]:
    return r.kind("NetworkPolicy")


def _targets(r: Render, service: str, port: int) -> list[tuple[Peer, int]]:
    """The pods behind Service ``service`` and the container port ``port`` lands on in each."""
    (svc,) = [s for s in r.kind("Service") if s["metadata"]["name"] == service]
    (sport,) = [p for p in svc["spec"]["ports"] if p["port"] == port]
    out = []
    for d in r.docs:
        if d["kind"] not in {"Deployment", "StatefulSet"}:
            continue
        template = d["spec"]["template"]
        labels = template["metadata"]["labels"]
        if not svc["spec"]["selector"].items() <= labels.items():
            continue
        ports = {p["name"]: p["containerPort"] for c in template["spec"]["containers"] for p in c.get("ports", [])}
        target_port = sport.get("targetPort", port)
        out.append(
            (Peer(NAMESPACE, labels, ports), ports[target_port] if isinstance(target_port, str) else target_port)
        )
    assert out, f"Service {service} selects no pod"
    return out


def _source(r: Render, c: Container) -> Peer:
    if c.workload_kind.endswith("SparkApplication"):
        app = next(d for d in r.docs if d["metadata"]["name"] == c.workload and d["kind"] == c.workload_kind)
        spec = app["spec"]["template"] if c.workload_kind == "ScheduledSparkApplication" else app["spec"]
        return Peer(NAMESPACE, spec[c.name]["labels"])
    return Peer(NAMESPACE, pod_labels(c, r.docs))


@pytest.mark.parametrize(("profile", "overlay", "apis"), VARIANTS, ids=IDS)
def test_network_policies_admit_every_connection_the_code_makes(
    profile: str, overlay: str, apis: tuple[str, ...]
) -> None:
    r = rendered(profile, overlay, apis)
    policies = _policies(r)
    pairs = 0
    for c in every_container(r):
        source = _source(r, c)
        for name, ns, port in set().union(*(named_services(t) for t in [*c.env.values(), *c.argv])):
            if ns != NAMESPACE:
                continue  # the walkthrough's S3, Pushgateway, Prometheus: no policy of ours selects them
            for target, target_port in _targets(r, name, port):
                assert allowed(policies, source, target, target_port, NAMESPACE), (
                    f"{r.profile}: {c.ref} cannot reach {name}:{port} (pod {target.labels['app.kubernetes.io/name']})"
                )
                pairs += 1
    assert pairs >= 3, f"{r.profile}: only {pairs} client/server pairs found"


@pytest.mark.parametrize(("profile", "overlay", "apis"), VARIANTS, ids=IDS)
def test_network_policies_admit_the_operators(profile: str, overlay: str, apis: tuple[str, ...]) -> None:
    """Prometheus scrapes every ServiceMonitor's port; KEDA's operator reads the lag from the in-chart Valkey;
    the Spark driver and its executors talk to each other. Nothing else from another namespace gets in."""
    r = rendered(profile, overlay, apis)
    policies = _policies(r)
    for sm in r.kind("ServiceMonitor"):
        selector = sm["spec"]["selector"]["matchLabels"]
        for svc in r.kind("Service"):
            if not selector.items() <= svc["metadata"]["labels"].items():
                continue
            for endpoint in sm["spec"]["endpoints"]:
                (sport,) = [p for p in svc["spec"]["ports"] if p["name"] == endpoint["port"]]
                for target, port in _targets(r, svc["metadata"]["name"], sport["port"]):
                    assert allowed(policies, PROMETHEUS, target, port, NAMESPACE), (r.profile, svc["metadata"])
                    assert not allowed(policies, ELSEWHERE, target, port, NAMESPACE), (r.profile, svc["metadata"])
    redis = [s["metadata"]["name"] for s in r.kind("Service") if s["metadata"]["name"].endswith("-redis")]
    for name in redis:
        for target, port in _targets(r, name, 6379):
            assert allowed(policies, KEDA_OPERATOR, target, port, NAMESPACE) is (KEDA_API in apis), r.profile
            assert not allowed(policies, ELSEWHERE, target, port, NAMESPACE)
    spark = r.spark_pods()
    for driver in [c for c in spark if c.name == "driver"]:
        executor = next(c for c in spark if c.workload == driver.workload and c.name == "executor")
        for a, b in ((driver, executor), (executor, driver)):
            # the driver's RPC (7078) and block manager (7079) ports, and back
            assert allowed(policies, _source(r, a), _source(r, b), 7078, NAMESPACE)
            assert allowed(policies, _source(r, a), _source(r, b), 7079, NAMESPACE)


def test_the_reachability_check_sees_a_denial() -> None:
    """The evaluator itself: Valkey's policy without KEDA's rule (KEDA's API not passed) keeps KEDA out, and a
    pod of another release cannot reach this release's Valkey."""
    r = rendered("kind", "name-overrides", (MONITORING_API,))
    (target, port), *_ = _targets(r, "fs-redis", 6379)
    assert not allowed(_policies(r), KEDA_OPERATOR, target, port, NAMESPACE)
    other_release = Peer(NAMESPACE, {"app.kubernetes.io/instance": "other"})
    assert not allowed(_policies(r), other_release, target, port, NAMESPACE)
    assert allowed([], other_release, target, port, NAMESPACE)  # no policy: everything gets in


# ---- The Spark operator (finding 1) --------------------------------------------------------------------------


@pytest.mark.parametrize("profile", list(PROFILES))
def test_the_spark_operators_pods_run_restricted_as_an_account_that_may_create_executors(profile: str) -> None:
    r = rendered(profile, "spark", (MONITORING_API, *SPARK_APIS))
    apps = [*r.kind("SparkApplication"), *r.kind("ScheduledSparkApplication")]
    assert len(apps) == 2
    image = IMAGES["jobs-spark"]
    for app in apps:
        spec = app["spec"]["template"] if app["kind"] == "ScheduledSparkApplication" else app["spec"]
        path = spec["mainApplicationFile"].removeprefix("local://")
        assert spec["mainApplicationFile"].startswith("local:///") and path in image.files, (path, image.files)
        assert image.entrypoint == ["/opt/spark/entrypoint.sh"] and "/opt/spark/entrypoint.sh" in image.files
        assert spec["image"].rsplit("/", 1)[-1].startswith("jobs-spark:")
    roles = {d["metadata"]["name"]: d for d in r.kind("Role")}
    bindings = r.kind("RoleBinding")
    accounts = {d["metadata"]["name"]: d for d in r.kind("ServiceAccount")}
    for c in r.spark_pods():
        account = c.pod["serviceAccountName"]
        assert account in accounts, f"{c.ref} runs as {account}, which nothing creates"
        if c.name == "driver":
            (binding,) = [b for b in bindings if b["subjects"][0]["name"] == account]
            rules = roles[binding["roleRef"]["name"]]["rules"]
            may = {(res, verb) for rule in rules for res in rule["resources"] for verb in rule["verbs"]}
            for needed in (("pods", "create"), ("pods", "delete"), ("pods", "watch"), ("services", "create"),
                           ("configmaps", "create")):  # fmt: skip
                assert needed in may, (c.ref, needed)
            assert accounts[account].get("automountServiceAccountToken", True), "the driver talks to the API"
        if profile == "eks":
            annotations = accounts[account]["metadata"].get("annotations") or {}
            assert annotations.get("eks.amazonaws.com/role-arn", "").startswith("arn:aws:iam::"), c.ref
        # Pod Security "restricted", as the namespace enforces it
        psc, sc = c.pod["securityContext"], c.spec["securityContext"]
        assert psc.get("runAsNonRoot") is True and psc.get("seccompProfile", {}).get("type") == "RuntimeDefault"
        assert sc.get("allowPrivilegeEscalation") is False and sc.get("capabilities", {}).get("drop") == ["ALL"]
        assert sc.get("readOnlyRootFilesystem") is True
        mounts = {m["mountPath"] for m in c.spec["volumeMounts"]}
        assert "/tmp" in mounts and {v["name"] for v in c.pod["volumes"]} >= {"tmp"}
    # without the operator's API nothing of it renders
    plain = rendered(profile, "spark", (MONITORING_API,))
    assert not plain.spark_pods() and not [
        a for a in plain.kind("ServiceAccount") if a["metadata"]["name"] == "mlp-spark"
    ]


def test_the_redis_secret_says_where_valkey_is() -> None:
    r = render("kind")
    secret = r.secrets["mlp-redis"]
    assert secret["redis-address"] == f"mlp-featurestore-redis.{NAMESPACE}.svc.cluster.local:6379"
    assert base64.b64encode(secret["redis-password"].encode())  # still there, for Valkey and KEDA
