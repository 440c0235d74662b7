"""Drift statistics between a reference histogram and a served one, vectorized over features.

Everything works on bin counts, never on rows: serving only adds to counts (app/monitoring/capture.py),
the counts of many workers and pods are summed (by Prometheus, or by reading the served-data log), and
this module turns two count vectors per feature into statistics. Features are stacked into one
(features x bins) matrix, padded with empty bins, so one NumPy expression computes a statistic for all
of them; an empty bin in both histograms contributes nothing to any statistic.

* PSI, the textbook sum((q - p) * ln(q / p)) over bin shares, empty shares floored at 1e-4;
* Jensen-Shannon distance (natural log, as scipy.spatial.distance.jensenshannon);
* Wasserstein-1 between the binned distributions, mass placed at each bin's representative value,
  divided by the reference's standard deviation (so 0.1 means "moved a tenth of a std");
* Kolmogorov-Smirnov statistic: the largest gap between the two cumulative shares at a bin edge;
* chi-square (categorical features): statistic and p-value of served counts against reference shares.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from app.monitoring.profile import CategoricalProfile, NumericProfile, ReferenceProfile

PSI_FLOOR = 1e-4  # an empty bin's share in PSI: log(0) is undefined; the usual floor

# Defaults, documented in docs/operations.md ("Drift and skew monitoring"): overridden per model.
# A statistic flags a feature when it is above its threshold (chi2_pvalue: below).
DEFAULT_THRESHOLDS: dict[str, float] = {
    "psi": 0.2,
    "js": 0.1,
    "wasserstein": 0.1,
    "ks": 0.1,
    "chi2_pvalue": 1e-3,
}
LOWER_IS_WORSE = frozenset({"chi2_pvalue"})
MIN_ROWS = 100  # below this many served rows a window is reported, never flagged


def shares(counts: NDArray[np.float64]) -> NDArray[np.float64]:
    total = counts.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, counts / np.where(total > 0, total, 1), np.nan)


def psi(ref: NDArray[np.float64], cur: NDArray[np.float64]) -> NDArray[np.float64]:
    p = np.maximum(shares(ref), PSI_FLOOR)
    q = np.maximum(shares(cur), PSI_FLOOR)
    out: NDArray[np.float64] = np.sum((q - p) * np.log(q / p), axis=-1)
    return out


def js_distance(ref: NDArray[np.float64], cur: NDArray[np.float64]) -> NDArray[np.float64]:
    p, q = shares(ref), shares(cur)
    m = (p + q) / 2.0

    def kl(a: NDArray[np.float64]) -> NDArray[np.float64]:
        with np.errstate(invalid="ignore", divide="ignore"):
            terms = np.where(a > 0, a * np.log(np.where(a > 0, a, 1) / np.where(m > 0, m, 1)), 0.0)
        return terms.sum(axis=-1)  # type: ignore[no-any-return]

    out: NDArray[np.float64] = np.sqrt(np.maximum((kl(p) + kl(q)) / 2.0, 0.0))
    return out


def ks_statistic(ref: NDArray[np.float64], cur: NDArray[np.float64]) -> NDArray[np.float64]:
    gap = np.abs(np.cumsum(shares(ref), axis=-1) - np.cumsum(shares(cur), axis=-1))
    out: NDArray[np.float64] = np.max(gap, axis=-1)
    return out


def binned_std(ref: NDArray[np.float64], positions: NDArray[np.float64]) -> NDArray[np.float64]:
    p = shares(ref)
    mean = np.sum(p * positions, axis=-1, keepdims=True)
    out: NDArray[np.float64] = np.sqrt(np.sum(p * (positions - mean) ** 2, axis=-1))
    return out


def wasserstein_normalized(
    ref: NDArray[np.float64], cur: NDArray[np.float64], positions: NDArray[np.float64]
) -> NDArray[np.float64]:
    """W1 between the two binned distributions (positions increasing along the last axis), over the
    reference's binned standard deviation (1 where that is 0)."""
    gaps = np.diff(positions, axis=-1)
    cdf_gap = np.abs(np.cumsum(shares(ref), axis=-1) - np.cumsum(shares(cur), axis=-1))[..., :-1]
    w = np.sum(cdf_gap * gaps, axis=-1)
    std = binned_std(ref, positions)
    out: NDArray[np.float64] = w / np.where(std > 0, std, 1.0)
    return out


def chi_square(ref: NDArray[np.float64], cur: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Statistic and p-value of served counts against the reference's shares; the bins a reference
    row never fell in (padding, or the unknown-category bin) are floored like PSI's."""
    from scipy import stats

    p = np.maximum(shares(ref), PSI_FLOOR)
    p = p / p.sum(axis=-1, keepdims=True)
    n = cur.sum(axis=-1, keepdims=True)
    expected = p * n
    used = (ref > 0) | (cur > 0)
    stat = np.sum(np.where(used, (cur - expected) ** 2 / expected, 0.0), axis=-1)
    dof = np.maximum(used.sum(axis=-1) - 1, 1)
    return stat, stats.chi2.sf(stat, dof)


# -- per feature, from a profile ------------------------------------------------


def reference_counts(fp: NumericProfile | CategoricalProfile) -> NDArray[np.float64]:
    """A feature's reference histogram in the layout serving counts in: numeric, one count per bin;
    categorical, one per category plus the unknown-category bin (0 in the reference)."""
    if isinstance(fp, NumericProfile):
        return np.asarray(fp.counts, dtype=np.float64)
    return np.asarray([*fp.counts, 0], dtype=np.float64)


def n_bins(fp: NumericProfile | CategoricalProfile) -> int:
    return len(fp.counts) + (1 if isinstance(fp, CategoricalProfile) else 0)


@dataclass
class FeatureDrift:
    feature: str
    kind: str
    rows: int
    statistics: dict[str, float]
    drifted: bool
    over: list[str] = field(default_factory=list)  # the statistics past their thresholds


def _pad(rows: Sequence[NDArray[np.float64]], fill_last: bool = False) -> NDArray[np.float64]:
    width = max(len(r) for r in rows)
    out = np.zeros((len(rows), width))
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
        if fill_last and len(r) < width:
            out[i, len(r) :] = r[-1]  # padded positions repeat the last one: zero distance to move over
    return out


def compare(
    profile: ReferenceProfile,
    served: Mapping[str, NDArray[np.float64] | NDArray[np.int64]],
    thresholds: Mapping[str, float] | None = None,
) -> list[FeatureDrift]:
    """Drift of every profiled feature and of the score against the served bin counts (``served``: name
    -> counts in reference_counts' layout; the score under its SCORE_FEATURE name). Features missing from
    ``served`` are skipped. ValueError when a histogram has the wrong number of bins."""
    limits = {**DEFAULT_THRESHOLDS, **(thresholds or {})}
    unknown = set(limits) - set(DEFAULT_THRESHOLDS)
    if unknown:
        raise ValueError(f"unknown drift statistic(s) {sorted(unknown)}; known: {sorted(DEFAULT_THRESHOLDS)}")
    from app.monitoring.profile import SCORE_FEATURE

    items: list[tuple[str, NumericProfile | CategoricalProfile]] = [
        *profile.features.items(),
        (SCORE_FEATURE, profile.score),
    ]
    items = [(n, fp) for n, fp in items if n in served]
    for name, fp in items:
        if len(served[name]) != n_bins(fp):
            raise ValueError(f"feature {name!r}: {len(served[name])} served bins, the reference has {n_bins(fp)}")
    numeric = [(n, fp) for n, fp in items if isinstance(fp, NumericProfile)]
    categorical = [(n, fp) for n, fp in items if isinstance(fp, CategoricalProfile)]
    out: list[FeatureDrift] = []
    if numeric:
        ref = _pad([reference_counts(fp) for _, fp in numeric])
        cur = _pad([np.asarray(served[n], dtype=np.float64) for n, _ in numeric])
        pos = _pad([fp.representatives() for _, fp in numeric], fill_last=True)
        stats = {
            "psi": psi(ref, cur),
            "js": js_distance(ref, cur),
            "wasserstein": wasserstein_normalized(ref, cur, pos),
            "ks": ks_statistic(ref, cur),
        }
        out += _rows(numeric, cur, stats, limits, "numeric")
    if categorical:
        ref = _pad([reference_counts(fp) for _, fp in categorical])
        cur = _pad([np.asarray(served[n], dtype=np.float64) for n, _ in categorical])
        chi2, pvalue = chi_square(ref, cur)
        stats = {"psi": psi(ref, cur), "js": js_distance(ref, cur), "chi2": chi2, "chi2_pvalue": pvalue}
        out += _rows(categorical, cur, stats, limits, "categorical")
    order = {n: i for i, (n, _) in enumerate(items)}
    return sorted(out, key=lambda d: order[d.feature])


def _rows(
    items: Sequence[tuple[str, NumericProfile | CategoricalProfile]],
    cur: NDArray[np.float64],
    stats: Mapping[str, NDArray[np.float64]],
    limits: Mapping[str, float],
    kind: str,
) -> list[FeatureDrift]:
    rows = cur.sum(axis=-1)
    out = []
    for i, (name, _) in enumerate(items):
        values = {k: float(v[i]) for k, v in stats.items()}
        over = []
        if rows[i] >= MIN_ROWS:
            for k, v in values.items():
                if k in limits and (v < limits[k] if k in LOWER_IS_WORSE else v > limits[k]):
                    over.append(k)
        out.append(FeatureDrift(name, kind, int(rows[i]), values, bool(over), over))
    return out
