"""The published OpenAPI schemas against the live services (issue 9, item 8).

Each service is started as production starts it (gunicorn + uvicorn workers, devharness) on
real backends: the prediction service on a trained store, the feature server on valkey, the
preprocessing service on tritonserver. schemathesis then sends >= 1,000 generated requests per
service, valid and invalid, derived from the service's own /openapi.json, and fails on any 5xx,
any request that hangs past the timeout, and any status, content type or body the schema does
not declare. Deterministic generation: the same requests every run."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.featureserver.core.config import Settings as FeatureServerSettings
from app.featureserver.main import create_app as featureserver_app
from app.predict.main import create_app as predict_app
from app.preprocess.main import create_app as preprocess_app
from devharness import VENV_BIN, GunicornService, RedisServer, TritonServer
from jobs.settings import REFERENCE_REPO

pytestmark = pytest.mark.integration

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
MIN_CASES = 1000


def run_schemathesis(url: str, workdir: Path, max_examples: int, config: str = "") -> dict[str, Any]:
    """One schemathesis run; returns its JSON report after asserting it found nothing."""
    workdir.mkdir(parents=True, exist_ok=True)
    report, config_file = workdir / "report.json", workdir / "schemathesis.toml"
    config_file.write_text(config)
    argv = [
        str(VENV_BIN / "schemathesis"),
        "--config-file",
        str(config_file),
        "run",
        f"{url}/openapi.json",
        "--checks",
        CHECKS,
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        str(max_examples),
        "--generation-deterministic",
        "--request-timeout",
        "10",  # a hang is an error, not a stuck test
        "--report",
        "json",
        "--report-json-path",
        str(report),
        "--no-color",
    ]
    proc = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=300)
    result: dict[str, Any] = json.loads(report.read_text())
    assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr[-2000:]
    assert result["failures"] == [] and result["errors"] == [], proc.stdout[-8000:]
    assert result["operations"]["tested"] == result["operations"]["total"]
    assert result["test_cases"]["generated"] >= MIN_CASES, result["test_cases"]
    return result


@pytest.mark.parametrize(
    "create_app",
    [predict_app, lambda: featureserver_app(FeatureServerSettings(repo=REFERENCE_REPO)), preprocess_app],
    ids=["predict", "featureserver", "preprocess"],
)
def test_schema_declares_bodies_and_real_statuses(create_app: Any) -> None:
    schema = create_app().openapi()
    for path, operations in schema["paths"].items():
        for method, op in operations.items():
            statuses = set(op["responses"])
            assert "422" not in statuses, (method, path)  # validation errors are 400s here
            if method == "post":
                assert op["requestBody"]["content"], (method, path)
                assert {"400", "413", "415", "503"} <= statuses, (method, path)
            for status in statuses - {"200"}:
                body = op["responses"][status]["content"]["application/json"]["schema"]
                assert body["required"] == ["error"], (method, path, status)
    assert set(schema["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == {"text/plain"}


@pytest.fixture(scope="module")
def predict(trained_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GunicornService]:
    srv = GunicornService(
        tmp_path_factory.mktemp("predict"),
        {
            "MODEL_STORE_URL": str(trained_store),
            "PREDICT_DEFAULT_MODEL": "breast-cancer",
            "PREDICT_MAX_INSTANCES": "100",
            "PREDICT_ACCESS_LOG": "false",
        },
    )
    try:
        yield srv.wait_ready()
    finally:
        srv.stop()


# Most generated model names are unknown (a 404 is checked too); these reach the models themselves.
PREDICT_CONFIG = """
[dictionaries.models]
values = ["breast-cancer", "iris"]

[parameters]
"path.name" = { dictionary = "models", probability = 0.7 }
"""


def test_predict_service_matches_its_schema(predict: GunicornService, tmp_path: Path) -> None:
    run_schemathesis(predict.url, tmp_path / "st", max_examples=90, config=PREDICT_CONFIG)
    assert 'status="5' not in httpx.get(predict.url + "/metrics").text


def test_feature_server_matches_its_schema(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "redis") as redis:
        env = {
            "FEATURES_REDIS_URL": redis.url,
            "FEATURES_REPO": REFERENCE_REPO,
            "FEATURES_MAX_ENTITIES": "100",
            "FEATURES_ACCESS_LOG": "false",
        }
        with GunicornService(tmp_path / "svc", env, app="app.featureserver.main:app") as srv:
            srv.wait_ready()
            run_schemathesis(srv.url, tmp_path / "st", max_examples=1000)


def test_preprocessing_service_matches_its_schema(tmp_path: Path) -> None:
    from app.multimodal.triton_repo import export
    from examples.multimodal.training import train

    model, _, _ = train(n_train=40, n_test=10, epochs=1, seed=0)  # the contract, not the accuracy
    export(model, str(tmp_path / "repo"))
    with TritonServer(tmp_path / "triton", tmp_path / "repo") as triton:
        env = {"PREPROCESS_TRITON_URL": triton.url, "PREPROCESS_ACCESS_LOG": "false"}
        with GunicornService(tmp_path / "svc", env, app="app.preprocess.main:app") as srv:
            srv.wait_ready()
            run_schemathesis(srv.url, tmp_path / "st", max_examples=1000)
