"""python -m jobs train stores the ONNX graph beside the pickle, on S3 as on disk, and says so."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.modelstore import LocalModelStore, S3ModelStore
from app.modelstore.metadata import sha256_hex
from app.modelstore.store import ModelStoreError
from app.onnx.sklearn_convert import ONNX_ML_OPSET, ONNX_OPSET, verify_onnx
from devharness import S3Server
from devharness.jobs import run_job


def test_train_to_s3_stores_a_verified_graph(s3_server: S3Server) -> None:
    bucket = s3_server.create_bucket("onnx-train")
    run = run_job(
        "--store",
        f"s3://{bucket}/models",
        "--s3-endpoint-url",
        s3_server.endpoint,
        "train",
        "--dataset",
        "wine",
        "--n-estimators",
        "5",
    )
    assert run.code == 0, run.summary
    assert run.summary["onnx"] == "model.onnx"
    store = S3ModelStore(f"s3://{bucket}/models", client=s3_server.client())
    meta = store.read_metadata("wine", run.summary["version"])
    assert meta.onnx is not None and meta.onnx_unavailable is None
    assert meta.onnx.converter.startswith("skl2onnx ")
    assert meta.onnx.opsets[""] <= ONNX_OPSET and meta.onnx.opsets["ai.onnx.ml"] <= ONNX_ML_OPSET
    assert meta.onnx.rows_checked >= 40 and meta.onnx.max_abs_diff < 1e-5  # every held-out row
    graph = store.read_onnx(meta)
    assert sha256_hex(graph) == meta.onnx.sha256 and len(graph) == meta.onnx.size_bytes
    # The graph reproduces the trainer's probabilities on the stored verification rows.
    report = verify_onnx(graph, meta.verification.inputs, meta.verification.probabilities)
    assert report.ok and report.rows == 32


def test_graph_is_deterministic_and_checked_on_read(tmp_path: Path) -> None:
    shas = []
    for d in ("a", "b"):
        run = run_job("--store", str(tmp_path / d), "train", "--dataset", "iris", "--n-estimators", "4")
        assert run.code == 0, run.summary
        meta = LocalModelStore(tmp_path / d).read_metadata("iris", run.summary["version"])
        assert meta.onnx is not None
        shas.append(meta.onnx.sha256)
    assert shas[0] == shas[1]  # same data, same seed: the same graph, so re-running the job changes nothing

    store = LocalModelStore(tmp_path / "a")
    meta = store.read_metadata("iris", store.list_versions("iris")[0])
    path = tmp_path / "a" / "iris" / "versions" / meta.version / "model.onnx"
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(ModelStoreError, match=r"model.onnx sha256 .* does not match"):
        store.read_onnx(meta)
    path.unlink()
    with pytest.raises(ModelStoreError, match=r"model\.onnx is missing"):
        store.read_onnx(meta)
    # Publishing metadata that lists a graph without the graph is refused.
    _, artifact = store.read_version("iris", meta.version)
    with pytest.raises(ModelStoreError, match="exactly when the metadata lists one"):
        store.publish(meta.model_copy(update={"version": "copy"}), artifact)
