"""The reference profile of a model version: what its training data and its held-out scores looked like.

Computed once by the train job and published in the version's metadata (``reference_profile``), it is
what serving bins its inputs against and what every drift statistic compares with:

* numeric features: fixed bins from training quantiles (the inner edges; the first and last bins are
  open-ended, so a served value always lands in a bin), counts per bin, row count, missing count, min,
  max, mean and standard deviation;
* categorical features: the categories and their counts; a served value outside them is an unknown
  category. A feature's type is the one declared (``--categorical`` / ``--numeric`` of the train and
  publish jobs); an undeclared feature is guessed: categorical when its training values are at most 20
  distinct integers. Each feature profile records which (``typed_by``: ``declared`` or ``guessed``);
* the prediction score (binary: probability of the second class; multiclass: the top probability),
  binned on the held-out split's quantiles.

A version without a profile is served and reported as "no reference". A profile that does not parse or
does not match the model's features is refused at load (ProfileError), like any other bad artifact.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

DEFAULT_BINS = 10  # deciles: PSI's usual resolution; 5,000 served rows put ~500 in each bin
MAX_CATEGORIES = 20  # undeclared integer-valued features with at most this many values are profiled as categories
SCORE_FEATURE = "__score__"  # the prediction's series name in the bin metrics
# What serving counts besides the bins (app/monitoring/capture.py) and the served-log source counts alike:
# numeric values outside the training range, missing values, values outside a categorical's categories.
SCHEMA_KINDS = ("below_min", "above_max", "missing", "unknown_category")
TypedBy = Literal["declared", "guessed"]


class ProfileError(ValueError):
    """A reference profile that cannot be used; the message names the problem."""


class NumericProfile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["numeric"] = "numeric"
    edges: list[float] = Field(description="inner bin edges, strictly increasing; len(counts) - 1 of them")
    counts: list[int]
    rows: int
    missing: int
    min: float
    max: float
    mean: float
    std: float
    typed_by: TypedBy = "guessed"  # profiles written before declared types: guessed

    @model_validator(mode="after")
    def _consistent(self) -> NumericProfile:
        if len(self.counts) != len(self.edges) + 1:
            raise ValueError(f"{len(self.counts)} bin counts for {len(self.edges)} inner edges (want edges + 1)")
        if any(not math.isfinite(e) for e in self.edges) or any(
            b <= a for a, b in zip(self.edges, self.edges[1:], strict=False)
        ):
            raise ValueError("bin edges must be finite and strictly increasing")
        if any(c < 0 for c in self.counts) or sum(self.counts) + self.missing != self.rows:
            raise ValueError(f"bin counts ({sum(self.counts)}) + missing ({self.missing}) != rows ({self.rows})")
        if not (self.min <= self.max):
            raise ValueError(f"min {self.min} > max {self.max}")
        return self

    def representatives(self) -> NDArray[np.float64]:
        """One value per bin (its midpoint; the open end bins close at the training min and max): the
        positions the Wasserstein distance moves mass between."""
        lo = np.concatenate([[min(self.min, self.edges[0] if self.edges else self.min)], self.edges])
        hi = np.concatenate([self.edges, [max(self.max, self.edges[-1] if self.edges else self.max)]])
        mid: NDArray[np.float64] = (lo + hi) / 2.0
        return mid


class CategoricalProfile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["categorical"] = "categorical"
    categories: list[float]
    counts: list[int]
    rows: int
    missing: int
    typed_by: TypedBy = "guessed"

    @model_validator(mode="after")
    def _consistent(self) -> CategoricalProfile:
        if not self.categories or len(self.counts) != len(self.categories):
            raise ValueError(f"{len(self.counts)} counts for {len(self.categories)} categories")
        if sorted(set(self.categories)) != self.categories:
            raise ValueError("categories must be sorted and distinct")
        if any(c < 0 for c in self.counts) or sum(self.counts) + self.missing != self.rows:
            raise ValueError(f"category counts ({sum(self.counts)}) + missing ({self.missing}) != rows ({self.rows})")
        return self


FeatureProfile = Annotated[NumericProfile | CategoricalProfile, Field(discriminator="kind")]


class ReferenceProfile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    schema_version: Literal[1] = 1
    features: dict[str, FeatureProfile] = Field(description="in the model's feature order")
    score: NumericProfile = Field(description="the prediction score on the held-out split")

    def check_features(self, feature_names: Sequence[str]) -> None:
        """ProfileError unless the profile describes exactly these features, in this order."""
        if list(self.features) != list(feature_names):
            missing = [f for f in feature_names if f not in self.features]
            extra = [f for f in self.features if f not in feature_names]
            raise ProfileError(
                f"reference profile does not match the model's features (missing {missing}, unknown {extra}"
                + (", order differs" if not missing and not extra else "")
                + ")"
            )


def parse_profile(raw: dict[str, Any] | None, feature_names: Sequence[str]) -> ReferenceProfile | None:
    """The profile published with a version (None when it has none); ProfileError when unusable."""
    if raw is None:
        return None
    try:
        profile = ReferenceProfile.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ProfileError(f"corrupt reference profile at {where or 'top level'}: {first['msg']}") from None
    profile.check_features(feature_names)
    return profile


def score_of(proba: NDArray[np.float64]) -> NDArray[np.float64]:
    """The one number per row a score profile bins: P(second class) for two classes, else the top one."""
    return proba[:, 1] if proba.shape[1] == 2 else proba.max(axis=1)


def schema_counts(profile: ReferenceProfile, x: NDArray[np.float64]) -> dict[str, dict[str, int]]:
    """Schema skew of rows (rows x features), counted as serving counts it (app/monitoring/capture.py):
    feature -> kind -> count, every kind of SCHEMA_KINDS for every feature (0 where it cannot happen, as
    serving's counters are)."""
    out: dict[str, dict[str, int]] = {}
    for j, (name, fp) in enumerate(profile.features.items()):
        col = x[:, j]
        missing = np.isnan(col)
        present = col[~missing]
        counts = dict.fromkeys(SCHEMA_KINDS, 0)
        counts["missing"] = int(missing.sum())
        if isinstance(fp, NumericProfile):
            counts["below_min"] = int((present < fp.min).sum())
            counts["above_max"] = int((present > fp.max).sum())
        else:
            counts["unknown_category"] = int((~np.isin(present, np.asarray(fp.categories))).sum())
        out[name] = counts
    return out


def bin_rows(
    profile: ReferenceProfile, x: NDArray[np.float64], scores: NDArray[np.float64] | None
) -> dict[str, NDArray[np.int64]]:
    """Rows binned as serving bins them (app/monitoring/capture.py), for a batch source such as the
    served-data log or a benchmark: feature name -> counts (categorical: the unknown-category bin last;
    the score under SCORE_FEATURE when ``scores`` is given). Missing values are in no bin."""
    out: dict[str, NDArray[np.int64]] = {}
    for j, (name, fp) in enumerate(profile.features.items()):
        col = x[:, j]
        col = col[~np.isnan(col)]
        if isinstance(fp, NumericProfile):
            idx = np.searchsorted(np.asarray(fp.edges), col, side="right")
            out[name] = np.bincount(idx, minlength=len(fp.counts))
        else:
            cats = np.asarray(fp.categories)
            pos = np.minimum(np.searchsorted(cats, col), len(cats) - 1)
            idx = np.where(cats[pos] == col, pos, len(cats))
            out[name] = np.bincount(idx, minlength=len(cats) + 1)
    if scores is not None:
        edges = np.asarray(profile.score.edges)
        out[SCORE_FEATURE] = np.bincount(
            np.searchsorted(edges, scores, side="right"), minlength=len(profile.score.counts)
        )
    return out


def numeric_profile(
    values: NDArray[np.float64], bins: int = DEFAULT_BINS, typed_by: TypedBy = "guessed"
) -> NumericProfile:
    present = np.sort(values[~np.isnan(values)])  # one sort gives the quantiles, the counts and the range
    if present.size == 0:
        raise ProfileError("cannot profile a feature with no values")
    qs = np.quantile(present, np.linspace(0, 1, bins + 1)[1:-1])
    edges = np.unique(qs)  # ties (a feature with heavy point masses) merge bins
    # A bin is [edge_i-1, edge_i): the rule serving applies (searchsorted side="right" on the edges).
    below = np.searchsorted(present, edges, side="left")
    counts = np.diff(np.concatenate([[0], below, [present.size]]))
    return NumericProfile(
        edges=edges.tolist(),
        counts=counts.tolist(),
        rows=int(values.size),
        missing=int(values.size - present.size),
        min=float(present[0]),
        max=float(present[-1]),
        mean=float(present.mean()),
        std=float(present.std()),
        typed_by=typed_by,
    )


def categorical_profile(values: NDArray[np.float64], typed_by: TypedBy = "guessed") -> CategoricalProfile:
    present = values[~np.isnan(values)]
    cats, counts = np.unique(present, return_counts=True)
    if cats.size == 0:
        raise ProfileError("cannot profile a feature with no values")
    return CategoricalProfile(
        categories=cats.tolist(),
        counts=counts.tolist(),
        rows=int(values.size),
        missing=int(values.size - present.size),
        typed_by=typed_by,
    )


def is_categorical(values: NDArray[np.float64], max_categories: int = MAX_CATEGORIES) -> bool:
    present = values[~np.isnan(values)]
    if present.size == 0 or not np.all(np.equal(np.mod(present[:1000], 1), 0)):
        return False  # the first rows settle it for most continuous features, at once
    if not np.all(np.equal(np.mod(present, 1), 0)):
        return False
    return len(np.unique(present)) <= max_categories


def check_declared(
    feature_names: Sequence[str], categorical: Sequence[str] | None, numeric: Sequence[str] | None
) -> None:
    """ProfileError when a declared feature is not among the features, or is declared both ways: what the
    train and publish jobs check before training or converting anything."""
    cat, num = set(categorical or ()), set(numeric or ())
    for flag, names in (("categorical", cat), ("numeric", num)):
        unknown = sorted(names - set(feature_names))
        if unknown:
            raise ProfileError(f"{flag} features {unknown} are not among the features {list(feature_names)}")
    both = sorted(cat & num)
    if both:
        raise ProfileError(f"features {both} are declared both categorical and numeric")


def compute_profile(
    x: NDArray[np.float64],
    feature_names: Sequence[str],
    scores: NDArray[np.float64],
    *,
    bins: int = DEFAULT_BINS,
    categorical: Sequence[str] | None = None,
    numeric: Sequence[str] | None = None,
) -> ReferenceProfile:
    """The profile of a training matrix (rows x features) and held-out scores. ``categorical`` and
    ``numeric`` declare features' types; any other feature's type is guessed (is_categorical)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != len(feature_names):
        raise ProfileError(f"training matrix of shape {x.shape} for {len(feature_names)} features")
    check_declared(feature_names, categorical, numeric)
    cat, num = set(categorical or ()), set(numeric or ())
    features: dict[str, NumericProfile | CategoricalProfile] = {}
    for j, name in enumerate(feature_names):
        col = x[:, j]
        if name in cat or name in num:
            typed_by: TypedBy = "declared"
            is_cat = name in cat
        else:
            typed_by, is_cat = "guessed", is_categorical(col)
        features[name] = categorical_profile(col, typed_by) if is_cat else numeric_profile(col, bins, typed_by)
    return ReferenceProfile(features=features, score=numeric_profile(np.asarray(scores, dtype=np.float64), bins))
