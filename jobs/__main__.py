"""``python -m jobs <subcommand>``: every Job and CronJob of the platform.

Each subcommand prints exactly one JSON summary line on stdout and exits 0, or
prints a JSON error line and exits non-zero with the reason.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from app.common.logging import configure_logging
from app.modelstore import ModelStoreError, open_store
from jobs import summary, train


def _env_key() -> bytes | None:
    key = os.environ.get("MODEL_STORE_HMAC_KEY")
    return key.encode() if key else None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m jobs", description=__doc__)
    parser.add_argument(
        "--store",
        default=os.environ.get("MODEL_STORE_URL", "./var/model-store"),
        help="model store: a directory or s3://bucket/prefix (env MODEL_STORE_URL)",
    )
    parser.add_argument(
        "--s3-endpoint-url",
        default=os.environ.get("S3_ENDPOINT_URL"),
        help="S3-compatible endpoint (env S3_ENDPOINT_URL); AWS when unset",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")
    train.add_parser(sub)
    p = sub.add_parser("promote", help="point a model's latest at an existing version (rollout or rollback)")
    p.add_argument("name")
    p.add_argument("version")
    p = sub.add_parser("list-models", help="models in the store with their versions and latest")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    configure_logging(os.environ.get("LOG_LEVEL", "WARNING"))
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            meta = train.train_and_publish(
                dataset=args.dataset,
                name=args.name or args.dataset,
                store_url=args.store,
                n_estimators=args.n_estimators,
                max_depth=args.max_depth or None,
                seed=args.seed,
                hmac_key=_env_key(),
                s3_endpoint_url=args.s3_endpoint_url,
                set_latest=not args.no_latest,
            )
            summary.emit(
                "train",
                "ok",
                model=meta.name,
                version=meta.version,
                store=args.store,
                metrics=meta.metrics,
                sha256=meta.sha256,
                latest=not args.no_latest,
            )
        elif args.command == "promote":
            store = open_store(args.store, s3_endpoint_url=args.s3_endpoint_url)
            previous = store.latest(args.name)
            store.set_latest(args.name, args.version)
            summary.emit("promote", "ok", model=args.name, version=args.version, previous=previous)
        elif args.command == "list-models":
            store = open_store(args.store, s3_endpoint_url=args.s3_endpoint_url)
            models = {
                n: {"latest": store.latest(n), "versions": store.list_versions(n)}
                for n in store.list_models()
            }
            summary.emit("list-models", "ok", models=models)
    except (ModelStoreError, ValueError, OSError) as exc:
        summary.emit(args.command, "error", error=str(exc))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
