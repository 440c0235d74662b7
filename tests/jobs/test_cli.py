from __future__ import annotations

from pathlib import Path
from typing import Any

from app.modelstore import LocalModelStore, S3ModelStore
from devharness import S3Server
from devharness.jobs import run_job


def run_jobs(*args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    run = run_job(*args, env=env)
    return run.code, run.summary


def test_train_publishes_complete_metadata(tmp_path: Path) -> None:
    code, out = run_jobs("--store", str(tmp_path), "train", "--dataset", "wine", "--n-estimators", "10")
    assert code == 0 and out["status"] == "ok" and out["model"] == "wine"
    store = LocalModelStore(tmp_path)
    meta, _ = store.read_version("wine", out["version"])
    assert store.latest("wine") == out["version"]
    assert meta.classes == [0, 1, 2]
    assert len(meta.features) == 13 and meta.features[0].name == "alcohol"
    assert meta.metrics["accuracy"] > 0.8
    assert set(meta.library_versions) >= {"python", "scikit-learn", "numpy"}
    assert len(meta.training_data.fingerprint) == 64 and meta.training_data.rows > 100
    assert len(meta.verification.inputs) == 32


def test_training_is_deterministic(tmp_path: Path) -> None:
    a = run_jobs("--store", str(tmp_path / "a"), "train", "--dataset", "iris", "--n-estimators", "5")[1]
    b = run_jobs("--store", str(tmp_path / "b"), "train", "--dataset", "iris", "--n-estimators", "5")[1]
    assert a["sha256"] == b["sha256"]


def test_promote_and_list(tmp_path: Path) -> None:
    v1 = run_jobs("--store", str(tmp_path), "train", "--dataset", "iris", "--n-estimators", "3")[1]["version"]
    v2 = run_jobs("--store", str(tmp_path), "train", "--dataset", "iris", "--n-estimators", "4")[1]["version"]
    code, out = run_jobs("--store", str(tmp_path), "promote", "iris", v1)
    assert code == 0 and out["previous"] == v2
    code, out = run_jobs("--store", str(tmp_path), "list-models")
    assert out["models"]["iris"]["latest"] == v1
    assert sorted(out["models"]["iris"]["versions"]) == sorted([v1, v2])


def test_errors_are_one_clear_line_and_nonzero(tmp_path: Path) -> None:
    code, out = run_jobs("--store", str(tmp_path), "promote", "iris", "nope")
    assert code == 1 and out["status"] == "error" and "no metadata.json" in out["error"]
    code, out = run_jobs("--store", "gs://x", "list-models")
    assert code == 1 and "unsupported model store URL" in out["error"]


def test_train_to_s3(s3_server: S3Server) -> None:
    bucket = s3_server.create_bucket("jobs-train")
    code, out = run_jobs(
        "--store",
        f"s3://{bucket}/models",
        "--s3-endpoint-url",
        s3_server.endpoint,
        "train",
        "--dataset",
        "iris",
        "--n-estimators",
        "3",
    )
    assert code == 0, out
    store = S3ModelStore(f"s3://{bucket}/models", client=s3_server.client())
    assert store.list_models() == ["iris"] and store.latest("iris") == out["version"]
