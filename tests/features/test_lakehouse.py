"""Lakehouse tables: commits, time travel, schema enforcement, concurrent writers, clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from datetime import timedelta

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pytest

from app.features import lakehouse
from app.features.offline import (
    CommitConflictError,
    DataFileError,
    OfflineStore,
    OfflineStoreError,
    SchemaMismatchError,
    TableVersionError,
)
from devharness import S3Server
from devharness.jobs import run_job
from devharness.processes import ROOT
from examples.fraud.repo import user_stats
from tests.features.conftest import T0, VIEW, random_rows

TSCOL = "event_timestamp"


def test_every_write_is_a_version_and_old_versions_stay_readable(offline: OfflineStore) -> None:
    first = random_rows(1000, 50, days=3, seed=1)
    offline.write_partitioned(VIEW.source, first, TSCOL)
    v0 = offline.version(VIEW.source)
    later = random_rows(300, 50, days=1, seed=2).set_column(
        1, TSCOL, pc.add(random_rows(300, 50, days=1, seed=2).column(TSCOL), pa.scalar(timedelta(days=5)))
    )
    v1 = offline.append(VIEW.source, later, TSCOL)
    assert v1 == v0 + 1
    assert offline.read_window(VIEW.source, TSCOL, None, None).num_rows == 1300
    pinned = offline.pin({VIEW.source: v0})
    assert pinned.read_window(VIEW.source, TSCOL, None, None).num_rows == 1000
    assert pinned.versions_read == {VIEW.source: v0}
    assert offline.versions_read == {VIEW.source: v1}
    ops = [(h["version"], h["mode"], h["rows_added"]) for h in offline.history(VIEW.source)]
    assert ops[0] == (v1, "Append", 300)
    # Re-running the batch write replaces its days: same rows, one more version.
    offline.write_partitioned(VIEW.source, first, TSCOL)
    assert offline.read_window(VIEW.source, TSCOL, None, None).num_rows == 1300
    assert offline.version(VIEW.source) == v1 + 1


def test_missing_version_and_unrecorded_dataset_are_clear_errors(local_offline: OfflineStore) -> None:
    local_offline.write_partitioned(VIEW.source, random_rows(10, 5, days=1), TSCOL)
    with pytest.raises(TableVersionError, match=rf"table {VIEW.source!r} has no version 7 \(it has versions up to 0"):
        local_offline.pin({VIEW.source: 7}).read_window(VIEW.source, TSCOL, None, None)
    with pytest.raises(TableVersionError, match="'other' has no recorded version"):
        local_offline.pin({VIEW.source: 0}).read_window("other", TSCOL, None, None)


def test_schema_is_enforced_at_write_time(offline: OfflineStore) -> None:
    offline.write_partitioned(VIEW.source, random_rows(100, 5, days=1), TSCOL)
    before = offline.version(VIEW.source)
    wrong = random_rows(10, 5, days=1)
    wrong = wrong.set_column(4, "price", wrong.column("price").cast(pa.float64()))
    with pytest.raises(SchemaMismatchError, match=r"column 'price' of table .* is float, the write has double"):
        offline.append(VIEW.source, wrong, TSCOL)
    with pytest.raises(SchemaMismatchError, match="lacks column 'score'"):
        offline.append(VIEW.source, random_rows(10, 5, days=1).drop_columns(["score"]), TSCOL)
    with pytest.raises(SchemaMismatchError, match="must be a UTC timestamp"):
        offline.append(VIEW.source, random_rows(10, 5, 1).set_column(1, TSCOL, pa.array([1] * 10)), TSCOL)
    assert offline.version(VIEW.source) == before  # a refused write commits nothing
    # The allowed evolution: a new nullable column; older rows read it as null.
    extra = random_rows(10, 5, days=1, seed=9)
    extra = extra.append_column("views", pa.array(range(10), pa.int32()))
    offline.append(VIEW.source, extra, TSCOL)
    got = offline.read_window(VIEW.source, TSCOL, None, None)
    assert got.num_rows == 110
    assert got.schema.field("views").type == pa.int32()
    assert got.column("views").null_count == 100
    # ... and a write without the new column is refused from then on, naming it.
    with pytest.raises(SchemaMismatchError, match="lacks column 'views'"):
        offline.append(VIEW.source, random_rows(10, 5, days=1), TSCOL)


def test_missing_or_corrupt_data_file_is_a_clear_error(local_offline: OfflineStore) -> None:
    local_offline.write_partitioned(VIEW.source, random_rows(300, 10, days=3), TSCOL)
    first, second, _ = local_offline.files(VIEW.source)
    os.remove(first)
    with pytest.raises(DataFileError, match=rf"a data file of table {VIEW.source!r} version 0 is missing"):
        local_offline.read_window(VIEW.source, TSCOL, None, None)
    with pafs.LocalFileSystem().open_output_stream(second) as fh:
        fh.write(b"not parquet")
    day3 = T0 + timedelta(days=2)
    assert local_offline.read_window(VIEW.source, TSCOL, day3, day3 + timedelta(days=1)).num_rows > 0
    with pytest.raises(OfflineStoreError, match="cannot read dataset"):
        local_offline.read_window(VIEW.source, TSCOL, T0 + timedelta(days=1), day3)


def test_a_commit_that_keeps_conflicting_fails_clearly_and_commits_nothing(
    local_offline: OfflineStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real conflict from delta-rs: every attempt starts from version 0, which a later replace of the
    same day has superseded."""
    day = random_rows(50, 5, days=1)
    local_offline.write_partitioned(VIEW.source, day, TSCOL)
    loc = local_offline.location(VIEW.source)
    stale = lakehouse.open_table(loc, VIEW.source)
    local_offline.write_partitioned(VIEW.source, day, TSCOL)
    monkeypatch.setattr(lakehouse, "open_table", lambda *a, **k: stale)
    monkeypatch.setattr(lakehouse, "COMMIT_ATTEMPTS", 2)
    with pytest.raises(CommitConflictError, match=rf"commit to table {VIEW.source!r} still conflicted .* 2 attempts"):
        local_offline.write_partitioned(VIEW.source, day, TSCOL)
    monkeypatch.undo()
    assert local_offline.version(VIEW.source) == 1
    assert local_offline.read_window(VIEW.source, TSCOL, None, None).num_rows == 50


STREAM_CHUNK = 7
STREAM_KEYS = 10_000  # the stream writer's user ids start here: the batch job's are below


def _stream_rows(template: pa.Table, i: int) -> pa.Table:
    """A stream writer's micro-batch: STREAM_CHUNK rows of user_stats, on a day the batch job never writes."""
    keys = pa.array(range(STREAM_KEYS + i * STREAM_CHUNK, STREAM_KEYS + (i + 1) * STREAM_CHUNK), pa.int64())
    ts = pa.array([T0 + timedelta(days=400, minutes=i)] * STREAM_CHUNK, template.schema.field(TSCOL).type)
    return template.set_column(0, "user_id", keys).set_column(1, TSCOL, ts)


def _stream_count(t: pa.Table) -> int:
    return int(pc.sum(pc.greater_equal(t.column("user_id"), STREAM_KEYS)).as_py() or 0)


def test_batch_job_and_stream_writer_commit_concurrently_on_s3(s3_server: S3Server) -> None:
    """A re-run of `python -m jobs features` replaces user_stats' days while this process appends
    micro-batches to the same table: every commit lands, and no version shows part of a commit."""
    bucket = s3_server.create_bucket("lakehouse-concurrent")
    url = f"s3://{bucket}/fs"
    env = {"FEATURES_OFFLINE_URL": url, "AWS_ENDPOINT_URL_S3": s3_server.endpoint}
    args = ["--users", "300", "--days", "6", "--start", "2026-10-01"]
    for job in ("seed", "features"):
        run_job(job, *args, env=env).ok()
    off = OfflineStore(url, s3_endpoint_url=s3_server.endpoint)
    first = off.read_window(user_stats.source, TSCOL, None, None)
    template = first.slice(0, STREAM_CHUNK)
    before = off.version(user_stats.source)

    batch = subprocess.Popen(
        [sys.executable, "-m", "jobs", "features", *args],
        env={**os.environ, **env},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    appended: list[int] = []
    errors: list[BaseException] = []

    def stream() -> None:
        try:
            i = 0
            while batch.poll() is None or i < 4:
                appended.append(off.append(user_stats.source, _stream_rows(template, i), TSCOL))
                i += 1
        except BaseException as exc:
            errors.append(exc)

    writer = threading.Thread(target=stream)
    writer.start()
    out, _ = batch.communicate(timeout=240)
    writer.join(timeout=240)
    assert batch.returncode == 0 and not errors, errors
    assert json.loads(out.strip().splitlines()[-1])["rows"] == first.num_rows
    final = off.read_window(user_stats.source, TSCOL, None, None)
    assert _stream_count(final) == STREAM_CHUNK * len(appended) and len(appended) >= 4
    assert final.num_rows == first.num_rows + STREAM_CHUNK * len(appended)
    history = off.history(user_stats.source, limit=len(appended) + 1)
    [replace] = [h["version"] for h in history if h["mode"] == "Overwrite"]
    assert isinstance(replace, int) and min(appended) < replace  # the batch commit came among the appends
    # Every version holds whole commits only: whole micro-batches, and all of the batch job's rows.
    for version in range(before, off.version(user_stats.source) + 1):
        t = off.pin({user_stats.source: version}).read_window(user_stats.source, TSCOL, None, None)
        s = _stream_count(t)
        assert s % STREAM_CHUNK == 0 and t.num_rows - s == first.num_rows, (version, t.num_rows, s)
