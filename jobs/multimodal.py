"""Multimodal jobs: ``train-multimodal`` (train, write a checkpoint) and ``export-triton``
(checkpoint -> Triton model repository, local or s3://)."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jobs.settings import JobSettings


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("train-multimodal", help="train the image+text product classifier on generated listings")
    p.add_argument("--output", default="./var/multimodal", help="checkpoint directory")
    p.add_argument("--train-size", type=int, default=2400)
    p.add_argument("--test-size", type=int, default=600)
    p.add_argument("--epochs", type=int, default=25)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=train_multimodal)
    p = sub.add_parser("export-triton", help="write a Triton model repository from a checkpoint")
    p.add_argument("--checkpoint", default="./var/multimodal")
    p.add_argument("--repository", required=True, help="directory or s3://bucket/prefix")
    p.add_argument("--gpu", action="store_true", help="instance group KIND_GPU (default KIND_CPU)")
    p.add_argument(
        "--backend",
        choices=["python", "pytorch"],
        default="python",
        help="python: torch inside Triton's python backend (CPU fallback); pytorch: libtorch (NGC image)",
    )
    p.add_argument("--no-dynamic-batching", action="store_true")
    p.add_argument("--max-queue-delay-us", type=int, default=2000)
    p.add_argument("--instances", type=int, default=1)
    p.set_defaults(handler=export_triton)


# torch is imported inside the two handlers only: slow to import, and a big dependency the other jobs do without.


def train_multimodal(args: argparse.Namespace, settings: JobSettings) -> dict[str, Any]:
    from app.multimodal.model import save_checkpoint
    from examples.multimodal.training import train  # the reference scenario's listings (examples/multimodal)

    model, metrics, _ = train(args.train_size, args.test_size, args.epochs, args.seed)
    out = save_checkpoint(model, args.output)  # weights, class names and vocabulary; the export reads them all
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return {"checkpoint": str(out), **metrics}


def export_triton(args: argparse.Namespace, settings: JobSettings) -> dict[str, Any]:
    from app.multimodal.model import load_checkpoint
    from app.multimodal.triton_repo import export

    model = load_checkpoint(args.checkpoint)  # no checkpoint: a ValueError naming train-multimodal
    files = export(
        model,
        args.repository,
        kind="KIND_GPU" if args.gpu else "KIND_CPU",
        backend=args.backend,
        dynamic_batching=not args.no_dynamic_batching,
        max_queue_delay_us=args.max_queue_delay_us,
        instances=args.instances,
    )
    return {
        "repository": args.repository,
        "files": sorted(files),
        "kind": "KIND_GPU" if args.gpu else "KIND_CPU",
        "classes": list(model.classes),
    }
