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
    finite = np.isfinite(x)
    if finite.all() and (rules.max_abs == float("inf") or not (np.abs(x) > rules.max_abs).any()):
        return  # the common case: one pass over the batch
    nan = np.isnan(x)
    if nan.any() and not rules.accepts_missing:
        i, j = np.argwhere(nan)[0]
        raise InvalidInputError(
            f"{where.format(i, names[j])}: value must be finite, got nan (this model takes no missing values)"
        )
    inf = np.isinf(x)
    if inf.any():
        i, j = np.argwhere(inf)[0]
        raise InvalidInputError(f"{where.format(i, names[j])}: value must be finite, got {x[i, j]}")
    big = np.abs(np.where(nan, 0.0, x)) > rules.max_abs
    if big.any():
        i, j = np.argwhere(big)[0]
        raise InvalidInputError(
            f"{where.format(i, names[j])}: {x[i, j]:g} is too large for this model, which computes in float32 "
            f"(|value| <= {rules.max_abs:.4g})"
        )
