"""Benchmark results as pictures: self-contained SVG bar charts in docs/img/, drawn from bench/results/.

    python -m bench.plots                      # the newest result of each benchmark
    python -m bench.plots --engines bench/results/engines-20261130T015516.json   # a given run

Each chart names the run it was drawn from; docs/benchmarks.md embeds them beside the tables they show.
No plotting library: a few rectangles and labels, written by hand, readable in any browser or on GitHub.
"""

from __future__ import annotations

import argparse
import html
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
OUT = ROOT / "docs" / "img"

Bar = tuple[str, float, str]  # series label, value, value as printed
Group = tuple[str, list[Bar]]  # group label, its bars

OURS, FLOOR = "#2b6cb0", "#a0aec0"  # ours is always blue, a bound grey; the others take the palette in order
PALETTE = ["#c05621", "#6b46c1", "#2f855a", "#b7791f", "#9c4221", "#4a5568"]
LABEL_W, BAR_W, VALUE_W, ROW_H, GAP = 300, 380, 200, 18, 12
ENGINE_NAMES = {
    "duckdb": "ours, DuckDB",
    "duckdb-asof-ref": "DuckDB ASOF join (reference)",
    "numpy": "numpy (in memory)",
    "spark": "Spark, local",
}


def _colors(series: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    others = iter(PALETTE * 2)
    for s in series:
        if s.startswith("ours") or "onnxruntime" in s:
            out[s] = OURS
        elif s.startswith("HTTP floor"):
            out[s] = FLOOR
        else:
            out[s] = next(others)
    return out


def bar_chart(title: str, subtitle: str, groups: list[Group]) -> str:
    """Horizontal bars, one row per series within each group, each group on its own linear scale; ours in blue."""
    series = list(dict.fromkeys(label for _, bars in groups for label, _, _ in bars))
    color = _colors(series)
    y = 52
    parts: list[str] = []
    for glabel, bars in groups:
        parts.append(f'<text x="8" y="{y + 12}" font-weight="bold">{html.escape(glabel)}</text>')
        top = max((v for _, v, _ in bars), default=1.0) or 1.0  # each group its own scale: units differ
        y += ROW_H
        for label, value, shown in bars:
            w = max(1.0, BAR_W * value / top)
            parts.append(f'<text x="20" y="{y + 13}">{html.escape(label)}</text>')
            rect = f'x="{LABEL_W}" y="{y + 2}" width="{w:.1f}" height="{ROW_H - 4}" fill="{color[label]}"'
            parts.append(f"<rect {rect}/>")
            parts.append(f'<text x="{LABEL_W + w + 6:.1f}" y="{y + 13}">{html.escape(shown)}</text>')
            y += ROW_H
        y += GAP
    width = LABEL_W + BAR_W + VALUE_W
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{y}" viewBox="0 0 {width} {y}" '
        'font-family="sans-serif" font-size="12">'
        f'<rect width="{width}" height="{y}" fill="white"/>'
        f'<text x="8" y="20" font-size="15" font-weight="bold">{html.escape(title)}</text>'
        f'<text x="8" y="38" fill="#4a5568">{html.escape(subtitle)}</text>' + "".join(parts) + "</svg>\n"
    )


def _rps_by_connections(points: list[dict[str, Any]], servers: list[str] | None = None) -> list[Group]:
    names = servers or list(dict.fromkeys(p["server"] for p in points))
    groups: list[Group] = []
    for c in sorted({p["connections"] for p in points}):
        bars = [
            (p["server"], float(p["rps"]), f"{p['rps']:,.0f} rps, p50 {p['p50_ms']:.2f} ms")
            for name in names
            for p in points
            if p["server"] == name and p["connections"] == c
        ]
        groups.append((f"{c} connection{'s' if c > 1 else ''}", bars))
    return groups


def engines(data: dict[str, Any], source: str) -> tuple[str, str]:
    points = data["points"]
    pipelines = [p for p in points if p["server"].startswith(("logistic", "gradient-boosting"))]
    reference = [p for p in points if p not in pipelines]
    svg = bar_chart(
        "Prediction service, reference forest: requests/s (more is better)",
        f"wrk, single-row v1 JSON, gunicorn 2 workers each; {source}",
        [
            *_rps_by_connections(reference),
            ("pipelines, 8 connections", [(p["server"], float(p["rps"]), f"{p['rps']:,.0f} rps") for p in pipelines]),
        ],
    )
    return "engines", svg


def serving(data: dict[str, Any], source: str) -> tuple[str, str]:
    svg = bar_chart(
        "Prediction service vs MLServer: requests/s (more is better)",
        f"wrk, reference forest, single-row requests; {source}",
        _rps_by_connections(data["points"]),
    )
    return "serving", svg


def lakehouse(data: dict[str, Any], source: str) -> tuple[str, str]:
    w = data["workload"]
    limit = w.get("memory_limit") or "none"
    groups = _time_and_memory([(_engine(r), r) for r in data["results"]])
    title = f"Point-in-time join, {w['feature_rows']:,} feature rows x {w['entity_rows']:,} entity rows"
    return "lakehouse", bar_chart(title, f"DuckDB memory limit: {limit}; {source}", groups)


def _time_and_memory(runs: list[tuple[str, dict[str, Any]]]) -> list[Group]:
    """Two groups, seconds and peak RSS, from runs that report ``seconds`` and ``peak_rss_mb``."""
    return [
        ("seconds (less is better)", [(n, float(r["seconds"]), f"{r['seconds']:,.1f} s") for n, r in runs]),
        (
            "peak RSS, MB (less is better)",
            [(n, float(r["peak_rss_mb"]), f"{r['peak_rss_mb']:,.0f} MB") for n, r in runs],
        ),
    ]


def _engine(row: dict[str, Any]) -> str:
    name = str(row["engine"])
    return ENGINE_NAMES.get(name, name)


def drift(data: dict[str, Any], source: str) -> tuple[str, str]:
    ev = data["evidently"]
    groups = _time_and_memory([("ours", data["ours"]), ("Evidently", ev)])
    title = f"Drift report, {data['rows']:,} served rows x {data['features']} features"
    return "drift", bar_chart(title, f"Evidently {ev.get('version', '')}; {source}", groups)


def stream(data: dict[str, Any], source: str) -> tuple[str, str]:
    t, lat = data["throughput"], data["latency"]
    groups: list[Group] = [
        (
            "events/s, one process (more is better)",
            [
                ("ours", t["ours_events_per_s"], f"{t['ours_events_per_s']:,.0f} events/s"),
                ("naive consumer", t["naive_events_per_s"], f"{t['naive_events_per_s']:,.0f} events/s"),
            ],
        ),
        (
            f"latency at {lat['rate']:,.0f} events/s, ms (less is better)",
            [(q, float(lat[f"{q}_ms"]), f"{lat[f'{q}_ms']:.0f} ms") for q in ("p50", "p90", "p99")],
        ),
    ]
    return "stream", bar_chart("Stream scorer", source, groups)


CHARTS: dict[str, Callable[[dict[str, Any], str], tuple[str, str]]] = {
    "engines": engines,
    "serving": serving,
    "lakehouse": lakehouse,
    "drift": drift,
    "stream": stream,
}


def newest(kind: str) -> Path | None:
    # drift-serving-* is another benchmark than drift-*: the timestamp must follow the kind directly
    found = sorted(p for p in RESULTS.glob(f"{kind}-*.json") if p.stem[len(kind) + 1 :][:1].isdigit())
    return found[-1] if found else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for kind in CHARTS:
        ap.add_argument(f"--{kind}", type=Path, help=f"a {kind} result (default: the newest in bench/results)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for kind, draw in CHARTS.items():
        path = getattr(args, kind) or newest(kind)
        if path is None:
            print(f"{kind}: no result in {RESULTS}; run python -m bench.{kind} first", file=sys.stderr)
            continue
        name, svg = draw(json.loads(path.read_text()), f"run {path.name}")
        out = args.out / f"{name}.svg"
        out.write_text(svg)
        print(f"{kind}: {path} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
