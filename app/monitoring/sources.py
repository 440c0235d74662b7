"""Where a drift report gets served bin counts: the summed counters, from Prometheus (one query per
window) or straight from services' ``/metrics`` (cumulative since the pods started), or the sampled
served-data log in the offline store (binned here, with the same rule serving uses)."""

from __future__ import annotations

import json
import re
import time
import urllib.parse
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from numpy.typing import NDArray
from prometheus_client.parser import text_string_to_metric_families

from app.monitoring.drift import Histograms, n_bins
from app.monitoring.profile import SCORE_FEATURE, ReferenceProfile, bin_rows, schema_counts

WINDOW_RE = re.compile(r"^(\d+)([smhdw])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def window_seconds(window: str) -> int:
    m = WINDOW_RE.match(window)
    if m is None:
        raise ValueError(f"window {window!r}: want a number and a unit, e.g. 1h, 30m, 1d")
    return int(m.group(1)) * _SECONDS[m.group(2)]


@dataclass
class Served:
    """Summed served counts of one model version over one window."""

    rows: int = 0
    bins: dict[str, dict[int, float]] = field(default_factory=lambda: defaultdict(dict))
    schema: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))

    def histograms(self, profile: ReferenceProfile) -> Histograms:
        """The bin counts in the reference layout (features never served left out) and the missing counts
        (schema kind ``missing``)."""
        missing = {name: kinds.get("missing", 0.0) for name, kinds in self.schema.items()}
        return Histograms(self.arrays(profile), missing)

    def arrays(self, profile: ReferenceProfile) -> dict[str, NDArray[np.float64]]:
        """feature -> counts in the reference layout; features never served (no bin count and no missing
        value) are left out."""
        out = {}
        for name, fp in [*profile.features.items(), (SCORE_FEATURE, profile.score)]:
            got = self.bins.get(name, {})
            if not got and not self.schema.get(name, {}).get("missing"):
                continue
            size = n_bins(fp)
            if got and max(got) >= size:
                raise ValueError(
                    f"feature {name!r}: served bin {max(got)} but the reference has {size} bins; "
                    "do the counts belong to another version?"
                )
            arr = np.zeros(size)
            for b, v in got.items():
                arr[b] = v
            out[name] = arr
        return out


def from_metrics_text(texts: list[str], model: str, version: str) -> Served:
    """Counters of one or more ``/metrics`` pages (several pods: summed)."""
    served = Served()
    for text in texts:
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                if not s.name.endswith("_total"):
                    continue
                lab = s.labels
                if lab.get("model") != model or lab.get("version") != version:
                    continue
                if s.name == "model_feature_bin_total":
                    b = int(lab["bin"])
                    served.bins[lab["feature"]][b] = served.bins[lab["feature"]].get(b, 0.0) + s.value
                elif s.name == "model_feature_schema_violations_total":
                    d = served.schema[lab["feature"]]
                    d[lab["kind"]] = d.get(lab["kind"], 0.0) + s.value
                elif s.name == "model_monitored_rows_total":
                    served.rows += int(s.value)
    return served


def fetch_text(url: str, timeout: float = 10.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return str(resp.read().decode())


def _prom_query(base: str, query: str, at: float | None = None, timeout: float = 30.0) -> list[dict[str, Any]]:
    params = {"query": query, **({"time": f"{at:.3f}"} if at is not None else {})}
    url = f"{base.rstrip('/')}/api/v1/query?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        body = json.loads(resp.read())
    if body.get("status") != "success":
        raise ValueError(f"Prometheus query failed: {body.get('error', body)}")
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


# Prometheus's default look-back (query.lookback-delta): the newest sample at most this old before the window
# starts is the counter's value at the start.
LOOKBACK_S = 300

Samples = list[tuple[float, float]]


def counted_increase(before: Samples, inside: Samples, born_inside: bool) -> float:
    """A counter's exact increase over a window, from its raw samples: ``before`` at or before the start,
    ``inside`` after it, both in time order.

    Starts from the last sample before the window; a counter Prometheus first saw inside the window starts
    from 0 when it was born there (its target was scraped earlier without it), else from its first sample
    (what it held before is unknown, so the count is a lower bound, never an extrapolation). A drop is a
    reset (the pod or worker restarted): the counter counted from 0 again."""
    if not inside:
        return 0.0
    prev = before[-1][1] if before else 0.0 if born_inside else inside[0][1]
    total = 0.0
    for _, v in inside:
        total += v - prev if v >= prev else v
        prev = v
    return total


def window_increase(
    base: str, series: str, by: tuple[str, ...], end: float, window_s: int
) -> dict[tuple[str, ...], float]:
    """``sum by (by) (increase(series[window]))`` at ``end``, computed exactly from the raw samples.

    Prometheus's ``increase()`` extrapolates from the first and last samples to the window's ends, so a
    window with few scrapes reports up to about 1.4x what was counted (issue 26). Here each series counts its
    exact increase (``counted_increase``) and the series are summed."""
    start = end - window_s
    rng = f"[{window_s + LOOKBACK_S}s]"
    targets: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in _prom_query(base, f"up{rng}", at=end):
        targets[(r["metric"].get("job", ""), r["metric"].get("instance", ""))] = [float(t) for t, _ in r["values"]]
    out: dict[tuple[str, ...], float] = defaultdict(float)
    for r in _prom_query(base, series + rng, at=end):
        lab = r["metric"]
        values = [(float(t), float(v)) for t, v in r["values"]]
        before = [tv for tv in values if tv[0] <= start]
        inside = [tv for tv in values if tv[0] > start]
        scraped = targets.get((lab.get("job", ""), lab.get("instance", "")), [])
        born_inside = bool(inside) and any(t < inside[0][0] for t in scraped)
        out[tuple(lab.get(k, "") for k in by)] += counted_increase(before, inside, born_inside)
    return dict(out)


def from_prometheus(base: str, model: str, version: str, window: str, end: float | None = None) -> Served:
    """The exact increase of the summed counters (all pods and workers) over the ``window`` ending at ``end``
    (default: now)."""
    seconds = window_seconds(window)
    at = time.time() if end is None else end
    sel = f'{{model="{_label(model)}",version="{_label(version)}"}}'
    served = Served()
    for (feature, b), v in window_increase(
        base, "model_feature_bin_total" + sel, ("feature", "bin"), at, seconds
    ).items():
        served.bins[feature][int(b)] = v
    for (feature, kind), v in window_increase(
        base, "model_feature_schema_violations_total" + sel, ("feature", "kind"), at, seconds
    ).items():
        served.schema[feature][kind] = v
    served.rows = round(sum(window_increase(base, "model_monitored_rows_total" + sel, (), at, seconds).values()))
    return served


def from_served_log(
    url: str,
    model: str,
    version: str,
    profile: ReferenceProfile,
    end: datetime,
    window: str | datetime,
    s3_endpoint_url: str | None = None,
) -> Served:
    """Rows of the sampled log in [end - window, end) (``window`` a duration, or the start time), binned
    against the profile, with the schema counts serving keeps (out of range, missing, unknown category)."""
    import pyarrow.compute as pc

    from app.monitoring.servedlog import read_served

    names = list(profile.features)
    start = window if isinstance(window, datetime) else end - timedelta(seconds=window_seconds(window))
    table = read_served(url, model, start, end, [*names, "score", "version"], s3_endpoint_url)
    table = table.filter(pc.equal(table.column("version"), version))
    x = np.column_stack([table.column(n).to_numpy(zero_copy_only=False) for n in names]) if names else np.zeros((0, 0))
    scores = table.column("score").to_numpy(zero_copy_only=False)
    return from_rows(profile, x.astype(np.float64).reshape(table.num_rows, len(names)), scores)


def from_rows(profile: ReferenceProfile, x: NDArray[np.float64], scores: NDArray[np.float64] | None) -> Served:
    """Served rows (rows x the profile's features; ``scores``: the prediction score per row, or None) counted
    as serving counts them: bins, schema counts and rows."""
    served = Served(rows=len(x))
    for name, counts in bin_rows(profile, x, scores).items():
        served.bins[name] = {i: float(c) for i, c in enumerate(counts) if c}
    for name, kinds in schema_counts(profile, x).items():
        served.schema[name] = {k: float(c) for k, c in kinds.items()}
    return served
