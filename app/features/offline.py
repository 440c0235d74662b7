"""Offline store: Parquet datasets partitioned by date, on S3 or a local directory.

One code path for both: a pyarrow filesystem (S3 with an endpoint override, or
local) plus a root path. Layout::

    <root>/<dataset>/date=YYYY-MM-DD/part-0.parquet

A partition file is replaced whole: locally through a temporary file and a
rename, on S3 by a single PUT (an object becomes visible only when complete).
Re-running a job rewrites the same file names, so it is idempotent.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from app.common.s3 import parse_s3_url

PARTITION = "date"
ROW_GROUP_ROWS = 128 * 1024


class OfflineStoreError(Exception):
    """A dataset cannot be read or written; the message names it and why."""


class OfflineStore:
    def __init__(
        self,
        url: str,
        *,
        s3_endpoint_url: str | None = None,
        s3_region: str = "us-east-1",
    ) -> None:
        self.url = url
        if url.startswith("s3://"):
            bucket, prefix = parse_s3_url(url)
            kwargs: dict[str, object] = {"region": s3_region}
            if s3_endpoint_url:
                scheme, _, host = s3_endpoint_url.partition("://")
                kwargs.update(endpoint_override=host or scheme, scheme=scheme if host else "https")
            self.fs: pafs.FileSystem = pafs.S3FileSystem(**kwargs)  # type: ignore[arg-type]
            self.root = f"{bucket}/{prefix}".rstrip("/")
            self.is_local = False
        else:
            path = url.removeprefix("file://")
            self.fs = pafs.LocalFileSystem()
            self.root = str(pafs.LocalFileSystem().normalize_path(_abspath(path)))
            self.is_local = True

    def path(self, dataset: str) -> str:
        return f"{self.root}/{dataset}"

    # -- writing -------------------------------------------------------------
    def write_partitioned(self, dataset: str, table: pa.Table, timestamp_column: str) -> list[str]:
        """Write ``table`` into one file per UTC date of ``timestamp_column``; returns the dates written."""
        if table.num_rows == 0:
            return []
        ts = table.column(timestamp_column)
        days = pc.strftime(ts, format="%Y-%m-%d")
        table = table.append_column(PARTITION, days)
        written = []
        for day in sorted(pc.unique(days).to_pylist()):
            part = table.filter(pc.equal(table.column(PARTITION), day)).drop_columns([PARTITION])
            part = part.sort_by([(timestamp_column, "ascending")])
            self._write_file(f"{self.path(dataset)}/{PARTITION}={day}/part-0.parquet", part)
            written.append(day)
        return written

    def _write_file(self, final: str, table: pa.Table) -> None:
        parent = final.rsplit("/", 1)[0]
        try:
            self.fs.create_dir(parent, recursive=True)
            if self.is_local:
                tmp = f"{parent}/.tmp-{uuid.uuid4().hex}.parquet"
                pq.write_table(table, tmp, filesystem=self.fs, row_group_size=ROW_GROUP_ROWS)
                self.fs.move(tmp, final)
            else:
                pq.write_table(table, final, filesystem=self.fs, row_group_size=ROW_GROUP_ROWS)
        except (OSError, pa.ArrowException) as exc:
            raise OfflineStoreError(f"cannot write {final}: {exc}") from exc

    # -- reading -------------------------------------------------------------
    def files(self, name: str, first_day: str | None = None, last_day: str | None = None) -> list[str]:
        """Data files of ``name`` whose partition date lies in [first_day, last_day] (ISO dates).

        Pruning happens here, on paths, before any file is opened: a window touches only its days.
        """
        root = self.path(name)
        try:
            if self.fs.get_file_info(root).type == pafs.FileType.NotFound:
                raise OfflineStoreError(f"dataset {name!r} not found under {self.url}")
            infos = self.fs.get_file_info(pafs.FileSelector(root, recursive=True))
        except (OSError, pa.ArrowException) as exc:
            raise OfflineStoreError(f"cannot list dataset {name!r} under {self.url}: {exc}") from exc
        out = []
        for info in infos:
            if info.type != pafs.FileType.File or not info.base_name.endswith(".parquet"):
                continue
            if info.base_name.startswith((".", "_")):
                continue
            part = info.path[len(root) + 1 :].split("/", 1)[0]
            if not part.startswith(f"{PARTITION}="):
                continue
            day = part.split("=", 1)[1]
            if (first_day is None or day >= first_day) and (last_day is None or day <= last_day):
                out.append(info.path)
        return sorted(out)

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
        first_day = _utc(start).strftime("%Y-%m-%d") if start is not None else None
        last_day = (_utc(end) - timedelta(microseconds=1)).strftime("%Y-%m-%d") if end is not None else None
        files = self.files(name, first_day, last_day)
        try:
            if not files:
                every = self.files(name)
                if not every:
                    raise OfflineStoreError(f"dataset {name!r} under {self.url} has no data files")
                schema = pq.read_schema(every[-1], filesystem=self.fs)
                self._check_columns(name, schema.names, timestamp_column, columns)
                empty = schema.empty_table()
                return empty.select(columns) if columns else empty
            dset = ds.dataset(files, filesystem=self.fs, format="parquet")
            self._check_columns(name, dset.schema.names, timestamp_column, columns)
            filt = None
            ts = ds.field(timestamp_column)
            if start is not None:
                filt = ts >= _scalar(start)
            if end is not None:
                filt = ts < _scalar(end) if filt is None else filt & (ts < _scalar(end))
            # Row groups whose min/max statistics miss the filter are skipped by the scanner.
            return dset.to_table(columns=columns, filter=filt)
        except (OSError, pa.ArrowException) as exc:
            raise OfflineStoreError(f"cannot read dataset {name!r}: {exc}") from exc

    @staticmethod
    def _check_columns(name: str, have: list[str], timestamp_column: str, columns: list[str] | None) -> None:
        missing = [c for c in [timestamp_column, *(columns or [])] if c not in have]
        if missing:
            raise OfflineStoreError(f"dataset {name!r} has no column(s) {missing}; it has {have}")

    def partitions(self, name: str) -> list[date]:
        sel = pafs.FileSelector(self.path(name), allow_not_found=True)
        out = []
        for info in self.fs.get_file_info(sel):
            base = info.base_name
            if info.type == pafs.FileType.Directory and base.startswith(f"{PARTITION}="):
                out.append(date.fromisoformat(base.split("=", 1)[1]))
        return sorted(out)


def _utc(t: datetime) -> datetime:
    if t.tzinfo is None:
        raise OfflineStoreError(f"timestamp {t} has no timezone; use UTC")
    return t.astimezone(UTC)


def _scalar(t: datetime) -> pa.Scalar:
    return pa.scalar(_utc(t), type=pa.timestamp("us", tz="UTC"))


def _abspath(path: str) -> str:
    import os

    return os.path.abspath(path)
