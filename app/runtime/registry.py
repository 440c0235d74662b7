"""The models a worker serves: loading, verification, hot reload, readiness.

Each gunicorn worker has its own registry. A poll task checks every model's
``latest`` pointer; a changed version is loaded and verified in a thread and
then swapped in with one reference assignment. Requests already queued on the
old version finish on it; new requests see the new one. A version that fails
to load is reported (log + ``model_load_failures_total``) and the newest older
version that loads is served instead: the one running workers kept, and the one
a freshly started worker picks too.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
from numpy.typing import NDArray

from app.features.definitions import load_repo
from app.features.online import AsyncOnlineReader, OnlineStoreUnavailableError
from app.modelstore import ModelMetadata, ModelStore, ModelStoreError
from app.modelstore.metadata import metadata_signature_ok
from app.monitoring.capture import ModelMonitor, monitor_for
from app.monitoring.profile import ProfileError
from app.runtime import metrics
from app.runtime.batcher import MicroBatcher
from app.runtime.model import ModelLoadError, SklearnModel
from app.runtime.online_inputs import OnlineInputs, OnlineInputsError
from app.runtime.settings import RuntimeSettings
from app.runtime.value_checks import STRICT, ValueRules

log = logging.getLogger(__name__)

RETRY_FAILED_AFTER_S = 60.0
SMALL_BATCH = 8  # count_predictions: rows up to which per-row increments are cheaper than np.bincount
_KEEP = object()  # _select's answer when the version already served is the one to serve


def _created(meta: ModelMetadata) -> datetime:
    """A version's publication time (ValueError if unparseable); naive times are UTC."""
    t = datetime.fromisoformat(meta.created_at)
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


class UnknownModelError(Exception):
    """No such model in the store (404)."""


class ModelNotReadyError(Exception):
    """The model exists but no version has loaded yet (503)."""


@dataclass
class LoadedModel:
    model: SklearnModel
    batcher: MicroBatcher | None
    online: OnlineInputs | None = None
    monitor: ModelMonitor | None = None  # drift and schema-skew recording (app/monitoring), None when off

    def __post_init__(self) -> None:
        # The metrics' children, looked up once: labels() takes a lock and a dict lookup on every call.
        m = self.model
        self._class_counters = [metrics.PREDICTIONS.labels(m.name, m.version, str(c)) for c in m.classes]
        self._batch_size = metrics.BATCH_SIZE.labels(m.name)
        self._predict_latency = metrics.PREDICT_LATENCY.labels(m.name)

    @property
    def value_rules(self) -> ValueRules:
        """The model's own rules for request values; requests of online-feature models carry request fields,
        which the transform reads: those stay strict."""
        return self.model.value_rules if self.online is None else STRICT

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
        self._batch_size.observe(rows)
        self._predict_latency.observe(seconds)

    def count_predictions(self, class_index: NDArray[np.intp]) -> None:
        if len(class_index) <= SMALL_BATCH:  # most requests: one increment per row beats NumPy's set-up
            for i in class_index.tolist():
                self._class_counters[i].inc()
            return
        counts = np.bincount(class_index, minlength=len(self._class_counters))
        for i in np.flatnonzero(counts):
            self._class_counters[i].inc(int(counts[i]))


class ModelRegistry:
    def __init__(self, settings: RuntimeSettings, store: ModelStore) -> None:
        self.settings = settings
        self.store = store
        self.models: dict[str, LoadedModel] = {}
        self.expected: list[str] = list(settings.models)
        # (model, version) -> when it was rejected: not retried for RETRY_FAILED_AFTER_S.
        self._rejected: dict[tuple[str, str], float] = {}
        # model -> (latest, when) once a selection ended elsewhere than at latest.
        self._settled: dict[str, tuple[str, float]] = {}
        # model -> why no version of it serves (the last refusal), while none does: /readyz names it.
        self.failures: dict[str, str] = {}
        self._refusals: dict[tuple[str, str], str] = {}  # (model, version) -> why it was rejected
        # Why the online store cannot serve reads (unreachable, a refused password), checked every poll while a
        # served model reads features: those models are not ready meanwhile (issue 23).
        self.online_error: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._hmac_key = settings.hmac_key
        self.reader: AsyncOnlineReader | None = None
        if settings.features_redis_url:
            self.reader = AsyncOnlineReader(
                settings.features_redis_url,
                cluster=settings.features_redis_cluster,
                timeout_s=settings.features_timeout_ms / 1000,
            )
        self.repo = load_repo(settings.features_repo) if settings.features_repo else None

    # -- lifecycle ----------------------------------------------------------
    async def start(self) -> None:
        if self.reader is not None:
            try:
                await self.reader.connect()
            except OnlineStoreUnavailableError as exc:  # not fatal: reads reconnect on their own
                log.warning("online store not reachable at start-up", extra={"error": str(exc)})
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

    def usable(self, name: str) -> bool:
        """Loaded, and its dependencies answer: a model that reads features needs the online store."""
        lm = self.models.get(name)
        return lm is not None and (lm.online is None or self.online_error is None)

    @property
    def ready(self) -> bool:
        """Readiness is decided per model. With an explicit PREDICT_MODELS list every listed model is required;
        serving every model of the store, the pod is ready while any model serves: one broken model never takes
        the pod out of service for the others (its own requests get 503, and /readyz names it)."""
        if not self.expected:
            return False
        if self.settings.models:
            return all(self.usable(n) for n in self.expected)
        return any(self.usable(n) for n in self.expected)

    def model_states(self) -> dict[str, dict[str, str]]:
        """Each expected model's state: ready (version, engine), unavailable (a dependency's error), failed
        (reason) or loading."""
        states: dict[str, dict[str, str]] = {}
        for name in self.expected:
            lm = self.models.get(name)
            if lm is not None and not self.usable(name):
                states[name] = {"state": "unavailable", "version": lm.version, "reason": str(self.online_error)}
            elif lm is not None:
                states[name] = {"state": "ready", "version": lm.version, "engine": lm.model.engine}
            elif name in self.failures:
                states[name] = {"state": "failed", "reason": self.failures[name]}
            else:
                states[name] = {"state": "loading"}
        return states

    def not_ready_reason(self) -> str:
        if not self.expected:
            return f"no models found in {self.store.url}"
        required = "required by PREDICT_MODELS" if self.settings.models else "no model is ready"
        parts = [
            f"{n}: {st['state']}" + (f" ({st['reason']})" if "reason" in st else "")
            for n, st in self.model_states().items()
            if st["state"] != "ready"
        ]
        return f"{required}: {'; '.join(parts)}"

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
        await self._check_online_store()
        metrics.MODELS_READY.set(1 if self.ready else 0)

    async def _check_online_store(self) -> None:
        if self.reader is None or not any(lm.online is not None for lm in self.models.values()):
            self.online_error = None
            return
        try:
            await self.reader.ping()
        except OnlineStoreUnavailableError as exc:
            if self.online_error is None:
                log.warning(
                    "online store unavailable: models that read features are not ready", extra={"error": str(exc)}
                )
            self.online_error = f"online store: {exc}"
            return
        self.online_error = None

    async def _refresh_one(self, name: str) -> None:
        try:
            latest = await asyncio.to_thread(self.store.latest, name)
        except ModelStoreError as exc:
            log.warning("cannot read latest pointer", extra={"model": name, "error": str(exc)})
            if name not in self.models:
                self.failures[name] = f"cannot read the latest pointer: {exc}"
            return
        if latest is None:
            if name not in self.models:
                self.failures[name] = f"no latest version in {self.store.url}"
            return
        current = self.models.get(name)
        if current is not None and current.version == latest:
            return
        settled = self._settled.get(name)
        if settled and settled[0] == latest and time.monotonic() - settled[1] < RETRY_FAILED_AFTER_S:
            return  # latest was rejected recently and the fallback is already decided
        chosen = await asyncio.to_thread(self._select, name, latest, current.version if current else None)
        if chosen is None or chosen is _KEEP:
            self._settled[name] = (latest, time.monotonic())
            if chosen is None and name not in self.models:
                why = self._refusals.get((name, latest), "rejected earlier; retried later")
                self.failures[name] = f"no version loads; latest {latest}: {why}"
            return
        self.failures.pop(name, None)
        assert isinstance(chosen, LoadedModel)
        if chosen.version == latest:
            self._settled.pop(name, None)
        else:
            self._settled[name] = (latest, time.monotonic())
            log.warning(
                "latest version rejected; serving the newest older version that loads",
                extra={"model": name, "latest": latest, "serving": chosen.version},
            )
        self.models[name] = chosen  # the swap: one reference assignment
        metrics.MODEL_LOADS.labels(name, chosen.version).inc()
        metrics.MODEL_INFO.labels(name, chosen.version, chosen.model.engine).set(1)
        timed = chosen.model.meta.engine_choice
        for engine, by_rows in (timed.seconds if timed is not None else {}).items():
            for rows, seconds in by_rows.items():
                metrics.ENGINE_LATENCY.labels(name, chosen.version, engine, str(rows)).set(seconds)
        if current is not None:
            metrics.MODEL_INFO.labels(name, current.version, current.model.engine).set(0)
            log.info("model swapped", extra={"model": name, "from": current.version, "to": chosen.version})

    def _select(self, name: str, latest: str, serving: str | None) -> LoadedModel | object | None:
        """The version to serve: ``latest`` if it loads and verifies, else the newest older one that does.

        Every worker applies the same rule to the same store, so a worker that starts while
        ``latest`` is bad serves what the running ones kept, and readiness is one answer per pod.
        "Older" is by ``created_at`` up to latest's own: a newer version published with
        ``--no-latest`` (or one rolled back from) is never served this way. Returns ``_KEEP`` when
        the choice is the version already being served, None when nothing loads."""
        for version in itertools.chain([latest], self._older_versions(name, latest)):
            if version == serving:
                return _KEEP
            rejected_at = self._rejected.get((name, version))
            if rejected_at is not None and time.monotonic() - rejected_at < RETRY_FAILED_AFTER_S:
                continue
            try:
                loaded = self._load(name, version)
            except (ModelStoreError, ModelLoadError) as exc:
                self._reject(name, version, serving, exc)
                continue
            self._rejected.pop((name, version), None)
            self._refusals.pop((name, version), None)
            return loaded
        return None

    def _older_versions(self, name: str, latest: str) -> Iterator[str]:
        """Versions other than ``latest``, newest first (only listed once latest has failed)."""
        try:
            versions = [v for v in self.store.list_versions(name) if v != latest]
        except ModelStoreError as exc:
            log.warning("cannot list versions to fall back to", extra={"model": name, "error": str(exc)})
            return
        cutoff: datetime | None
        try:
            cutoff = _created(self.store.read_metadata(name, latest))
        except (ModelStoreError, ValueError):
            cutoff = None  # latest's own metadata is unreadable: any version may stand in
        dated: list[tuple[datetime, str]] = []
        for v in versions:
            try:
                created = _created(self.store.read_metadata(name, v))
            except (ModelStoreError, ValueError) as exc:
                if (name, v) not in self._rejected:
                    self._reject(name, v, None, exc)
                continue
            if cutoff is None or created <= cutoff:
                dated.append((created, v))
        for _, v in sorted(dated, reverse=True):
            yield v

    def _reject(self, name: str, version: str, serving: str | None, exc: Exception) -> None:
        self._rejected[(name, version)] = time.monotonic()
        self._refusals[(name, version)] = str(exc)
        metrics.MODEL_LOAD_FAILURES.labels(name, version).inc()
        log.error(
            "model version rejected; keeping the version being served",
            extra={"model": name, "version": version, "serving": serving, "error": str(exc)},
        )

    def _serve_edge_bundle(self, model: SklearnModel, meta: ModelMetadata) -> None:
        """PREDICT_ENGINE=edge-bundle: the version's bundle, if it proves a faithful copy, else a refusal."""
        from app.edge.engine import ENGINE, EdgeEngine, EdgeEngineError, locate

        assert self.settings.edge_bundles is not None  # the settings require it with this engine
        try:
            where = locate(
                self.settings.edge_bundles,
                meta,
                self.settings.edge_cache_dir,
                s3_endpoint_url=self.settings.s3_endpoint_url,
                s3_region=self.settings.s3_region,
            )
            edge = EdgeEngine(
                where, meta, tolerance=self.settings.onnx_tolerance, threads=self.settings.ort_intra_op_threads
            )
        except EdgeEngineError as exc:
            raise ModelLoadError(f"edge bundle refused: {exc}") from exc
        model.serve_with(edge, ENGINE, f"edge bundle {where} verified at load")

    def _load(self, name: str, version: str) -> LoadedModel:
        meta, artifact = self.store.read_version(name, version)
        # Before anything the metadata names is acted on (the transform imported, the graph run): issue 23.
        if self._hmac_key is not None and not metadata_signature_ok(meta, self._hmac_key):
            raise ModelLoadError(
                f"{name}:{version}: metadata signature missing or invalid for the configured artifact key"
            )
        online = None
        if meta.online_features is not None:
            try:
                online = OnlineInputs(meta, self.repo, self.reader, self.settings.missing_entity_policy)
            except OnlineInputsError as exc:
                raise ModelLoadError(f"{name}:{version}: {exc}") from exc
        # The graph is read (sha256 checked) only when it will run; a missing or corrupt one refuses the version.
        graph = self.store.read_onnx(meta) if meta.onnx is not None and self.settings.engine == "onnxruntime" else None
        model = SklearnModel(meta)
        model.load(
            artifact,
            hmac_key=self._hmac_key,
            tolerance=self.settings.verify_tolerance,
            onnx_graph=graph,
            engine=self.settings.engine,
            onnx_tolerance=self.settings.onnx_tolerance,
            intra_op_threads=self.settings.ort_intra_op_threads,
            inter_op_threads=self.settings.ort_inter_op_threads,
        )
        if self.settings.engine == "edge-bundle":
            self._serve_edge_bundle(model, meta)
        try:  # a corrupt or mismatched reference profile refuses the version like a bad artifact
            monitor = monitor_for(
                name,
                version,
                model.feature_names,
                meta.reference_profile,
                request_fields=meta.online_features.request_fields if meta.online_features else (),
            )
        except ProfileError as exc:
            raise ModelLoadError(f"{name}:{version}: {exc}") from exc
        lm = LoadedModel(model=model, batcher=None, online=online, monitor=monitor)
        if self.settings.batching_enabled:
            lm.batcher = MicroBatcher(
                model.predict_proba,
                max_batch_size=self.settings.max_batch_size,
                max_wait_s=self.settings.max_batch_wait_ms / 1000.0,
                observe=lm.observe_batch,
            )
        return lm
