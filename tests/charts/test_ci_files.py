"""The CI files for users who have a cluster (issue 25): the GitHub Actions workflow that builds the images,
creates a kind cluster, installs the chart and runs tests/e2e, and the chart-testing configuration. They cannot
run here (no Docker, no API server); what can be checked is that they call only what exists."""

from __future__ import annotations

import re
import subprocess

import yaml

from devharness import ROOT

WORKFLOW = ROOT / ".github" / "workflows" / "kind-e2e.yaml"


def make_targets() -> set[str]:
    p = subprocess.run(["make", "-pRrq", "-C", str(ROOT)], capture_output=True, text=True, check=False, timeout=60)
    return set(re.findall(r"^([a-z][\w-]*):", p.stdout, flags=re.M))


def test_the_workflow_runs_the_walkthrough_and_says_it_never_ran_here() -> None:
    text = WORKFLOW.read_text()
    assert "NOT RUN IN THIS REPOSITORY'S OWN CI" in text
    flow = yaml.safe_load(text)
    steps = [s for job in flow["jobs"].values() for s in job["steps"]]
    runs = [s["run"] for s in steps if "run" in s]
    called = {m for r in runs for m in re.findall(r"\bmake ([a-z][\w-]*)", r)}
    assert {"setup", "kind-up", "images", "kind-load", "deploy", "smoke", "test-e2e", "kind-down"} <= called
    assert called <= make_targets(), called - make_targets()
    assert (ROOT / "tests" / "e2e").is_dir()
    order = [c for r in runs for c in re.findall(r"\bmake ([a-z][\w-]*)", r)]
    assert order.index("images") < order.index("kind-load") < order.index("deploy") < order.index("test-e2e")


def test_chart_testing_lints_the_charts_profiles() -> None:
    ct = yaml.safe_load((ROOT / "ct.yaml").read_text())
    assert all((ROOT / d).is_dir() for d in ct["chart-dirs"])
    (chart,) = ct["charts"]
    assert (ROOT / chart / "Chart.yaml").is_file()
    assert sorted(p.name for p in (ROOT / chart / "ci").glob("*-values.yaml")) == [
        "eks-values.yaml",
        "kind-values.yaml",
        "plain-values.yaml",
    ]
    flow = yaml.safe_load(WORKFLOW.read_text())
    lint = [s["run"] for s in flow["jobs"]["chart-testing"]["steps"] if "run" in s]
    assert lint == ["ct lint --config ct.yaml --all"]
