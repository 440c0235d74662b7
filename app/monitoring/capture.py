"""What serving records of each prediction: bin counts against the reference profile, schema-skew
counts, and (optionally) a sampled log of the rows.

Per request the worker copies the model input and score into a per-worker buffer (a few
microseconds); when the buffer is full, and at each flush, the buffered rows are binned in one vectorized
comparison against the stacked bin edges and one ``np.bincount`` into a per-worker count vector (bounded
memory: the buffer and one int64 per bin). Every ``flush_seconds`` the counts accumulated since the last
flush are added to Prometheus counters, which the multiprocess collector sums over workers; drift itself
is computed from the summed counts by ``python -m jobs drift-report``, never here. Nothing in this module
raises into a request: a failure to record is logged and counted, and the prediction is returned as usual.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from app.monitoring import metrics
from app.monitoring.profile import (
    SCHEMA_KINDS,
    SCORE_FEATURE,
    CategoricalProfile,
    NumericProfile,
    ProfileError,
    ReferenceProfile,
    parse_profile,
    score_of,
)
from app.monitoring.servedlog import ServedLog
from app.monitoring.settings import MonitoringSettings

log = logging.getLogger(__name__)

BUFFER_ROWS = 4096  # rows a worker buffers per model before binning them in one go


class ModelMonitor:
    """Recording for one model version in one worker."""

    def __init__(
        self,
        name: str,
        version: str,
        feature_names: Sequence[str],
        profile: ReferenceProfile | None,
        *,
        flush_seconds: float = 1.0,
        served_log: ServedLog | None = None,
        sample_rate: float = 0.0,
        request_fields: Sequence[str] = (),
    ) -> None:
        self.name, self.version = name, version
        self.feature_names = list(feature_names)
        self.profile = profile
        self.flush_seconds = flush_seconds
        self.served_log = served_log
        self.sample_rate = sample_rate
        self.request_fields = list(request_fields)
        self._rows = metrics.MONITORED_ROWS.labels(name, version)
        self._pending_rows = 0
        self._last_flush = time.monotonic()
        metrics.REFERENCE.labels(name, version).set(0 if profile is None else 1)
        if profile is None:
            return
        self._layout(profile)

    @property
    def has_reference(self) -> bool:
        return self.profile is not None

    def _layout(self, profile: ReferenceProfile) -> None:
        feats = list(profile.features.items())
        self._num_idx = np.asarray([j for j, (_, fp) in enumerate(feats) if isinstance(fp, NumericProfile)], np.intp)
        self._cat_idx = [j for j, (_, fp) in enumerate(feats) if isinstance(fp, CategoricalProfile)]
        # Numeric edges stacked into one matrix, padded with +inf (never crossed): bin = edges passed.
        num = [fp for _, fp in feats if isinstance(fp, NumericProfile)]
        width = max([len(fp.edges) for fp in [*num, profile.score]])
        self._edges = np.full((len(num) + 1, width), np.inf)
        for i, fp in enumerate([*num, profile.score]):
            self._edges[i, : len(fp.edges)] = fp.edges
        self._min = np.asarray([fp.min for fp in num])
        self._max = np.asarray([fp.max for fp in num])
        self._cats = [np.asarray(fp.categories) for _, fp in feats if isinstance(fp, CategoricalProfile)]
        # One flat count vector: each feature's bins at its offset (numeric, then categorical with their
        # unknown bin, then the score), then the schema counts.
        sizes = [len(fp.counts) for fp in num] + [len(c) + 1 for c in self._cats] + [len(profile.score.counts)]
        names = [n for n, fp in feats if isinstance(fp, NumericProfile)]
        names += [n for n, fp in feats if isinstance(fp, CategoricalProfile)]
        names.append(SCORE_FEATURE)
        self._offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.intp)
        n_bins = int(self._offsets[-1])
        self._num_offsets = self._offsets[: len(num)]
        self._schema_at = n_bins
        n_feat = len(feats)
        self._counts = np.zeros(n_bins + n_feat * len(SCHEMA_KINDS), dtype=np.int64)
        self._flushed = np.zeros_like(self._counts)
        children: list[Any] = []
        for name, size in zip(names, sizes, strict=True):
            children += [metrics.FEATURE_BINS.labels(self.name, self.version, name, str(b)) for b in range(size)]
        self._feature_order = [n for n, _ in feats]
        for kind in SCHEMA_KINDS:
            children += [metrics.SCHEMA_SKEW.labels(self.name, self.version, n, kind) for n in self._feature_order]
        self._children = children
        # Rows waiting to be binned (BUFFER_ROWS x features: 660 KB for 20 features) and their scores.
        self._buf = np.empty((BUFFER_ROWS, n_feat))
        self._sbuf = np.empty(BUFFER_ROWS)
        self._n = 0

    def observe(
        self, x: NDArray[np.float64], proba: NDArray[np.float64], request: NDArray[np.float64] | None = None
    ) -> None:
        """Record served model inputs (rows x features, after request-time transforms) and outputs;
        ``request``: the request rows of a model that reads the feature store (entity id, then its
        request-time fields). Never raises: a prediction is never failed by its recording."""
        try:
            self._observe(x, proba)
            if self.served_log is not None and self.sample_rate > 0 and random.random() < self.sample_rate:
                entities = request[:, 0].astype(np.int64).tolist() if request is not None else None
                self.served_log.offer(
                    self.name,
                    self.version,
                    self.feature_names,
                    x,
                    score_of(proba),
                    entities,
                    self.request_fields,
                    request[:, 1:] if request is not None else None,
                )
        except Exception:  # recording is best effort; the request has its answer already
            log.exception("monitoring could not record a prediction", extra={"model": self.name})

    def _observe(self, x: NDArray[np.float64], proba: NDArray[np.float64]) -> None:
        """A request only copies its rows into the worker's buffer; the buffer is binned when full and at
        each flush, so the vectorized binning runs once per few thousand rows, not once per request."""
        k = len(x)
        self._pending_rows += k
        if self.profile is not None:
            if self._n + k > BUFFER_ROWS:
                self._drain()
            if k > BUFFER_ROWS:
                self._bin(x, score_of(proba))
            else:
                self._buf[self._n : self._n + k] = x
                self._sbuf[self._n : self._n + k] = score_of(proba)
                self._n += k
        self._maybe_flush()

    def _drain(self) -> None:
        if self._n:
            n, self._n = self._n, 0
            self._bin(self._buf[:n], self._sbuf[:n])

    def _bin(self, x: NDArray[np.float64], score: NDArray[np.float64]) -> None:
        assert self.profile is not None
        n_feat = len(self._feature_order)
        s = self._schema_at
        if len(self._num_idx):
            xn = x[:, self._num_idx]
            bins = (xn[:, :, None] >= self._edges[None, :-1, :]).sum(axis=2)
            np.add.at(self._counts, s + 0 * n_feat + self._num_idx, (xn < self._min).sum(axis=0))
            np.add.at(self._counts, s + 1 * n_feat + self._num_idx, (xn > self._max).sum(axis=0))
            missing = np.isnan(xn)
            if missing.any():
                np.add.at(self._counts, s + 2 * n_feat + self._num_idx, missing.sum(axis=0))
            flat = (bins + self._num_offsets[None, :])[~missing]
            self._counts[:s] += np.bincount(flat, minlength=s)
        for k, j in enumerate(self._cat_idx):
            col, cats = x[:, j], self._cats[k]
            idx = np.minimum(np.searchsorted(cats, col), len(cats) - 1)
            known = cats[idx] == col
            missing = np.isnan(col)
            idx = np.where(known, idx, len(cats))[~missing]
            at = self._offsets[len(self._num_idx) + k]
            self._counts[at : at + len(cats) + 1] += np.bincount(idx, minlength=len(cats) + 1)
            self._counts[s + 3 * n_feat + j] += int((~known & ~missing).sum())
            self._counts[s + 2 * n_feat + j] += int(missing.sum())
        sb = (score[:, None] >= self._edges[-1][None, :]).sum(axis=1)
        at = self._offsets[-2]
        n_score = len(self.profile.score.counts)
        self._counts[at : at + n_score] += np.bincount(sb, minlength=n_score)

    def _maybe_flush(self) -> None:
        if time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        """Add what was counted since the last flush to the shared (multiprocess) counters."""
        self._last_flush = time.monotonic()
        if self.profile is not None:
            self._drain()
        if self._pending_rows:
            self._rows.inc(self._pending_rows)
            self._pending_rows = 0
        if self.profile is None:
            return
        delta = self._counts - self._flushed
        for i in np.flatnonzero(delta):
            self._children[i].inc(int(delta[i]))
        self._flushed[:] = self._counts

    def counts(self) -> dict[str, NDArray[np.int64]]:
        """This worker's bin counts per feature (reference_counts' layout), for tests and diagnostics."""
        if self.profile is None:
            return {}
        self._drain()
        names = [n for j, n in enumerate(self._feature_order) if j in set(self._num_idx.tolist())]
        names += [self._feature_order[j] for j in self._cat_idx] + [SCORE_FEATURE]
        return {n: self._counts[self._offsets[i] : self._offsets[i + 1]].copy() for i, n in enumerate(names)}


# One served-data log per worker (its buffer and writer thread), created with the first monitor that needs it.
_served_logs: dict[str, ServedLog] = {}


def monitor_for(
    name: str,
    version: str,
    feature_names: Sequence[str],
    raw_profile: dict[str, Any] | None,
    settings: MonitoringSettings | None = None,
    request_fields: Sequence[str] = (),
) -> ModelMonitor | None:
    """The monitor of a version being loaded: None when monitoring is off for the model. Raises
    ProfileError for a corrupt or mismatched profile (the registry refuses the version)."""
    settings = settings or MonitoringSettings()
    profile = parse_profile(raw_profile, feature_names)  # checked even when off: a bad artifact is bad
    if not settings.monitors(name):
        return None
    if profile is None:
        log.warning("no reference profile: no drift monitoring", extra={"model": name, "version": version})
    served_log = None
    if settings.log_url:
        served_log = _served_logs.get(settings.log_url)
        if served_log is None:
            served_log = ServedLog(settings.log_url, settings.log_flush_seconds, settings.log_buffer_rows)
            _served_logs[settings.log_url] = served_log
    return ModelMonitor(
        name,
        version,
        feature_names,
        profile,
        flush_seconds=settings.flush_seconds,
        served_log=served_log,
        sample_rate=settings.log_sample_rate,
        request_fields=request_fields,
    )


__all__ = ["ModelMonitor", "ProfileError", "monitor_for"]
