"""Reads of the online store under a burst, against real gunicorn and a real valkey: a healthy
Redis gives no errors at any concurrency the benchmark uses (up to 128 connections)."""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import orjson
import pytest

from app.features.online import OnlineStore, Status, connect
from devharness import GunicornService, RedisServer
from devharness.jobs import run_job
from examples.fraud.repo import user_stats
from jobs.settings import REFERENCE_REPO
from tests.features.conftest import T0

pytestmark = pytest.mark.integration
DAYS = 10
USERS = 200
START = (T0 - timedelta(days=DAYS - 1)).date().isoformat()


def _jobs(env: dict[str, str], *args: str) -> None:
    run_job(*args, env=env).ok()


@pytest.fixture(scope="module")
def fraud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RedisServer, Path]]:
    work = tmp_path_factory.mktemp("burst")
    with RedisServer(work / "redis") as rs:
        env = {"FEATURES_OFFLINE_URL": str(work / "offline"), "FEATURES_REDIS_URL": rs.url}
        env["MODEL_STORE_URL"] = str(work / "models")
        _jobs(env, "seed", "--users", str(USERS), "--days", str(DAYS), "--start", START)
        _jobs(env, "features", "--users", str(USERS), "--days", str(DAYS), "--start", START)
        _jobs(env, "train", "--dataset", "fraud", "--name", "fraud", "--n-estimators", "10")
        _jobs(env, "materialize-incremental")
        yield rs, work / "models"


def _present_users(url: str) -> list[int]:
    """Users with current features (the others are 404s, a right answer but not this test's)."""
    vec = OnlineStore(connect(url)).read([(user_stats, user_stats.feature_names)], range(1, USERS + 1))[0]
    return [u for u, s in zip(range(1, USERS + 1), vec.statuses, strict=True) if s is Status.PRESENT]


async def _client(port: int, bodies: list[bytes], until: float, statuses: Counter[int], errors: list[str]) -> None:
    """One keep-alive connection sending requests back to back until ``until``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = 0
    try:
        while time.monotonic() < until:
            body = bodies[i % len(bodies)]
            i += 1
            writer.write(
                b"POST /v1/models/fraud/predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))  # type: ignore[union-attr]
            payload = await reader.readexactly(length)
            status = int(head.split(b" ", 2)[1])
            statuses[status] += 1
            if status != 200 and len(errors) < 5:
                errors.append(f"{status} {payload[:200]!r}")
    finally:
        writer.close()


async def _burst(port: int, users: list[int], connections: int, seconds: float) -> tuple[Counter[int], list[str]]:
    bodies = [
        orjson.dumps({"instances": [{"user_id": u, "amount": 12.5 + u, "merchant_category": u % 10}]}) for u in users
    ]
    statuses: Counter[int] = Counter()
    errors: list[str] = []
    until = time.monotonic() + seconds
    # Every connection starts at once, as a load balancer's burst onto a new pod does.
    await asyncio.gather(*(_client(port, bodies, until, statuses, errors) for _ in range(connections)))
    return statuses, errors


@pytest.mark.parametrize("connections", [32, 128])
@pytest.mark.timed
def test_burst_onto_a_fresh_service_gives_no_errors(
    fraud: tuple[RedisServer, Path], tmp_path: Path, connections: int
) -> None:
    """Was: 36 x 503 within the first quarter second of 32 connections, with Redis healthy."""
    rs, models = fraud
    users = _present_users(rs.url)
    assert len(users) > USERS / 2
    env = {
        "MODEL_STORE_URL": str(models),
        "FEATURES_REDIS_URL": rs.url,
        "FEATURES_REPO": REFERENCE_REPO,
        # What this test is about is connections, not latency: with the 50 ms default, a CPU-starved run
        # (the timed series under load) answered 46 of 2,090 with the deadline's own 503, correctly.
        "PREDICT_FEATURES_TIMEOUT_MS": "5000",
    }
    with GunicornService(tmp_path / "svc", env).wait_ready() as srv:
        statuses, errors = asyncio.run(_burst(srv.port, users, connections, seconds=2.0))
        statuses_again, errors_again = asyncio.run(_burst(srv.port, users, connections, seconds=1.0))
    total = statuses + statuses_again
    assert total[200] > connections, total
    assert set(total) == {200}, (dict(total), errors + errors_again)
