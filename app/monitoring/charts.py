"""The drift report's charts: reference against served shares per bin, as inline SVG (no script, no external
asset), with a share axis, the bins named on the other axis (numeric: their edges; categorical: the
categories and "unknown"; both: a "missing" bin), a legend naming the two sides, and each bar's share
written above it."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from itertools import pairwise

from app.monitoring.profile import CategoricalProfile, NumericProfile

MISSING_BIN = "missing"
UNKNOWN_BIN = "unknown"
REFERENCE_FILL, SERVED_FILL = "#999", "#36c"

# Layout, in pixels: bars of one bin side by side, a gap between bins, room for the axes' labels.
BAR, GAP, LEFT, TOP, PLOT_H, LABEL_H = 16, 10, 44, 48, 110, 70


def bin_labels(fp: NumericProfile | CategoricalProfile) -> list[str]:
    """The name of every bin in the served layout, then the missing bin: numeric bins by their edges (a bin
    is [lower, upper); the first and last are open-ended), categories by their value."""
    if isinstance(fp, CategoricalProfile):
        return [f"{c:g}" for c in fp.categories] + [UNKNOWN_BIN, MISSING_BIN]
    e = [f"{v:.4g}" for v in fp.edges]
    if not e:
        return ["all", MISSING_BIN]
    inner = [f"[{a}, {b})" for a, b in pairwise(e)]
    return [f"< {e[0]}", *inner, f">= {e[-1]}", MISSING_BIN]


def _pct(share: float) -> str:
    return f"{share * 100:.1f}%"


def bar_chart(
    title: str, labels: Sequence[str], reference: Sequence[float], served: Sequence[float], names: tuple[str, str]
) -> str:
    """One grouped bar chart: for each label the reference share (grey) and the served share (blue), each
    labelled with its value (percent of rows); y axis in percent of rows, ticks at 0, half and the top."""
    if not (len(labels) == len(reference) == len(served)):
        raise ValueError(f"{len(labels)} labels for {len(reference)} reference and {len(served)} served shares")
    top = max([*reference, *served, 1e-9])
    step = 2 * BAR + GAP
    width = max(LEFT + len(labels) * step + 10, LEFT + 20 + 5 * max(len(names[0]) + 11, len(names[1]) + 8))
    height = TOP + PLOT_H + LABEL_H
    base = TOP + PLOT_H
    right = LEFT + len(labels) * step + 4

    def y(share: float) -> float:
        return base - share / top * PLOT_H

    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' role='img' "
        f"aria-label='{escape(title, quote=True)}' font-family='sans-serif' font-size='9'>",
        f"<text x='{LEFT}' y='11' font-size='11' font-weight='bold'>{escape(title)}</text>",
        # legend, one line per side (a served baseline's name is long)
        f"<rect x='{LEFT}' y='16' width='9' height='9' fill='{REFERENCE_FILL}'/>"
        f"<text x='{LEFT + 12}' y='24'>reference: {escape(names[0])}</text>",
        f"<rect x='{LEFT}' y='29' width='9' height='9' fill='{SERVED_FILL}'/>"
        f"<text x='{LEFT + 12}' y='37'>served: {escape(names[1])}</text>",
        # axes: share of rows (y) and bins (x)
        f"<line class='y-axis' x1='{LEFT}' y1='{TOP}' x2='{LEFT}' y2='{base}' stroke='#333'/>",
        f"<line class='x-axis' x1='{LEFT}' y1='{base}' x2='{right}' y2='{base}' stroke='#333'/>",
        f"<text x='4' y='{TOP + PLOT_H / 2}' transform='rotate(-90 8 {TOP + PLOT_H / 2})' "
        "text-anchor='middle'>% of rows</text>",
    ]
    for tick in (0.0, top / 2, top):
        parts.append(
            f"<text class='y-tick' x='{LEFT - 3}' y='{y(tick) + 3:.1f}' text-anchor='end'>{_pct(tick)}</text>"
            f"<line x1='{LEFT - 2}' y1='{y(tick):.1f}' x2='{LEFT}' y2='{y(tick):.1f}' stroke='#333'/>"
        )
    for i, (label, a, b) in enumerate(zip(labels, reference, served, strict=True)):
        x = LEFT + 4 + i * step
        for j, (share, fill, side) in enumerate(((a, REFERENCE_FILL, "reference"), (b, SERVED_FILL, "served"))):
            bx = x + j * BAR
            parts.append(
                f"<rect class='{side}' x='{bx}' y='{y(share):.1f}' width='{BAR - 1}' height='{base - y(share):.1f}' "
                f"fill='{fill}'><title>{escape(label)}: {side} {_pct(share)}</title></rect>"
                f"<text class='{side}-share' x='{bx + BAR / 2:.1f}' y='{y(share) - 2:.1f}' text-anchor='middle' "
                f"font-size='7'>{share * 100:.0f}</text>"
            )
        cx = x + BAR
        parts.append(
            f"<text class='x-tick' x='{cx}' y='{base + 10}' text-anchor='end' "
            f"transform='rotate(-40 {cx} {base + 10})'>{escape(label)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)
