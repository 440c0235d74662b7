"""Point-in-time joins on Spark, for feature tables past one machine.

The feature rows are read by the executors themselves: one task per data file of the table version,
each opening its file with pyarrow's filesystem (S3 or local, the offline store's) through
``mapInArrow``, so no Hadoop S3 connector and no Delta Spark jar are needed: the file list comes from
the Delta log (delta-rs, on the driver), the rows never pass through the driver.

The join: feature rows deduplicated on (entity, event time) by the latest created time, a range join on
(entity, event time in [t - TTL, t]), the latest event per entity row, then a left join back onto the
entity rows in input order. Spark's shuffles and sorts spill to disk on their own.

Semantics and results are those of the embedded engines (tests/features/test_pit_engines.py compares
them row by row).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds

from app.common.epoch import epoch_us
from app.features.definitions import FeatureView

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from app.features.offline import OfflineStore, TableScan

_lock = threading.Lock()
_sessions: dict[str, SparkSession] = {}  # at most one: the process's session


def spark_session(master: str | None = None) -> SparkSession:
    """One SparkSession per process: ``master`` (default ``SPARK_MASTER``, else ``local[*]``).

    UTC session time zone, so timestamps cross the Arrow boundary unchanged; Arrow transfers on."""
    from pyspark.sql import SparkSession

    # py4j logs "Closing down clientserver connection" at INFO from __del__ at interpreter exit, when
    # stderr may be closed already: a traceback on every clean exit.
    logging.getLogger("py4j").setLevel(logging.WARNING)
    with _lock:
        if "spark" not in _sessions:
            # The executors' Python is this one (with pyarrow and this package), not whatever python3 is.
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
            from pyspark import SparkConf

            builder = SparkSession.builder
            master = master or os.environ.get("SPARK_MASTER")
            if master or not SparkConf().contains("spark.master"):  # spark-submit (the operator) sets one
                builder = builder.master(master or "local[*]")
            builder = (
                builder.appName("ml-platform-point-in-time")
                .config("spark.sql.session.timeZone", "UTC")
                .config("spark.sql.execution.arrow.pyspark.enabled", "true")
                .config("spark.sql.shuffle.partitions", os.environ.get("SPARK_SHUFFLE_PARTITIONS", "8"))
                .config("spark.ui.enabled", "false")
                .config("spark.ui.showConsoleProgress", "false")
                .config("spark.driver.memory", os.environ.get("SPARK_DRIVER_MEMORY", "1g"))
            )
            _sessions["spark"] = builder.getOrCreate()
        return _sessions["spark"]


def stop_session() -> None:
    with _lock:
        session = _sessions.pop("spark", None)
        if session is not None:
            session.stop()


def _reader(
    url: str,
    endpoint: str | None,
    region: str,
    schema: pa.Schema,
    columns: list[str],
    start_us: int | None,
    end_us: int | None,
    timestamp_column: str,
) -> Any:
    """The function each task runs: the rows of its data files within the window (built on the driver,
    shipped to the executors by cloudpickle)."""

    def read(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from app.features.offline import OfflineStore

        fs = OfflineStore(url, s3_endpoint_url=endpoint, s3_region=region).fs
        ts = ds.field(timestamp_column)
        ts_type = schema.field(timestamp_column).type
        filt = None
        if start_us is not None:
            filt = ts >= pa.scalar(start_us, pa.int64()).cast(ts_type)
        if end_us is not None:
            cond = ts < pa.scalar(end_us, pa.int64()).cast(ts_type)
            filt = cond if filt is None else filt & cond
        for batch in batches:
            for path in batch.column(0).to_pylist():
                dset = ds.dataset([path], schema=schema, filesystem=fs, format="parquet")
                yield from dset.to_batches(columns=columns, filter=filt)

    return read


def scan_frame(
    spark: SparkSession,
    scan: TableScan,
    offline: OfflineStore,
    columns: list[str],
    start: datetime | None,
    end: datetime | None,
    *,
    timestamp_column: str,
) -> Any:
    """A DataFrame of the ``columns`` of a table scan's rows with ``start <= timestamp_column < end``,
    read by the executors (one task per data file group, pyarrow's filesystem): nothing passes through
    the driver but the file list."""
    cols = list(columns)
    read_schema = pa.schema([scan.schema.field(c) for c in cols])
    if not scan.files:
        return spark.createDataFrame(read_schema.empty_table())
    paths = spark.createDataFrame(pa.table({"path": pa.array(scan.files)})).repartition(
        min(len(scan.files), max(1, spark.sparkContext.defaultParallelism * 2)), "path"
    )
    reader = _reader(
        offline.url,
        offline.s3_endpoint_url,
        offline.s3_region,
        scan.schema,
        cols,
        None if start is None else epoch_us(start),
        None if end is None else epoch_us(end),
        timestamp_column,
    )
    return paths.mapInArrow(reader, _spark_schema(read_schema))


def join_view(
    entity_keys: pa.Array,
    entity_ts: pa.Array,
    view: FeatureView,
    scan: TableScan,
    offline: OfflineStore,
    features: list[str],
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    spark: SparkSession | None = None,
) -> dict[str, pa.Array]:
    """The requested feature columns of ``view`` aligned to the entity rows, computed on Spark."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F  # noqa: N812 - Spark's own convention

    spark = spark or spark_session()
    n = len(entity_keys)
    key, ev, cr = view.entity.join_key, view.event_timestamp_column, view.created_timestamp_column
    cols = [key, ev, cr, *features]
    ent = spark.createDataFrame(
        pa.table({"__k": entity_keys, "__t": entity_ts, "__r": pa.array(np.arange(n, dtype=np.int64))})
    )
    feats = scan_frame(spark, scan, offline, cols, start, end, timestamp_column=ev)
    keys = ent.select(F.col("__k").alias(key)).distinct()
    feats = feats.join(F.broadcast(keys) if n <= 1_000_000 else keys, on=key, how="left_semi")
    # Latest created time per (entity, event time): the embedded engines' tie rule.
    dedup = Window.partitionBy(key, ev).orderBy(F.col(cr).desc())
    feats = feats.withColumn("__n", F.row_number().over(dedup)).where("__n = 1").drop("__n", cr)
    cond = (F.col("__k") == F.col(key)) & (F.col(ev) <= F.col("__t"))
    ttl_us = int(view.ttl / timedelta(microseconds=1))
    if ttl_us > 0:
        cond &= F.col(ev) >= F.col("__t") - F.expr(f"make_dt_interval(0, 0, 0, {ttl_us / 1e6:.6f})")
    joined = ent.join(feats, cond, "inner")
    latest = Window.partitionBy("__r").orderBy(F.col(ev).desc())
    picked = joined.withColumn("__n", F.row_number().over(latest)).where("__n = 1").select("__r", *features)
    out = ent.select("__r").join(picked, on="__r", how="left").orderBy("__r").toArrow()
    if out.num_rows != n:
        raise AssertionError(f"point-in-time join returned {out.num_rows} rows for {n} entity rows")
    return {f: out.column(f).combine_chunks().cast(scan.schema.field(f).type) for f in features}


def _spark_schema(schema: pa.Schema) -> Any:
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(schema)
