"""An edge bundle as the engine of a store version: it serves only a faithful copy of that version."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from app.edge.engine import EdgeEngine, EdgeEngineError, locate
from app.modelstore import LocalModelStore, ModelMetadata
from devharness import S3Server
from tests.edge.conftest import export_in_process
from tests.edge.test_export_sklearn import held_out, reference


def latest_meta(store: LocalModelStore, name: str) -> ModelMetadata:
    version = store.latest(name)
    assert version is not None
    return store.read_metadata(name, version)


def test_engine_serves_the_bundle_of_its_version(trained_store: Path, tmp_path: Path) -> None:
    store = LocalModelStore(trained_store)
    meta = latest_meta(store, "breast-cancer")
    export_in_process(trained_store, "breast-cancer", tmp_path / "bundles" / "breast-cancer" / meta.version)
    engine = EdgeEngine(locate(str(tmp_path / "bundles"), meta, tmp_path / "cache"), meta)
    x = held_out("breast-cancer")
    got = engine.predict_proba(x)
    assert np.max(np.abs(got - reference(store, "breast-cancer").estimator.predict_proba(x))) <= 1e-5
    with pytest.raises(ValueError, match=r"must have shape \[N, 30\]"):
        engine.predict_proba(x[:, :4])


def test_engine_refuses_a_bundle_of_another_model_or_artifact(
    trained_store: Path, iris_bundle: Path, tmp_path: Path
) -> None:
    store = LocalModelStore(trained_store)
    meta = latest_meta(store, "iris")
    with pytest.raises(EdgeEngineError, match=rf"iris:{meta.version}: the bundle at .* is a copy of iris:"):
        EdgeEngine(iris_bundle, meta)  # the session's other iris model: same name, another version
    forged = tmp_path / "forged"
    shutil.copytree(iris_bundle, forged)
    manifest = json.loads((forged / "manifest.json").read_text())
    manifest["source"]["version"] = meta.version  # relabelled: the artifact's sha256 still tells
    (forged / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EdgeEngineError, match="exported from another artifact"):
        EdgeEngine(forged, meta)
    with pytest.raises(EdgeEngineError, match=r"no manifest\.json"):
        EdgeEngine(tmp_path / "nothing", meta)


def test_engine_fetches_its_bundle_from_s3(s3_server: S3Server, trained_store: Path, tmp_path: Path) -> None:
    bucket = s3_server.create_bucket("edge-engine")
    store = LocalModelStore(trained_store)
    meta = latest_meta(store, "iris")
    export_in_process(trained_store, "iris", tmp_path / "local")
    client = s3_server.client()
    for f in sorted((tmp_path / "local").iterdir(), key=lambda p: p.name == "manifest.json"):
        client.put_object(Bucket=bucket, Key=f"bundles/iris/{meta.version}/{f.name}", Body=f.read_bytes())
    where = locate(f"s3://{bucket}/bundles", meta, tmp_path / "cache", s3_endpoint_url=s3_server.endpoint)
    assert where == tmp_path / "cache" / "iris" / meta.version
    engine = EdgeEngine(where, meta)
    assert engine.predict_proba(held_out("iris")).shape == (38, 3)
    with pytest.raises(EdgeEngineError, match="not an edge bundle"):
        locate(f"s3://{bucket}/elsewhere", meta, tmp_path / "cache2", s3_endpoint_url=s3_server.endpoint)
