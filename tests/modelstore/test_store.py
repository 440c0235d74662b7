from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.modelstore import (
    ArtifactIntegrityError,
    LocalModelStore,
    ModelMetadata,
    ModelStore,
    ModelStoreError,
    S3ModelStore,
    open_store,
)
from app.modelstore.metadata import VerificationSample, sha256_hex
from devharness import S3Server


def _meta(name: str, version: str, artifact: bytes) -> ModelMetadata:
    return ModelMetadata.model_validate(
        {
            "name": name,
            "version": version,
            "created_at": "2026-11-29T00:00:00+00:00",
            "sha256": sha256_hex(artifact),
            "size_bytes": len(artifact),
            "features": [{"name": "a"}, {"name": "b"}],
            "classes": [0, 1],
            "training_data": {"source": "unit", "rows": 2, "fingerprint": "x"},
            "library_versions": {},
            "verification": {"inputs": [[0.0, 1.0]], "probabilities": [[0.5, 0.5]]},
        }
    )


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ModelStore]:
    if request.param == "local":
        yield LocalModelStore(tmp_path / "models")
    else:
        s3: S3Server = request.getfixturevalue("s3_server")
        bucket = s3.create_bucket(f"models-{tmp_path.name.lower().replace('_', '-')[-30:]}")
        yield S3ModelStore(f"s3://{bucket}/team/prod", client=s3.client())


def test_publish_read_and_latest(store: ModelStore) -> None:
    assert store.list_models() == []
    assert store.latest("churn") is None
    store.publish(_meta("churn", "v1", b"one"), b"one")
    store.publish(_meta("churn", "v2", b"two"), b"two")
    store.publish(_meta("fraud", "a", b"f"), b"f", set_latest=False)
    assert store.list_models() == ["churn"]  # fraud has no latest yet
    assert store.latest("churn") == "v2"
    assert store.list_versions("churn") == ["v1", "v2"]
    meta, data = store.read_version("churn", "v1")
    assert data == b"one" and meta.version == "v1"
    store.set_latest("churn", "v1")
    assert store.latest("churn") == "v1"


def test_republishing_a_version_is_refused(store: ModelStore) -> None:
    store.publish(_meta("m", "v1", b"x"), b"x")
    with pytest.raises(ModelStoreError, match="already exists"):
        store.publish(_meta("m", "v1", b"y"), b"y")
    assert store.read_version("m", "v1")[1] == b"x"


def test_publish_refuses_mismatched_digest(store: ModelStore) -> None:
    with pytest.raises(ArtifactIntegrityError):
        store.publish(_meta("m", "v1", b"x"), b"not x")
    assert store.list_versions("m") == []


def test_set_latest_refuses_missing_version(store: ModelStore) -> None:
    store.publish(_meta("m", "v1", b"x"), b"x")
    with pytest.raises(ModelStoreError, match=r"no metadata\.json"):
        store.set_latest("m", "v9")
    assert store.latest("m") == "v1"


@pytest.mark.parametrize("name", ["Upper", "a_b", "-x", "", "a" * 64, "../etc"])
def test_invalid_names_are_rejected(store: ModelStore, name: str) -> None:
    with pytest.raises(ModelStoreError, match="invalid model name"):
        store.latest(name)


def test_tampered_artifact_is_detected_local(tmp_path: Path) -> None:
    store = LocalModelStore(tmp_path)
    store.publish(_meta("m", "v1", b"good"), b"good")
    (tmp_path / "m" / "versions" / "v1" / "model.pkl").write_bytes(b"evil")
    with pytest.raises(ArtifactIntegrityError, match="does not match"):
        store.read_version("m", "v1")


def test_tampered_artifact_is_detected_s3(s3_server: S3Server) -> None:
    bucket = s3_server.create_bucket("tamper")
    store = S3ModelStore(f"s3://{bucket}", client=s3_server.client())
    store.publish(_meta("m", "v1", b"good"), b"good")
    s3_server.client().put_object(Bucket=bucket, Key="m/versions/v1/model.pkl", Body=b"evil")
    with pytest.raises(ArtifactIntegrityError):
        store.read_version("m", "v1")


def test_misplaced_metadata_is_refused(tmp_path: Path) -> None:
    store = LocalModelStore(tmp_path)
    store.publish(_meta("m", "v1", b"x"), b"x")
    meta_file = tmp_path / "m" / "versions" / "v1" / "metadata.json"
    meta_file.write_text(meta_file.read_text().replace('"version": "v1"', '"version": "v0"'))
    with pytest.raises(ModelStoreError, match="misplaced"):
        store.read_metadata("m", "v1")


def test_corrupt_metadata_names_the_problem(tmp_path: Path) -> None:
    store = LocalModelStore(tmp_path)
    store.publish(_meta("m", "v1", b"x"), b"x")
    (tmp_path / "m" / "versions" / "v1" / "metadata.json").write_text("{not json")
    with pytest.raises(ModelStoreError, match="invalid metadata"):
        store.read_metadata("m", "v1")


def test_readers_never_see_a_half_written_version(store: ModelStore) -> None:
    """A reader following latest while versions are published must always get a complete, valid one."""
    payload = b"x" * 200_000
    store.publish(_meta("m", "v000", payload), payload)
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                v = store.latest("m")
                assert v is not None
                meta, data = store.read_version("m", v)
                assert len(data) == meta.size_bytes
            except BaseException as exc:
                errors.append(exc)
                return

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for i in range(1, 15):
        body = bytes([i]) * 200_000
        store.publish(_meta("m", f"v{i:03d}", body), body)
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert store.latest("m") == "v014"


def test_local_publish_leaves_no_temporary_files(tmp_path: Path) -> None:
    store = LocalModelStore(tmp_path)
    store.publish(_meta("m", "v1", b"x"), b"x")
    leftovers = [p.name for p in (tmp_path / "m").rglob(".*")]
    assert leftovers == []


def test_open_store_dispatch(tmp_path: Path) -> None:
    assert isinstance(open_store(str(tmp_path)), LocalModelStore)
    assert isinstance(open_store(f"file://{tmp_path}"), LocalModelStore)
    assert isinstance(open_store("s3://bucket/prefix", s3_endpoint_url="http://127.0.0.1:1"), S3ModelStore)
    with pytest.raises(ModelStoreError, match="unsupported"):
        open_store("gs://bucket")
    with pytest.raises(ValueError, match="bucket"):
        open_store("s3://")


def test_unreachable_s3_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url="http://127.0.0.1:9",
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}, connect_timeout=1),
    )
    store = S3ModelStore("s3://b/p", client=client)
    with pytest.raises(ModelStoreError, match=r"cannot read s3://b/p/m/latest: Could not connect"):
        store.latest("m")
    with pytest.raises(ModelStoreError, match="cannot list"):
        store.list_models()


def test_missing_values_in_metadata_read_back(store: ModelStore) -> None:
    """Issue 22: held-out rows with NaN were written as null and could not be read back, yet latest moved."""
    meta = _meta("churn", "v1", b"one").model_copy(
        update={
            "verification": VerificationSample(
                inputs=[[float("nan"), 1.0], [float("inf"), -float("inf")]], probabilities=[[0.5, 0.5], [1.0, 0.0]]
            ),
            "reference_profile": {"features": {"a": {"missing": float("nan")}}},
        }
    )
    store.publish(meta, b"one")
    assert store.latest("churn") == "v1"
    back = store.read_metadata("churn", "v1")
    assert np.isnan(back.verification.inputs[0][0]) and back.verification.inputs[1] == [float("inf"), -float("inf")]
    assert back.model_dump_json() == meta.model_dump_json()


def test_metadata_that_does_not_read_back_is_refused_before_latest_moves(
    store: ModelStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.publish(_meta("churn", "v1", b"one"), b"one")
    real = ModelMetadata.model_dump_json

    def lossy(self: ModelMetadata, **kwargs: Any) -> str:  # as NaN written as null was
        return real(self, **kwargs).replace("0.25", "null")

    monkeypatch.setattr(ModelMetadata, "model_dump_json", lossy)
    meta = _meta("churn", "v2", b"two").model_copy(
        update={"verification": VerificationSample(inputs=[[0.25, 1.0]], probabilities=[[0.5, 0.5]])}
    )
    with pytest.raises(ModelStoreError, match="metadata does not read back as serialized"):
        store.publish(meta, b"two")
    assert store.latest("churn") == "v1" and store.list_versions("churn") == ["v1"]  # nothing written
