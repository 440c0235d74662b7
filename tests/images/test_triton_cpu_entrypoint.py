"""images/triton-cpu/entrypoint.sh: NGC tritonserver's arguments, pytriton's server, found through the python
on PATH. The multimodal tests serve the model through it (devharness: TritonServer); these check
what the chart relies on: its arguments as given, readiness, and clear errors when something is missing."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from devharness import ROOT, VENV_BIN, Server, free_port, http_ok, wait_until
from tests.deploy.images import IMAGES

SCRIPT = ROOT / "images" / "triton-cpu" / "entrypoint.sh"
pytestmark = pytest.mark.integration


def test_it_is_the_image_entrypoint() -> None:
    image = IMAGES["triton-cpu"]
    assert image.files[image.entrypoint[0]] == SCRIPT
    assert os.access(SCRIPT, os.X_OK)


def test_serves_with_the_chart_arguments(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    http, grpc, metrics = free_port(), free_port(), free_port()
    args = [  # the chart's (charts/ml-platform/charts/multimodal/templates/triton.yaml), on free loopback ports
        f"--model-repository={tmp_path / 'models'}",
        "--strict-readiness=true",
        "--exit-on-error=false",
        "--model-control-mode=poll",
        "--repository-poll-secs=30",
        f"--http-port={http}",
        f"--grpc-port={grpc}",
        f"--metrics-port={metrics}",
        "--http-address=127.0.0.1",
        "--grpc-address=127.0.0.1",
    ]
    env = {"PATH": f"{VENV_BIN}:/usr/bin:/bin", "TMPDIR": str(tmp_path)}
    with Server([str(SCRIPT), *args], tmp_path / "triton.log", env=env, inherit_env=False) as server:
        wait_until(lambda: http_ok(f"http://127.0.0.1:{http}/v2/health/ready"), 60, "tritonserver", server.proc)
        # tritonserver starts its metrics server on its own: ready on HTTP does not mean listening there yet
        # (a one-shot check failed one CI run)
        wait_until(lambda: http_ok(f"http://127.0.0.1:{metrics}/metrics"), 30, "triton metrics", server.proc)
        # exec: the server is the process the kubelet signals, not a shell in front of it
        assert Path(f"/proc/{server.pid}/exe").resolve().name == "tritonserver"
    backends = list(tmp_path.glob("triton-backends.*/python"))
    assert len(backends) == 1
    assert {p.name for p in backends[0].iterdir()} == {
        "libtriton_python.so",
        "triton_python_backend_utils.py",
        "triton_python_backend_stub",
    }


def _run(path: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["/bin/sh", str(SCRIPT), *args], env={"PATH": path}, capture_output=True, text=True, timeout=60, check=False
    )


def test_clear_errors() -> None:
    none = _run("/nonexistent", "--model-repository=/models")
    assert none.returncode == 127 and "no python on PATH" in none.stderr
    # a python without nvidia-pytriton (the system's) names the interpreter it asked
    if not Path("/usr/bin/python3").exists():
        pytest.skip("no /usr/bin/python3 to stand for a python without nvidia-pytriton")
    system = _run("/usr/bin:/bin", "--model-repository=/models")
    assert system.returncode != 0 and "nvidia-pytriton is not installed for /usr/bin/python3" in system.stderr
