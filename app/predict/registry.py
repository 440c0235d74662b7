"""The models a worker serves: loading, verification, hot reload, readiness.

Each gunicorn worker has its own registry. A poll task checks every model's
``latest`` pointer; a changed version is loaded and verified in a thread and
then swapped in with one reference assignment. Requests already queued on the
old version finish on it; new requests see the new one. A version that fails
to load is reported (log + ``model_load_failures_total``) and the working
version keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from prometheus_client import Counter

from app.features.definitions import load_repo
from app.features.online import AsyncOnlineReader
from app.modelstore import ModelStore, ModelStoreError
from app.predict import metrics
from app.predict.batcher import MicroBatcher
from app.predict.core.config import Settings
from app.predict.model import ModelLoadError, SklearnModel
from app.predict.online_inputs import OnlineInputs, OnlineInputsError

log = logging.getLogger(__name__)

RETRY_FAILED_AFTER_S = 60.0


class UnknownModelError(Exception):
    """No such model in the store (404)."""


class ModelNotReadyError(Exception):
    """The model exists but no version has loaded yet (503)."""


@dataclass
class LoadedModel:
    model: SklearnModel
    batcher: MicroBatcher | None
    online: OnlineInputs | None = None
    _class_counters: list[Counter] = field(default_factory=list)

    @property
    def input_names(self) -> list[str]:
        """What a request names: the model's features, or the entity key and request-time fields."""
        return self.online.input_names if self.online is not None else self.model.feature_names

    async def prepare(self, x: NDArray[np.float64]) -> tuple[NDArray[np.float64], list[str] | None]:
        """Request rows -> model input rows (fetching online features when the model uses them)."""
        if self.online is None:
            return x, None
        return await self.online.build(x)

    @property
    def version(self) -> str:
        return self.model.version

    async def predict_proba(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        if self.batcher is not None:
            return await self.batcher.submit(x)
        start = time.perf_counter()
        out = self.model.predict_proba(x)
        self.observe_batch(len(x), time.perf_counter() - start)
        return out

    def observe_batch(self, rows: int, seconds: float) -> None:
        metrics.BATCH_SIZE.labels(self.model.name).observe(rows)
        metrics.PREDICT_LATENCY.labels(self.model.name).observe(seconds)

    def count_predictions(self, class_index: NDArray[np.intp]) -> None:
        counts = np.bincount(class_index, minlength=len(self._class_counters))
        for i in np.flatnonzero(counts):
            self._class_counters[i].inc(int(counts[i]))


class ModelRegistry:
    def __init__(self, settings: Settings, store: ModelStore) -> None:
        self.settings = settings
        self.store = store
        self.models: dict[str, LoadedModel] = {}
        self.expected: list[str] = list(settings.models)
        self._failed: dict[str, tuple[str, float]] = {}
        self._task: asyncio.Task[None] | None = None
        self._hmac_key = settings.artifact_hmac_key.get_secret_value().encode() if settings.artifact_hmac_key else None
        self.reader: AsyncOnlineReader | None = None
        if settings.features_redis_url:
            self.reader = AsyncOnlineReader(
                settings.features_redis_url,
                cluster=settings.features_redis_cluster,
                timeout_s=settings.features_timeout_ms / 1000,
            )
        self.repo = load_repo(settings.features_repo)

    # -- lifecycle ----------------------------------------------------------
    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.create_task(self._poll_forever(), name="model-poll")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for lm in self.models.values():
            lm.model.unload()
        if self.reader is not None:
            await self.reader.close()

    @property
    def ready(self) -> bool:
        return bool(self.expected) and all(n in self.models for n in self.expected)

    def not_ready_reason(self) -> str:
        if not self.expected:
            return f"no models found in {self.store.url}"
        missing = [n for n in self.expected if n not in self.models]
        return f"models not loaded yet: {', '.join(missing)}"

    @property
    def default_model(self) -> str | None:
        if self.settings.default_model:
            return self.settings.default_model
        return self.expected[0] if self.expected else None

    def get(self, name: str) -> LoadedModel:
        lm = self.models.get(name)
        if lm is None:
            if name in self.expected:
                raise ModelNotReadyError(f"model {name!r} is not loaded yet")
            raise UnknownModelError(f"unknown model {name!r}; served models: {sorted(self.models)}")
        return lm

    # -- loading -------------------------------------------------------------
    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.poll_interval_seconds)
            try:
                await self.refresh()
            except Exception:  # keep polling whatever happens; the next turn may succeed
                log.exception("model refresh failed")

    async def refresh(self) -> None:
        """Discover models (when serving all) and load every changed latest version."""
        if not self.settings.models:
            try:
                found = await asyncio.to_thread(self.store.list_models)
            except ModelStoreError as exc:
                log.warning("cannot list models", extra={"error": str(exc)})
                found = []
            self.expected = sorted(set(self.expected) | set(found))
        for name in self.expected:
            await self._refresh_one(name)
        metrics.MODELS_READY.set(1 if self.ready else 0)

    async def _refresh_one(self, name: str) -> None:
        try:
            version = await asyncio.to_thread(self.store.latest, name)
        except ModelStoreError as exc:
            log.warning("cannot read latest pointer", extra={"model": name, "error": str(exc)})
            return
        if version is None:
            return
        current = self.models.get(name)
        if current is not None and current.version == version:
            return
        failed = self._failed.get(name)
        if failed and failed[0] == version and time.monotonic() - failed[1] < RETRY_FAILED_AFTER_S:
            return
        try:
            loaded = await asyncio.to_thread(self._load, name, version)
        except (ModelStoreError, ModelLoadError) as exc:
            self._failed[name] = (version, time.monotonic())
            metrics.MODEL_LOAD_FAILURES.labels(name, version).inc()
            log.error(
                "model version rejected; keeping the version being served",
                extra={
                    "model": name,
                    "version": version,
                    "serving": current.version if current else None,
                    "error": str(exc),
                },
            )
            return
        self._failed.pop(name, None)
        self.models[name] = loaded  # the swap: one reference assignment
        metrics.MODEL_LOADS.labels(name, version).inc()
        metrics.MODEL_INFO.labels(name, version, loaded.model.engine).set(1)
        if current is not None:
            metrics.MODEL_INFO.labels(name, current.version, current.model.engine).set(0)
            log.info("model swapped", extra={"model": name, "from": current.version, "to": version})

    def _load(self, name: str, version: str) -> LoadedModel:
        meta, artifact = self.store.read_version(name, version)
        online = None
        if meta.online_features is not None:
            try:
                online = OnlineInputs(meta, self.repo, self.reader, self.settings.missing_entity_policy)
            except OnlineInputsError as exc:
                raise ModelLoadError(f"{name}:{version}: {exc}") from exc
        model = SklearnModel(meta)
        model.load(artifact, hmac_key=self._hmac_key, tolerance=self.settings.verify_tolerance)
        lm = LoadedModel(model=model, batcher=None, online=online)
        lm._class_counters = [metrics.PREDICTIONS.labels(name, version, str(c)) for c in model.classes]
        if self.settings.batching_enabled:
            lm.batcher = MicroBatcher(
                model.predict_proba,
                max_batch_size=self.settings.max_batch_size,
                max_wait_s=self.settings.max_batch_wait_ms / 1000.0,
                observe=lm.observe_batch,
            )
        return lm
