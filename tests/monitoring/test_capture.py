"""What serving records, in one worker: bin counts as the offline binning computes them, schema skew,
flushes to the shared counters, and a served-data log that drops and counts instead of failing."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from app.monitoring.capture import ModelMonitor, monitor_for
from app.monitoring.profile import SCHEMA_KINDS, SCORE_FEATURE, ProfileError, bin_rows, compute_profile, schema_counts
from app.monitoring.servedlog import ServedLog
from app.monitoring.settings import MonitoringSettings

RNG = np.random.default_rng(11)
RUNS = itertools.count()
NAMES = ["num_a", "cat_b", "num_c"]


def _training() -> np.ndarray:
    return np.column_stack([RNG.normal(size=5000), RNG.integers(0, 3, 5000), RNG.uniform(10, 20, 5000)])


def _proba(n: int) -> np.ndarray:
    s = RNG.uniform(size=n)
    return np.column_stack([1 - s, s])


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_served_counts_equal_the_offline_binning_and_reach_the_counters() -> None:
    x_train = _training()
    profile = compute_profile(x_train, NAMES, RNG.uniform(size=1000))
    monitor = ModelMonitor("cap-a", "v1", NAMES, profile, flush_seconds=3600)
    served = np.column_stack([RNG.normal(size=300) * 2, RNG.integers(0, 5, 300), RNG.uniform(5, 25, 300)])
    served[:7, 0] = np.nan
    probas = _proba(300)
    for lo in range(0, 300, 32):  # request-sized pieces
        monitor.observe(served[lo : lo + 32], probas[lo : lo + 32])
    want = bin_rows(profile, served, probas[:, 1])
    got = monitor.counts()
    assert set(got) == {*NAMES, SCORE_FEATURE}
    for name in want:
        assert got[name].tolist() == want[name].tolist(), name
    assert sample("model_feature_bin_total", model="cap-a", version="v1", feature="num_a", bin="0") == 0  # not flushed
    monitor.flush()
    for b, count in enumerate(want["num_c"]):
        assert sample("model_feature_bin_total", model="cap-a", version="v1", feature="num_c", bin=str(b)) == count
    assert sample("model_monitored_rows_total", model="cap-a", version="v1") == 300
    col = served[:, 0]
    kinds = {
        ("num_a", "missing"): 7,
        ("num_a", "below_min"): int((col < x_train[:, 0].min()).sum()),
        ("num_a", "above_max"): int((col > x_train[:, 0].max()).sum()),
        ("cat_b", "unknown_category"): int((served[:, 1] > 2).sum()),
        ("num_c", "below_min"): int((served[:, 2] < x_train[:, 2].min()).sum()),
    }
    assert kinds[("cat_b", "unknown_category")] > 0 and kinds[("num_c", "below_min")] > 0
    for (feature, kind), count in kinds.items():
        got_count = sample(
            "model_feature_schema_violations_total", model="cap-a", version="v1", feature=feature, kind=kind
        )
        assert got_count == count, (feature, kind)
    monitor.observe(served[:10], probas[:10])
    monitor.flush()  # only the delta is added
    assert sample("model_monitored_rows_total", model="cap-a", version="v1") == 310


def test_buffered_and_oversized_requests_bin_alike() -> None:
    """Rows wait in a 4,096-row buffer; a bigger request is binned at once: counts are the same."""
    profile = compute_profile(_training(), NAMES, RNG.uniform(size=1000))
    monitor = ModelMonitor("cap-g", "v1", NAMES, profile, flush_seconds=3600)
    served = np.column_stack([RNG.normal(size=9000), RNG.integers(0, 3, 9000), RNG.uniform(10, 20, 9000)])
    probas = _proba(9000)
    monitor.observe(served[:3000], probas[:3000])
    monitor.observe(served[3000:8000], probas[3000:8000])  # past the buffer
    for i in range(8000, 9000):
        monitor.observe(served[i : i + 1], probas[i : i + 1])
    want = bin_rows(profile, served, probas[:, 1])
    assert {n: c.tolist() for n, c in monitor.counts().items()} == {n: c.tolist() for n, c in want.items()}


def test_recording_never_raises_into_the_request() -> None:
    profile = compute_profile(_training(), NAMES, RNG.uniform(size=100))
    monitor = ModelMonitor("cap-b", "v1", NAMES, profile, flush_seconds=0)
    monitor.observe(np.zeros((2, 1)), _proba(2))  # wrong shape: logged, not raised


def test_a_version_without_profile_counts_rows_and_reports_no_reference() -> None:
    monitor = monitor_for("cap-c", "v0", NAMES, None, MonitoringSettings(flush_seconds=0))
    assert monitor is not None and not monitor.has_reference
    monitor.observe(np.zeros((4, 3)), _proba(4))
    assert sample("model_monitored_rows_total", model="cap-c", version="v0") == 4
    assert sample("model_reference_profile", model="cap-c", version="v0") == 0


def test_the_per_model_switch_and_a_bad_profile() -> None:
    raw = compute_profile(_training(), NAMES, RNG.uniform(size=100)).model_dump()
    assert monitor_for("cap-d", "v1", NAMES, raw, MonitoringSettings(disabled_models=["cap-d", "other"])) is None
    assert monitor_for("cap-d", "v1", NAMES, raw, MonitoringSettings(enabled=False)) is None
    with pytest.raises(ProfileError, match="does not match the model's features"):
        monitor_for("cap-d", "v1", ["x", "y", "z"], raw, MonitoringSettings(enabled=False))  # checked even when off


def test_served_log_writes_sampled_rows_as_parquet(tmp_path: Path) -> None:
    log = ServedLog(str(tmp_path / "offline"), flush_seconds=3600)
    x = RNG.normal(size=(5, 3))
    log.offer("cap-e", "v1", NAMES, x, np.arange(5) / 10, [101, 102, 103, 104, 105])
    log.offer("cap-e", "v1", NAMES, x[:2], np.zeros(2), None)
    assert log.flush() == 7
    files = list((tmp_path / "offline" / "served" / "cap-e").rglob("*.parquet"))
    assert len(files) == 1 and files[0].parent.name.startswith("date=")
    table = pq.read_table(files[0])
    assert table.column_names == ["ts", "model", "version", "entity", *NAMES, "score"]
    assert table.column("entity").to_pylist() == ["101", "102", "103", "104", "105", None, None]
    assert np.allclose(table.column("num_a").to_numpy()[:5], x[:, 0])
    assert sample("model_served_log_rows_total", model="cap-e") == 7


def test_served_log_drops_and_counts_when_full_or_the_store_is_down(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the log's directory should be")
    log = ServedLog(str(blocker), flush_seconds=3600, max_rows=8)
    x = RNG.normal(size=(5, 3))
    log.offer("cap-f", "v1", NAMES, x, np.zeros(5), None)
    log.offer("cap-f", "v1", NAMES, x, np.zeros(5), None)  # 10 > 8: dropped
    assert sample("model_served_log_dropped_rows_total", model="cap-f", reason="buffer_full") == 5
    assert log.flush() == 0
    assert sample("model_served_log_dropped_rows_total", model="cap-f", reason="write_error") == 5


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), rows=st.integers(1, 300), missing=st.floats(0.0, 1.0))
def test_the_served_logs_schema_counts_are_serving_counters(seed: int, rows: int, missing: float) -> None:
    """A report over the served-data log counts schema skew (app/monitoring/profile.py:schema_counts) as serving
    counts it into its counters: the same numbers for the same rows."""
    rng = np.random.default_rng(seed)
    profile = compute_profile(_training(), NAMES, RNG.uniform(size=100))
    served = np.column_stack([rng.normal(size=rows) * 3, rng.integers(-1, 5, rows), rng.uniform(5, 25, rows)])
    served[rng.uniform(size=served.shape) < missing] = np.nan
    name = f"cap-h-{next(RUNS)}"  # a fresh series per example: hypothesis replays examples
    monitor = ModelMonitor(name, "v1", NAMES, profile, flush_seconds=3600)
    monitor.observe(served, _proba(rows))
    monitor.flush()
    for feature, kinds in schema_counts(profile, served).items():
        assert set(kinds) == set(SCHEMA_KINDS)
        for kind, count in kinds.items():
            labels = {"model": name, "version": "v1", "feature": feature, "kind": kind}
            assert sample("model_feature_schema_violations_total", **labels) == count, (feature, kind)
