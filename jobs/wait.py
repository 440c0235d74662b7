"""``wait-for URL``: block until a file or an S3 object exists.

An init container's job: a server that serves what a Job writes (Triton and the export Job's model
repository) starts only once it is there. Triton given a repository that does not exist yet never
polls it again, so without this it would stay unready after the export finishes."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jobs.settings import JobSettings


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("wait-for", help="wait until a file or s3:// object exists (init containers)")
    p.add_argument("url", help="a path, or s3://bucket/key")
    p.add_argument("--timeout-seconds", type=float, default=3600.0)
    p.add_argument("--interval-seconds", type=float, default=5.0)
    p.set_defaults(handler=run)


def exists(url: str, s3_endpoint_url: str | None, s3_region: str | None = None) -> bool:
    if not url.startswith("s3://"):
        return Path(url).exists()
    from botocore.exceptions import ClientError

    from app.common.s3 import parse_s3_url, s3_client

    bucket, key = parse_s3_url(url)
    try:
        s3_client(s3_endpoint_url, s3_region).head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NoSuchBucket", "NotFound"}:
            return False
        raise
    return True


def run(args: argparse.Namespace, settings: JobSettings) -> dict[str, Any]:
    start = time.monotonic()
    last_error = ""
    next_report = start + 30
    while True:
        try:
            if exists(args.url, settings.s3_endpoint_url, settings.s3_region):
                return {"url": args.url, "waited_seconds": round(time.monotonic() - start, 1)}
            last_error = "not there yet"
        except Exception as exc:  # S3 still starting, or a transient error: keep waiting, report it
            last_error = f"{type(exc).__name__}: {exc}"
        now = time.monotonic()
        if now - start >= args.timeout_seconds:
            raise TimeoutError(f"{args.url} not there after {args.timeout_seconds:.0f}s ({last_error})")
        if now >= next_report:  # progress, on stderr: the summary line stays the only stdout line
            print(f"waiting for {args.url}: {now - start:.0f}s, {last_error}", file=sys.stderr, flush=True)
            next_report = now + 30
        time.sleep(args.interval_seconds)
