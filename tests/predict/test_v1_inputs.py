from __future__ import annotations

import pytest

from app.common.app_factory import http_status
from app.common.errors import DomainError, load_json
from app.predict.v1_inputs import parse_instances

F = ["x", "y"]


def test_parses_named_features_in_model_order() -> None:
    x = parse_instances({"instances": [{"y": 2, "x": 1.5}, {"x": 0, "y": -1}]}, F, 10)
    assert x.tolist() == [[1.5, 2.0], [0.0, -1.0]]


@pytest.mark.parametrize(
    ("payload", "status", "message"),
    [
        ([1, 2], 400, "JSON object"),
        ({"instances": {"x": 1}}, 400, "list of objects"),
        ({"instances": []}, 400, "empty"),
        ({"instances": [{"x": 1, "y": 2}], "extra": 1}, 400, "unknown top-level"),
        ({"instances": [[1, 2]]}, 400, r"instances\[0\] must be an object"),
        ({"instances": [{"x": 1}]}, 400, r"missing feature\(s\) \['y'\]"),
        ({"instances": [{"x": 1, "y": 2, "z": 3}]}, 400, r"unknown feature\(s\) \['z'\]"),
        (
            {"instances": [{"x": 1, "q": 2}]},
            400,
            r"missing feature\(s\) \['y'\]; unknown feature\(s\) \['q'\]",
        ),
        ({"instances": [{"x": "1", "y": 2}]}, 400, r"instances\[0\]\.x: expected a number, got string"),
        ({"instances": [{"x": True, "y": 2}]}, 400, "got boolean"),
        ({"instances": [{"x": None, "y": 2}]}, 400, "got null"),
        ({"instances": [{"x": [1], "y": 2}]}, 400, "got array"),
        ({"instances": [{"x": 1, "y": 2}, {"x": 1, "y": 10**400}]}, 400, "too large"),
        ({"instances": [{"x": 1, "y": 2}] * 11}, 413, "too many instances"),
    ],
)
def test_bad_payloads(payload: object, status: int, message: str) -> None:
    with pytest.raises(DomainError, match=message) as err:
        parse_instances(payload, F, 10)
    assert http_status(err.value) == status


@pytest.mark.parametrize("body", [b"", b"{", b'{"instances": [{"x": NaN, "y": 1}]}', b"[Infinity]"])
def test_invalid_json_and_non_finite_literals(body: bytes) -> None:
    with pytest.raises(DomainError) as err:
        load_json(body)
    assert http_status(err.value) == 400
