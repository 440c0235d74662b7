"""`python -m jobs wait-for`: Triton's init container, holding it until the export wrote the repository."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from devharness import S3Server
from tests.jobs.test_cli import run_jobs

pytestmark = pytest.mark.timed


def test_waits_for_an_s3_object_written_later(s3_server: S3Server) -> None:
    bucket = s3_server.create_bucket("wait-for")
    written: list[float] = []

    def write_later() -> None:
        time.sleep(3)  # well past the job's start-up (under 1 s), even on a loaded machine
        s3_server.client().put_object(Bucket=bucket, Key="repo/m/config.pbtxt", Body=b"name: 'm'")
        written.append(time.monotonic())

    writer = threading.Thread(target=write_later)
    writer.start()
    try:
        code, out = run_jobs(
            *("--s3-endpoint-url", s3_server.endpoint, "wait-for", f"s3://{bucket}/repo/m/config.pbtxt"),
            *("--interval-seconds", "0.2", "--timeout-seconds", "60"),
        )
        returned = time.monotonic()
    finally:
        writer.join()
    assert code == 0 and out["status"] == "ok", out
    assert written and returned > written[0], "it returned before the object was written"
    assert out["waited_seconds"] > 0


def test_gives_up_after_its_timeout_naming_what_it_waited_for(s3_server: S3Server, tmp_path: Path) -> None:
    bucket = s3_server.create_bucket("wait-for-missing")
    code, out = run_jobs(
        "--s3-endpoint-url", s3_server.endpoint, "wait-for", f"s3://{bucket}/nothing", "--timeout-seconds", "1"
    )
    assert code == 1 and out["status"] == "error"
    assert f"s3://{bucket}/nothing not there after 1s" in out["error"]
    code, out = run_jobs("wait-for", str(tmp_path / "absent"), "--timeout-seconds", "0.5", "--interval-seconds", "0.1")
    assert code == 1 and "not there after" in out["error"]
    (tmp_path / "present").write_text("x")
    code, out = run_jobs("wait-for", str(tmp_path / "present"))
    assert code == 0 and out["waited_seconds"] < 1


def test_an_unreachable_s3_is_waited_out_and_reported(tmp_path: Path) -> None:
    """S3 still starting: connection errors are retried until the timeout, then named."""
    keys = {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "AWS_DEFAULT_REGION": "us-east-1"}
    code, out = run_jobs(
        "--s3-endpoint-url", "http://127.0.0.1:9", "wait-for", "s3://b/k", "--timeout-seconds", "2", env=keys
    )
    assert code == 1 and "Could not connect to the endpoint URL" in out["error"], out
