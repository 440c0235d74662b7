"""``python -m jobs drift-report`` end to end in this process, on a model the train job fitted with declared
feature types: the served-data log's report carries the schema counts the metrics page's does; a baseline
window of served traffic as the reference (``--reference-window``) flags nothing on unshifted traffic and
the shifted features on shifted traffic; the HTML page has axes, bin edges and category names, labelled
shares, and sections for missing values and schema skew."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from prometheus_client import REGISTRY, generate_latest

from app.modelstore import LocalModelStore
from app.monitoring.capture import ModelMonitor
from app.monitoring.profile import parse_profile
from app.monitoring.servedlog import ServedLog
from app.monitoring.sources import Served, from_rows
from jobs.__main__ import main as jobs_main

MODEL = "report-demo"
FEATURES = ["amount", "count", "merchant"]
MERCHANTS = 30  # more categories than the guess takes: declared


def rows(rng: np.random.Generator, n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "amount": rng.lognormal(4, 1, n),
            "count": rng.integers(0, 3, n).astype(float),  # 3 integers: guessed categorical, declared numeric
            "merchant": rng.integers(0, MERCHANTS, n).astype(float),
        }
    )


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    code = jobs_main(list(argv))
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0, out
    result: dict[str, Any] = out
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    work = tmp_path_factory.mktemp("report")
    rng = np.random.default_rng(0)
    df = rows(rng, 3000)
    df["label"] = (df.amount > 60).astype(int)
    df.to_parquet(work / "train.parquet")
    mp = pytest.MonkeyPatch()
    mp.setattr("jobs.__main__.configure_logging", lambda *a, **k: None)  # leave pytest's logging be
    try:
        code = jobs_main(
            [
                "--store",
                str(work / "store"),
                "train",
                "--data",
                str(work / "train.parquet"),
                "--target",
                "label",
                "--name",
                MODEL,
                "--n-estimators",
                "5",
                "--categorical",
                "merchant",
                "--numeric",
                "count",
            ]
        )
        assert code == 0
        version = LocalModelStore(work / "store").latest(MODEL)
        assert version is not None
        yield work, version
    finally:
        mp.undo()


def test_declared_types_are_in_the_published_profile(trained: tuple[Path, str]) -> None:
    work, version = trained
    meta = LocalModelStore(work / "store").read_metadata(MODEL, version)
    profile = parse_profile(meta.reference_profile, meta.feature_names)
    assert profile is not None
    kinds = {n: (fp.kind, fp.typed_by) for n, fp in profile.features.items()}
    assert kinds == {
        "amount": ("numeric", "guessed"),
        "count": ("numeric", "declared"),
        "merchant": ("categorical", "declared"),
    }


def _serve(log: ServedLog, monitor: ModelMonitor | None, version: str, x: np.ndarray) -> tuple[str, str]:
    """Rows into the served-data log (and serving's counters, given a monitor); the window they were logged in."""
    start = datetime.now(UTC)
    proba = np.column_stack([np.full(len(x), 0.5), np.full(len(x), 0.5)])
    for lo in range(0, len(x), 50):
        log.offer(MODEL, version, FEATURES, x[lo : lo + 50], proba[lo : lo + 50, 1], None)
        if monitor is not None:
            monitor.observe(x[lo : lo + 50], proba[lo : lo + 50])
    assert log.flush() == len(x)
    time.sleep(0.002)  # the next window starts strictly after this one's last row (microsecond timestamps)
    return start.isoformat(), datetime.now(UTC).isoformat()


def test_reports_over_the_log_and_the_metrics_page_agree_and_a_served_baseline_is_a_reference(
    trained: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    work, version = trained
    monkeypatch.setattr("jobs.__main__.configure_logging", lambda *a, **k: None)
    store = LocalModelStore(work / "store")
    profile = parse_profile(store.read_metadata(MODEL, version).reference_profile, FEATURES)
    rng = np.random.default_rng(1)
    log = ServedLog(str(tmp_path / "offline"), flush_seconds=3600)
    baseline = _serve(log, None, version, rows(rng, 3000).to_numpy())
    unshifted = _serve(log, None, version, rows(rng, 3000).to_numpy())
    shifted_rows = rows(rng, 3000).to_numpy()
    shifted_rows[:, 0] *= 3  # amounts tripled: past the training max too
    shifted_rows[rng.uniform(size=3000) < 0.2, 1] = np.nan  # 20% missing counts (training had none)
    shifted_rows[:150, 2] = 99.0  # a merchant never seen, in 5% of rows
    monitor = ModelMonitor(MODEL, version, FEATURES, profile, flush_seconds=3600)
    shifted = _serve(log, monitor, version, shifted_rows)
    monitor.flush()
    page = tmp_path / "metrics.txt"
    page.write_bytes(generate_latest(REGISTRY))

    store_args = ("--store", str(work / "store"), "drift-report", "--model", MODEL)
    by_log = run(capsys, *store_args, "--served-log", str(tmp_path / "offline"), "--between", *shifted)
    by_page = run(capsys, *store_args, "--metrics-url", page.as_uri(), "--out", str(tmp_path / "page"))
    assert by_log["windows"]["between"]["rows"] == by_page["windows"]["total"]["rows"] == 3000
    log_out = run(
        capsys,
        *store_args,
        "--served-log",
        str(tmp_path / "offline"),
        "--between",
        *shifted,
        "--out",
        str(tmp_path / "log"),
    )
    records = {
        side: {r["feature"]: r for r in pq.read_table(out["reports"]["parquet"]).to_pylist()}
        for side, out in (("log", log_out), ("page", by_page))
    }
    for feature in FEATURES:
        schema = {k: v for k, v in records["log"][feature].items() if k.startswith("schema_")}
        assert schema == {k: v for k, v in records["page"][feature].items() if k.startswith("schema_")}, feature
    assert records["log"]["count"]["schema_missing"] == int(np.isnan(shifted_rows[:, 1]).sum())
    assert records["log"]["merchant"]["schema_unknown_category"] == 150
    assert records["log"]["amount"]["schema_above_max"] > 0
    assert {"amount", "count", "merchant"} <= set(by_log["windows"]["between"]["drifted"])
    assert "missing_pvalue" in records["log"]["count"]["over"]

    # A baseline window of served traffic as the reference.
    log_args = ("--served-log", str(tmp_path / "offline"), "--reference-window", *baseline)
    calm = run(capsys, *store_args, *log_args, "--between", *unshifted)
    assert calm["reference_name"].startswith("served traffic") and calm["windows"]["between"]["drifted"] == []
    moved = run(capsys, *store_args, *log_args, "--between", *shifted, "--out", str(tmp_path / "base"))
    assert set(moved["windows"]["between"]["drifted"]) == {"amount", "count", "merchant"}
    html_page = Path(moved["reports"]["html"]).read_text()
    _check_html(html_page, profile)


def _check_html(page: str, profile: Any) -> None:
    assert "<script" not in page and "src=" not in page and "href=" not in page  # self-contained
    assert "Reference: <b>served traffic" in page
    assert "<h3>Missing values</h3>" in page and "<h3>Schema skew</h3>" in page
    assert "<td>categorical (declared)</td>" in page and "<td>numeric (guessed)</td>" in page
    charts = re.findall(r"<svg.*?</svg>", page)
    assert len(charts) == len(FEATURES) + 1  # and the score
    amount = next(c for c in charts if "aria-label='amount'" in c)
    assert "class='y-axis'" in amount and "class='x-axis'" in amount and "% of rows" in amount
    edges = profile.features["amount"].edges
    assert f"&lt; {edges[0]:.4g}" in amount and f"&gt;= {edges[-1]:.4g}" in amount  # bins named by their edges
    assert amount.count("class='reference'") == amount.count("class='served'") == len(edges) + 2  # + missing
    assert "reference: served traffic" in amount and "served: window between" in amount  # the legend
    assert len(re.findall(r"class='served-share'[^>]*>\d+<", amount)) == len(edges) + 2  # every share written
    merchant = next(c for c in charts if "aria-label='merchant'" in c)
    ticks = re.findall(r"class='x-tick'[^>]*>([^<]*)<", merchant)
    assert ticks == [str(m) for m in range(MERCHANTS)] + ["unknown", "missing"]


def test_a_reference_window_from_prometheus_is_the_windows_exact_counts_at_its_end(
    trained: tuple[Path, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--reference-window with --prometheus-url asks for the window [START, END) as one window ending at END."""
    work, version = trained
    monkeypatch.setattr("jobs.__main__.configure_logging", lambda *a, **k: None)
    profile = parse_profile(LocalModelStore(work / "store").read_metadata(MODEL, version).reference_profile, FEATURES)
    assert profile is not None
    asked: list[tuple[str, float | None]] = []

    def fake(base: str, model: str, v: str, window: str, end: float | None = None) -> Served:
        asked.append((window, end))
        return from_rows(profile, rows(np.random.default_rng(len(asked)), 2000).to_numpy(), None)

    monkeypatch.setattr("jobs.monitoring.from_prometheus", fake)
    out = run(
        capsys, "--store", str(work / "store"), "drift-report", "--model", MODEL, "--prometheus-url", "http://prom",
        "--reference-window", "2026-12-01T00:00:00", "2026-12-02T06:00:00", "--window", "1h",
    )  # fmt: skip
    start = datetime(2026, 12, 1, tzinfo=UTC)
    assert asked[0] == ("108000s", (start + timedelta(hours=30)).timestamp()) and asked[1] == ("1h", None)
    assert out["reference_name"].startswith("served traffic 2026-12-01T00:00:00+00:00 to 2026-12-02T06:00:00+00:00")
    assert out["windows"]["1h"]["drifted"] == []  # the same distribution on both sides
    bad = jobs_main(["--store", str(work / "store"), "drift-report", "--model", MODEL, "--metrics-url", "file:///x",
                     "--reference-window", "today-1d", "today"])  # fmt: skip
    assert bad == 1 and "--reference-window needs --served-log or --prometheus-url" in capsys.readouterr().out
