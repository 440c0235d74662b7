"""An edge bundle as a prediction engine for a store version: the piece the prediction service needs to serve
a bundle instead of the pickle or the publisher's graph (``PREDICT_ENGINE=edge-bundle``: app/runtime/registry.py).

Loading proves the bundle is a faithful copy of *that* version: its files match their sha256, its manifest
names the same model, version and artifact sha256, the same classes and feature columns, and on the version's
verification rows (held out by the trainer) it reproduces the trainer's probabilities within the float
parity rule. Anything else is an :class:`EdgeEngineError` saying which check failed.

Bundles are found at ``<root>/<model>/<version>/`` (``export-edge --out ROOT/NAME/VERSION``), in a
directory or under an S3 prefix (downloaded once into a cache directory, sha256-checked on the way).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from app.edge.bundle import FLOAT_ATOL, ExportError, download_bundle
from app.edge.runner import BundleError, EdgeModel, InputError
from app.modelstore.metadata import ModelMetadata
from app.onnx.parity import compare_probabilities

ENGINE = "edge-bundle"


class EdgeEngineError(Exception):
    """A bundle that must not serve this version; the message says why."""


def locate(
    root: str,
    meta: ModelMetadata,
    cache: str | Path,
    *,
    s3_endpoint_url: str | None = None,
    s3_region: str | None = None,
) -> Path:
    """The local directory of the bundle of ``meta``'s version under ``root`` (a directory or s3:// prefix)."""
    if root.startswith("s3://"):
        local = Path(cache) / meta.name / meta.version
        if not (local / "manifest.json").exists():
            url = f"{root.rstrip('/')}/{meta.name}/{meta.version}"
            try:
                download_bundle(url, local, s3_endpoint_url=s3_endpoint_url, s3_region=s3_region)
            except ExportError as exc:
                raise EdgeEngineError(str(exc)) from exc
        return local
    return Path(root) / meta.name / meta.version


class EdgeEngine:
    """``predict_proba`` of float64 rows [N, features] through the bundle, after the checks above."""

    engine = ENGINE

    def __init__(self, directory: str | Path, meta: ModelMetadata, *, tolerance: float = FLOAT_ATOL, threads: int = 1):
        where = f"{meta.name}:{meta.version}"
        try:
            self.model = EdgeModel(directory, threads=threads)
        except BundleError as exc:
            raise EdgeEngineError(f"{where}: {exc}") from exc
        manifest: dict[str, Any] = self.model.manifest
        source = manifest.get("source", {})
        copy_of = f"{source.get('name')}:{source.get('version')}"
        if (source.get("name"), source.get("version")) != (meta.name, meta.version):
            raise EdgeEngineError(f"{where}: the bundle at {directory} is a copy of {copy_of}")
        if source.get("sha256") != meta.sha256:
            raise EdgeEngineError(f"{where}: the bundle was exported from another artifact (sha256 differs)")
        if manifest["classes"] != list(meta.classes):
            raise EdgeEngineError(f"{where}: bundle classes {manifest['classes']} differ from {meta.classes}")
        inputs = manifest["inputs"]
        if len(inputs) != 1 or inputs[0].get("columns") != meta.feature_names:
            raise EdgeEngineError(f"{where}: the bundle's input columns differ from the model's features")
        x = np.asarray(meta.verification.inputs, dtype=np.float64)
        expected = np.asarray(meta.verification.probabilities, dtype=np.float64)
        report = compare_probabilities(self.predict_proba(x), expected, atol=tolerance)
        if not report.ok:
            raise EdgeEngineError(
                f"{where}: the bundle does not reproduce the trainer's probabilities: {report.describe()}"
            )
        self.load_seconds = self.model.load_seconds

    def predict_proba(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        try:
            return self.model.predict_proba([x])
        except InputError as exc:
            raise ValueError(str(exc)) from exc
