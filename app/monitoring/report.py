"""A drift report in three forms: a readable table, records for a notebook (JSON and Parquet) and a
self-contained HTML page (inline SVG bar charts of reference against served shares; no script, no
stylesheet or font from anywhere else, so it opens offline and from an object store)."""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from app.monitoring.drift import FeatureDrift, reference_counts
from app.monitoring.profile import SCORE_FEATURE, ReferenceProfile

STAT_COLUMNS = ("psi", "js", "wasserstein", "ks", "chi2", "chi2_pvalue")


@dataclass
class WindowReport:
    window: str
    rows: int
    drift: list[FeatureDrift]
    served: Mapping[str, NDArray[np.float64]]
    schema: dict[str, dict[str, float]] = field(default_factory=dict)  # feature -> kind -> count


@dataclass
class DriftReport:
    model: str
    version: str
    thresholds: dict[str, float]
    windows: list[WindowReport]
    profile: ReferenceProfile | None
    generated_at: str

    def records(self) -> list[dict[str, Any]]:
        out = []
        for w in self.windows:
            for d in w.drift:
                rec: dict[str, Any] = {
                    "model": self.model,
                    "version": self.version,
                    "window": w.window,
                    "feature": d.feature,
                    "kind": d.kind,
                    "rows": d.rows,
                    "drifted": d.drifted,
                    "over": ",".join(d.over),
                }
                rec.update({k: d.statistics.get(k) for k in STAT_COLUMNS})
                for kind, count in w.schema.get(d.feature, {}).items():
                    rec[f"schema_{kind}"] = count
                out.append(rec)
        return out

    def summary(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "reference": self.profile is not None,
            "windows": {
                w.window: {"rows": w.rows, "drifted": [d.feature for d in w.drift if d.drifted]} for w in self.windows
            },
        }

    def table(self) -> str:
        if self.profile is None:
            return f"{self.model} {self.version}: no reference profile (published before profiles); no drift computed\n"
        lines = [f"drift of {self.model} {self.version} against its training profile ({self.generated_at})"]
        head = (
            f"{'window':<8} {'feature':<24} {'rows':>9} {'psi':>8} {'js':>7} {'wass':>7} {'ks':>7} {'chi2 p':>8}  flag"
        )
        for w in self.windows:
            lines += ["", head, "-" * len(head)]
            for d in w.drift:
                s = d.statistics

                def fmt(k: str, width: int, s: dict[str, float] = s) -> str:
                    return f"{s[k]:>{width}.4f}" if k in s else " " * (width - 1) + "-"

                flag = "DRIFT (" + ",".join(d.over) + ")" if d.drifted else ""
                lines.append(
                    f"{w.window:<8} {d.feature[:24]:<24} {d.rows:>9} {fmt('psi', 8)} {fmt('js', 7)} "
                    f"{fmt('wasserstein', 7)} {fmt('ks', 7)} {fmt('chi2_pvalue', 8)}  {flag}"
                )
            skew = [f"{f}: {k} {int(c)}" for f, kinds in w.schema.items() for k, c in kinds.items() if c and w.rows]
            if skew:
                lines.append("schema skew: " + "; ".join(skew))
        return "\n".join(lines) + "\n"

    def write(self, out_dir: Path) -> dict[str, str]:
        """JSON, Parquet and HTML files named after the model and version; their paths."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        out_dir.mkdir(parents=True, exist_ok=True)
        stem = out_dir / f"drift-{self.model}-{self.version}"
        records = self.records()
        paths = {"json": f"{stem}.json", "parquet": f"{stem}.parquet", "html": f"{stem}.html"}
        Path(paths["json"]).write_text(
            json.dumps({**self.summary(), "thresholds": self.thresholds, "features": records}, indent=1)
        )
        if records:
            pq.write_table(pa.Table.from_pylist(records), paths["parquet"])
        else:
            pq.write_table(pa.table({"feature": pa.array([], pa.string())}), paths["parquet"])
        Path(paths["html"]).write_text(self.html())
        return paths

    def html(self) -> str:
        esc = html.escape
        parts = [
            "<!doctype html><html><head><meta charset='utf-8'>",
            f"<title>drift {esc(self.model)} {esc(self.version)}</title>",
            "<style>body{font:14px sans-serif;margin:2em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}.d{background:#fdd}"
            ".card{display:inline-block;margin:6px;vertical-align:top}</style></head><body>",
            f"<h1>Drift of {esc(self.model)} <small>{esc(self.version)}</small></h1>",
            f"<p>Generated {esc(self.generated_at)}. Thresholds: {esc(json.dumps(self.thresholds))}.</p>",
        ]
        if self.profile is None:
            parts.append("<p><b>No reference profile</b>: this version was published without one.</p>")
        for w in self.windows:
            parts.append(f"<h2>Window {esc(w.window)}: {w.rows} rows</h2><table><tr><th>feature</th><th>rows</th>")
            parts += [f"<th>{k}</th>" for k in STAT_COLUMNS] + ["<th>drift</th></tr>"]
            for d in w.drift:
                cls = " class='d'" if d.drifted else ""
                cells = "".join(
                    f"<td>{d.statistics[k]:.4g}</td>" if k in d.statistics else "<td>-</td>" for k in STAT_COLUMNS
                )
                parts.append(
                    f"<tr{cls}><td style='text-align:left'>{esc(d.feature)}</td><td>{d.rows}</td>{cells}"
                    f"<td>{esc(','.join(d.over))}</td></tr>"
                )
            parts.append("</table>")
            if self.profile is not None:
                parts += [self._chart(name, w.served[name]) for name in self._profiled(w)]
        parts.append("</body></html>")
        return "".join(parts)

    def _profiled(self, w: WindowReport) -> list[str]:
        assert self.profile is not None
        return [n for n in [*self.profile.features, SCORE_FEATURE] if n in w.served]

    def _chart(self, name: str, served: NDArray[np.float64]) -> str:
        """Reference (grey) and served (blue) shares per bin, as an inline SVG."""
        assert self.profile is not None
        fp = self.profile.score if name == SCORE_FEATURE else self.profile.features[name]
        ref = reference_counts(fp)
        p = ref / max(ref.sum(), 1)
        q = np.asarray(served, dtype=np.float64) / max(float(np.sum(served)), 1.0)
        top = max(float(p.max()), float(q.max()), 1e-9)
        bw, h = 14, 80
        bars = []
        for i, (a, b) in enumerate(zip(p, q, strict=True)):
            x = 4 + i * (2 * bw + 4)
            bars.append(
                f"<rect x='{x}' y='{h - a / top * h:.1f}' width='{bw}' height='{a / top * h:.1f}' fill='#999'/>"
            )
            bars.append(
                f"<rect x='{x + bw}' y='{h - b / top * h:.1f}' width='{bw}' height='{b / top * h:.1f}' fill='#36c'/>"
            )
        width = 8 + len(p) * (2 * bw + 4)
        return (
            f"<div class='card'><div>{html.escape(name)}</div><svg xmlns='http://www.w3.org/2000/svg' "
            f"width='{width}' height='{h + 2}'>{''.join(bars)}</svg></div>"
        )
