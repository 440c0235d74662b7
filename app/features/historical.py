"""Point-in-time correct training data.

For every entity row (join key + timestamp) and every requested view, take the
feature row of the same entity with the greatest event time that is <= the
entity row's time and, when the view has a TTL, >= that time minus the TTL
(inclusive at both ends; TTL 0 = no lower bound). Among feature rows with the
same event time the greatest created time wins. Exactly one output row per
input row, in input order, with nulls where nothing matches: unlike Feast's file
offline store, rows are never dropped or collapsed.

Engines (``engine=``): ``duckdb`` (default; app/features/pit_duckdb.py: an ASOF join streaming the
table's files, spilling past a memory limit), ``numpy`` (in memory: timestamps are rank-compressed so
that (entity, time) becomes one sortable int64, and one ``searchsorted`` finds every match) and
``spark`` (app/features/pit_spark.py, for data past one machine). All three give identical rows.

Every call records the fingerprint of its entity rows on the offline store (``entity_fingerprint``),
beside the table versions it read: a model's metadata keeps both.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from numpy.typing import NDArray

from app.common.epoch import from_epoch_us
from app.features.definitions import DefinitionError, FeatureRepo, FeatureView
from app.features.offline import OfflineStore
from app.features.pit_duckdb import DuckDBConfig

TS = pa.timestamp("us", tz="UTC")
Engine = Literal["duckdb", "numpy", "spark"]
ENGINES: tuple[str, ...] = ("duckdb", "numpy", "spark")


def entity_fingerprint(entity_rows: pa.Table) -> str:
    """sha256 over the entity rows (column names, types and values, in order): two reads of the same
    rows give the same value, whatever their chunking."""
    h = hashlib.sha256()
    for name in entity_rows.column_names:
        col = entity_rows.column(name).combine_chunks()
        h.update(f"{name}:{col.type};".encode())
        for buf in col.buffers():
            h.update(b"-" if buf is None else buf.to_pybytes())
    return h.hexdigest()


def _ts_us(col: pa.ChunkedArray | pa.Array, what: str) -> NDArray[np.int64]:
    if not pa.types.is_timestamp(col.type):
        raise DefinitionError(f"{what} must be a timestamp column, got {col.type}")
    if col.null_count:
        raise DefinitionError(f"{what} has {col.null_count} null timestamps")
    if col.type.tz is None:
        raise DefinitionError(f"{what} must be timezone-aware (UTC)")
    return np.asarray(pc.cast(col, TS).cast(pa.int64()).to_numpy(), dtype=np.int64)


def point_in_time_indices(
    entity_keys: NDArray[np.int64],
    entity_ts: NDArray[np.int64],
    feature_keys: NDArray[np.int64],
    feature_event_ts: NDArray[np.int64],
    feature_created_ts: NDArray[np.int64],
    ttl: timedelta,
) -> NDArray[np.int64]:
    """For each entity row, the index of its matching feature row, or -1."""
    n = len(entity_keys)
    if len(feature_keys) == 0 or n == 0:
        return np.full(n, -1, dtype=np.int64)
    order = np.lexsort((feature_created_ts, feature_event_ts, feature_keys))
    fk, fe = feature_keys[order], feature_event_ts[order]
    uniq_t, inv = np.unique(np.concatenate([fe, entity_ts]), return_inverse=True)
    fr, er = inv[: len(fe)], inv[len(fe) :]
    keys_u, f_group = np.unique(fk, return_inverse=True)
    pos = np.searchsorted(keys_u, entity_keys)
    pos_c = np.minimum(pos, len(keys_u) - 1)
    known = keys_u[pos_c] == entity_keys
    m = np.int64(len(uniq_t) + 1)
    fcomp = f_group.astype(np.int64) * m + fr
    ecomp = pos_c.astype(np.int64) * m + er
    idx = np.searchsorted(fcomp, ecomp, side="right") - 1  # last (entity, time <= t); ties: latest created
    idx_c = np.maximum(idx, 0)
    ok = known & (idx >= 0) & (f_group[idx_c] == pos_c)
    if ttl > timedelta(0):
        ttl_us = int(ttl / timedelta(microseconds=1))
        ok &= fe[idx_c] >= entity_ts - ttl_us
    return np.where(ok, order[idx_c], -1).astype(np.int64)


def join_view(
    entity_rows: pa.Table,
    join_key: str,
    timestamp_column: str,
    view: FeatureView,
    view_rows: pa.Table,
    features: list[str],
) -> dict[str, pa.Array]:
    """The requested feature columns of ``view``, aligned to ``entity_rows``."""
    if join_key not in entity_rows.column_names:
        raise DefinitionError(f"entity rows have no column {join_key!r} (the join key of {view.name!r})")
    if timestamp_column not in entity_rows.column_names:
        raise DefinitionError(f"entity rows have no timestamp column {timestamp_column!r}")
    keys = entity_rows.column(join_key)
    if keys.null_count:
        raise DefinitionError(f"entity rows have {keys.null_count} null {join_key!r} values")
    idx = point_in_time_indices(
        np.asarray(keys.cast(pa.int64()).to_numpy(), dtype=np.int64),
        _ts_us(entity_rows.column(timestamp_column), f"entity rows' {timestamp_column!r}"),
        np.asarray(view_rows.column(view.entity.join_key).to_numpy(), dtype=np.int64),
        _ts_us(view_rows.column(view.event_timestamp_column), f"{view.name}.{view.event_timestamp_column}"),
        _ts_us(view_rows.column(view.created_timestamp_column), f"{view.name}.{view.created_timestamp_column}"),
        view.ttl,
    )
    take = pa.array(idx, mask=idx < 0)
    return {f: view_rows.column(f).take(take).combine_chunks() for f in features}


def get_historical_features(
    entity_rows: pa.Table,
    feature_refs: list[str],
    repo: FeatureRepo,
    offline: OfflineStore,
    *,
    timestamp_column: str = "event_timestamp",
    engine: Engine = "duckdb",
    duckdb_config: DuckDBConfig | None = None,
) -> pa.Table:
    """``entity_rows`` plus one column per requested feature, point-in-time correct."""
    if engine not in ENGINES:
        raise ValueError(f"unknown join engine {engine!r}; choose one of {list(ENGINES)}")
    wanted = repo.resolve(feature_refs)
    offline.entity_fingerprint = entity_fingerprint(entity_rows)
    out = entity_rows
    seen = set(entity_rows.column_names)
    if entity_rows.num_rows == 0:
        for view_name, feats in wanted.items():
            view = repo.view(view_name)
            for f in feats:
                out = out.append_column(f, pa.array([], type=pa.from_numpy_dtype(np.dtype(view.feature(f).dtype))))
        return out
    ts = _ts_us(entity_rows.column(timestamp_column), f"entity rows' {timestamp_column!r}")
    lo, hi = int(ts.min()), int(ts.max())
    for view_name, feats in wanted.items():
        view = repo.view(view_name)
        if view.entity.join_key not in entity_rows.column_names:
            raise DefinitionError(
                f"entity rows have no column {view.entity.join_key!r} (the join key of {view_name!r})"
            )
        clash = seen & set(feats)
        if clash:
            raise DefinitionError(f"feature name(s) {sorted(clash)} of {view_name!r} collide with other columns")
        start = from_epoch_us(lo) - view.ttl if view.ttl > timedelta(0) else None
        end = from_epoch_us(hi) + timedelta(microseconds=1)
        cols = [view.entity.join_key, view.event_timestamp_column, view.created_timestamp_column, *feats]
        if engine == "numpy":
            rows = offline.read_window(view.source, view.event_timestamp_column, start, end, cols)
            keys = entity_rows.column(view.entity.join_key).cast(pa.int64())
            rows = rows.filter(pc.is_in(rows.column(view.entity.join_key), value_set=pc.unique(keys)))
            joined = join_view(entity_rows, view.entity.join_key, timestamp_column, view, rows, feats)
        else:
            joined = _join_scanned(
                entity_rows, timestamp_column, view, offline, feats, cols, start, end, engine, duckdb_config
            )
        for name, col in joined.items():
            out = out.append_column(name, col)
            seen.add(name)
    return out


def _join_scanned(
    entity_rows: pa.Table,
    timestamp_column: str,
    view: FeatureView,
    offline: OfflineStore,
    feats: list[str],
    cols: list[str],
    start: datetime | None,
    end: datetime,
    engine: Engine,
    duckdb_config: DuckDBConfig | None,
) -> dict[str, pa.Array]:
    """One view through an engine that reads the table's files itself (DuckDB, Spark)."""
    keys = entity_rows.column(view.entity.join_key)
    if keys.null_count:
        raise DefinitionError(f"entity rows have {keys.null_count} null {view.entity.join_key!r} values")
    ts = _ts_us(entity_rows.column(timestamp_column), f"entity rows' {timestamp_column!r}")
    key_arr = keys.cast(pa.int64()).combine_chunks()
    ts_arr = pa.array(ts, type=pa.int64()).cast(TS)
    scan = offline.scan(view.source, view.event_timestamp_column, start, end, cols)
    if engine == "spark":
        from app.features.pit_spark import join_view as spark_join  # pyspark: the spark extra, only here

        return spark_join(key_arr, ts_arr, view, scan, offline, feats, start=start, end=end)
    from app.features import pit_duckdb

    source: ds.Dataset | pa.Table = scan.dataset() if scan.files else scan.schema.empty_table().select(cols)
    return pit_duckdb.join_view(key_arr, ts_arr, view, source, feats, start=start, end=end, config=duckdb_config)
