"""The readable v1 request: ``{"instances": [{"feature": value, ...}, ...]}``."""

from __future__ import annotations

from typing import Any, NoReturn

import numpy as np
from numpy.typing import NDArray

from app.common.errors import InvalidInputError, PayloadTooLargeError
from app.runtime.value_checks import STRICT, ValueRules, check_values


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", str: "string", list: "array", dict: "object"}.get(type(value), type(value).__name__)


def parse_instances(
    payload: Any, feature_names: list[str], max_instances: int, rules: ValueRules = STRICT
) -> NDArray[np.float64]:
    """The rows of a v1 body; ``null`` is a missing value (NaN) for models whose ``rules`` accept them."""
    if not isinstance(payload, dict):
        raise InvalidInputError("body must be a JSON object with an 'instances' list")
    extra = set(payload) - {"instances"}
    if extra:
        raise InvalidInputError(f"unknown top-level field(s): {sorted(extra)}; expected only 'instances'")
    instances = payload.get("instances")
    if not isinstance(instances, list):
        raise InvalidInputError(f"'instances' must be a list of objects, got {_type_name(instances)}")
    if not instances:
        raise InvalidInputError("'instances' is empty")
    if len(instances) > max_instances:
        raise PayloadTooLargeError(f"too many instances: {len(instances)} > limit {max_instances}")
    n = len(feature_names)
    rows: list[list[Any]] = []
    for i, inst in enumerate(instances):
        if type(inst) is not dict:
            raise InvalidInputError(f"instances[{i}] must be an object of feature values, got {_type_name(inst)}")
        try:
            if len(inst) != n:
                raise KeyError
            row = [inst[name] for name in feature_names]
        except KeyError:
            _explain_keys(i, inst, feature_names)
        for name, value in zip(feature_names, row, strict=True):
            t = type(value)
            if t is not float and t is not int and (value is not None or not rules.accepts_missing):
                raise InvalidInputError(f"instances[{i}].{name}: expected a number, got {_type_name(value)}")
        rows.append(row)
    try:
        x = np.array(rows, dtype=np.float64)
    except OverflowError as exc:
        raise InvalidInputError(f"a feature value is too large for float64: {exc}") from exc
    check_values(x, feature_names, rules, "instances[{}].{}")
    return x


def _explain_keys(i: int, inst: dict[str, Any], feature_names: list[str]) -> NoReturn:
    missing = [f for f in feature_names if f not in inst]
    unknown = sorted(set(inst) - set(feature_names))
    parts = []
    if missing:
        parts.append(f"missing feature(s) {missing}")
    if unknown:
        parts.append(f"unknown feature(s) {unknown}")
    raise InvalidInputError(f"instances[{i}]: " + "; ".join(parts))
