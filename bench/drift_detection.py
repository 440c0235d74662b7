"""Drift detection per kind of drift, and the false-alarm rate of every rule (issue 26).

    python -m bench.drift_detection [--windows 100] [--rows 5000] [--ref-rows 200000] [--seed 0]

The scenario: 4 standard-normal features (n0-n3), a categorical feature of 4 equally likely categories
(c_few) and one of 30 skewed ones (c_many, declared categorical), each value missing with probability 5% in
the reference and in no-drift windows. Each kind of drift changes one feature of a window (KINDS):

* mean shift (n0 + 0.5 std), scale (n1 x 1.5), missing share 5% -> 30% (n2), missing values gone (n3:
  an upstream default filled in), a new category in 1% of rows (c_few), category mix (c_many: skewed ->
  uniform), missing share 5% -> ~19% on a categorical feature (c_few).

Measured, at the default thresholds (app/monitoring/drift.py):

* detection: the share of ``--windows`` drifted windows of ``--rows`` rows in which the drifted feature is
  flagged, and the share in which any other feature is (a false alarm next to a true one), per kind;
* false alarms: over ``--windows`` no-drift windows, the share of windows each rule flags on any feature
  (psi, js, wasserstein, ks, chi2_pvalue, missing_pvalue, and the absolute missing-share rule this replaces:
  served missing share > 5%), and any rule at all;

each against the training profile (``--ref-rows`` rows) and against a baseline window of served traffic
(``--rows`` rows, ``drift-report --reference-window``). Results: bench/results/drift-detection-*.json.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from app.monitoring.drift import DEFAULT_THRESHOLDS, FeatureDrift, Histograms, compare
from app.monitoring.profile import ReferenceProfile, compute_profile
from app.monitoring.sources import from_rows

ROOT = Path(__file__).resolve().parent.parent
MISSING = 0.05  # the reference's missing rate of every feature
NUMERIC, CATEGORICAL = ["n0", "n1", "n2", "n3"], ["c_few", "c_many"]
NAMES = NUMERIC + CATEGORICAL
MANY = 30  # categories of c_many: more than the type guess takes, so it is declared
ABSOLUTE_MISSING = "missing_share>0.05"  # the alert's old rule: an absolute share, not the reference's

Rows = NDArray[np.float64]
Kind = Callable[[Rows, np.random.Generator], str]  # changes a window in place; returns the feature it drifted


def draw(rng: np.random.Generator, rows: int, missing: float = MISSING) -> Rows:
    """Rows of the scenario; each value missing with probability ``missing``."""
    p_many = np.arange(1, MANY + 1, dtype=float)[::-1]
    x = np.column_stack(
        [
            rng.normal(size=(rows, len(NUMERIC))),
            rng.integers(0, 4, rows),
            rng.choice(MANY, size=rows, p=p_many / p_many.sum()),
        ]
    ).astype(float)
    x[rng.uniform(size=x.shape) < missing] = np.nan
    return x


def profile_of(rng: np.random.Generator, rows: int) -> ReferenceProfile:
    return compute_profile(draw(rng, rows), NAMES, rng.uniform(size=1000), categorical=CATEGORICAL)


def histograms(profile: ReferenceProfile, x: Rows) -> Histograms:
    """Rows counted as serving counts them."""
    return from_rows(profile, x, None).histograms(profile)


def mean_shift(x: Rows, rng: np.random.Generator) -> str:
    x[:, 0] += 0.5
    return "n0"


def scale(x: Rows, rng: np.random.Generator) -> str:
    x[:, 1] *= 1.5
    return "n1"


def missing_up(x: Rows, rng: np.random.Generator) -> str:
    x[rng.uniform(size=len(x)) < 0.3 / 0.95 - 0.05, 2] = np.nan  # 5% -> 30% missing
    return "n2"


def missing_gone(x: Rows, rng: np.random.Generator) -> str:
    gone = np.isnan(x[:, 3])
    x[gone, 3] = rng.normal(size=int(gone.sum()))  # an upstream default filled in
    return "n3"


def new_category(x: Rows, rng: np.random.Generator) -> str:
    x[rng.uniform(size=len(x)) < 0.01, 4] = 9.0  # 1% of rows in a category training never saw
    return "c_few"


def category_mix(x: Rows, rng: np.random.Generator) -> str:
    x[:, 5] = np.where(np.isnan(x[:, 5]), np.nan, rng.integers(0, MANY, len(x)))  # skewed -> uniform
    return "c_many"


def missing_category(x: Rows, rng: np.random.Generator) -> str:
    x[rng.uniform(size=len(x)) < 0.15, 4] = np.nan  # 5% -> ~19% missing on a categorical feature
    return "c_few"


KINDS: list[Kind] = [mean_shift, scale, missing_up, missing_gone, new_category, category_mix, missing_category]
RULES = [*DEFAULT_THRESHOLDS, ABSOLUTE_MISSING]


def rules_fired(result: list[FeatureDrift]) -> set[str]:
    """The rules that flag any feature of a window (the score is not in this scenario)."""
    fired = {k for d in result for k in d.over}
    if any(d.statistics["missing_share"] > MISSING for d in result):
        fired.add(ABSOLUTE_MISSING)
    return fired


def detection(
    profile: ReferenceProfile, reference: Histograms | None, rng: np.random.Generator, windows: int, rows: int
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in KINDS:
        hit = other = 0
        rules: dict[str, int] = {}
        for _ in range(windows):
            x = draw(rng, rows)
            feature = kind(x, rng)
            result = compare(profile, histograms(profile, x), reference=reference)
            (target,) = [d for d in result if d.feature == feature]
            hit += target.drifted
            other += any(d.drifted for d in result if d.feature != feature)
            for k in target.over:
                rules[k] = rules.get(k, 0) + 1
        out[kind.__name__] = {
            "feature": feature,
            "detected": hit / windows,
            "other_feature_flagged": other / windows,
            "rules_on_the_feature": {k: v / windows for k, v in sorted(rules.items())},
        }
    return out


def false_alarms(
    profile: ReferenceProfile, reference: Histograms | None, rng: np.random.Generator, windows: int, rows: int
) -> dict[str, Any]:
    per_rule = dict.fromkeys(RULES, 0)
    any_rule = 0
    worst: dict[str, float] = {}
    for _ in range(windows):
        result = compare(profile, histograms(profile, draw(rng, rows)), reference=reference)
        fired = rules_fired(result) - {ABSOLUTE_MISSING}
        any_rule += bool(fired)
        for k in rules_fired(result):
            per_rule[k] += 1
        for d in result:  # how close the no-drift values come to the thresholds
            for k, v in d.statistics.items():
                if k in DEFAULT_THRESHOLDS:
                    worst[k] = min(worst.get(k, 1.0), v) if k.endswith("pvalue") else max(worst.get(k, 0.0), v)
    return {
        "windows": windows,
        "rate_per_rule": {k: v / windows for k, v in per_rule.items()},
        "rate_any_rule": any_rule / windows,
        "worst_no_drift_value": worst,
    }


def run(windows: int, rows: int, ref_rows: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    profile = profile_of(rng, ref_rows)
    baseline = histograms(profile, draw(rng, rows))
    result: dict[str, Any] = {
        "windows": windows,
        "rows": rows,
        "ref_rows": ref_rows,
        "reference_missing_rate": MISSING,
        "thresholds": DEFAULT_THRESHOLDS,
    }
    for name, reference in (("training_profile", None), ("served_baseline", baseline)):
        result[name] = {
            "detection": detection(profile, reference, rng, windows, rows),
            "false_alarms": false_alarms(profile, reference, rng, windows, rows),
        }
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--windows", type=int, default=100)
    ap.add_argument("--rows", type=int, default=5000)
    ap.add_argument("--ref-rows", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()
    t = time.perf_counter()
    result = run(args.windows, args.rows, args.ref_rows, args.seed)
    result["seconds"] = time.perf_counter() - t
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"drift-detection-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=1))
    for name in ("training_profile", "served_baseline"):
        print(f"against the {name.replace('_', ' ')}:")
        for kind, d in result[name]["detection"].items():
            other = d["other_feature_flagged"]
            print(f"  {kind:<18} {d['feature']:<7} detected {d['detected']:>6.0%}, another flagged {other:.0%}")
        fa = result[name]["false_alarms"]
        rates = ", ".join(f"{k} {v:.0%}" for k, v in fa["rate_per_rule"].items())
        print(f"  false alarms over {fa['windows']} no-drift windows: any rule {fa['rate_any_rule']:.0%} ({rates})")
    print(f"written {path}")


if __name__ == "__main__":
    main()
