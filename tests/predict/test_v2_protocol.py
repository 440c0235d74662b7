from __future__ import annotations

import re
import struct
from typing import Any

import numpy as np
import orjson
import pytest

from app.common.app_factory import http_status
from app.common.errors import DomainError
from app.predict.v2_protocol import encode_infer_response, parse_infer_request

FEATURES = ["a", "b", "c"]


def _binary_body(arr: np.ndarray, datatype: str, outputs: list[dict[str, Any]] | None = None) -> tuple[bytes, str]:
    blob = arr.tobytes()
    header: dict[str, Any] = {
        "inputs": [
            {
                "name": "x",
                "shape": list(arr.shape),
                "datatype": datatype,
                "parameters": {"binary_data_size": len(blob)},
            }
        ]
    }
    if outputs is not None:
        header["outputs"] = outputs
    h = orjson.dumps(header)
    return h + blob, str(len(h))


@pytest.mark.parametrize(("dtype", "datatype"), [("<f8", "FP64"), ("<f4", "FP32"), ("<i8", "INT64"), ("<i4", "INT32")])
def test_binary_inputs_decode(dtype: str, datatype: str) -> None:
    arr = np.arange(6).reshape(2, 3).astype(dtype)
    body, hlen = _binary_body(arr, datatype)
    req = parse_infer_request(body, hlen, FEATURES, 100)
    np.testing.assert_array_equal(req.x, arr.astype(np.float64))
    assert req.outputs == [("predict_proba", False), ("label", False)]


def test_json_tensor_nested_or_flat() -> None:
    for data in ([1, 2, 3, 4, 5, 6], [[1, 2, 3], [4, 5, 6]]):
        body = orjson.dumps({"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP64", "data": data}]})
        req = parse_infer_request(body, None, FEATURES, 100)
        assert req.x.tolist() == [[1, 2, 3], [4, 5, 6]]


def test_per_feature_inputs_in_any_order() -> None:
    body = orjson.dumps(
        {
            "inputs": [
                {"name": "c", "shape": [2], "datatype": "FP32", "data": [3, 6]},
                {"name": "a", "shape": [2, 1], "datatype": "INT64", "data": [1, 4]},
                {"name": "b", "shape": [2], "datatype": "FP64", "data": [2, 5]},
            ],
            "id": "req-1",
        }
    )
    req = parse_infer_request(body, None, FEATURES, 100)
    assert req.x.tolist() == [[1, 2, 3], [4, 5, 6]] and req.id == "req-1"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"inputs": []}, "non-empty list"),
        ({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "BYTES", "data": ["a", "b", "c"]}]}, "BYTES"),
        (
            {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3, 4]}]},
            r"\[rows, 3\]",
        ),
        (
            {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP64", "data": [1, 2, 3]}]},
            "needs 6 values",
        ),
        (
            {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, "a", 3]}]},
            "must be numbers",
        ),
        ({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, True, 3]}]}, "got boolean"),
        (
            {"inputs": [{"name": "x", "shape": [-1, 3], "datatype": "FP64", "data": [1, 2, 3]}]},
            "non-negative",
        ),
        (
            # orjson writes infinity as null, which is not a number
            {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 1e308 * 10]}]},
            "must be numbers, got null",
        ),
        (
            {
                "inputs": [
                    {"name": "a", "shape": [1], "datatype": "FP64", "data": [1]},
                    {"name": "b", "shape": [1], "datatype": "FP64", "data": [1]},
                ]
            },
            r"missing \['c'\]",
        ),
        (
            {
                "inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}],
                "outputs": [{"name": "nope"}],
            },
            "unknown output",
        ),
    ],
)
def test_bad_requests_name_the_problem(body: dict[str, Any], message: str) -> None:
    with pytest.raises(DomainError, match=message) as err:
        parse_infer_request(orjson.dumps(body), None, FEATURES, 100)
    assert http_status(err.value) == 400


def test_binary_size_mismatch_and_truncation() -> None:
    arr = np.zeros((1, 3))
    body, hlen = _binary_body(arr, "FP64")
    with pytest.raises(DomainError, match="truncated"):
        parse_infer_request(body[:-4], hlen, FEATURES, 100)
    wrong = orjson.dumps(
        {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "parameters": {"binary_data_size": 16}}]}
    )
    with pytest.raises(DomainError, match="binary_data_size 16 != 3 elements x 8 bytes"):
        parse_infer_request(wrong + b"x" * 16, str(len(wrong)), FEATURES, 100)
    with pytest.raises(DomainError, match="not claimed"):
        parse_infer_request(body + b"xx", hlen, FEATURES, 100)
    with pytest.raises(DomainError, match="outside the body"):
        parse_infer_request(body, "999999", FEATURES, 100)


def test_row_limit_is_413() -> None:
    body = orjson.dumps({"inputs": [{"name": "x", "shape": [5, 3], "datatype": "FP64", "data": [0] * 15}]})
    with pytest.raises(DomainError) as err:
        parse_infer_request(body, None, FEATURES, 4)
    assert http_status(err.value) == 413


def test_binary_response_layout() -> None:
    proba = np.array([[0.25, 0.75]])
    labels = np.array([1], dtype=np.int64)
    content, headers = encode_infer_response(
        "m", "v1", "id-7", [("predict_proba", True), ("label", False)], proba, labels
    )
    hlen = int(headers["inference-header-content-length"])
    header = orjson.loads(content[:hlen])
    assert header["id"] == "id-7" and header["model_version"] == "v1"
    assert header["outputs"][0]["parameters"]["binary_data_size"] == 16
    assert header["outputs"][1]["data"] == [1]
    np.testing.assert_array_equal(np.frombuffer(content[hlen:], "<f8"), [0.25, 0.75])


def test_string_labels_encode_as_bytes_tensor() -> None:
    labels = np.array(["cat", "dog"], dtype=object)
    content, headers = encode_infer_response("m", "v", None, [("label", True)], np.zeros((2, 2)), labels)
    blob = content[int(headers["inference-header-content-length"]) :]
    assert blob == struct.pack("<I", 3) + b"cat" + struct.pack("<I", 3) + b"dog"


HUGE = 4294967296  # 2**32: the product of two of them wraps int64 to 0


@pytest.mark.parametrize(
    ("tensor", "message"),
    [
        ({"shape": [HUGE, HUGE], "data": []}, "more than"),
        ({"shape": [10**18, 10**18], "data": []}, "more than"),
        ({"shape": [0, 2**62], "data": []}, "more than"),
        ({"shape": [HUGE, HUGE], "parameters": {"binary_data_size": 0}}, "more than"),
        ({"shape": [1] * 40, "data": [1]}, "dimensions"),
        ({"shape": [1, 1, 3], "data": [1, 2, 3]}, "dimensions"),
        ({"shape": [], "data": [1]}, "non-negative integers"),
    ],
)
def test_oversized_or_malformed_shapes_are_400(tensor: dict[str, Any], message: str) -> None:
    """Shapes whose element count overflows int64 used to wrap to 0 in np.prod and end in a 500."""
    body = orjson.dumps({"inputs": [{"name": "x", "datatype": "FP64", **tensor}]})
    hlen = str(len(body)) if "parameters" in tensor else None
    with pytest.raises(DomainError, match=message) as err:
        parse_infer_request(body, hlen, FEATURES, 100)
    assert http_status(err.value) == 400
    assert not re.search(r"-\d", err.value.message)  # never a wrapped, negative count


def _per_feature(c: dict[str, Any]) -> bytes:
    return orjson.dumps(
        {
            "inputs": [
                {"name": "a", "shape": [1], "datatype": "FP64", "data": [1]},
                {"name": "b", "shape": [1], "datatype": "FP64", "data": [2]},
                {"name": "c", "shape": [1], "datatype": "FP64", **c},
            ]
        }
    )


@pytest.mark.parametrize(
    ("tensor", "message"),
    [
        ({"data": "1"}, "input 'c': 'data' must be a list, got string"),
        ({"data": 1}, "input 'c': 'data' must be a list, got int"),
        ({"data": ["1"]}, "input 'c': 'data' must be numbers, got string"),
        ({"data": [True]}, "input 'c': 'data' must be numbers, got boolean"),
        ({"data": [None]}, "input 'c': 'data' must be numbers, got null"),
        ({"data": [{"v": 1}]}, "input 'c': 'data' must be numbers, got object"),
        ({"data": [[1]]}, "input 'c': 'data' is nested 2 deep; shape [1] has 1 dimension(s)"),
        ({"data": [[[1]]], "shape": [1, 1]}, "nested 3 deep"),
        ({"data": [[1, 2]], "shape": [2, 1]}, "nested as [1, 2]"),
        ({"data": [[1], 2], "shape": [2, 1]}, "must be numbers, got array"),
        ({"data": [1], "datatype": "BOOL"}, "datatype 'BOOL' is not supported"),
        ({"data": [True], "datatype": "BOOL"}, "datatype 'BOOL' is not supported"),
    ],
)
def test_per_feature_tensor_type_errors_name_the_input(tensor: dict[str, Any], message: str) -> None:
    """A JSON string was once read as a number ("1" -> 1.0); every non-number is a 400 naming the input."""
    body = _per_feature(tensor)
    with pytest.raises(DomainError, match=re.escape(message)) as err:
        parse_infer_request(body, None, FEATURES, 100)
    assert http_status(err.value) == 400


def test_matrix_tensor_nesting_must_match_shape_or_be_flat() -> None:
    ok = [[1, 2, 3], [4, 5, 6]]
    for data in (ok, [1, 2, 3, 4, 5, 6], [1.5, 2, 3, 4, 5, 6]):
        body = orjson.dumps({"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP64", "data": data}]})
        assert parse_infer_request(body, None, FEATURES, 100).x.shape == (2, 3)
    for bad, message in (
        ([[1, 2], [3, 4], [5, 6]], "nested as [3, 2]"),
        ([[1, 2, 3], [4, 5]], "nested as"),
        ([[1, 2, 3], [4, 5, "6"]], "got string"),
        ([[1, 2, 3], [4, 5, False]], "got boolean"),
    ):
        body = orjson.dumps({"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP64", "data": bad}]})
        with pytest.raises(DomainError, match=re.escape(message)) as err:
            parse_infer_request(body, None, FEATURES, 100)
        assert http_status(err.value) == 400
