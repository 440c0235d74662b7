from __future__ import annotations

from datetime import datetime, timedelta

import pyarrow as pa
import pyarrow.fs as pafs
import pytest

from app.features.offline import OfflineStore, OfflineStoreError
from tests.features.conftest import T0, VIEW, random_rows


def test_partitioned_roundtrip_and_window(offline: OfflineStore) -> None:
    table = random_rows(5000, 300, days=5)
    days = offline.write_partitioned(VIEW.source, table, "event_timestamp")
    assert days == [(T0 + timedelta(days=i)).strftime("%Y-%m-%d") for i in range(5)]
    assert [d.isoformat() for d in offline.partitions(VIEW.source)] == days
    everything = offline.read_window(VIEW.source, "event_timestamp", None, None)
    assert everything.num_rows == 5000
    start, end = T0 + timedelta(days=1, hours=5), T0 + timedelta(days=3)
    got = offline.read_window(VIEW.source, "event_timestamp", start, end, ["item_id", "event_timestamp"])
    ev = table.column("event_timestamp").to_pylist()
    assert got.num_rows == sum(start <= t < end for t in ev)
    assert got.column_names == ["item_id", "event_timestamp"]


def test_rewrite_is_idempotent(offline: OfflineStore) -> None:
    table = random_rows(1000, 50, days=2)
    offline.write_partitioned(VIEW.source, table, "event_timestamp")
    offline.write_partitioned(VIEW.source, table, "event_timestamp")
    assert offline.read_window(VIEW.source, "event_timestamp", None, None).num_rows == 1000


def test_window_reads_only_its_partitions(local_offline: OfflineStore) -> None:
    """A corrupt file outside the window is never opened: the read prunes by partition."""
    local_offline.write_partitioned(VIEW.source, random_rows(500, 10, days=3), "event_timestamp")
    [bad] = local_offline.files(VIEW.source, f"{T0:%Y-%m-%d}", f"{T0:%Y-%m-%d}")
    with pafs.LocalFileSystem().open_output_stream(bad) as fh:
        fh.write(b"this is not parquet")
    ok = local_offline.read_window(VIEW.source, "event_timestamp", T0 + timedelta(days=1), T0 + timedelta(days=3))
    assert ok.num_rows > 0
    with pytest.raises(OfflineStoreError, match="cannot read"):
        local_offline.read_window(VIEW.source, "event_timestamp", None, None)


def test_clear_errors(local_offline: OfflineStore) -> None:
    with pytest.raises(OfflineStoreError, match="not found"):
        local_offline.read_window("nope", "event_timestamp", None, None)
    local_offline.write_partitioned(VIEW.source, random_rows(10, 5, days=1), "event_timestamp")
    with pytest.raises(OfflineStoreError, match=r"no column\(s\) \['wrong'\]"):
        local_offline.read_window(VIEW.source, "wrong", None, None)
    with pytest.raises(OfflineStoreError, match="no timezone"):
        local_offline.read_window(VIEW.source, "event_timestamp", datetime(2026, 1, 1), None)
    assert local_offline.write_partitioned("empty", random_rows(0, 1, 1), "event_timestamp") == []


def test_no_temporary_files_left(local_offline: OfflineStore) -> None:
    local_offline.write_partitioned(VIEW.source, random_rows(100, 5, days=2), "event_timestamp")
    infos = pafs.LocalFileSystem().get_file_info(pafs.FileSelector(local_offline.path(VIEW.source), recursive=True))
    assert all(not i.base_name.startswith(".") for i in infos)
    assert isinstance(pa.Table, type)
