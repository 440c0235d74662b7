"""Lakehouse tables: the offline store's datasets as Delta Lake tables (``deltalake``, delta-rs: no JVM).

A dataset ``<root>/<name>`` is a Delta table partitioned by ``date`` (the UTC day of its event time,
``date=YYYY-MM-DD/`` directories as before). Every write is one commit in ``_delta_log/``: readers see
a whole commit or nothing, and every commit is a version a reader can go back to (time travel).

* Atomic commits on S3: delta-rs writes a commit file with a conditional PUT (``If-None-Match: *``), so
  of two writers racing for version N exactly one wins; the other re-reads the log, checks that the
  winner's changes do not conflict with its own (two appends never do) and commits as N+1. SeaweedFS
  honours the condition (tests/features/test_lakehouse.py races writers on it); no DynamoDB lock and no
  ``AWS_S3_ALLOW_UNSAFE_RENAME``.
* Schema enforcement at write time (delta-rs itself casts a float64 column into a float32 one
  silently): a column whose type differs from the table's, or a missing column, is refused naming the
  column; a new column is the one allowed evolution (nullable, old rows read null).
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable, Schema, WriterProperties, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError

PARTITION = "date"
ROW_GROUP_ROWS = 128 * 1024
COMMIT_ATTEMPTS = 8


class OfflineStoreError(Exception):
    """A dataset cannot be read or written; the message names it and why."""


class SchemaMismatchError(OfflineStoreError):
    """A write whose columns do not match the table's schema."""


class TableVersionError(OfflineStoreError):
    """A table version that does not exist (never written, or vacuumed)."""


class CommitConflictError(OfflineStoreError):
    """A commit that kept conflicting with concurrent writers after every retry."""


def after_conflict(name: str, attempt: int, exc: CommitFailedError) -> None:
    """A commit to table ``name`` lost to a concurrent writer's: wait a jittered, growing while before
    attempt ``attempt + 1``, or, after the last of COMMIT_ATTEMPTS, raise CommitConflictError."""
    if attempt == COMMIT_ATTEMPTS - 1:
        raise CommitConflictError(
            f"commit to table {name!r} still conflicted with concurrent writers after {COMMIT_ATTEMPTS} attempts: {exc}"
        ) from exc
    time.sleep(random.uniform(0.05, 0.2) * (attempt + 1))


class DataFileError(OfflineStoreError):
    """A data file a table version lists is missing or unreadable."""


@dataclass(frozen=True)
class Location:
    """Where a table lives, as delta-rs addresses it."""

    uri: str
    storage_options: dict[str, str]


def s3_storage_options(endpoint_url: str | None, region: str) -> dict[str, str]:
    """delta-rs (object_store) options for S3 or an S3-compatible endpoint. Credentials: the same
    environment variables as the AWS SDK's, or the pod's web identity, read by object_store itself."""
    opts = {"AWS_REGION": region}
    if endpoint_url:
        opts["AWS_ENDPOINT_URL"] = endpoint_url
        if endpoint_url.startswith("http://"):
            opts["AWS_ALLOW_HTTP"] = "true"
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        if os.environ.get(var):
            opts[var] = os.environ[var]
    return opts


def open_table(loc: Location, name: str, version: int | None = None) -> DeltaTable | None:
    """The table at ``version`` (default: the latest); None when there is no table at all."""
    try:
        return DeltaTable(loc.uri, version=version, storage_options=loc.storage_options)
    except TableNotFoundError:
        return None
    except DeltaError as exc:
        if version is not None:
            latest = open_table(loc, name)
            if latest is not None:
                raise TableVersionError(
                    f"table {name!r} has no version {version} (it has versions up to {latest.version()}; "
                    "an older one may have been vacuumed)"
                ) from exc
        raise OfflineStoreError(f"cannot open table {name!r} at {loc.uri}: {exc}") from exc
    except OSError as exc:
        raise OfflineStoreError(f"cannot open table {name!r} at {loc.uri}: {exc}") from exc


def delta_types(schema: pa.Schema) -> dict[str, str]:
    """Column name -> Delta type name (long, float, timestamp, ...), the types the log records."""
    try:
        return {f.name: _type_name(f.type) for f in Schema.from_arrow(schema).fields}
    except Exception as exc:  # delta-rs raises its own untyped errors for unsupported Arrow types
        raise SchemaMismatchError(f"a column type has no Delta equivalent: {exc}") from exc


def _type_name(t: object) -> str:
    return str(getattr(t, "type", t))


def check_schema(name: str, table: DeltaTable | None, incoming: pa.Schema) -> list[str]:
    """Refuse a write whose schema does not fit the table's; return the new columns it adds."""
    got = delta_types(incoming)
    if table is None:
        return []
    have = {f.name: _type_name(f.type) for f in table.schema().fields}
    for col, typ in have.items():
        if col not in got:
            raise SchemaMismatchError(
                f"write to table {name!r} lacks column {col!r} ({typ}); columns cannot be dropped"
            )
        if got[col] != typ:
            raise SchemaMismatchError(
                f"column {col!r} of table {name!r} is {typ}, the write has {got[col]} "
                f"(Arrow {incoming.field(col).type}): types cannot change"
            )
    return [c for c in got if c not in have]


def with_partition(table: pa.Table, timestamp_column: str) -> tuple[pa.Table, list[str]]:
    """``table`` sorted by ``timestamp_column`` with the ``date`` partition column, and its days."""
    if timestamp_column not in table.column_names:
        raise SchemaMismatchError(f"the write has no column {timestamp_column!r} to partition by")
    ts = table.column(timestamp_column)
    if not pa.types.is_timestamp(ts.type) or ts.type.tz is None:
        raise SchemaMismatchError(f"column {timestamp_column!r} must be a UTC timestamp, got {ts.type}")
    if ts.null_count:
        raise SchemaMismatchError(f"column {timestamp_column!r} has {ts.null_count} null timestamps")
    if PARTITION in table.column_names:
        table = table.drop_columns([PARTITION])
    table = table.sort_by([(timestamp_column, "ascending")])
    days = pc.strftime(pc.cast(table.column(timestamp_column), pa.timestamp("us", tz="UTC")), format="%Y-%m-%d")
    return table.append_column(PARTITION, days), sorted(pc.unique(days).to_pylist())


def commit(
    loc: Location,
    name: str,
    table: pa.Table,
    timestamp_column: str,
    *,
    replace_days: bool,
) -> tuple[int, list[str]]:
    """Write ``table`` as one commit: appended, or (``replace_days``) replacing the days it covers, so
    that re-running a job leaves the same rows. Returns the committed version and the days written.

    A conflicting concurrent commit (one that changed the same days while this one replaced them) is
    retried on the new version with jittered backoff; after COMMIT_ATTEMPTS it is a CommitConflictError.
    """
    data, days = with_partition(table, timestamp_column)
    props = WriterProperties(max_row_group_size=ROW_GROUP_ROWS, compression="SNAPPY")
    for attempt in range(COMMIT_ATTEMPTS):
        current = open_table(loc, name)
        new_cols = check_schema(name, current, data.schema)
        target: str | DeltaTable = loc.uri if current is None else current
        merge: Literal["merge"] | None = "merge" if new_cols else None
        try:
            if current is not None and replace_days:
                predicate = f"{PARTITION} IN ({', '.join(repr(d) for d in days)})"
                write_deltalake(
                    target,
                    data,
                    partition_by=[PARTITION],
                    mode="overwrite",
                    predicate=predicate,
                    schema_mode=merge,
                    storage_options=loc.storage_options,
                    writer_properties=props,
                )
            else:  # an append, or the first commit, which creates the table (a racing creator retries)
                write_deltalake(
                    target,
                    data,
                    partition_by=[PARTITION],
                    mode="append",
                    schema_mode=merge,
                    storage_options=loc.storage_options,
                    writer_properties=props,
                )
        except CommitFailedError as exc:
            after_conflict(name, attempt, exc)
            continue
        except (DeltaError, OSError, pa.ArrowException) as exc:
            raise OfflineStoreError(f"cannot write table {name!r} at {loc.uri}: {exc}") from exc
        # The latest version right after the commit: this commit's, or a later one's that includes it.
        written = open_table(loc, name)
        assert written is not None
        return int(written.version()), days
    raise AssertionError("unreachable")


def data_files(table: DeltaTable, first_day: str | None, last_day: str | None, strip_scheme: bool = True) -> list[str]:
    """The data files of this version whose day lies in [first_day, last_day]: pruning on the log's
    partition values, before any file is opened."""
    preds: list[tuple[str, str, object]] = []
    if first_day is not None:
        preds.append((PARTITION, ">=", first_day))
    if last_day is not None:
        preds.append((PARTITION, "<=", last_day))
    uris = table.file_uris(file_pruning_predicate=preds or None)  # type: ignore[arg-type]
    if strip_scheme:
        uris = [u.removeprefix("s3://").removeprefix("file://") for u in uris]
    return sorted(uris)


def arrow_schema(table: DeltaTable) -> pa.Schema:
    """The table's data columns (without the partition column) as Arrow types."""
    schema = pa.schema(table.schema().to_arrow())  # type: ignore[arg-type]
    fields = [_plain(f) for f in schema if f.name != PARTITION]
    return pa.schema(fields)


def _plain(field: pa.Field) -> pa.Field:
    """Views and large types as their plain Arrow equivalents (the Parquet files' types)."""
    t = field.type
    if t in (pa.string_view(), pa.large_string()):
        return field.with_type(pa.string())
    if t in (pa.binary_view(), pa.large_binary()):
        return field.with_type(pa.binary())
    return field


def history(table: DeltaTable, limit: int | None = None) -> list[dict[str, object]]:
    """Commits, newest first: version, time, operation and rows added."""
    out = []
    for h in table.history(limit):
        metrics = h.get("operationMetrics", {}) or {}
        out.append(
            {
                "version": h.get("version"),
                "timestamp_ms": h.get("timestamp"),
                "operation": h.get("operation"),
                "mode": (h.get("operationParameters") or {}).get("mode"),
                "rows_added": metrics.get("num_added_rows"),
            }
        )
    return out


def partitions(table: DeltaTable) -> list[str]:
    return sorted({p[PARTITION] for p in table.partitions()})


def convert_in_place(loc: Location, name: str) -> int:
    """Make a pre-lakehouse dataset (``date=.../*.parquet`` without a log) a Delta table over the same
    files: nothing is copied, the first commit lists them. A table that exists already is left alone."""
    from deltalake import convert_to_deltalake

    if open_table(loc, name) is not None:
        return -1
    try:
        convert_to_deltalake(
            loc.uri,
            mode="ignore",
            partition_by=Schema.from_arrow(pa.schema([(PARTITION, pa.string())])),
            partition_strategy="hive",
            storage_options=loc.storage_options,
        )
    except (DeltaError, OSError) as exc:
        raise OfflineStoreError(f"cannot convert dataset {name!r} at {loc.uri} to a table: {exc}") from exc
    table = open_table(loc, name)
    assert table is not None
    return int(table.version())
