"""Where model versions live: a local directory (default) or an S3 prefix.

Layout, identical on both backends::

    <root>/<model>/versions/<version>/model.pkl
    <root>/<model>/versions/<version>/metadata.json
    <root>/<model>/versions/<version>/model.onnx   # when the publisher converted it (metadata "onnx")
    <root>/<model>/latest                 # text: the version to serve

Publishing is atomic for readers, who only ever follow ``latest``:

* local: the version is written into a hidden temporary directory, fsynced, and
  renamed into ``versions/`` in one step; ``latest`` is replaced with ``os.replace``.
* S3: each PUT is atomic; the artifact goes first, ``metadata.json`` second and
  ``latest`` last, so by the time ``latest`` names a version both objects exist.
  A crash between steps leaves an unreferenced version, never a broken ``latest``.

Integrity: the artifact's sha256 must match its metadata before it is unpickled.
"""

from __future__ import annotations

import abc
import contextlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ValidationError

from app.common.s3 import parse_s3_url, s3_client
from app.modelstore.metadata import MODEL_NAME_RE, VERSION_RE, ModelMetadata, sha256_hex

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

METADATA_FILE = "metadata.json"
LATEST_FILE = "latest"


class ModelStoreError(Exception):
    """A model or version cannot be read or written; the message says which and why."""


class ArtifactIntegrityError(ModelStoreError):
    """The artifact's bytes do not match the sha256 recorded in its metadata."""


def _check_reads_back(meta: ModelMetadata, text: str, where: str) -> None:
    """The metadata read back from ``text`` is the metadata published (NaN included), or ModelStoreError:
    a version whose metadata does not read back is never pointed at by ``latest``."""
    try:
        back = ModelMetadata.model_validate_json(text).model_dump_json(indent=2)
    except ValidationError as exc:
        raise ModelStoreError(
            f"model {meta.name!r} version {meta.version!r}: metadata does not read back {where}: {exc}"
        ) from exc
    if back != meta.model_dump_json(indent=2):
        raise ModelStoreError(f"model {meta.name!r} version {meta.version!r}: metadata reads back different {where}")


def _check_name(name: str) -> None:
    if not MODEL_NAME_RE.match(name):
        raise ModelStoreError(
            f"invalid model name {name!r}: use lowercase letters, digits and '-', at most 63 characters"
        )


def _check_version(version: str) -> None:
    if not VERSION_RE.match(version):
        raise ModelStoreError(f"invalid version {version!r}")


class ModelStore(abc.ABC):
    """Read and publish model versions. Subclasses implement six small I/O primitives."""

    url: str

    # -- primitives -------------------------------------------------------
    @abc.abstractmethod
    def _read(self, key: str) -> bytes | None:
        """The bytes at ``key`` (relative to the root), or None if absent."""

    @abc.abstractmethod
    def _list_models(self) -> list[str]: ...

    @abc.abstractmethod
    def _list_versions(self, name: str) -> list[str]: ...

    @abc.abstractmethod
    def _write_version(self, name: str, version: str, files: dict[str, bytes]) -> None:
        """Write all files of a version so that none is visible before all are."""

    @abc.abstractmethod
    def _write_latest(self, name: str, version: str) -> None: ...

    # -- API ----------------------------------------------------------------
    def list_models(self) -> list[str]:
        """Models that have a ``latest`` pointer, sorted."""
        return sorted(n for n in self._list_models() if MODEL_NAME_RE.match(n) and self.latest(n))

    def list_versions(self, name: str) -> list[str]:
        _check_name(name)
        return sorted(self._list_versions(name))

    def latest(self, name: str) -> str | None:
        _check_name(name)
        raw = self._read(f"{name}/{LATEST_FILE}")
        if raw is None:
            return None
        version = raw.decode("utf-8", "replace").strip()
        _check_version(version)
        return version

    def read_metadata(self, name: str, version: str) -> ModelMetadata:
        _check_name(name)
        _check_version(version)
        raw = self._read(f"{name}/versions/{version}/{METADATA_FILE}")
        if raw is None:
            raise ModelStoreError(f"model {name!r} version {version!r} has no {METADATA_FILE} in {self.url}")
        try:
            meta = ModelMetadata.model_validate_json(raw)
        except ValidationError as exc:
            raise ModelStoreError(f"model {name!r} version {version!r}: invalid metadata: {exc}") from exc
        if meta.name != name or meta.version != version:
            raise ModelStoreError(
                f"metadata at {name}/{version} names {meta.name}/{meta.version}: refusing a misplaced artifact"
            )
        return meta

    def read_version(self, name: str, version: str) -> tuple[ModelMetadata, bytes]:
        """Metadata and artifact bytes, with the artifact's sha256 checked."""
        meta = self.read_metadata(name, version)
        data = self._read(f"{name}/versions/{version}/{meta.artifact_file}")
        if data is None:
            raise ModelStoreError(f"model {name!r} version {version!r}: {meta.artifact_file} is missing")
        digest = sha256_hex(data)
        if digest != meta.sha256:
            raise ArtifactIntegrityError(
                f"model {name!r} version {version!r}: artifact sha256 {digest[:12]}... does not match "
                f"metadata {meta.sha256[:12]}..."
            )
        return meta, data

    def read_onnx(self, meta: ModelMetadata) -> bytes:
        """The version's ONNX graph (metadata ``onnx``), its sha256 checked like the artifact's."""
        if meta.onnx is None:
            raise ModelStoreError(f"model {meta.name!r} version {meta.version!r} was published without an ONNX graph")
        data = self._read(f"{meta.name}/versions/{meta.version}/{meta.onnx.file}")
        if data is None:
            raise ModelStoreError(f"model {meta.name!r} version {meta.version!r}: {meta.onnx.file} is missing")
        digest = sha256_hex(data)
        if digest != meta.onnx.sha256:
            raise ArtifactIntegrityError(
                f"model {meta.name!r} version {meta.version!r}: {meta.onnx.file} sha256 {digest[:12]}... does not "
                f"match metadata {meta.onnx.sha256[:12]}..."
            )
        return data

    def publish(
        self, meta: ModelMetadata, artifact: bytes, *, set_latest: bool = True, onnx_graph: bytes | None = None
    ) -> None:
        """Write a new version (with its ONNX graph when the metadata lists one); then (by default) point
        ``latest`` at it."""
        _check_name(meta.name)
        _check_version(meta.version)
        if sha256_hex(artifact) != meta.sha256:
            raise ArtifactIntegrityError("metadata sha256 does not match the artifact being published")
        if (meta.onnx is None) != (onnx_graph is None):
            raise ModelStoreError("an ONNX graph is published exactly when the metadata lists one (onnx)")
        if meta.onnx is not None and onnx_graph is not None and sha256_hex(onnx_graph) != meta.onnx.sha256:
            raise ArtifactIntegrityError("metadata onnx.sha256 does not match the ONNX graph being published")
        if meta.version in self._list_versions(meta.name):
            raise ModelStoreError(f"model {meta.name!r} version {meta.version!r} already exists")
        text = meta.model_dump_json(indent=2)
        _check_reads_back(meta, text, "as serialized")  # before anything is written
        files = {meta.artifact_file: artifact, METADATA_FILE: text.encode()}
        if meta.onnx is not None and onnx_graph is not None:
            files[meta.onnx.file] = onnx_graph
        self._write_version(meta.name, meta.version, files)
        _check_reads_back(meta, self.read_metadata(meta.name, meta.version).model_dump_json(indent=2), "from the store")
        if set_latest:
            self._write_latest(meta.name, meta.version)

    def set_latest(self, name: str, version: str) -> None:
        """Point ``latest`` at an existing version (promotion or rollback)."""
        self.read_version(name, version)  # refuse to point at something unreadable
        self._write_latest(name, version)


class LocalModelStore(ModelStore):
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.url = str(self.root)

    def _read(self, key: str) -> bytes | None:
        try:
            return (self.root / key).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def _list_models(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return [p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")]

    def _list_versions(self, name: str) -> list[str]:
        vdir = self.root / name / "versions"
        if not vdir.is_dir():
            return []
        return [p.name for p in vdir.iterdir() if p.is_dir() and not p.name.startswith(".")]

    def _write_version(self, name: str, version: str, files: dict[str, bytes]) -> None:
        vdir = self.root / name / "versions"
        vdir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=vdir))
        try:
            tmp.chmod(0o755)  # mkdtemp makes it 0700; the server may run as another user
            for fname, data in files.items():
                with open(tmp / fname, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
            os.rename(tmp, vdir / version)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _fsync_dir(vdir)

    def _write_latest(self, name: str, version: str) -> None:
        mdir = self.root / name
        tmp = mdir / f".{LATEST_FILE}.{uuid.uuid4().hex}"
        with open(tmp, "w") as fh:
            fh.write(version + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, mdir / LATEST_FILE)
        _fsync_dir(mdir)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class S3ModelStore(ModelStore):
    def __init__(
        self, url: str, client: S3Client | None = None, endpoint_url: str | None = None, region: str | None = None
    ) -> None:
        self.bucket, self.prefix = parse_s3_url(url)
        self.url = url
        self.client = client or s3_client(endpoint_url, region)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _read(self, key: str) -> bytes | None:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
            with contextlib.closing(body):
                return body.read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return None
            raise ModelStoreError(f"cannot read s3://{self.bucket}/{self._key(key)}: {exc}") from exc
        except BotoCoreError as exc:  # connection refused, timeouts, credentials
            raise ModelStoreError(f"cannot read s3://{self.bucket}/{self._key(key)}: {exc}") from exc

    def _list_prefixes(self, prefix: str) -> list[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        full = self._key(prefix) if prefix else (f"{self.prefix}/" if self.prefix else "")
        out: list[str] = []
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full, Delimiter="/"):
                for cp in page.get("CommonPrefixes", []):
                    out.append(cp["Prefix"][len(full) :].strip("/"))
        except (ClientError, BotoCoreError) as exc:
            raise ModelStoreError(f"cannot list s3://{self.bucket}/{full}: {exc}") from exc
        return out

    def _list_models(self) -> list[str]:
        return self._list_prefixes("")

    def _list_versions(self, name: str) -> list[str]:
        return self._list_prefixes(f"{name}/versions/")

    def _put(self, key: str, data: bytes) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        except (ClientError, BotoCoreError) as exc:
            raise ModelStoreError(f"cannot write s3://{self.bucket}/{self._key(key)}: {exc}") from exc

    def _write_version(self, name: str, version: str, files: dict[str, bytes]) -> None:
        # metadata.json last: it is the commit marker of a version.
        for fname in sorted(files, key=lambda f: f == METADATA_FILE):
            self._put(f"{name}/versions/{version}/{fname}", files[fname])

    def _write_latest(self, name: str, version: str) -> None:
        self._put(f"{name}/{LATEST_FILE}", (version + "\n").encode())


def open_store(url: str, *, s3_endpoint_url: str | None = None, s3_region: str | None = None) -> ModelStore:
    """A store for ``s3://bucket/prefix`` or a local path (``file://`` accepted)."""
    if url.startswith("s3://"):
        return S3ModelStore(url, endpoint_url=s3_endpoint_url, region=s3_region)
    if url.startswith("file://"):
        url = url[len("file://") :]
    if "://" in url:
        raise ModelStoreError(f"unsupported model store URL {url!r}: use a path or s3://bucket/prefix")
    return LocalModelStore(url)


class ModelStoreLocation(Protocol):
    """What locates a model store: app.common.settings.ModelStoreSettings, which the service's and the jobs'
    settings classes share (``MODEL_STORE_URL``, ``AWS_ENDPOINT_URL_S3``, ``AWS_DEFAULT_REGION``)."""

    @property
    def model_store_url(self) -> str: ...
    @property
    def s3_endpoint_url(self) -> str | None: ...
    @property
    def s3_region(self) -> str | None: ...


def model_store(settings: ModelStoreLocation) -> ModelStore:
    """The model store the settings name: the one way the service and the jobs open it."""
    return open_store(settings.model_store_url, s3_endpoint_url=settings.s3_endpoint_url, s3_region=settings.s3_region)
