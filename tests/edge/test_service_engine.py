"""PREDICT_ENGINE=edge-bundle: the prediction service serves each version's edge bundle, only a faithful copy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from app.modelstore import LocalModelStore
from app.predict.core.config import Settings
from devharness import GunicornService, wait_until
from tests.edge.conftest import export_in_process
from tests.edge.test_export_sklearn import held_out, reference
from tests.predict.test_lifecycle import metric_sum


def test_the_service_serves_a_verified_bundle_and_refuses_a_version_without_one(
    store_copy: LocalModelStore, tmp_path: Path, started: Any
) -> None:
    meta = store_copy.read_metadata("breast-cancer", store_copy.latest("breast-cancer") or "")
    bundles = tmp_path / "bundles"
    export_in_process(store_copy.root, "breast-cancer", bundles / "breast-cancer" / meta.version)
    srv = started.enter_context(
        GunicornService(
            tmp_path / "svc",
            {
                "MODEL_STORE_URL": str(store_copy.root),
                "PREDICT_MODELS": "breast-cancer,iris",  # iris has no bundle
                "PREDICT_ENGINE": "edge-bundle",
                "PREDICT_EDGE_BUNDLES": str(bundles),
            },
        )
    )
    srv.wait_live()  # live, not ready: iris never loads
    x = held_out("breast-cancer")[:20]
    names = meta.feature_names

    def answer() -> httpx.Response:
        rows = [dict(zip(names, r.tolist(), strict=True)) for r in x]
        return httpx.post(srv.url + "/v1/models/breast-cancer/predict", json={"instances": rows}, timeout=10)

    wait_until(lambda: answer().status_code == 200, 60, "breast-cancer served", srv.server.proc, srv.server.log)
    got = np.array([[p[str(c)] for c in meta.classes] for p in answer().json()["probabilities"]])
    expected = reference(store_copy, "breast-cancer").estimator.predict_proba(x)
    assert np.max(np.abs(got - expected)) <= 1e-5
    text = httpx.get(srv.url + "/metrics").text
    assert metric_sum(text, "model_info", model="breast-cancer", version=meta.version, engine="edge-bundle") >= 1
    # No bundle for iris: refused (named in the log and the failure counter), and the pod is not ready.
    wait_until(lambda: metric_sum(httpx.get(srv.url + "/metrics").text, "model_load_failures_total", model="iris") >= 1,
               30, "iris refused")  # fmt: skip
    ready = httpx.get(srv.url + "/readyz")
    assert ready.status_code == 503 and "iris" in ready.text
    assert "edge bundle refused" in srv.server.log.read_text()


def test_the_edge_engine_needs_its_bundles_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREDICT_ENGINE", "edge-bundle")
    monkeypatch.delenv("PREDICT_EDGE_BUNDLES", raising=False)
    with pytest.raises(ValueError, match="PREDICT_EDGE_BUNDLES"):
        Settings()


def test_the_chart_selects_the_edge_engine() -> None:
    """engine.type=edge-bundle renders PREDICT_EDGE_BUNDLES, which the service's settings accept; without
    edgeBundles the render fails naming the value."""
    from unittest import mock

    from tests.deploy.render import render

    sets = ("predict.engine.type=edge-bundle", "predict.engine.edgeBundles=s3://models/edge")
    (c,) = [c for c in render("default", sets=sets).containers() if c.ref.endswith("-predict/predict")]
    with mock.patch.dict("os.environ", c.env, clear=True):
        s = Settings()
    assert (s.engine, s.edge_bundles) == ("edge-bundle", "s3://models/edge")
    with pytest.raises(AssertionError, match=r"predict\.engine\.edgeBundles"):
        render("default", sets=sets[:1])
