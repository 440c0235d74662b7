"""The sampled served-data log: rows a worker served, written to the offline store as Parquet.

Layout: ``<url>/served/<model>/date=YYYY-MM-DD/<time>-<pid>-<random>.parquet`` with columns ``ts``
(UTC, microseconds), ``model``, ``version``, ``entity`` (the request's entity id, as a string, or
null), ``request.<field>`` for each request-time field of a model that reads the feature store (what the
request carried besides the entity key), one float64 column per model feature (the model input after
request-time transforms) and ``score``. ``python -m jobs feature-skew`` and ``outcomes`` read it.

A request only appends to an in-memory buffer (bounded: past ``max_rows`` rows are dropped and
counted). A daemon thread writes the buffer every ``flush_seconds``; a write that fails (store down,
no permission) drops those rows and counts them. Nothing here blocks or fails a request.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from numpy.typing import NDArray

from app.common.epoch import from_epoch_us
from app.monitoring import metrics

log = logging.getLogger(__name__)

SERVED_DATASET = "served"


def served_dataset(model: str) -> str:
    """The offline-store dataset name of a model's served log."""
    return f"{SERVED_DATASET}/{model}"


def read_served(
    url: str,
    model: str,
    start: datetime,
    end: datetime,
    columns: list[str],
    s3_endpoint_url: str | None = None,
) -> pa.Table:
    """Rows of a model's served log with ``start <= ts < end``, reading only the days in the window.
    The log is plain Parquet files (appended by many workers), read here directly rather than as a
    dataset of the offline store."""
    import pyarrow.dataset as ds
    import pyarrow.fs as pafs

    from app.features.offline import OfflineStore

    store = OfflineStore(url, s3_endpoint_url=s3_endpoint_url)
    root = store.path(served_dataset(model))
    first, last = start.astimezone(UTC).strftime("%Y-%m-%d"), end.astimezone(UTC).strftime("%Y-%m-%d")
    infos = store.fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    files = [
        i.path
        for i in infos
        if i.type == pafs.FileType.File
        and i.base_name.endswith(".parquet")
        and (day := i.path[len(root) + 1 :].split("/", 1)[0].removeprefix("date=")) >= first
        and day <= last
    ]
    if not files:
        raise ValueError(f"no served-data log of model {model!r} under {url} between {first} and {last}")
    ts = ds.field("ts")
    flt = (ts >= pa.scalar(start, pa.timestamp("us", tz="UTC"))) & (ts < pa.scalar(end, pa.timestamp("us", tz="UTC")))
    return ds.dataset(sorted(files), filesystem=store.fs, format="parquet").to_table(
        columns=["ts", *columns], filter=flt
    )


REQUEST_PREFIX = "request."


class _Batch:
    def __init__(self, version: str, features: list[str], request_fields: list[str]) -> None:
        self.version, self.features, self.request_fields = version, features, request_fields
        self.ts: list[int] = []
        self.entities: list[str | None] = []
        self.rows: list[NDArray[np.float64]] = []
        self.requests: list[NDArray[np.float64]] = []
        self.scores: list[NDArray[np.float64]] = []


class ServedLog:
    def __init__(self, url: str, flush_seconds: float = 30.0, max_rows: int = 50_000) -> None:
        from app.features.offline import OfflineStore  # the offline store's filesystem (dir or S3)

        self.store = OfflineStore(url, s3_endpoint_url=os.environ.get("AWS_ENDPOINT_URL_S3") or None)
        self.flush_seconds = flush_seconds
        self.max_rows = max_rows
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, str], _Batch] = {}
        self._rows = 0
        self._thread: threading.Thread | None = None

    def offer(
        self,
        model: str,
        version: str,
        features: Sequence[str],
        x: NDArray[np.float64],
        scores: NDArray[np.float64],
        entities: Sequence[Any] | None,
        request_fields: Sequence[str] = (),
        request: NDArray[np.float64] | None = None,
    ) -> None:
        """Buffer served rows; ``request``: the request-time fields (rows x request_fields), if any."""
        n = len(x)
        with self._lock:
            if self._rows + n > self.max_rows:
                metrics.LOG_DROPPED.labels(model, "buffer_full").inc(n)
                return
            batch = self._pending.get((model, version))
            if batch is None:
                batch = self._pending[(model, version)] = _Batch(version, list(features), list(request_fields))
            now = int(time.time() * 1_000_000)
            batch.ts += [now] * n
            batch.entities += [None if e is None else str(e) for e in entities] if entities is not None else [None] * n
            batch.rows.append(np.array(x, dtype=np.float64))
            batch.scores.append(np.array(scores, dtype=np.float64))
            if batch.request_fields:
                batch.requests.append(
                    np.array(request, dtype=np.float64)
                    if request is not None
                    else np.full((n, len(request_fields)), np.nan)
                )
            self._rows += n
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="served-log", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(self.flush_seconds)
            self.flush()

    def flush(self) -> int:
        """Write what is buffered; returns the rows written. Failures are counted, never raised."""
        with self._lock:
            pending, self._pending, self._rows = self._pending, {}, 0
        written = 0
        for (model, _), batch in pending.items():
            n = len(batch.ts)
            try:
                self._write(model, batch)
                metrics.LOGGED_ROWS.labels(model).inc(n)
                written += n
            except Exception as exc:  # the store is down or refuses: drop, count, keep serving
                metrics.LOG_DROPPED.labels(model, "write_error").inc(n)
                log.warning(
                    "served-data log write failed; rows dropped", extra={"model": model, "rows": n, "error": str(exc)}
                )
        return written

    def _write(self, model: str, batch: _Batch) -> None:
        x = np.concatenate(batch.rows)
        columns: dict[str, Any] = {
            "ts": pa.array(batch.ts, type=pa.timestamp("us", tz="UTC")),
            "model": pa.array([model] * len(batch.ts)),
            "version": pa.array([batch.version] * len(batch.ts)),
            "entity": pa.array(batch.entities, type=pa.string()),
        }
        if batch.request_fields:
            req = np.concatenate(batch.requests)
            for j, name in enumerate(batch.request_fields):
                columns[REQUEST_PREFIX + name] = pa.array(req[:, j])
        for j, name in enumerate(batch.features):
            columns[name] = pa.array(x[:, j])
        columns["score"] = pa.array(np.concatenate(batch.scores))
        table = pa.table(columns)
        day = from_epoch_us(batch.ts[0]).strftime("%Y-%m-%d")
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        parent = f"{self.store.path(served_dataset(model))}/date={day}"
        self.store.fs.create_dir(parent, recursive=True)
        name = f"{stamp}-{os.getpid()}-{uuid.uuid4().hex[:8]}.parquet"
        pq.write_table(table, f"{parent}/{name}", filesystem=self.store.fs)
