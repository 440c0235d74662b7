"""The chart's point-in-time job: off by default; a Job (DuckDB, or Spark in client mode with local
executors) or, where the Spark operator's API exists, a SparkApplication; its arguments are ones the
jobs CLI accepts, and every variable it sets is one the jobs read."""

from __future__ import annotations

from typing import Any

from app.features.config import FeatureStoreSettings
from jobs.__main__ import build_parser
from tests.charts.test_charts import by_kind, render

ON = ("--set", "historical.enabled=true")
SPARK_API = ("--api-versions", "sparkoperator.k8s.io/v1beta2/SparkApplication")


def _historical(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # the workload: its ServiceAccount has the same name
    return [d for d in docs if d["metadata"]["name"].endswith("-historical") and d["kind"] != "ServiceAccount"]


def test_off_by_default() -> None:
    assert _historical(render()) == []


def test_duckdb_job_runs_arguments_the_cli_accepts() -> None:
    [job] = _historical(render(*ON, "--set", "historical.duckdb.memoryLimit=2GB"))
    assert job["kind"] == "Job"
    [container] = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["python", "-m", "jobs"]
    args = build_parser().parse_args(container["args"])
    assert (args.engine, args.memory_limit, args.spill_dir) == ("duckdb", "2GB", "/tmp/spill")
    assert args.features == ["user_stats:txn_count_1d", "user_stats:amount_sum_7d"]
    read = {f"FEATURES_{n.upper()}" for n in FeatureStoreSettings.model_fields} | {
        "AWS_ENDPOINT_URL_S3",
        "AWS_DEFAULT_REGION",
    }
    assert {e["name"] for e in container["env"]} <= read


def test_spark_is_a_client_mode_job_without_the_operator_and_an_application_with_it() -> None:
    [job] = _historical(render(*ON, "--set", "historical.engine=spark"))
    [container] = job["spec"]["template"]["spec"]["containers"]
    args = build_parser().parse_args(container["args"])
    assert (job["kind"], args.engine, args.spark_master) == ("Job", "spark", "local[2]")
    assert container["image"].rsplit("/", 1)[-1].startswith("jobs-spark:")
    docs = render(*ON, "--set", "historical.engine=spark", *SPARK_API)
    [app] = by_kind(docs, "SparkApplication")
    assert app["spec"]["mode"] == "cluster" and app["spec"]["executor"]["instances"] == 2
    assert build_parser().parse_args(app["spec"]["arguments"]).engine == "spark"
    # DuckDB never needs the operator, even where it exists.
    [plain] = _historical(render(*ON, *SPARK_API))
    assert plain["kind"] == "Job"
