"""The README's "Serve your own model" walkthrough, run as written: its bash block, in a fresh directory, with
the checkout's .venv, on a free port instead of 8080 (`make setup` is what the test session already did)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from devharness import ROOT, free_port

pytestmark = pytest.mark.integration


def walkthrough() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Serve your own model", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```bash\n(.*?)```", section, re.S)
    return str(block)


def test_the_readme_walkthrough_runs_as_written(tmp_path: Path) -> None:
    script = walkthrough()
    assert script.startswith("make setup\n")
    port = str(free_port())
    # if a step fails, the server started in the background must not outlive the test
    script = "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n" + script.replace("make setup\n", "", 1)
    script = script.replace("8080", port)
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODEL_STORE", "PREDICT_"))}
    p = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        check=False,  # the assertion below shows the output
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    lines = [json.loads(ln) for ln in p.stdout.splitlines() if ln.startswith("{")]
    published = next(ln for ln in lines if ln.get("job") == "publish")
    assert published["status"] == "ok" and published["engine"] == "onnxruntime", published
    answer = next(ln for ln in lines if ln.get("model") == "churn" and "predictions" in ln)
    assert answer["predictions"] in ([0], [1]) and len(answer["probabilities"]) == 1
