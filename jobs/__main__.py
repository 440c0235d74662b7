"""``python -m jobs <subcommand>``: every Job and CronJob of the platform.

Each subcommand prints exactly one JSON summary line on stdout and exits 0, or
prints a JSON line with ``"status": "error"`` and the reason and exits non-zero
(1: failed, 3: another run holds the lock).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError
from redis.exceptions import RedisError

from app.common.logging import configure_logging
from app.features.definitions import DefinitionError
from app.features.materialize import MaterializationLockedError
from app.features.offline import OfflineStoreError
from app.features.online import OnlineStoreUnavailableError
from app.modelstore import ModelStoreError, model_store
from jobs import (
    batch_predict,
    export_edge,
    featurestore,
    monitoring,
    multimodal,
    publish,
    rollout,
    stream,
    summary,
    train,
    wait,
)
from jobs.settings import Handler, JobSettings

EXIT_LOCKED = 3


def build_parser(settings: JobSettings | None = None) -> argparse.ArgumentParser:
    """The CLI; each subcommand's parser carries its ``handler``. Defaults come from ``settings``
    (the environment, when not given)."""
    settings = settings or JobSettings()
    parser = argparse.ArgumentParser(
        prog="python -m jobs", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--store",
        default=settings.model_store_url,
        help="model store: a directory or s3://bucket/prefix (env MODEL_STORE_URL)",
    )
    parser.add_argument(
        "--s3-endpoint-url",
        default=settings.s3_endpoint_url,
        help="S3-compatible endpoint of the model store (env AWS_ENDPOINT_URL_S3); AWS when unset",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")
    publish.add_parser(sub)
    train.add_parser(sub)
    p = sub.add_parser("promote", help="point a model's latest at an existing version (rollout or rollback)")
    p.add_argument("name")
    p.add_argument("version")
    p.set_defaults(handler=promote)
    sub.add_parser("list-models", help="models in the store with their versions and latest").set_defaults(
        handler=list_models
    )
    featurestore.add_parsers(sub, settings)
    batch_predict.add_parser(sub)
    multimodal.add_parsers(sub)
    export_edge.add_parser(sub)
    rollout.add_parser(sub, settings)
    wait.add_parser(sub)
    stream.add_parser(sub)
    monitoring.add_parsers(sub)
    return parser


def promote(args: argparse.Namespace, settings: JobSettings) -> dict[str, Any]:
    store = model_store(settings)
    previous = store.latest(args.name)
    store.set_latest(args.name, args.version)
    return {"model": args.name, "version": args.version, "previous": previous}


def list_models(args: argparse.Namespace, settings: JobSettings) -> dict[str, Any]:
    store = model_store(settings)
    return {
        "models": {
            n: {
                "latest": store.latest(n),
                "versions": store.list_versions(n),
                "data_versions": train.data_versions(store, n),
            }
            for n in store.list_models()
        }
    }


def run(args: argparse.Namespace, settings: JobSettings) -> dict[str, Any]:
    """The subcommand's handler, on settings that the global flags override."""
    settings = settings.model_copy(update={"model_store_url": args.store, "s3_endpoint_url": args.s3_endpoint_url})
    handler: Handler = args.handler
    return handler(args, settings)


def _subcommand(argv: Sequence[str]) -> str:
    """The subcommand named in argv, for the summary line of a run that fails before it parses."""
    parser = build_parser(JobSettings.model_construct())  # defaults only: the environment is what failed
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return next((a for a in argv if a in action.choices), "jobs")
    return "jobs"


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        settings = JobSettings()
    except ValidationError as exc:  # a bad variable: still one summary line, naming it
        configure_logging("WARNING")
        summary.emit(_subcommand(argv), "error", error=f"invalid environment: {exc}")
        return 1
    configure_logging(settings.log_level)
    args = build_parser(settings).parse_args(argv)
    try:
        result = run(args, settings)
    except MaterializationLockedError as exc:
        summary.emit(args.command, "error", error=str(exc))
        return EXIT_LOCKED
    except (
        ModelStoreError,
        OfflineStoreError,
        OnlineStoreUnavailableError,
        DefinitionError,
        RedisError,
        rollout.RolloutError,
        ValueError,
        OSError,
    ) as exc:
        summary.emit(args.command, "error", error=str(exc))
        return 1
    summary.emit(args.command, "ok", **result)
    return 0


if __name__ == "__main__":
    code = main()
    # Skip the interpreter's teardown: freeing a job's heap (hundreds of MB of Arrow and NumPy buffers)
    # is a noticeable share of a materialization (docs/design.md), and the OS reclaims it anyway. Everything the
    # job owes is done by now: the summary line is written, locks are released, files are closed.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
