"""The jobs-spark image as the Spark operator runs it (issue 25, finding 1): the operator gives the driver pod
`driver --properties-file ... --class ... spark-internal <mainApplicationFile> <arguments>` and the executor
pod `executor` with its settings in SPARK_EXECUTOR_* variables, as arguments to the image's entrypoint. The
entrypoint must turn them into spark-submit (client mode, in the driver pod) and the executor JVM, and run
anything else as given; the application file must run `python -m jobs` with the arguments."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

from devharness import VENV_BIN
from tests.deploy.images import IMAGES


def _recorder(path: Path, log: Path) -> None:
    """A stand-in program that writes its argv (NUL-separated) and exits 0."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\nfor a in "$0" "$@"; do printf "%s\\0" "$a"; done > {log}\n')
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def _run_entrypoint(tmp_path: Path, args: list[str], env: dict[str, str]) -> list[str]:
    image = IMAGES["jobs-spark"]
    (entrypoint,) = image.entrypoint
    spark_home, log = tmp_path / "spark", tmp_path / "argv"
    _recorder(spark_home / "bin" / "spark-submit", log)
    _recorder(tmp_path / "bin" / "java", log)
    full_env = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", "SPARK_HOME": str(spark_home), **env}
    p = subprocess.run(
        [str(image.files[entrypoint]), *args], env=full_env, capture_output=True, text=True, timeout=30, check=False
    )
    assert p.returncode == 0, p.stderr
    return log.read_text().split("\0")[:-1]


def test_the_driver_runs_spark_submit_in_client_mode(tmp_path: Path) -> None:
    operator_args = [
        "driver",
        "--properties-file",
        "/opt/spark/conf/spark.properties",
        "--class",
        "org.apache.spark.deploy.PythonRunner",
        "local:///opt/spark/jobs_main.py",
        "historical",
        "--x",
    ]
    argv = _run_entrypoint(tmp_path, operator_args, {"SPARK_DRIVER_BIND_ADDRESS": "10.1.2.3"})
    assert Path(argv[0]) == tmp_path / "spark" / "bin" / "spark-submit"
    assert argv[1:7] == [
        "--conf",
        "spark.driver.bindAddress=10.1.2.3",
        "--conf",
        "spark.executorEnv.SPARK_DRIVER_POD_IP=10.1.2.3",
        "--deploy-mode",
        "client",
    ]
    assert argv[7:] == operator_args[1:]


def test_an_executor_runs_the_kubernetes_executor_backend(tmp_path: Path) -> None:
    env = {
        "SPARK_EXECUTOR_MEMORY": "4g",
        "SPARK_DRIVER_URL": "spark://CoarseGrainedScheduler@driver-svc:7078",
        "SPARK_EXECUTOR_ID": "3",
        "SPARK_EXECUTOR_CORES": "2",
        "SPARK_APPLICATION_ID": "spark-app-1",
        "SPARK_EXECUTOR_POD_IP": "10.1.2.4",
        "SPARK_RESOURCE_PROFILE_ID": "0",
        "SPARK_EXECUTOR_POD_NAME": "mlp-historical-exec-3",
        "SPARK_EXECUTOR_JAVA_OPTS": "-Dspark.a=1 -Dspark.b=2",
    }
    argv = _run_entrypoint(tmp_path, ["executor"], env)
    assert Path(argv[0]).name == "java"
    assert argv[1:5] == ["-Dspark.a=1", "-Dspark.b=2", "-Xms4g", "-Xmx4g"]
    assert argv[5] == "-cp" and argv[6] == f"{tmp_path / 'spark'}/jars/*"
    assert argv[7] == "org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend"
    flags = dict(zip(argv[8::2], argv[9::2], strict=True))
    assert flags == {
        "--driver-url": env["SPARK_DRIVER_URL"],
        "--executor-id": "3",
        "--cores": "2",
        "--app-id": "spark-app-1",
        "--hostname": "10.1.2.4",
        "--resourceProfileId": "0",
        "--podName": "mlp-historical-exec-3",
    }


def test_the_executor_backend_and_spark_submit_ship_with_pip_pyspark() -> None:
    """What the entrypoint execs exists where pip puts pyspark (SPARK_HOME: the package directory)."""
    import pyspark

    home = Path(pyspark.__file__).parent
    assert os.access(home / "bin" / "spark-submit", os.X_OK)
    assert list((home / "jars").glob("spark-kubernetes_*.jar")), "no spark-kubernetes jar: no executor backend"


def test_anything_else_runs_as_given(tmp_path: Path) -> None:
    argv = _run_entrypoint(tmp_path, ["java", "-version"], {})
    assert argv[1:] == ["-version"]


def test_the_application_file_runs_the_jobs_cli(tmp_path: Path) -> None:
    image = IMAGES["jobs-spark"]
    app = image.files["/opt/spark/jobs_main.py"]
    store = tmp_path / "store"
    env = {"PATH": f"{VENV_BIN}:/usr/bin:/bin", "HOME": str(tmp_path)}
    via_file = subprocess.run(
        [str(VENV_BIN / "python"), str(app), "--store", str(store), "list-models"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    via_module = subprocess.run(
        [str(VENV_BIN / "python"), "-m", "jobs", "--store", str(store), "list-models"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert via_file.returncode == via_module.returncode == 0, via_file.stderr
    first, second = (json.loads(p.stdout.strip().splitlines()[-1]) for p in (via_file, via_module))
    assert first["job"] == second["job"] == "list-models" and first["status"] == "ok"
    bad = subprocess.run(
        [str(VENV_BIN / "python"), str(app), "no-such-subcommand"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert bad.returncode == 2  # argparse's refusal, passed on as the driver's exit code
