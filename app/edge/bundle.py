"""Edge bundles: what ``python -m jobs export-edge`` writes, and the parity rules a bundle must pass first.

A bundle is a directory (or an S3 prefix) of::

    model.onnx          the float graph (pinned opset, recorded in the manifest)
    model.int8.onnx     a quantized variant, where one pays off (the image+text model)
    parity.json         the parity report: the source model against each variant on held-out data
    manifest.json       written last: inputs, output, classes, preprocessing, source model, and the
                        sha256 and size of every other file

The edge runner (app/edge/runner.py) reads the manifest, checks every file's sha256, and builds its
inputs from the manifest alone. Parity is checked here before anything is written: a variant that
breaks a rule raises :class:`ParityError` and no bundle is written (docs/edge.md, "Parity rules").
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from app.edge.runner import FORMAT, FORMAT_VERSION, MANIFEST, sha256_file
from app.modelstore.metadata import sha256_hex
from app.onnx.parity import TIE_EPSILON, compare_probabilities

PARITY_FILE = "parity.json"
FLOAT_ATOL = 1e-5  # max |probability difference| of a float variant against its source
MAX_ACCURACY_DROP = 0.01  # a quantized variant may lose at most 1 percentage point of held-out accuracy


class ExportError(ValueError):
    """A model that cannot be exported as an edge bundle; the message says why."""


class ParityError(ExportError):
    """A variant does not reproduce its source within the parity rules: no bundle is written."""


@dataclass(frozen=True)
class Variant:
    """One graph of the bundle: ``float`` (the faithful copy) or a quantized one."""

    name: str
    file: str
    onnx: bytes
    quantization: str | None = None


def run_onnx(onnx_bytes: bytes, feed: dict[str, NDArray[Any]], output: str) -> NDArray[np.float64]:
    """One output of the graph on ``feed``, in a one-thread CPU session (as on a device)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
    return np.asarray(session.run([output], feed)[0], dtype=np.float64)


def opsets(onnx_bytes: bytes) -> dict[str, int]:
    """The graph's opset per domain ("" is ONNX's own): what a device's runtime must support."""
    import onnx

    model = onnx.load_from_string(onnx_bytes)
    return {imp.domain or "ai.onnx": int(imp.version) for imp in model.opset_import}


def float_parity(got: ArrayLike, expected: ArrayLike, *, atol: float = FLOAT_ATOL) -> dict[str, Any]:
    """The float rule: max |Δprobability| <= ``atol`` and no label flip, except on rows whose expected top
    two probabilities are within TIE_EPSILON. Raises ParityError naming the numbers."""
    report = compare_probabilities(got, expected, atol=atol)
    result = {
        "rule": f"max |dp| <= {atol:g}, no label flips away from ties (top two within {TIE_EPSILON:g})",
        "rows": report.rows,
        "max_abs_diff": report.max_abs_diff,
        "label_flips": report.label_flips,
        "passed": report.ok,
    }
    if report.rows == 0:
        raise ParityError("no held-out rows to check parity on: no bundle is written without parity")
    if not report.ok:
        raise ParityError(f"the float graph does not reproduce the source model: {report.describe()}")
    return result


def quantized_parity(
    got: ArrayLike, expected: ArrayLike, labels: ArrayLike, *, max_drop: float = MAX_ACCURACY_DROP
) -> dict[str, Any]:
    """The quantized rule: held-out accuracy at most ``max_drop`` below the source's. Raises ParityError."""
    g, e, y = np.asarray(got), np.asarray(expected), np.asarray(labels)
    if len(y) == 0 or g.shape != e.shape or len(y) != len(e):
        raise ParityError(f"quantized parity needs labelled rows; got {g.shape}, {e.shape} and {len(y)} labels")
    source_acc = float((e.argmax(1) == y).mean())
    acc = float((g.argmax(1) == y).mean())
    result = {
        "rule": f"accuracy drop <= {max_drop * 100:g} percentage point(s)",
        "rows": len(y),
        "source_accuracy": source_acc,
        "accuracy": acc,
        "accuracy_drop": source_acc - acc,
        "max_abs_diff": float(np.max(np.abs(g - e))),
        "label_flips": int((g.argmax(1) != e.argmax(1)).sum()),
        "passed": source_acc - acc <= max_drop,
    }
    if not result["passed"]:
        raise ParityError(
            f"the quantized graph loses {(source_acc - acc) * 100:.2f} points of accuracy "
            f"({source_acc:.4f} -> {acc:.4f}), more than {max_drop * 100:g}"
        )
    return result


def build(
    *,
    source: dict[str, Any],
    inputs: list[dict[str, Any]],
    output: dict[str, Any],
    classes: list[Any],
    preprocessing: dict[str, Any],
    variants: list[Variant],
    parity: dict[str, Any],
) -> tuple[dict[str, bytes], dict[str, Any]]:
    """The bundle's files and its manifest (which lists each file's sha256 and size)."""
    if not variants or variants[0].name != "float":
        raise ExportError("a bundle's first variant is the float graph")
    missing = [v.name for v in variants if not parity.get(v.name, {}).get("passed")]
    if missing:
        raise ParityError(f"no parity report that passed for variant(s) {missing}: no bundle is written")
    files = {v.file: v.onnx for v in variants}
    files[PARITY_FILE] = (json.dumps(parity, indent=2) + "\n").encode()
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created_at": datetime.now(UTC).isoformat(),
        "source": source,
        "opset": opsets(variants[0].onnx),
        "inputs": inputs,
        "output": output,
        "classes": classes,
        "preprocessing": preprocessing,
        "variants": {
            v.name: {"file": v.file, "quantization": v.quantization, "size_bytes": len(v.onnx)} for v in variants
        },
        "parity_file": PARITY_FILE,
        "files": {name: {"sha256": sha256_hex(data), "size_bytes": len(data)} for name, data in files.items()},
    }
    return files, manifest


def write_bundle(
    dest: str,
    files: dict[str, bytes],
    manifest: dict[str, Any],
    *,
    s3_endpoint_url: str | None = None,
    s3_region: str | None = None,
) -> list[str]:
    """Write the bundle to a directory or ``s3://bucket/prefix``; the manifest goes last, so a reader who
    finds one finds every file it lists. Re-running replaces the bundle. Returns the names written."""
    blobs = {**files, MANIFEST: (json.dumps(manifest, indent=2) + "\n").encode()}
    if dest.startswith("s3://"):
        from app.common.s3 import parse_s3_url, s3_client

        bucket, prefix = parse_s3_url(dest)
        client = s3_client(s3_endpoint_url, s3_region)
        client.delete_object(Bucket=bucket, Key=f"{prefix}/{MANIFEST}".lstrip("/"))  # a half-rewritten bundle has none
        for name in sorted(blobs, key=lambda n: n == MANIFEST):
            client.put_object(Bucket=bucket, Key=f"{prefix}/{name}".lstrip("/"), Body=blobs[name])
        return sorted(blobs)
    target = Path(dest)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Built beside the target and renamed into place: a reader never sees a mix of two exports.
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        for name, data in blobs.items():
            (tmp / name).write_bytes(data)
        tmp.chmod(0o755)
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.rename(target, old)
            os.rename(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return sorted(blobs)


def download_bundle(
    url: str, dest: str | Path, *, s3_endpoint_url: str | None = None, s3_region: str | None = None
) -> Path:
    """Copy the bundle at ``s3://bucket/prefix`` into the directory ``dest`` (what a device's installer
    does); every file is checked against the manifest's sha256 on the way."""
    from app.common.s3 import parse_s3_url, s3_client

    bucket, prefix = parse_s3_url(url)
    client = s3_client(s3_endpoint_url, s3_region)
    out = Path(dest)
    out.mkdir(parents=True, exist_ok=True)

    def get(name: str) -> bytes:
        body = client.get_object(Bucket=bucket, Key=f"{prefix}/{name}".lstrip("/"))["Body"]
        try:
            return body.read()
        finally:
            body.close()

    try:
        manifest = json.loads(get(MANIFEST))
    except client.exceptions.NoSuchKey:
        raise ExportError(f"no {MANIFEST} at {url}: not an edge bundle") from None
    for name, entry in manifest["files"].items():
        data = get(name)
        if sha256_hex(data) != entry["sha256"]:
            raise ExportError(f"{url}/{name} does not match the sha256 in its manifest")
        (out / name).write_bytes(data)
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return out


def bundle_size(directory: str | Path) -> dict[str, int]:
    """Bytes of each file of a local bundle."""
    return {p.name: p.stat().st_size for p in sorted(Path(directory).iterdir()) if p.is_file()}


__all__ = [
    "FLOAT_ATOL",
    "MAX_ACCURACY_DROP",
    "PARITY_FILE",
    "ExportError",
    "ParityError",
    "Variant",
    "build",
    "bundle_size",
    "download_bundle",
    "float_parity",
    "opsets",
    "quantized_parity",
    "run_onnx",
    "sha256_file",
    "write_bundle",
]
