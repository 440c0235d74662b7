"""Drift statistics between a reference histogram and a served one, vectorized over features.

Everything works on bin counts, never on rows: serving only adds to counts (app/monitoring/capture.py),
the counts of many workers and pods are summed (by Prometheus, or by reading the served-data log), and
this module turns two count vectors per feature into statistics. Features are stacked into one
(features x bins) matrix, padded with empty bins, so one NumPy expression computes a statistic for all
of them; an empty bin in both histograms contributes nothing to any statistic.

The reference is the training profile, or a baseline window of served traffic binned the same way
(``drift-report --reference-window``); either side is a ``Histograms``: bin counts and missing counts.

Missing values are a drift signal of their own (issue 26: a missing share going from 5% to 30% was
invisible):

* a **missing bin** is added to PSI and Jensen-Shannon, so they see the missing share move;
* ``missing_pvalue``: a two-proportion z-test (pooled, two-sided) of the served missing share against the
  reference's, counting the reference's own rows: the rate is judged against the reference's, not an
  absolute share, and a small reference is not taken for exact;
* Wasserstein and KS compare the ordered values only (a missing value has no position), and chi-square the
  categories only (missingness is the z-test's).

Statistics:

* PSI, the textbook sum((q - p) * ln(q / p)) over bin shares, empty shares floored at 1e-4;
* Jensen-Shannon distance (natural log, as scipy.spatial.distance.jensenshannon);
* Wasserstein-1 between the binned distributions, mass placed at each bin's representative value,
  divided by the reference's standard deviation (so 0.1 means "moved a tenth of a std");
* Kolmogorov-Smirnov statistic: the largest gap between the two cumulative shares at a bin edge;
* chi-square (categorical features): the two-sample test of homogeneity (the 2 x bins contingency table of
  reference and served counts, scipy.stats.chi2_contingency without correction), statistic and p-value;
* ``missing_share``: the served share of missing values (reported, not a rule).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

import numpy as np
from numpy.typing import NDArray

from app.monitoring.profile import CategoricalProfile, NumericProfile, ReferenceProfile

PSI_FLOOR = 1e-4  # an empty bin's share in PSI: log(0) is undefined; the usual floor

# Defaults, documented in docs/operations.md ("Drift and skew monitoring"): overridden per model.
# A statistic flags a feature when it is above its threshold (the p-values: below).
# The p-value rules are tests, so on no-drift data each flags a feature in a share alpha of windows: a
# monitor of 20 features with hourly 1h and 1d windows runs ~1,000 tests a day, so alpha 1e-3 would alarm
# about once a day on nothing. At 1e-6, one false alarm in ~3 years; a 5,000-row window still flags a missing
# share moving from 5% to 6.6% (z > 4.9), and a new category seen in 10 rows.
DEFAULT_THRESHOLDS: dict[str, float] = {
    "psi": 0.2,
    "js": 0.1,
    "wasserstein": 0.1,
    "ks": 0.1,
    "chi2_pvalue": 1e-6,
    "missing_pvalue": 1e-6,
}
LOWER_IS_WORSE = frozenset({"chi2_pvalue", "missing_pvalue"})
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
    """Statistic and p-value of the test of homogeneity of the two histograms: the 2 x bins contingency
    table of reference and served counts (the reference's row count matters: a baseline window of served
    traffic is a sample too). Bins empty on both sides (padding) are left out of the table and its degrees of
    freedom; an unknown-category bin the reference never saw is an ordinary column."""
    from scipy import stats

    n_ref = ref.sum(axis=-1, keepdims=True)
    n_cur = cur.sum(axis=-1, keepdims=True)
    total = n_ref + n_cur
    column = ref + cur
    used = column > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        e_ref = np.where(total > 0, column * n_ref / np.where(total > 0, total, 1), 0.0)
        e_cur = column - e_ref
        cells = np.where(e_ref > 0, (ref - e_ref) ** 2 / np.where(e_ref > 0, e_ref, 1), 0.0)
        cells += np.where(e_cur > 0, (cur - e_cur) ** 2 / np.where(e_cur > 0, e_cur, 1), 0.0)
    stat = np.where(used, cells, 0.0).sum(axis=-1)
    dof = used.sum(axis=-1) - 1
    both = (n_ref[..., 0] > 0) & (n_cur[..., 0] > 0) & (dof > 0)
    pvalue = np.where(both, stats.chi2.sf(stat, np.maximum(dof, 1)), 1.0)
    return np.where(both, stat, 0.0), pvalue


def missing_test(
    ref_missing: NDArray[np.float64],
    ref_rows: NDArray[np.float64],
    cur_missing: NDArray[np.float64],
    cur_rows: NDArray[np.float64],
) -> NDArray[np.float64]:
    """Two-sided p-value of the pooled two-proportion z-test: is the served missing share the reference's?
    (The same p-value as the 2 x 2 chi-square test without correction.) 1 when it cannot differ: a side with
    no rows, or a pooled share of 0 or 1 (both sides never, or always, missing)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        pooled = (ref_missing + cur_missing) / (ref_rows + cur_rows)
        se = np.sqrt(pooled * (1 - pooled) * (1 / ref_rows + 1 / cur_rows))
        z = (cur_missing / cur_rows - ref_missing / ref_rows) / se
    ok = (ref_rows > 0) & (cur_rows > 0) & (se > 0) & np.isfinite(z)
    # 2 * normal survival of |z| = erfc(|z| / sqrt 2); math.erfc per feature keeps scipy's import (a second)
    # out of a report on numeric features only.
    two_sided = np.frompyfunc(lambda v: math.erfc(abs(v) / math.sqrt(2.0)), 1, 1)
    out: NDArray[np.float64] = np.where(ok, two_sided(np.where(ok, z, 0.0)).astype(np.float64), 1.0)
    return out


# -- per feature, from a profile ------------------------------------------------

Profiled: TypeAlias = NumericProfile | CategoricalProfile


def reference_counts(fp: Profiled) -> NDArray[np.float64]:
    """A feature's training histogram in the layout serving counts in: numeric, one count per bin;
    categorical, one per category plus the unknown-category bin (0 in the reference)."""
    if isinstance(fp, NumericProfile):
        return np.asarray(fp.counts, dtype=np.float64)
    return np.asarray([*fp.counts, 0], dtype=np.float64)


def n_bins(fp: Profiled) -> int:
    return len(fp.counts) + (1 if isinstance(fp, CategoricalProfile) else 0)


@dataclass(frozen=True)
class Histograms:
    """One side of a comparison: per feature (and SCORE_FEATURE) its bin counts in reference_counts'
    layout, and its missing values (in no bin). A feature without bins was not served."""

    bins: Mapping[str, NDArray[np.float64] | NDArray[np.int64]]
    missing: Mapping[str, float] = field(default_factory=dict)

    def rows(self, name: str) -> float:
        return float(np.sum(self.bins[name])) + float(self.missing.get(name, 0.0))


def training_histograms(profile: ReferenceProfile) -> Histograms:
    """The training profile as a reference: its bins and missing counts."""
    from app.monitoring.profile import SCORE_FEATURE

    items: list[tuple[str, Profiled]] = [*profile.features.items(), (SCORE_FEATURE, profile.score)]
    return Histograms({n: reference_counts(fp) for n, fp in items}, {n: float(fp.missing) for n, fp in items})


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
    served: Histograms,
    thresholds: Mapping[str, float] | None = None,
    reference: Histograms | None = None,
) -> list[FeatureDrift]:
    """Drift of every profiled feature and of the score: ``served`` against ``reference`` (default: the
    training profile, training_histograms), both binned on the profile's bins. Features ``served`` has no
    bins for are skipped. ValueError when a histogram has the wrong number of bins."""
    limits = {**DEFAULT_THRESHOLDS, **(thresholds or {})}
    unknown = set(limits) - set(DEFAULT_THRESHOLDS)
    if unknown:
        raise ValueError(f"unknown drift statistic(s) {sorted(unknown)}; known: {sorted(DEFAULT_THRESHOLDS)}")
    from app.monitoring.profile import SCORE_FEATURE

    base = reference if reference is not None else training_histograms(profile)
    items: list[tuple[str, Profiled]] = [*profile.features.items(), (SCORE_FEATURE, profile.score)]
    items = [(n, fp) for n, fp in items if n in served.bins]
    for name, fp in items:
        for side, h in (("served", served), ("reference", base)):
            if name not in h.bins or len(h.bins[name]) != n_bins(fp):
                got = len(h.bins[name]) if name in h.bins else 0
                raise ValueError(f"feature {name!r}: {got} {side} bins, the profile has {n_bins(fp)}")
    out: list[FeatureDrift] = []
    for kind in ("numeric", "categorical"):
        group = [(n, fp) for n, fp in items if fp.kind == kind]
        if not group:
            continue
        names = [n for n, _ in group]
        ref = _pad([np.asarray(base.bins[n], dtype=np.float64) for n in names])
        cur = _pad([np.asarray(served.bins[n], dtype=np.float64) for n in names])
        ref_missing = np.asarray([float(base.missing.get(n, 0.0)) for n in names])
        cur_missing = np.asarray([float(served.missing.get(n, 0.0)) for n in names])
        # PSI and JS on the bins plus a missing bin: a change in the missing share moves them too.
        ref_m, cur_m = np.column_stack([ref, ref_missing]), np.column_stack([cur, cur_missing])
        ref_rows, cur_rows = ref_m.sum(axis=-1), cur_m.sum(axis=-1)
        stats: dict[str, NDArray[np.float64]] = {"psi": psi(ref_m, cur_m), "js": js_distance(ref_m, cur_m)}
        if kind == "numeric":
            pos = _pad([fp.representatives() for _, fp in group if isinstance(fp, NumericProfile)], fill_last=True)
            stats["wasserstein"] = wasserstein_normalized(ref, cur, pos)
            stats["ks"] = ks_statistic(ref, cur)
        else:
            stats["chi2"], stats["chi2_pvalue"] = chi_square(ref, cur)
        stats["missing_share"] = np.where(cur_rows > 0, cur_missing / np.where(cur_rows > 0, cur_rows, 1), 0.0)
        stats["missing_pvalue"] = missing_test(ref_missing, ref_rows, cur_missing, cur_rows)
        out += _rows(group, cur_rows, stats, limits, kind)
    order = {n: i for i, (n, _) in enumerate(items)}
    return sorted(out, key=lambda d: order[d.feature])


def _rows(
    items: Sequence[tuple[str, Profiled]],
    rows: NDArray[np.float64],
    stats: Mapping[str, NDArray[np.float64]],
    limits: Mapping[str, float],
    kind: str,
) -> list[FeatureDrift]:
    """One FeatureDrift per feature; a window of fewer than MIN_ROWS served rows (missing ones included) is
    reported, never flagged."""
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
