"""``python -m jobs export-edge``: a model as an edge bundle (ONNX, manifest, parity report) in a directory
or on S3, for devices and processes without scikit-learn or torch (docs/edge.md).

``--model NAME[:VERSION]`` exports a scikit-learn model of the store (its latest version by default),
checked on the store's held-out verification rows; ``--checkpoint DIR`` exports the image+text model a
``train-multimodal`` checkpoint holds, with an int8 variant, checked on the scenario's held-out listings.
No bundle is written unless every variant passes its parity rule.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.modelstore import ModelStoreError, model_store

if TYPE_CHECKING:
    from app.modelstore import ModelStore
    from jobs.settings import JobSettings

MULTIMODAL_NAME = "product-classifier"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("export-edge", help="write a model as an edge bundle (ONNX + manifest + parity report)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--model", metavar="NAME[:VERSION]", help="a scikit-learn model of the store (latest by default)"
    )
    source.add_argument("--checkpoint", metavar="DIR", help="the image+text model of a train-multimodal checkpoint")
    p.add_argument("--out", required=True, help="the bundle's directory or s3://bucket/prefix (replaced if present)")
    p.add_argument(
        "--held-out", type=int, default=600, help="--checkpoint: held-out listings to check parity and accuracy on"
    )
    p.add_argument("--seed", type=int, default=1, help="--checkpoint: seed of the held-out listings (train uses 0)")
    p.set_defaults(handler=run)


def split_ref(ref: str) -> tuple[str, str | None]:
    name, _, version = ref.partition(":")
    if not name:
        raise ValueError(f"--model {ref!r}: expected NAME or NAME:VERSION")
    return name, version or None


def resolve(store: ModelStore, ref: str) -> tuple[str, str]:
    """The model and version ``ref`` names, both checked to exist (the error lists what does)."""
    name, version = split_ref(ref)
    models = store.list_models()
    if name not in models:
        raise ModelStoreError(f"model {name!r} is not in the store {store.url}; it holds {models}")
    versions = store.list_versions(name)
    if version is None:
        version = store.latest(name)
    if version not in versions:
        raise ModelStoreError(f"model {name!r} has no version {version!r} in {store.url}; it has {versions}")
    assert version is not None
    return name, version


def export_store_model(store: ModelStore, ref: str, hmac_key: bytes | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(what bundle.build takes, the summary's extra fields) for a store model."""
    import numpy as np

    from app.edge import sklearn_export

    name, version = resolve(store, ref)
    meta, artifact = store.read_version(name, version)  # sha256 checked against the metadata
    estimator = sklearn_export.load_estimator(meta, artifact, hmac_key=hmac_key)
    held_out = np.asarray(meta.verification.inputs, dtype=np.float64)
    parts = sklearn_export.export(estimator, meta, held_out)
    parts["source"] = {
        "name": name,
        "version": version,
        "framework": "sklearn",
        "sha256": meta.sha256,
        "size_bytes": meta.size_bytes,
        "library_versions": meta.library_versions,
        "held_out": "the store's verification rows (held-out split)",
    }
    return parts, {"model": name, "version": version}


def export_checkpoint(directory: str, held_out: int, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(what bundle.build takes, the summary's extra fields) for the image+text model of a checkpoint."""
    import numpy as np
    import torch

    from app.edge import bundle, runner, torch_export
    from app.multimodal.model import CHECKPOINT, load_checkpoint
    from app.multimodal.training import to_arrays
    from examples.multimodal.dataset import generate  # the reference scenario's listings (examples/multimodal)
    from examples.multimodal.training import TRAIN_IMAGE_SIZE

    if held_out < 1:
        raise ValueError(f"--held-out must be at least 1, got {held_out}")
    model = load_checkpoint(directory)  # no checkpoint: a ValueError naming train-multimodal
    items = generate(held_out, seed=seed, size=TRAIN_IMAGE_SIZE)
    data = to_arrays(items, model.tokenizer)  # the serving preprocessing and the model's tokenizer
    parts = torch_export.export(model, data.images, data.tokens, data.labels)
    # The device builds its inputs with the runner's preprocessing from the manifest: it must give the
    # same arrays as the platform's, or parity of the graph alone proves nothing on a device.
    spec = parts["preprocessing"]
    images = np.stack([runner.preprocess_image(x.image, spec["image"]) for x in items])
    tokens = np.stack([runner.tokenize(x.title, spec["text"]) for x in items])
    mismatched = int((images != data.images).any(axis=(1, 2, 3)).sum() + (tokens != data.tokens).any(axis=1).sum())
    if mismatched:
        raise bundle.ParityError(f"the manifest's preprocessing differs from the platform's on {mismatched} inputs")
    parts["parity"]["preprocessing"] = {"rows": held_out, "mismatched_inputs": 0, "passed": True}
    weights = (Path(directory) / CHECKPOINT).read_bytes()
    digest = hashlib.sha256(weights).hexdigest()
    parts["source"] = {
        "name": MULTIMODAL_NAME,
        "version": digest[:12],
        "framework": "torch",
        "sha256": digest,
        "size_bytes": len(weights),
        "library_versions": {"torch": torch.__version__},
        "held_out": f"{held_out} generated listings, seed {seed}",
    }
    return parts, {"model": MULTIMODAL_NAME, "version": digest[:12]}


def run(args: argparse.Namespace, settings: JobSettings) -> dict[str, Any]:
    from app.edge import bundle

    if args.model:
        parts, summary = export_store_model(model_store(settings), args.model, settings.hmac_key)
    else:
        parts, summary = export_checkpoint(args.checkpoint, args.held_out, args.seed)
    files, manifest = bundle.build(**parts)
    written = bundle.write_bundle(
        args.out, files, manifest, s3_endpoint_url=settings.s3_endpoint_url, s3_region=settings.s3_region
    )
    return {
        **summary,
        "out": args.out,
        "files": written,
        "sizes": {name: entry["size_bytes"] for name, entry in manifest["files"].items()},
        "source_size_bytes": manifest["source"]["size_bytes"],
        "opset": manifest["opset"],
        "parity": parts["parity"],
    }
