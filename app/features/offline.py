"""Offline store: lakehouse tables (Delta Lake, app/features/lakehouse.py) on S3 or a local directory.

One code path for both: a pyarrow filesystem (S3 with an endpoint override, or local) for reading
data files, delta-rs for the tables' logs and commits. Layout::

    <root>/<dataset>/_delta_log/00000000000000000000.json ...
    <root>/<dataset>/date=YYYY-MM-DD/part-....parquet

* ``write_partitioned`` replaces the days a table covers in one commit (re-running a job leaves the
  same rows); ``append`` adds rows (the stream writer's call). ``write_partitioned_parts`` is
  ``write_partitioned`` for rows that come in parts (a job's chunks, never all in memory): Parquet files
  written part by part, then one commit of them all. Concurrent writers both land or retry.
* Reads go to the latest version, or to the version a store is pinned to (``pinned``), and record
  which version they read (``versions_read``): a training run stores them with the model, and
  ``train --as-of-version`` pins a store to them to rebuild the same data.
* A window read prunes on the log's partition values (only its days' files are opened), then filters
  rows with Arrow on row-group statistics.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from deltalake import DeltaTable, Schema
from deltalake.exceptions import CommitFailedError, DeltaError
from deltalake.transaction import AddAction, RemoveAction, create_table_with_add_actions

from app.common.s3 import parse_s3_url
from app.features import lakehouse
from app.features.lakehouse import (
    COMMIT_ATTEMPTS,
    PARTITION,
    ROW_GROUP_ROWS,
    CommitConflictError,
    DataFileError,
    OfflineStoreError,
    SchemaMismatchError,
    TableVersionError,
)

__all__ = [
    "PARTITION",
    "ROW_GROUP_ROWS",
    "CommitConflictError",
    "DataFileError",
    "OfflineStore",
    "OfflineStoreError",
    "SchemaMismatchError",
    "TableScan",
    "TableVersionError",
]


@dataclass(frozen=True)
class TableScan:
    """What a join engine needs to read one table version's window itself: the data files (paths on
    ``fs``), their Arrow schema, the row filter, and the version."""

    name: str
    version: int
    files: list[str]
    schema: pa.Schema
    filter: ds.Expression | None
    fs: pafs.FileSystem = field(repr=False)

    def dataset(self) -> ds.Dataset:
        try:
            return ds.dataset(self.files, schema=self.schema, filesystem=self.fs, format="parquet")
        except FileNotFoundError as exc:
            raise DataFileError(f"a data file of table {self.name!r} version {self.version} is missing: {exc}") from exc
        except (OSError, pa.ArrowException) as exc:
            raise DataFileError(f"cannot open the data files of table {self.name!r}: {exc}") from exc


class OfflineStore:
    def __init__(
        self,
        url: str,
        *,
        s3_endpoint_url: str | None = None,
        s3_region: str = "us-east-1",
        pinned: dict[str, int] | None = None,
    ) -> None:
        self.url = url
        self.s3_endpoint_url = s3_endpoint_url
        self.s3_region = s3_region
        self.pinned = dict(pinned or {})
        """Dataset -> version: reads go to these versions (``train --as-of-version``)."""
        self.versions_read: dict[str, int] = {}
        """Dataset -> the version this store's reads used, for the model's metadata."""
        self.entity_fingerprint: str | None = None
        """sha256 of the entity rows of the last point-in-time join read through this store."""
        if url.startswith("s3://"):
            bucket, prefix = parse_s3_url(url)
            kwargs: dict[str, object] = {"region": s3_region}
            if s3_endpoint_url:
                scheme, _, host = s3_endpoint_url.partition("://")
                kwargs.update(endpoint_override=host or scheme, scheme=scheme if host else "https")
            self.fs: pafs.FileSystem = pafs.S3FileSystem(**kwargs)  # type: ignore[arg-type]
            self.root = f"{bucket}/{prefix}".rstrip("/")
            self.is_local = False
            self._options = lakehouse.s3_storage_options(s3_endpoint_url, s3_region)
        else:
            path = url.removeprefix("file://")
            self.fs = pafs.LocalFileSystem()
            self.root = str(pafs.LocalFileSystem().normalize_path(os.path.abspath(path)))
            self.is_local = True
            self._options = {}

    def pin(self, versions: dict[str, int]) -> OfflineStore:
        """The same store, its reads pinned to ``versions`` (a model's recorded table versions)."""
        return OfflineStore(self.url, s3_endpoint_url=self.s3_endpoint_url, s3_region=self.s3_region, pinned=versions)

    def path(self, dataset: str) -> str:
        return f"{self.root}/{dataset}"

    def location(self, dataset: str) -> lakehouse.Location:
        uri = self.path(dataset) if self.is_local else f"s3://{self.path(dataset)}"
        return lakehouse.Location(uri, self._options)

    # -- writing -------------------------------------------------------------
    def write_partitioned(self, dataset: str, table: pa.Table, timestamp_column: str) -> list[str]:
        """Replace the UTC days of ``timestamp_column`` that ``table`` covers, in one commit; returns the
        days written. Idempotent: the same table written twice leaves the same rows."""
        if table.num_rows == 0:
            return []
        _, days = lakehouse.commit(self.location(dataset), dataset, table, timestamp_column, replace_days=True)
        return days

    def write_partitioned_parts(
        self, dataset: str, schema: pa.Schema, parts: Iterable[pa.Table], timestamp_column: str, days: list[str]
    ) -> list[str]:
        """write_partitioned for rows that come in parts, so that they never all sit in memory: each part is
        written as it comes, one Parquet file per day it covers, and the files are committed together at
        the end, in one commit replacing ``days`` (the UTC days the rows cover, known beforehand). Returns
        ``days``. A failed part commits nothing (its files and the earlier parts' are deleted).

        delta-rs's own writer, given a stream, keeps every partition's file open in memory until the end
        (measured: its memory grows with the rows), hence the files are written here, with pyarrow."""
        if not days:
            return []
        loc = self.location(dataset)
        root = self.path(dataset)
        out_schema = schema.append(pa.field(PARTITION, pa.string()))
        current = lakehouse.open_table(loc, dataset)
        if lakehouse.check_schema(dataset, current, out_schema):
            raise SchemaMismatchError(
                f"a write in parts cannot add columns to table {dataset!r}: use write_partitioned"
            )
        adds: list[AddAction] = []
        try:
            for i, part in enumerate(parts):
                if part.num_rows:
                    adds += self._write_files(dataset, root, f"part-{i:05d}", part.cast(schema), timestamp_column, days)
            self._commit_files(loc, dataset, out_schema, adds, days)
        except BaseException:
            for add in adds:  # not in any commit: invisible, removed to save the space
                with contextlib.suppress(OSError):
                    self.fs.delete_file(f"{root}/{add.path}")
            raise
        return list(days)

    def _write_files(
        self, dataset: str, root: str, prefix: str, part: pa.Table, timestamp_column: str, days: list[str]
    ) -> list[AddAction]:
        """One file per day of ``part``, named ``prefix``-...: in the order of the parts by name."""
        data, covered = lakehouse.with_partition(part, timestamp_column)
        if not set(covered) <= set(days):
            raise OfflineStoreError(
                f"rows for table {dataset!r} fall on {sorted(set(covered) - set(days))}, "
                f"outside the days written ({days[0]} .. {days[-1]})"
            )
        adds: list[AddAction] = []
        for day in covered:
            rows = data.filter(pc.equal(data.column(PARTITION), day)).drop_columns([PARTITION])
            rel = f"{PARTITION}={day}/{prefix}-{uuid.uuid4()}-c000.snappy.parquet"
            path = f"{root}/{rel}"
            if self.is_local:
                os.makedirs(os.path.dirname(path), exist_ok=True)
            try:
                pq.write_table(rows, path, filesystem=self.fs, row_group_size=ROW_GROUP_ROWS, compression="snappy")
                size = self.fs.get_file_info(path).size
            except (OSError, pa.ArrowException) as exc:
                raise OfflineStoreError(f"cannot write a data file of table {dataset!r} at {path}: {exc}") from exc
            stats = {
                "numRecords": rows.num_rows,
                "nullCount": {c.name: rows.column(c.name).null_count for c in rows.schema},
            }
            adds.append(
                AddAction(rel, int(size or 0), {PARTITION: day}, int(time.time() * 1000), True, json.dumps(stats))
            )
        return adds

    @staticmethod
    def _commit_files(
        loc: lakehouse.Location, dataset: str, schema: pa.Schema, adds: list[AddAction], days: list[str]
    ) -> None:
        """One commit: ``adds`` replace the files of ``days``; retried on a conflicting concurrent commit."""
        for attempt in range(COMMIT_ATTEMPTS):
            current = lakehouse.open_table(loc, dataset)
            try:
                if current is None:  # the first commit creates the table; a racing creator's: retried as a write
                    create_table_with_add_actions(
                        loc.uri,
                        Schema.from_arrow(schema),
                        adds,
                        mode="error",
                        partition_by=[PARTITION],
                        storage_options=loc.storage_options,
                    )
                else:
                    actions: list[AddAction | RemoveAction] = [*adds]
                    current.create_write_transaction(
                        actions,
                        "overwrite",
                        schema,
                        partition_by=[PARTITION],
                        partition_filters=[(PARTITION, "in", days)],
                    )
                return
            except CommitFailedError as exc:
                lakehouse.after_conflict(dataset, attempt, exc)
            except (DeltaError, OSError, pa.ArrowException) as exc:
                if current is None and attempt < COMMIT_ATTEMPTS - 1 and lakehouse.open_table(loc, dataset):
                    continue
                raise OfflineStoreError(f"cannot commit to table {dataset!r} at {loc.uri}: {exc}") from exc

    def append(self, dataset: str, table: pa.Table, timestamp_column: str) -> int:
        """Append ``table`` in one commit (the stream writer's call); returns the table's version after it.
        Safe beside other writers: a conflicting commit is retried, nothing is half-visible."""
        if table.num_rows == 0:
            return self.version(dataset)
        version, _ = lakehouse.commit(self.location(dataset), dataset, table, timestamp_column, replace_days=False)
        return version

    # -- versions --------------------------------------------------------------
    def table(self, name: str, version: int | None = None) -> DeltaTable:
        """The Delta table of dataset ``name`` at ``version`` (default: the pinned one, else the latest)."""
        if version is None:
            version = self.pinned.get(name)
        if self.pinned and name not in self.pinned and version is None:
            raise TableVersionError(
                f"reads are pinned to {sorted(self.pinned)} but dataset {name!r} has no recorded version"
            )
        table = lakehouse.open_table(self.location(name), name, version)
        if table is None:
            if self._has_legacy_files(name):
                raise OfflineStoreError(
                    f"dataset {name!r} under {self.url} is in the pre-lakehouse layout (Parquet files without "
                    "a _delta_log): run `python -m jobs migrate-offline` once"
                )
            raise OfflineStoreError(f"dataset {name!r} not found under {self.url}")
        return table

    def version(self, name: str) -> int:
        return int(self.table(name).version())

    def history(self, name: str, limit: int | None = None) -> list[dict[str, object]]:
        return lakehouse.history(self.table(name), limit)

    def _has_legacy_files(self, name: str) -> bool:
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(self.path(name), recursive=True, allow_not_found=True))
        except (OSError, pa.ArrowException):
            return False
        return any(i.type == pafs.FileType.File and i.base_name.endswith(".parquet") for i in infos)

    # -- reading -------------------------------------------------------------
    def files(self, name: str, first_day: str | None = None, last_day: str | None = None) -> list[str]:
        """Data files of ``name`` (read version) whose partition date lies in [first_day, last_day].

        Pruning happens here, on the log's partition values, before any file is opened."""
        return lakehouse.data_files(self.table(name), first_day, last_day)

    def scan(
        self,
        name: str,
        timestamp_column: str,
        start: datetime | None,
        end: datetime | None,
        columns: list[str] | None = None,
    ) -> TableScan:
        """The files, schema and row filter of the window ``start <= ts < end``, recorded as read."""
        first_day = _utc(start).strftime("%Y-%m-%d") if start is not None else None
        last_day = (_utc(end) - timedelta(microseconds=1)).strftime("%Y-%m-%d") if end is not None else None
        table = self.table(name)
        version = int(table.version())
        schema = lakehouse.arrow_schema(table)
        self._check_columns(name, schema.names, timestamp_column, columns)
        files = lakehouse.data_files(table, first_day, last_day)
        filt = None
        ts = ds.field(timestamp_column)
        if start is not None:
            filt = ts >= _scalar(start)
        if end is not None:
            filt = ts < _scalar(end) if filt is None else filt & (ts < _scalar(end))
        self.versions_read[name] = version
        return TableScan(name, version, files, schema, filt, self.fs)

    def read_window(
        self,
        name: str,
        timestamp_column: str,
        start: datetime | None,
        end: datetime | None,
        columns: list[str] | None = None,
    ) -> pa.Table:
        """Rows with ``start <= ts < end`` (either bound optional), reading only the partitions
        and row groups that can hold them."""
        scan = self.scan(name, timestamp_column, start, end, columns)
        if not scan.files:
            empty = scan.schema.empty_table()
            return empty.select(columns) if columns else empty
        dset = scan.dataset()
        try:
            # Row groups whose min/max statistics miss the filter are skipped by the scanner.
            return dset.to_table(columns=columns, filter=scan.filter)
        except (OSError, pa.ArrowException) as exc:
            raise OfflineStoreError(f"cannot read dataset {name!r} (version {scan.version}): {exc}") from exc

    @staticmethod
    def _check_columns(name: str, have: list[str], timestamp_column: str, columns: list[str] | None) -> None:
        missing = [c for c in [timestamp_column, *(columns or [])] if c not in have]
        if missing:
            raise OfflineStoreError(f"dataset {name!r} has no column(s) {missing}; it has {have}")

    def partitions(self, name: str) -> list[date]:
        try:
            table = self.table(name)
        except OfflineStoreError:
            return []
        return [date.fromisoformat(d) for d in lakehouse.partitions(table)]

    # -- migration ---------------------------------------------------------------
    def legacy_datasets(self) -> list[str]:
        """Datasets in the pre-lakehouse layout: directories of ``date=...`` partitions without a log."""
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(self.root, recursive=True, allow_not_found=True))
        except (OSError, pa.ArrowException) as exc:
            raise OfflineStoreError(f"cannot list {self.url}: {exc}") from exc
        parents, tables = set(), set()
        for info in infos:
            rel = info.path[len(self.root) + 1 :]
            parts = rel.split("/")
            for i, part in enumerate(parts):
                if part == "_delta_log":
                    tables.add("/".join(parts[:i]))
                    break
                if part.startswith(f"{PARTITION}=") and info.type == pafs.FileType.File and rel.endswith(".parquet"):
                    parents.add("/".join(parts[:i]))
                    break
        return sorted(p for p in parents if p and p not in tables)

    def convert(self, dataset: str) -> int:
        """Make a legacy dataset a table over its files (nothing copied); -1 if it is one already."""
        return lakehouse.convert_in_place(self.location(dataset), dataset)


def _utc(t: datetime) -> datetime:
    if t.tzinfo is None:
        raise OfflineStoreError(f"timestamp {t} has no timezone; use UTC")
    return t.astimezone(UTC)


def _scalar(t: datetime) -> pa.Scalar:
    return pa.scalar(_utc(t), type=pa.timestamp("us", tz="UTC"))
