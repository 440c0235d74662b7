"""A bad ``latest``: every worker, running or freshly started, serves the newest version that loads."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client import REGISTRY
from prometheus_client.mmap_dict import MmapedDict

from app.modelstore import LocalModelStore, ModelMetadata
from app.predict.core.config import Settings
from app.runtime.registry import ModelRegistry
from devharness import GunicornService, wait_until
from tests.predict.helpers import instances, reference

pytestmark = pytest.mark.integration
NAME = "breast-cancer"


def _publish(store: LocalModelStore, version: str, minutes: int, *, corrupt: bool, latest: bool = True) -> None:
    """A copy of the oldest version as ``version``, created ``minutes`` after it; ``corrupt``: the
    artifact on disk is truncated after publishing (its sha256 no longer matches the metadata)."""
    base = store.list_versions(NAME)[0]  # the session's trained version: the others are named later
    meta, artifact = store.read_version(NAME, base)
    created = datetime.fromisoformat(meta.created_at) + timedelta(minutes=minutes)
    copy = ModelMetadata.model_validate(
        {**meta.model_dump(), "version": version, "created_at": created.astimezone(UTC).isoformat()}
    )
    store.publish(copy, artifact, set_latest=latest, onnx_graph=store.read_onnx(meta))
    if corrupt:
        path = store.root / NAME / "versions" / version / meta.artifact_file
        path.write_bytes(artifact[: len(artifact) // 2])


def _failures(version: str) -> float:
    return REGISTRY.get_sample_value("model_load_failures_total", {"model": NAME, "version": version}) or 0.0


def test_fallback_order_newest_good_version_not_newer_than_latest(store_copy: LocalModelStore) -> None:
    original = store_copy.latest(NAME)
    _publish(store_copy, "fb-good", 10, corrupt=False)
    # the model store is read as MODEL_STORE_URL (no prefix): validated by that name
    settings = Settings.model_validate(
        {"MODEL_STORE_URL": str(store_copy.root), "models": [NAME], "batching_enabled": False}
    )

    async def serving_after_refresh(registry: ModelRegistry) -> str:
        await registry.refresh()
        return registry.models[NAME].version

    running = ModelRegistry(settings, store_copy)  # a worker that loaded fb-good before latest went bad
    assert asyncio.run(serving_after_refresh(running)) == "fb-good"

    _publish(store_copy, "fb-bad-older", 20, corrupt=True, latest=False)  # between: tried, rejected
    _publish(store_copy, "fb-bad", 30, corrupt=True)  # latest
    _publish(store_copy, "fb-unpromoted", 40, corrupt=False, latest=False)  # newer than latest: never a stand-in
    assert store_copy.latest(NAME) == "fb-bad"

    fresh = ModelRegistry(settings, store_copy)  # a worker started now
    assert asyncio.run(serving_after_refresh(fresh)) == "fb-good"
    assert fresh.ready
    assert _failures("fb-bad") == 1 and _failures("fb-bad-older") == 1
    assert asyncio.run(serving_after_refresh(running)) == "fb-good"
    assert _failures("fb-bad") == 2  # the running worker tried latest too, and kept what it had

    # Nothing at all loads after fb-good goes bad too: fall back further, to the original version.
    _publish(store_copy, "fb-bad-2", 35, corrupt=True)
    (store_copy.root / NAME / "versions" / "fb-good" / "model.pkl").write_bytes(b"junk")
    third = ModelRegistry(settings, store_copy)
    assert asyncio.run(serving_after_refresh(third)) == original


def _children(pid: int) -> set[int]:
    return {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def _requests_answered(multiproc_dir: Path, pid: int) -> float:
    """Predictions this worker answered (any status), from its own metrics file."""
    total = 0.0
    for f in multiproc_dir.glob(f"counter_{pid}.db"):
        for key, value, _, _ in MmapedDict.read_all_values_from_file(str(f)):  # type: ignore[no-untyped-call]
            if '"http_requests_total"' in key and "/predict" in key:
                total += value
    return total


@pytest.mark.timed
def test_respawned_worker_serves_the_last_good_version_when_latest_is_corrupt(
    store_copy: LocalModelStore, tmp_path: Path
) -> None:
    ref = reference(store_copy, NAME)
    body = {"instances": instances(ref, np.asarray(ref.meta.verification.inputs)[:2])}
    with GunicornService(tmp_path / "svc", {"MODEL_STORE_URL": str(store_copy.root)}).wait_ready() as srv:
        master = srv.server.pid
        workers = _children(master)
        assert len(workers) == 2
        _publish(store_copy, "v-corrupt", 10, corrupt=True)

        def rejections() -> float:
            text = httpx.get(srv.url + "/metrics").text
            return sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("model_load_failures_total{") and 'version="v-corrupt"' in line
            )

        wait_until(lambda: rejections() >= 2, 20, "both workers reject the corrupt latest")

        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: len(_children(master) - workers) == 1, 20, "gunicorn respawns the worker")
        (new,) = _children(master) - workers
        # models_ready is written at the end of the new worker's first refresh, before it accepts.
        wait_until((srv.multiproc_dir / f"gauge_livemin_{new}.db").exists, 30, "new worker loaded")
        time.sleep(0.5)

        statuses: list[tuple[int, str]] = []
        ready: list[int] = []
        for _ in range(150):  # a new connection per request: the kernel spreads them over both workers
            with httpx.Client() as c:
                r = c.post(srv.url + f"/v1/models/{NAME}/predict", json=body)
                statuses.append((r.status_code, r.json().get("version") or r.json().get("error")))
                ready.append(c.get(srv.url + "/readyz").status_code)
        assert _requests_answered(srv.multiproc_dir, new) > 0, "the respawned worker answered nothing"
        assert set(statuses) == {(200, ref.version)}, sorted(set(statuses))
        assert set(ready) == {200}
        log = srv.server.log_text()
        assert "latest version rejected; serving the newest older version that loads" in log
