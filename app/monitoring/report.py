"""A drift report in three forms: a readable table, records for a notebook (JSON and Parquet) and a
self-contained HTML page (no script, no stylesheet or font from anywhere else, so it opens offline and from
an object store): per window the statistics, a section on missing values (reference and served shares, the
test's p-value), one on schema skew (counts per kind), and a chart per feature of reference against served
shares per bin (app/monitoring/charts.py)."""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from app.monitoring.charts import bar_chart, bin_labels
from app.monitoring.drift import FeatureDrift, Histograms
from app.monitoring.profile import SCHEMA_KINDS, SCORE_FEATURE, ReferenceProfile

STAT_COLUMNS = ("psi", "js", "wasserstein", "ks", "chi2", "chi2_pvalue", "missing_share", "missing_pvalue")


@dataclass
class WindowReport:
    window: str
    rows: int
    drift: list[FeatureDrift]
    served: Histograms
    schema: Mapping[str, Mapping[str, float]] = field(default_factory=dict)  # feature -> kind -> count


@dataclass
class DriftReport:
    model: str
    version: str
    thresholds: dict[str, float]
    windows: list[WindowReport]
    profile: ReferenceProfile | None
    generated_at: str
    reference: Histograms | None = None  # what drift was measured against (None: no profile)
    reference_name: str = "training profile"

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
            "reference_name": self.reference_name,
            "windows": {
                w.window: {"rows": w.rows, "drifted": [d.feature for d in w.drift if d.drifted]} for w in self.windows
            },
        }

    def table(self) -> str:
        if self.profile is None:
            return f"{self.model} {self.version}: no reference profile (published before profiles); no drift computed\n"
        lines = [f"drift of {self.model} {self.version} against the {self.reference_name} ({self.generated_at})"]
        head = (
            f"{'window':<8} {'feature':<24} {'rows':>9} {'psi':>8} {'js':>7} {'wass':>7} {'ks':>7} {'chi2 p':>8} "
            f"{'miss':>6} {'miss p':>8}  flag"
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
                    f"{fmt('wasserstein', 7)} {fmt('ks', 7)} {fmt('chi2_pvalue', 8)} {fmt('missing_share', 6)} "
                    f"{fmt('missing_pvalue', 8)}  {flag}"
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
            "<style>body{font:14px sans-serif;margin:2em}table{border-collapse:collapse;margin:6px 0}"
            "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}.d{background:#fdd}"
            ".card{display:inline-block;margin:6px;vertical-align:top}</style></head><body>",
            f"<h1>Drift of {esc(self.model)} <small>{esc(self.version)}</small></h1>",
            f"<p>Generated {esc(self.generated_at)}. Reference: <b>{esc(self.reference_name)}</b>. "
            f"Thresholds: {esc(json.dumps(self.thresholds))}.</p>",
        ]
        if self.profile is None:
            parts.append("<p><b>No reference profile</b>: this version was published without one.</p>")
        for w in self.windows:
            parts.append(f"<h2>Window {esc(w.window)}: {w.rows} rows</h2><h3>Statistics</h3><table><tr>")
            parts += (
                ["<th>feature</th><th>type</th><th>rows</th>"]
                + [f"<th>{k}</th>" for k in STAT_COLUMNS]
                + ["<th>drift</th></tr>"]
            )
            for d in w.drift:
                cls = " class='d'" if d.drifted else ""
                cells = "".join(
                    f"<td>{d.statistics[k]:.4g}</td>" if k in d.statistics else "<td>-</td>" for k in STAT_COLUMNS
                )
                parts.append(
                    f"<tr{cls}><td style='text-align:left'>{esc(d.feature)}</td><td>{esc(self._type(d.feature))}</td>"
                    f"<td>{d.rows}</td>{cells}"
                    f"<td>{esc(','.join(d.over))}</td></tr>"
                )
            parts.append("</table>")
            if self.profile is not None and self.reference is not None:
                parts.append(self._missing_section(w))
            parts.append(self._schema_section(w))
            if self.profile is not None and self.reference is not None:
                parts.append("<h3>Distributions</h3>")
                parts += [self._chart(name, w) for name in self._profiled(w)]
        parts.append("</body></html>")
        return "".join(parts)

    def _type(self, feature: str) -> str:
        """A feature's type and whether it was declared or guessed (the score: its own)."""
        if self.profile is None or feature == SCORE_FEATURE:
            return "score" if feature == SCORE_FEATURE else ""
        fp = self.profile.features[feature]
        return f"{fp.kind} ({fp.typed_by})"

    def _missing_section(self, w: WindowReport) -> str:
        """Missing values per feature: the reference's share, the window's, the test's p-value."""
        assert self.reference is not None
        rows = []
        for d in w.drift:
            if d.feature == SCORE_FEATURE:
                continue
            ref_rows = self.reference.rows(d.feature)
            ref_share = self.reference.missing.get(d.feature, 0.0) / ref_rows if ref_rows else 0.0
            flagged = "missing_pvalue" in d.over
            rows.append(
                f"<tr{' class=d' if flagged else ''}><td style='text-align:left'>{html.escape(d.feature)}</td>"
                f"<td>{ref_share:.2%}</td><td>{d.statistics['missing_share']:.2%}</td>"
                f"<td>{d.statistics['missing_pvalue']:.3g}</td><td>{'DRIFT' if flagged else ''}</td></tr>"
            )
        return (
            "<h3>Missing values</h3><table class='missing'><tr><th>feature</th><th>reference share</th>"
            "<th>served share</th><th>p-value (two-proportion z-test)</th><th>flag</th></tr>"
            + "".join(rows)
            + "</table>"
        )

    def _schema_section(self, w: WindowReport) -> str:
        """Schema skew: served values outside the training range, unknown categories, missing values."""
        head = "".join(f"<th>{k}</th>" for k in SCHEMA_KINDS)
        rows = []
        for feature, kinds in w.schema.items():
            cells = "".join(
                f"<td>{int(kinds.get(k, 0))}"
                + (f" ({kinds.get(k, 0) / w.rows:.2%})" if w.rows and kinds.get(k, 0) else "")
                + "</td>"
                for k in SCHEMA_KINDS
            )
            rows.append(f"<tr><td style='text-align:left'>{html.escape(feature)}</td>{cells}</tr>")
        if not rows:
            return "<h3>Schema skew</h3><p>No schema counts in this window.</p>"
        return f"<h3>Schema skew</h3><table class='schema'><tr><th>feature</th>{head}</tr>" + "".join(rows) + "</table>"

    def _profiled(self, w: WindowReport) -> list[str]:
        assert self.profile is not None
        return [n for n in [*self.profile.features, SCORE_FEATURE] if n in w.served.bins]

    def _chart(self, name: str, w: WindowReport) -> str:
        """Reference and served shares of every bin and of the missing bin."""
        assert self.profile is not None and self.reference is not None
        fp = self.profile.score if name == SCORE_FEATURE else self.profile.features[name]

        def shares(h: Histograms) -> list[float]:
            counts: NDArray[np.float64] = np.append(
                np.asarray(h.bins[name], dtype=np.float64), h.missing.get(name, 0.0)
            )
            total = max(float(counts.sum()), 1.0)
            return [float(c) / total for c in counts]

        chart = bar_chart(
            name, bin_labels(fp), shares(self.reference), shares(w.served), (self.reference_name, f"window {w.window}")
        )
        return f"<div class='card'>{chart}</div>"
