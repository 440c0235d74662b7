"""``python -m jobs rollout`` through the real kubernetes client against a stub API server (no cluster can
run here); tests/e2e/test_cluster.py runs it against a real one when KUBECONFIG reaches a cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from devharness import ROOT

PATH = "/apis/apps/v1/namespaces/ml/deployments/mlp-predict"


class FakeApiServer:
    """The two Deployment endpoints the job uses. After a patch the rollout 'progresses' one replica
    per status read, as a controller would; ``stuck`` keeps it from ever converging."""

    def __init__(self) -> None:
        self.stuck = False
        self.patches: list[dict[str, Any]] = []
        self.dep: dict[str, Any] = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "mlp-predict", "namespace": "ml", "generation": 1},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "p"}},
                "template": {
                    "metadata": {"labels": {"app": "p"}},
                    "spec": {"containers": [{"name": "predict", "image": "predict:1"}]},
                },
            },
            "status": {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2},
        }
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path.split("?")[0] not in (PATH, PATH + "/status"):
                    self._send(404, {"kind": "Status", "code": 404, "reason": "NotFound"})
                    return
                st = server.dep["status"]
                if self.path.startswith(PATH + "/status") and not server.stuck and st["updatedReplicas"] < 2:
                    st["updatedReplicas"] += 1
                    st["availableReplicas"] = st["updatedReplicas"]
                    st["observedGeneration"] = server.dep["metadata"]["generation"]
                self._send(200, server.dep)

            def do_PATCH(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                server.patches.append(body)
                annotations = body["spec"]["template"]["metadata"]["annotations"]
                server.dep["spec"]["template"]["metadata"].setdefault("annotations", {}).update(annotations)
                server.dep["metadata"]["generation"] += 1
                server.dep["status"]["updatedReplicas"] = 0
                server.dep["status"]["availableReplicas"] = 1
                self._send(200, server.dep)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def kubeconfig(self, path: Path) -> Path:
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "stub",
                    "clusters": [{"name": "stub", "cluster": {"server": f"http://127.0.0.1:{self.port}"}}],
                    "users": [{"name": "stub", "user": {"token": "t"}}],
                    "contexts": [{"name": "stub", "context": {"cluster": "stub", "user": "stub", "namespace": "ml"}}],
                }
            )
        )
        return path


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[FakeApiServer, dict[str, str]]]:
    server = FakeApiServer()
    env = {**os.environ, "KUBECONFIG": str(server.kubeconfig(tmp_path / "kubeconfig"))}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    yield server, env
    server.httpd.shutdown()


def rollout(env: dict[str, str], *args: str, deployment: str = "mlp-predict") -> tuple[int, dict[str, Any]]:
    p = subprocess.run(
        [sys.executable, "-m", "jobs", "rollout", "--deployment", deployment, "--namespace", "ml", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
        check=False,
    )
    return p.returncode, json.loads(p.stdout.strip().splitlines()[-1])


def test_rollout_patches_waits_and_is_idempotent(api: tuple[FakeApiServer, dict[str, str]]) -> None:
    server, env = api
    code, out = rollout(env, "--reason", "fraud@v2")
    assert code == 0 and out["patched"] is True and out["replicas"] == 2, out
    assert server.patches == [
        {"spec": {"template": {"metadata": {"annotations": {"ml-platform.io/rollout-reason": "fraud@v2"}}}}}
    ]
    code, out = rollout(env, "--reason", "fraud@v2")  # same reason: nothing to do
    assert code == 0 and out["patched"] is False and len(server.patches) == 1


def test_rollout_that_never_converges_fails_clearly(api: tuple[FakeApiServer, dict[str, str]]) -> None:
    server, env = api
    server.stuck = True
    code, out = rollout(env, "--reason", "fraud@v3", "--timeout-seconds", "2")
    assert code == 1 and "did not converge in 2 s" in out["error"] and "0 updated" in out["error"]


def test_missing_deployment_and_no_cluster(api: tuple[FakeApiServer, dict[str, str]], tmp_path: Path) -> None:
    _, env = api
    code, out = rollout(env, "--reason", "x", deployment="nope")
    assert code == 1 and "answered 404" in out["error"]
    code, out = rollout({**env, "KUBECONFIG": str(tmp_path / "missing")}, "--reason", "x")
    assert code == 1 and "no Kubernetes configuration" in out["error"]
