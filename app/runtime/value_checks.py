"""What a request's numbers may be, per model: the check every route applies before a row reaches a batch.

- Missing values (v1 ``null``, V2 ``NaN``) only for models that take them (metadata ``accepts_missing``,
  derived from the estimator at publish). Any other model answers 400 naming the feature.
- Never infinities.
- No magnitude the engine cannot represent: scikit-learn's trees cast to float32, and a value past float32's
  largest makes ``predict_proba`` raise inside the micro-batch, failing its neighbours (issue 23). Such a
  value is a 400 naming the feature instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from app.common.errors import InvalidInputError


@dataclass(frozen=True)
class ValueRules:
    accepts_missing: bool = False
    max_abs: float = float("inf")  # float32's largest where the model computes in float32 (metadata max_abs_input)


STRICT = ValueRules()


def check_values(x: NDArray[np.float64], names: list[str], rules: ValueRules, where: str) -> None:
    """Raises InvalidInputError naming the first offending value; ``where`` formats (row, name) -> location."""
    problems = row_problems(x, names, rules, where, first_only=True)
    if problems:
        raise InvalidInputError(next(iter(problems.values())))


def row_problems(
    x: NDArray[np.float64], names: list[str], rules: ValueRules, where: str = "{1}", *, first_only: bool = False
) -> dict[int, str]:
    """Row index -> why the model cannot take that row (its first offending value), for every row with one:
    the stream dead-letters exactly those events and scores their neighbours."""
    finite = np.isfinite(x)
    if finite.all() and (rules.max_abs == float("inf") or not (np.abs(x) > rules.max_abs).any()):
        return {}  # the common case: one pass over the batch
    nan = np.isnan(x)
    inf = np.isinf(x)
    big = np.abs(np.where(finite, x, 0.0)) > rules.max_abs
    kinds = [(inf, "inf"), (big, "big")]
    if not rules.accepts_missing:
        kinds.insert(0, (nan, "nan"))
    out: dict[int, str] = {}
    for mask, kind in kinds:  # in this order, as one value at a time would be checked
        for i, j in np.argwhere(mask):
            if int(i) in out:
                continue
            at = where.format(i, names[j])
            if kind == "nan":
                out[int(i)] = f"{at}: value must be finite, got nan (this model takes no missing values)"
            elif kind == "inf":
                out[int(i)] = f"{at}: value must be finite, got {x[i, j]}"
            else:
                out[int(i)] = (
                    f"{at}: {x[i, j]:g} is too large for this model, which computes in float32 "
                    f"(|value| <= {rules.max_abs:.4g})"
                )
            if first_only:
                return out
    return out
