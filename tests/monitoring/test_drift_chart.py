"""The chart's drift monitoring: off by default; when enabled, a CronJob whose every jobs line parses
and whose every variable a settings class reads, alert rules that pass promtool, and a dashboard per
model whose every expression is valid PromQL for that model."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from devharness import ROOT, debian_binary
from jobs.__main__ import build_parser
from tests.deploy.test_contract import jobs_settings, settings_env_names

CHART = ROOT / "charts" / "ml-platform"
ENABLED = [
    *("--set", "predict.driftMonitoring.enabled=true"),
    *("--set", "predict.driftMonitoring.models={fraud,breast-cancer}"),
    *("--set", "predict.driftMonitoring.prometheusUrl=http://prometheus:9090"),
    *("--set", "predict.driftMonitoring.pushgatewayUrl=http://pushgateway:9091"),
    *("--set-json", 'predict.driftMonitoring.thresholds={"fraud": {"psi": 0.3}}'),
]


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "helm"), "template", "mlp", str(CHART), *args],
        capture_output=True,
        text=True,
        check=False,
    )


def objects(*args: str) -> list[dict[str, Any]]:
    p = helm("--api-versions", "monitoring.coreos.com/v1", *args)
    assert p.returncode == 0, p.stderr
    return [d for d in yaml.safe_load_all(p.stdout) if d]


def drift_objects(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["metadata"].get("labels", {}).get("app.kubernetes.io/name") == "drift"]


def test_off_by_default() -> None:
    assert drift_objects(objects()) == []


def test_enabled_needs_models_and_urls() -> None:
    p = helm("--set", "predict.driftMonitoring.enabled=true")
    assert p.returncode != 0 and "predict.driftMonitoring.models" in p.stderr
    p = helm("--set", "predict.driftMonitoring.enabled=true", "--set", "predict.driftMonitoring.models={fraud}")
    assert p.returncode != 0 and "predict.driftMonitoring.prometheusUrl" in p.stderr
    p = helm(*ENABLED, "--set", "predict.driftMonitoring.windows={1x}")
    assert p.returncode != 0 and "windows" in p.stderr


def test_cronjob_runs_drift_report_per_model_with_variables_the_jobs_read() -> None:
    (cron,) = [d for d in drift_objects(objects(*ENABLED)) if d["kind"] == "CronJob"]
    (c,) = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    read = set().union(*(settings_env_names(cls) for cls in jobs_settings()))
    assert {e["name"] for e in c["env"]} <= read
    script = c["args"][0]
    assert script.splitlines()[0].strip() == "for model in fraud breast-cancer; do"
    line = " ".join(ln.strip().rstrip("\\") for ln in script.splitlines()[1:3])
    for model in ("fraud", "breast-cancer"):
        argv = shlex.split(line.replace('"$model"', model))
        assert argv[:3] == ["python", "-m", "jobs"]
        args = build_parser().parse_args(argv[3:])
        assert args.command == "drift-report" and args.model == model and args.window == ["1h", "1d"]
        assert json.loads(args.thresholds) == {"fraud": {"psi": 0.3}}
        assert args.pushgateway == "http://pushgateway:9091"


def test_with_the_served_log_the_cronjob_also_checks_feature_skew_and_outcomes(tmp_path: Path) -> None:
    """Every `python -m jobs` line of the script, traced as the shell runs it, parses; the service writes
    the log the jobs read; the jobs get the offline store and repository the point-in-time join needs."""
    from tests.deploy.render import render
    from tests.deploy.test_contract import traced_jobs_lines

    sets = (
        "predict.driftMonitoring.enabled=true",
        "predict.driftMonitoring.models={fraud,breast-cancer}",
        "predict.driftMonitoring.prometheusUrl=http://prometheus:9090",
        "predict.driftMonitoring.pushgatewayUrl=http://pushgateway:9091",
        "predict.driftMonitoring.servedLog.url=s3://features/served",
        "predict.driftMonitoring.labelsUrl=s3://features/labels",
    )
    r = render("default", sets=sets)
    (container,) = [c for c in r.containers() if c.workload_kind == "CronJob" and c.workload.endswith("-drift")]
    env = container.env
    assert env["FEATURES_OFFLINE_URL"] == "s3://features/offline" and env["FEATURES_REPO"]
    chart_env = {k for k, source in container.env_sources.items() if source != "image"}
    assert chart_env <= set().union(*(settings_env_names(cls) for cls in jobs_settings()))
    lines = traced_jobs_lines(container, tmp_path)
    commands = [build_parser().parse_args(argv) for argv in lines]
    assert [(a.command, a.model) for a in commands] == [
        (cmd, model) for model in ("fraud", "breast-cancer") for cmd in ("drift-report", "feature-skew", "outcomes")
    ]
    assert {a.served_log for a in commands if a.command != "drift-report"} == {"s3://features/served"}
    (service,) = [c for c in r.containers() if c.ref.endswith("-predict/predict")]
    assert service.env["MONITORING_LOG_URL"] == "s3://features/served"


def test_rules_and_dashboards_are_valid_promql(tmp_path: Path) -> None:
    promtool = debian_binary("promtool", "prometheus")
    docs = drift_objects(objects(*ENABLED))
    (rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
    alerts = [r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]]
    assert {"ModelFeatureDrift", "ModelSchemaSkew", "ModelFeatureMissing", "ModelNoReferenceProfile"} <= set(alerts)
    runbooks = (ROOT / "docs" / "operations.md").read_text().lower()
    for g in rule["spec"]["groups"]:
        for r in g["rules"]:  # every runbook anchor exists
            assert "#" + r["annotations"]["runbook"].split("#")[1] in {
                "#" + ln.lstrip("#").strip().replace(" ", "-") for ln in runbooks.splitlines() if ln.startswith("#")
            }, r["alert"]
    boards = [d for d in docs if d["kind"] == "ConfigMap"]
    assert len(boards) == 2
    exprs = []
    for board in boards:
        ((key, text),) = board["data"].items()
        dash = json.loads(text)
        model = key.removeprefix("drift-").removesuffix(".json")
        assert dash["uid"] == f"ml-platform-drift-{model}" and board["metadata"]["labels"]["grafana_dashboard"] == "1"
        for panel in dash["panels"]:
            expr = panel["targets"][0]["expr"]
            assert f'model="{model}"' in expr and "__MODEL__" not in expr
            exprs.append(expr)
    f = tmp_path / "rules.yaml"
    recorded = [{"record": f"dashboard:panel{i}", "expr": e} for i, e in enumerate(exprs)]
    f.write_text(yaml.safe_dump({"groups": [*rule["spec"]["groups"], {"name": "dashboards", "rules": recorded}]}))
    p = subprocess.run([promtool, "check", "rules", str(f)], capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"SUCCESS: {len(alerts) + len(exprs)} rules found" in p.stdout


@pytest.mark.parametrize("profile", ["kind", "eks"])
def test_the_profiles_render_with_drift_monitoring(profile: str) -> None:
    values = CHART / "ci" / f"{profile}-values.yaml"
    assert len(drift_objects(objects("-f", str(values), *ENABLED))) == 4  # CronJob, rules, 2 dashboards
