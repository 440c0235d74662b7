"""The chart's scheduled feature job (user_stats): off by default; a CronJob (DuckDB chunked to its memory
limit and spilling to the pod's emptyDir, numpy, or Spark in client mode with local executors) or, where the
Spark operator's API exists, a ScheduledSparkApplication; its arguments are ones the jobs CLI accepts, and
every variable it sets is one the jobs read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.features.config import FeatureStoreSettings
from devharness import ROOT
from jobs.__main__ import build_parser
from tests.charts.test_charts import CHART, K8S_VERSIONS, assert_valid_manifests, by_kind, helm, pod_specs, render
from tests.deploy.test_contract import env_reads

ON = ("--set", "featureJob.enabled=true")
SPARK = ("--set", "featureJob.engine=spark")
SCHEDULED_API = ("--api-versions", "sparkoperator.k8s.io/v1beta2/ScheduledSparkApplication")
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())["featureJob"]
# What the jobs read: FEATURES_* (the feature store's settings), the S3 endpoint and region (S3Settings, the AWS SDK).
READ = {f"FEATURES_{n.upper()}" for n in FeatureStoreSettings.model_fields} | {
    "AWS_ENDPOINT_URL_S3",
    "AWS_DEFAULT_REGION",
}


def _feature_job(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # the workload: its ServiceAccount has the same name
    return [d for d in docs if d["metadata"]["name"].endswith("-featurejob") and d["kind"] != "ServiceAccount"]


def _container(cron: dict[str, Any]) -> dict[str, Any]:
    [container] = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert isinstance(container, dict)
    return container


def test_off_by_default() -> None:
    assert _feature_job(render()) == []
    assert _feature_job(render(*SPARK, *SCHEDULED_API)) == []


def test_duckdb_cronjob_runs_arguments_the_cli_accepts() -> None:
    [cron] = _feature_job(render(*ON, "--set", "global.s3.endpointUrl=http://s3:8333"))
    assert cron["kind"] == "CronJob"
    spec = cron["spec"]
    assert (spec["schedule"], spec["timeZone"]) == (VALUES["schedule"], VALUES["timeZone"])
    assert spec["concurrencyPolicy"] == "Forbid" and spec["jobTemplate"]["spec"]["activeDeadlineSeconds"] > 0
    container = _container(cron)
    assert container["command"] == ["python", "-m", "jobs"]
    assert container["image"].rsplit("/", 1)[-1].startswith("jobs:")
    args = build_parser().parse_args(container["args"])
    assert args.command == "features"
    assert (args.engine, args.memory_limit, args.spill_dir) == ("duckdb", VALUES["duckdb"]["memoryLimit"], "/tmp/spill")
    # by default the window is the 30 days before the run: it moves with the calendar
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    assert VALUES["start"] == "today-30d"
    assert (args.users, args.days, args.start) == (VALUES["users"], VALUES["days"], midnight - timedelta(days=30))
    # the spill dir is on the pod's emptyDir (the root filesystem is read-only)
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    names = {e["name"] for e in container["env"]}
    assert "AWS_ENDPOINT_URL_S3" in names and names <= READ
    # without a memory limit: no limit and no spill dir (DuckDB's defaults)
    [plain] = _feature_job(render(*ON, "--set", "featureJob.duckdb.memoryLimit="))
    args = build_parser().parse_args(_container(plain)["args"])
    assert (args.engine, args.memory_limit, args.spill_dir) == ("duckdb", None, None)


def test_runs_push_to_the_feature_stores_pushgateway_on_every_engine() -> None:
    """The same Pushgateway as the materializer: FeatureJobFailed and FeatureJobStale read what the runs push."""
    gateway = ("--set", "featurestore.materialize.pushgatewayUrl=http://pgw:9091")
    assert "FEATURES_PUSHGATEWAY_URL" not in {e["name"] for e in _container(_feature_job(render(*ON))[0])["env"]}
    for engine in ("duckdb", "numpy", "spark"):
        [cron] = _feature_job(render(*ON, *gateway, "--set", f"featureJob.engine={engine}"))
        assert {"name": "FEATURES_PUSHGATEWAY_URL", "value": "http://pgw:9091"} in _container(cron)["env"]
    [app] = _feature_job(render(*ON, *gateway, *SPARK, *SCHEDULED_API))
    env = app["spec"]["template"]["driver"]["env"]
    assert {"name": "FEATURES_PUSHGATEWAY_URL", "value": "http://pgw:9091"} in env


def test_numpy_and_overridden_arguments() -> None:
    sets = ("--set", "featureJob.engine=numpy", "--set", "featureJob.users=2000000", "--set", "featureJob.days=7")
    [cron] = _feature_job(render(*ON, *sets, "--set", "featureJob.start=2026-11-01"))
    args = build_parser().parse_args(_container(cron)["args"])
    assert (args.engine, args.users, args.days, args.memory_limit) == ("numpy", 2000000, 7, None)
    assert args.start.date().isoformat() == "2026-11-01"


def test_spark_is_a_client_mode_cronjob_without_the_operator() -> None:
    # the SparkApplication API alone is not the ScheduledSparkApplication API
    [cron] = _feature_job(render(*ON, *SPARK, "--api-versions", "sparkoperator.k8s.io/v1beta2/SparkApplication"))
    container = _container(cron)
    args = build_parser().parse_args(container["args"])
    assert (cron["kind"], args.engine, args.spark_master, args.memory_limit) == ("CronJob", "spark", "local[2]", None)
    assert container["image"].rsplit("/", 1)[-1].startswith("jobs-spark:")
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["SPARK_DRIVER_MEMORY"] == VALUES["spark"]["driver"]["memory"]
    assert set(env) <= READ | env_reads(ROOT / "app" / "features" / "pit_spark.py")


def test_spark_with_the_operator_is_a_scheduled_spark_application() -> None:
    docs = render(*ON, *SPARK, *SCHEDULED_API, "--set", "featureJob.schedule=15 2 * * *")
    [app] = _feature_job(docs)
    assert app["kind"] == "ScheduledSparkApplication"
    spec = app["spec"]
    assert (spec["schedule"], spec["concurrencyPolicy"], spec["timeZone"]) == ("15 2 * * *", "Forbid", "Etc/UTC")
    assert (spec["successfulRunHistoryLimit"], spec["failedRunHistoryLimit"]) == (
        VALUES["successfulJobsHistoryLimit"],
        VALUES["failedJobsHistoryLimit"],
    )
    template = spec["template"]
    assert (template["type"], template["mode"]) == ("Python", "cluster")
    assert template["image"].rsplit("/", 1)[-1].startswith("jobs-spark:")
    assert template["executor"]["instances"] == VALUES["spark"]["executor"]["instances"]
    args = build_parser().parse_args(template["arguments"])
    assert (args.command, args.engine, args.spark_master, args.memory_limit) == ("features", "spark", None, None)
    for role in ("driver", "executor"):
        env = {e["name"] for e in template[role]["env"]}
        assert env - {"PYTHONPATH"} <= READ, role
    # the spec the point-in-time job's SparkApplication has too (one named template renders both)
    [historical] = by_kind(
        render(
            "--set",
            "historical.enabled=true",
            "--set",
            "historical.engine=spark",
            "--api-versions",
            "sparkoperator.k8s.io/v1beta2/SparkApplication",
        ),
        "SparkApplication",
    )
    same = ("type", "pythonVersion", "mode", "image", "mainApplicationFile", "sparkVersion", "restartPolicy")
    assert {k: template[k] for k in same} == {k: historical["spec"][k] for k in same}


def test_duckdb_never_needs_the_operator() -> None:
    [cron] = _feature_job(render(*ON, *SCHEDULED_API))
    assert cron["kind"] == "CronJob"
    assert build_parser().parse_args(_container(cron)["args"]).engine == "duckdb"


def test_an_unknown_engine_is_refused() -> None:
    p = helm("template", "mlp", str(CHART), *ON, "--set", "featureJob.engine=pandas")
    # refused by the schema (which names the value's path) before any template runs
    assert p.returncode != 0 and "/featureJob/engine" in p.stderr and "'duckdb', 'numpy', 'spark'" in p.stderr


@pytest.mark.parametrize("engine", ["duckdb", "spark"])
def test_the_cronjob_is_locked_down_and_validates(engine: str, tmp_path: Path) -> None:
    docs = _feature_job(render(*ON, "--set", f"featureJob.engine={engine}"))
    [(name, _, spec)] = pod_specs(docs)
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["automountServiceAccountToken"] is False
    [c] = spec["containers"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True and c["resources"]["limits"], name
    f = tmp_path / "featurejob.yaml"
    f.write_text(yaml.safe_dump_all(docs))
    for version in K8S_VERSIONS:
        assert_valid_manifests(version, f)


@pytest.mark.parametrize("job", ["featureJob", "historical"])
def test_job_pods_run_as_their_own_service_account_for_cloud_identity(job: str) -> None:
    """On EKS the role for S3 comes through the service account's annotation (IRSA)."""
    role = "arn:aws:iam::123456789012:role/offline-store"
    docs = render(
        "--set",
        f"{job}.enabled=true",
        "--set",
        f"{job}.serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn={role}",
    )
    suffix = "-featurejob" if job == "featureJob" else "-historical"
    [account] = [d for d in by_kind(docs, "ServiceAccount") if d["metadata"]["name"].endswith(suffix)]
    assert account["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": role}
    [pod] = [spec for name, _, spec in pod_specs(docs) if name.endswith(suffix)]
    assert pod["serviceAccountName"] == account["metadata"]["name"] and pod["automountServiceAccountToken"] is False
    # an existing account instead: named, not created
    docs = render(
        "--set",
        f"{job}.enabled=true",
        "--set",
        f"{job}.serviceAccount.create=false",
        "--set",
        f"{job}.serviceAccount.name=shared",
    )
    assert not [d for d in by_kind(docs, "ServiceAccount") if d["metadata"]["name"].endswith(suffix)]
    [pod] = [spec for name, _, spec in pod_specs(docs) if name.endswith(suffix)]
    assert pod["serviceAccountName"] == "shared"
