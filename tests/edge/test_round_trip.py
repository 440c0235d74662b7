"""The round trip: a model trained into an S3 store, exported to S3 by the job, downloaded as a device would,
run by the runner alone in its minimal virtualenv: it reproduces the prediction service's answers. And a
corrupt bundle, refused by the runner with the file named."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import numpy as np
import pytest

from app.edge.bundle import download_bundle
from app.edge.runner import BundleError, BundleIntegrityError, EdgeModel, InputError
from app.modelstore import open_store
from devharness import ROOT, GunicornService, S3Server
from devharness.jobs import run_job
from jobs.train import train_and_publish
from tests.edge.test_export_sklearn import held_out


def run_runner(python: Path, work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """runner.py copied alone into ``work`` and run isolated (-I) by ``python``."""
    shutil.copy(ROOT / "app" / "edge" / "runner.py", work / "runner.py")
    return subprocess.run(
        [str(python), "-I", str(work / "runner.py"), *args],
        capture_output=True,
        text=True,
        cwd=work,
        check=False,
        timeout=60,
    )


def test_bundle_from_s3_in_the_minimal_virtualenv_reproduces_the_service(
    s3_server: S3Server, runner_python: Path, tmp_path: Path
) -> None:
    bucket = s3_server.create_bucket("edge-round-trip")
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
    env = {"MODEL_STORE_URL": f"s3://{bucket}/models", "AWS_ENDPOINT_URL_S3": s3_server.endpoint}
    store = open_store(env["MODEL_STORE_URL"], s3_endpoint_url=s3_server.endpoint, s3_region="us-east-1")
    meta = train_and_publish(store, dataset="breast-cancer", name="breast-cancer", n_estimators=20)

    summary = run_job("export-edge", "--model", "breast-cancer", "--out", f"s3://{bucket}/edge/bc", env=env).ok()
    assert summary["version"] == meta.version
    local = download_bundle(f"s3://{bucket}/edge/bc", tmp_path / "bundle", s3_endpoint_url=s3_server.endpoint)

    x = held_out("breast-cancer")  # 143 rows
    (tmp_path / "rows.json").write_text(json.dumps(x.tolist()))
    out = run_runner(runner_python, tmp_path, str(local), "--rows", str(tmp_path / "rows.json"))
    assert out.returncode == 0, out.stdout + out.stderr
    edge = json.loads(out.stdout)

    with GunicornService(tmp_path / "svc", env, workers=1).wait_ready() as srv:
        instances = [dict(zip(meta.feature_names, row, strict=True)) for row in x.tolist()]
        r = httpx.post(f"{srv.url}/v1/models/breast-cancer/predict", json={"instances": instances}, timeout=30)
    assert r.status_code == 200, r.text
    served = r.json()
    assert served["version"] == meta.version
    keys = [str(c) for c in meta.classes]
    served_proba = np.array([[p[k] for k in keys] for p in served["probabilities"]])
    assert np.max(np.abs(np.asarray(edge["probabilities"]) - served_proba)) <= 1e-5
    assert edge["labels"] == served["predictions"]


def test_corrupt_bundle_is_refused_naming_the_file(iris_bundle: Path, runner_python: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(iris_bundle, bundle)
    data = bytearray((bundle / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bundle / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleIntegrityError, match=r"model\.onnx has sha256 .* the file is corrupt or was replaced"):
        EdgeModel(bundle)
    (tmp_path / "rows.json").write_text("[[5.1, 3.5, 1.4, 0.2]]")
    out = run_runner(runner_python, tmp_path, str(bundle), "--rows", str(tmp_path / "rows.json"))
    assert out.returncode == 1 and "model.onnx has sha256" in json.loads(out.stdout)["error"]

    shutil.copy(iris_bundle / "model.onnx", bundle / "model.onnx")
    (bundle / "parity.json").unlink()
    with pytest.raises(BundleError, match=r"parity\.json is listed in the manifest but missing"):
        EdgeModel(bundle)
    (bundle / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match=r"manifest\.json cannot be read"):
        EdgeModel(bundle)
    (bundle / "manifest.json").unlink()
    with pytest.raises(BundleError, match=r"no manifest\.json in .*: not an edge bundle"):
        EdgeModel(bundle)


def test_wrong_inputs_are_refused_before_onnx_runtime(iris_bundle: Path, runner_python: Path, tmp_path: Path) -> None:
    model = EdgeModel(iris_bundle)
    assert model.predict([[[5.1, 3.5, 1.4, 0.2]]]) == [0]  # the inputs in order, here one: [rows]; setosa
    with pytest.raises(InputError, match=r"input 'input' must have shape \[N, 4\], got \[1, 3\]"):
        model.predict_proba([[[5.1, 3.5, 1.4]]])
    with pytest.raises(InputError, match=r"must have shape \[N, 4\], got \[4\]"):
        model.predict_proba([np.array([5.1, 3.5, 1.4, 0.2])])
    with pytest.raises(InputError, match="input 'input' must be float64, got str"):
        model.predict_proba([[["a", "b", "c", "d"]]])
    with pytest.raises(InputError, match="NaN or infinite"):
        model.predict_proba([[[np.nan, 1, 1, 1]]])
    with pytest.raises(InputError, match="2 inputs given, the model takes 1"):
        model.predict_proba([np.zeros((1, 4)), np.zeros((1, 4))])
    with pytest.raises(BundleError, match=r"has no 'int8' variant; it has \['float'\]"):
        EdgeModel(iris_bundle, variant="int8")
    (tmp_path / "rows.json").write_text("[[1, 2, 3]]")
    out = run_runner(runner_python, tmp_path, str(iris_bundle), "--rows", str(tmp_path / "rows.json"))
    assert out.returncode == 1
    assert json.loads(out.stdout)["error"] == "input 'input' must have shape [N, 4], got [1, 3]"
