"""bench.plots: every chart is well-formed SVG, names its run, and draws each group on its own scale."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from bench import plots

SVG = "{http://www.w3.org/2000/svg}"


def test_bars_are_scaled_per_group_and_ours_is_blue() -> None:
    svg = plots.bar_chart(
        "t",
        "run x.json",
        [("a", [("ours", 10.0, "10"), ("peer", 5.0, "5")]), ("b", [("ours", 1.0, "1"), ("peer", 4.0, "4")])],
    )
    rects = [r for r in ET.fromstring(svg).iter(f"{SVG}rect")][1:]  # the first is the background
    widths = [float(r.get("width", 0)) for r in rects]
    assert widths == [plots.BAR_W, plots.BAR_W / 2, plots.BAR_W / 4, plots.BAR_W]
    assert rects[0].get("fill") == rects[2].get("fill") == plots.OURS != rects[1].get("fill")


def test_every_chart_renders_from_its_result_file(tmp_path: Path) -> None:
    point = {"connections": 8, "rps": 100.0, "p50_ms": 1.0, "p99_ms": 2.0, "errors": 0}
    results = {
        "engines": {
            "points": [{**point, "server": "ours, onnxruntime"}, {**point, "server": "logistic, scikit-learn"}]
        },
        "serving": {"points": [{**point, "server": "ours"}, {**point, "server": "MLServer", "rps": 10.0}]},
        "lakehouse": {
            "workload": {"feature_rows": 10, "entity_rows": 5, "memory_limit": None},
            "results": [{"engine": "duckdb", "seconds": 1.0, "peak_rss_mb": 2.0}],
        },
        "drift": {
            "rows": 10,
            "features": 2,
            "ours": {"seconds": 1.0, "peak_rss_mb": 1.0},
            "evidently": {"seconds": 9.0, "peak_rss_mb": 9.0, "version": "0.7"},
        },
        "stream": {
            "throughput": {"ours_events_per_s": 10.0, "naive_events_per_s": 1.0},
            "latency": {"rate": 5.0, "p50_ms": 1.0, "p90_ms": 2.0, "p99_ms": 3.0},
        },
    }
    argv = ["--out", str(tmp_path / "img")]
    for kind, data in results.items():
        f = tmp_path / f"{kind}-20260101T000000.json"
        f.write_text(json.dumps(data))
        argv += [f"--{kind}", str(f)]
    assert plots.main(argv) == 0
    for kind in results:
        root = ET.fromstring((tmp_path / "img" / f"{kind}.svg").read_text())
        texts = " ".join(t.text or "" for t in root.iter(f"{SVG}text"))
        assert f"{kind}-20260101T000000.json" in texts, kind


def test_newest_skips_other_benchmarks_with_the_same_prefix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plots, "RESULTS", tmp_path)
    for name in ("drift-20260101T000000", "drift-serving-20260102T000000", "drift-20250101T000000"):
        (tmp_path / f"{name}.json").write_text("{}")
    assert plots.newest("drift") == tmp_path / "drift-20260101T000000.json"
    assert plots.newest("stream") is None
