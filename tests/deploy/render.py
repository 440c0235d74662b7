"""The chart as a cluster would see it: `helm template` of a profile, and each container with what the
chart and its image give it (command, environment with secrets resolved, probes, ports, mounts)."""

from __future__ import annotations

import base64
import hashlib
import re
import shutil
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from devharness import ROOT, VENV_BIN
from tests.deploy.images import Image, image_for

CHART = ROOT / "charts" / "ml-platform"
PROFILES: dict[str, Path | None] = {
    "default": None,
    **{p.stem.removesuffix("-values"): p for p in sorted((CHART / "ci").glob("*-values.yaml"))},
}
NAMESPACE = "ml"
RELEASE = "mlp"
# The Prometheus Operator's API, present where kube-prometheus-stack is installed (the kind walkthrough).
MONITORING_API = "monitoring.coreos.com/v1"

# Objects the chart expects to exist beside it, created by the walkthrough (Makefile, k8s/), never by the
# chart: Secrets by name with the keys the chart's containers may read, and Services by DNS name and port.
EXTERNAL_SECRET_KEYS = {
    "s3-credentials": {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"},  # make deploy (kind)
    "elasticache-redis": {"redis-url"},  # the EKS profile's header: the ElastiCache URL with its auth token
    "model-signing-key": {"hmac-key"},  # the EKS profile's header: signs and verifies model artifacts
}
EXTERNAL_SERVICES = {
    ("s3", "ml-platform"): {8333},  # k8s/s3.yaml
    ("prometheus-pushgateway", "monitoring"): {9091},  # make kind-up (prometheus-community chart)
    ("kube-prometheus-stack-prometheus", "monitoring"): {9090},  # make kind-up: the drift CronJob's Prometheus
}
# Optional parts switched on over a profile (charts/ml-platform/ci/optional/*.yaml), by name.
OVERLAYS: dict[str, Path] = {p.stem: p for p in sorted((CHART / "ci" / "optional").glob("*.yaml"))}
# The APIs of the operators the chart renders for where they exist.
KEDA_API = "keda.sh/v1alpha1"
SPARK_APIS = (
    "sparkoperator.k8s.io/v1beta2/SparkApplication",
    "sparkoperator.k8s.io/v1beta2/ScheduledSparkApplication",
)

POD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod"}


def tool(name: str) -> str:
    path = shutil.which(name, path=str(VENV_BIN)) or shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} not installed: `make setup` installs it (k8s/install_tools.py)")
    return path


@dataclass
class Container:
    """One container of one workload, with everything the kubelet would hand the process."""

    workload_kind: str
    workload: str
    name: str
    init: bool
    spec: dict[str, Any]
    pod: dict[str, Any]
    image: Image | None  # None: a third-party image (Valkey, SeaweedFS, busybox)
    env: dict[str, str]  # image ENV, then envFrom, then env, secrets resolved
    env_sources: dict[str, str]  # where each variable came from: image, env, secret:NAME, envFrom:NAME

    @property
    def ref(self) -> str:
        return f"{self.workload_kind}/{self.workload}/{self.name}"

    @property
    def argv(self) -> list[str]:
        """What the process runs: command (else the image's entrypoint) plus args (else the image's cmd),
        as the kubelet combines them, with $(VAR) references expanded."""
        command = self.spec.get("command")
        args = self.spec.get("args")
        image_entry = self.image.entrypoint if self.image else []
        image_cmd = self.image.cmd if self.image else []
        if command is not None:
            argv = [*command, *(args or [])]
        else:
            argv = [*image_entry, *(args if args is not None else image_cmd)]
        env = self.env
        return [expand_k8s_vars(a, env) for a in argv]


def expand_k8s_vars(value: str, env: dict[str, str]) -> str:
    """Kubernetes' dependent variables: $(NAME) expands when NAME is defined, $$ escapes."""
    return re.sub(
        r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
        lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)),
        value,
    )


@dataclass
class Render:
    profile: str
    docs: list[dict[str, Any]]

    def kind(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        found = [d for d in self.kind(kind) if d["metadata"]["name"] == name]
        assert found, f"{kind}/{name} not rendered in profile {self.profile}"
        return found[0]

    @property
    def secrets(self) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        for s in self.kind("Secret"):
            data = {k: base64.b64decode(v).decode() for k, v in (s.get("data") or {}).items()}
            data.update(s.get("stringData") or {})
            out[s["metadata"]["name"]] = data
        return out

    @property
    def services(self) -> dict[tuple[str, str], set[int]]:
        """(name, namespace) -> ports, for the chart's Services and the ones the walkthrough adds."""
        out = {
            (s["metadata"]["name"], s["metadata"].get("namespace", NAMESPACE)): {p["port"] for p in s["spec"]["ports"]}
            for s in self.kind("Service")
        }
        return {**EXTERNAL_SERVICES, **out}

    def containers(self) -> list[Container]:
        out = []
        for d in self.docs:
            if d["kind"] not in POD_KINDS:
                continue
            pod = pod_spec(d)
            for init, key in ((True, "initContainers"), (False, "containers")):
                for c in pod.get(key) or []:
                    image = our_image(c["image"])
                    env, sources = self._resolve_env(c, image)
                    out.append(
                        Container(d["kind"], d["metadata"]["name"], c["name"], init, c, pod, image, env, sources)
                    )
        return out

    def spark_pods(self) -> list[Container]:
        """The driver and executor of every SparkApplication (a ScheduledSparkApplication's template), as the
        Spark operator builds their pods: the application's image, the part's env, contexts, mounts and
        service account. The driver's process is `python -m jobs <arguments>` (the image's jobs_main.py runs
        exactly that: tests/images/test_spark_image.py); an executor's is the JVM, with no command here."""
        out = []
        for d in self.docs:
            if d["kind"] not in {"SparkApplication", "ScheduledSparkApplication"}:
                continue
            app = d["spec"]["template"] if d["kind"] == "ScheduledSparkApplication" else d["spec"]
            for part in ("driver", "executor"):
                p = app[part]
                pod = {
                    "serviceAccountName": p.get("serviceAccount", "default"),
                    "securityContext": p.get("podSecurityContext", {}),
                    "volumes": app.get("volumes", []),
                }
                spec: dict[str, Any] = {
                    "image": app["image"],
                    "env": p.get("env", []),
                    "envFrom": p.get("envFrom", []),
                    "securityContext": p.get("securityContext", {}),
                    "volumeMounts": p.get("volumeMounts", []),
                }
                if part == "driver":
                    spec["command"] = ["python", "-m", "jobs", *app.get("arguments", [])]
                image = our_image(app["image"])
                env, sources = self._resolve_env(spec, image)
                out.append(Container(d["kind"], d["metadata"]["name"], part, False, spec, pod, image, env, sources))
        return out

    def _resolve_env(self, c: dict[str, Any], image: Image | None) -> tuple[dict[str, str], dict[str, str]]:
        secrets = self.secrets
        env: dict[str, str] = dict(image.env) if image else {}
        sources = dict.fromkeys(env, "image")

        def secret(name: str) -> dict[str, str]:
            if name in secrets:
                return secrets[name]
            assert name in EXTERNAL_SECRET_KEYS, f"{c.get('name')}: Secret {name!r} is neither rendered nor documented"
            return {k: external_secret_value(name, k) for k in EXTERNAL_SECRET_KEYS[name]}

        for src in c.get("envFrom") or []:
            if "secretRef" in src:
                name = src["secretRef"]["name"]
                for k, v in secret(name).items():
                    env[k], sources[k] = v, f"envFrom:{name}"
        for e in c.get("env") or []:
            name = e["name"]
            if "value" in e:
                env[name], sources[name] = expand_k8s_vars(str(e["value"]), env), "env"
            elif "secretKeyRef" in e.get("valueFrom", {}):
                ref = e["valueFrom"]["secretKeyRef"]
                data = secret(ref["name"])
                assert ref["key"] in data or ref.get("optional"), f"{c.get('name')}: {name} wants missing key {ref}"
                if ref["key"] in data:
                    env[name], sources[name] = data[ref["key"]], f"secret:{ref['name']}"
            elif "fieldRef" in e.get("valueFrom", {}):
                path = e["valueFrom"]["fieldRef"]["fieldPath"]
                env[name], sources[name] = {"metadata.namespace": NAMESPACE}.get(path, f"<{path}>"), "fieldRef"
            else:
                env[name], sources[name] = "", "env"
        return env, sources


def external_secret_value(secret: str, key: str) -> str:
    """What the walkthrough would put in an external Secret: a fixed random-looking value per key."""
    return hashlib.sha256(f"{secret}/{key}".encode()).hexdigest()[:24]


def our_image(reference: str) -> Image | None:
    """Our image behind a rendered reference (registry/name:tag), or None for a third-party one."""
    try:
        return image_for(reference)
    except KeyError:
        return None


def pod_spec(d: dict[str, Any]) -> dict[str, Any]:
    kind = d["kind"]
    if kind == "Pod":
        return dict(d["spec"])
    if kind == "CronJob":
        return dict(d["spec"]["jobTemplate"]["spec"]["template"]["spec"])
    return dict(d["spec"]["template"]["spec"])


@cache
def _helm_template(
    profile: str, api_versions: tuple[str, ...], sets: tuple[str, ...], overlays: tuple[str, ...] = ()
) -> str:
    f = PROFILES[profile]
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE, *(["-f", str(f)] if f else [])]
    for overlay in overlays:
        args += ["-f", str(OVERLAYS[overlay])]
    for api in api_versions:
        args += ["--api-versions", api]
    for s in sets:
        args += ["--set", s]
    p = subprocess.run([tool("helm"), *args], capture_output=True, text=True, check=False, timeout=120)
    if p.returncode != 0:
        raise AssertionError(f"helm template ({profile}) failed:\n{p.stderr}")
    return p.stdout


def render(
    profile: str,
    api_versions: tuple[str, ...] = (MONITORING_API,),
    sets: tuple[str, ...] = (),
    overlays: tuple[str, ...] = (),
) -> Render:
    text = _helm_template(profile, api_versions, sets, overlays)
    name = "+".join((profile, *overlays))
    return Render(name, [d for d in yaml.safe_load_all(text) if d])


def k8s_manifests(name: str) -> list[dict[str, Any]]:
    """The walkthrough's own manifests (k8s/NAME.yaml)."""
    return [d for d in yaml.safe_load_all((ROOT / "k8s" / f"{name}.yaml").read_text()) if d]
