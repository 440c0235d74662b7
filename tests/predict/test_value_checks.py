"""Request values per model (app/runtime/value_checks.py): missing values only where the model takes them, no
infinities, no magnitude past what the engine computes with; each refusal names the row and the feature."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from app.common.errors import InvalidInputError
from app.onnx.probes import FLOAT32_MAX
from app.predict.v1_inputs import parse_instances
from app.runtime.value_checks import STRICT, ValueRules, check_values, row_problems

NAMES = ["a", "b", "c"]
TREES = ValueRules(accepts_missing=False, max_abs=FLOAT32_MAX)
HGB = ValueRules(accepts_missing=True)


def test_null_is_missing_only_for_models_that_take_it() -> None:
    body = {"instances": [{"a": 1.0, "b": None, "c": 3}]}
    x = parse_instances(body, NAMES, 10, HGB)
    assert np.isnan(x[0, 1]) and x[0, 2] == 3.0
    with pytest.raises(InvalidInputError, match=r"instances\[0\]\.b: expected a number, got null"):
        parse_instances(body, NAMES, 10, STRICT)


def test_too_large_for_float32_is_a_400_naming_the_feature() -> None:
    body = {"instances": [{"a": 1.0, "b": 2.0, "c": 3.0}, {"a": 1.0, "b": 1e300, "c": 3.0}]}
    with pytest.raises(InvalidInputError, match=r"instances\[1\]\.b: 1e\+300 is too large for this model"):
        parse_instances(body, NAMES, 10, TREES)
    assert parse_instances(body, NAMES, 10, STRICT)[1, 1] == 1e300  # a float64 model takes it


@given(arrays(np.float64, (4, 3), elements=st.floats(allow_nan=True, allow_infinity=True, width=64)))
def test_the_check_agrees_with_the_obvious_rule(x: np.ndarray) -> None:
    for rules in (STRICT, TREES, HGB):
        ok = not np.isinf(x).any() and (rules.accepts_missing or not np.isnan(x).any())
        ok = ok and not (np.abs(np.nan_to_num(x)) > rules.max_abs).any()
        try:
            check_values(x, NAMES, rules, "row {}, feature {!r}")
        except InvalidInputError:
            assert not ok
        else:
            assert ok


def test_the_first_offending_value_is_named() -> None:
    x = np.array([[1.0, 2.0, 3.0], [1.0, np.nan, np.inf]])
    with pytest.raises(InvalidInputError, match=r"row 1, feature 'b': value must be finite, got nan"):
        check_values(x, NAMES, STRICT, "row {}, feature {!r}")
    with pytest.raises(InvalidInputError, match=r"row 1, feature 'c': value must be finite, got inf"):
        check_values(x, NAMES, HGB, "row {}, feature {!r}")


@given(arrays(np.float64, (6, 3), elements=st.floats(allow_nan=True, allow_infinity=True, width=64)))
def test_row_problems_equal_checking_each_row_alone(x: np.ndarray) -> None:
    """The stream's per-event form (each offending row with its reason) against the request check, one row
    at a time: the same rows, the same messages."""
    for rules in (STRICT, TREES, HGB):
        got = row_problems(x, NAMES, rules, "feature {1!r}")
        want: dict[int, str] = {}
        for i in range(len(x)):
            try:
                check_values(x[i : i + 1], NAMES, rules, "feature {1!r}")
            except InvalidInputError as exc:
                want[i] = str(exc)
        assert got == want
