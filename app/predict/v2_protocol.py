"""Open Inference Protocol (KServe V2) inference requests and responses.

Supports JSON tensors and the binary tensor data extension that
``tritonclient.http`` uses by default: the body starts with a JSON header of
``Inference-Header-Content-Length`` bytes followed by the raw tensors, in input
order, each ``parameters.binary_data_size`` bytes long.

Two input layouts are accepted:

* one tensor of shape ``[rows, n_features]`` (any name; columns in the model's feature order);
* one tensor per feature, named by the feature, shape ``[rows]`` or ``[rows, 1]``
  (the layout of MLServer's pandas codec).

Outputs: ``predict_proba`` (FP64 ``[rows, n_classes]``) and ``label``
(INT64, or BYTES for string classes).
"""

from __future__ import annotations

import itertools
import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from app.common.errors import InvalidInputError, PayloadTooLargeError, load_json
from app.runtime.value_checks import STRICT, ValueRules, check_values

NUMERIC_DTYPES: dict[str, np.dtype[Any]] = {
    "FP64": np.dtype("<f8"),
    "FP32": np.dtype("<f4"),
    "FP16": np.dtype("<f2"),
    "INT64": np.dtype("<i8"),
    "INT32": np.dtype("<i4"),
    "INT16": np.dtype("<i2"),
    "INT8": np.dtype("i1"),
    "UINT64": np.dtype("<u8"),
    "UINT32": np.dtype("<u4"),
    "UINT16": np.dtype("<u2"),
    "UINT8": np.dtype("u1"),
}
OUTPUTS = ("predict_proba", "label")


@dataclass
class InferRequest:
    x: NDArray[np.float64]
    id: str | None
    outputs: list[tuple[str, bool]]  # (name, binary)


def _want_binary(params: Any, default: bool) -> bool:
    if isinstance(params, dict) and "binary_data" in params:
        return bool(params["binary_data"])
    return default


def parse_infer_request(
    body: bytes, header_length: str | None, feature_names: list[str], max_rows: int, rules: ValueRules = STRICT
) -> InferRequest:
    binary = b""
    body_len = len(body)
    if header_length is not None:
        try:
            hlen = int(header_length)
        except ValueError:
            raise InvalidInputError(f"Inference-Header-Content-Length is not an integer: {header_length!r}") from None
        if not 0 < hlen <= len(body):
            raise InvalidInputError(f"Inference-Header-Content-Length {hlen} is outside the body's {len(body)} bytes")
        body, binary = body[:hlen], body[hlen:]
    req = load_json(body)
    if not isinstance(req, dict):
        raise InvalidInputError("inference request must be a JSON object")
    inputs = req.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInputError("'inputs' must be a non-empty list of tensors")

    tensors: list[tuple[str, NDArray[Any]]] = []
    offset = 0
    for i, t in enumerate(inputs):
        arr, used = _decode_tensor(i, t, binary, offset, body_len)
        offset += used
        tensors.append((t["name"], arr))
    if offset != len(binary):
        raise InvalidInputError(f"{len(binary) - offset} bytes of binary data are not claimed by any input")

    x = _to_matrix(tensors, feature_names)
    if x.shape[0] == 0:
        raise InvalidInputError("inputs have zero rows")
    if x.shape[0] > max_rows:
        raise PayloadTooLargeError(f"too many rows: {x.shape[0]} > limit {max_rows}")
    check_values(x, feature_names, rules, "row {}, feature {!r}")

    params = req.get("parameters")
    default_binary = bool(params.get("binary_data_output", False)) if isinstance(params, dict) else False
    outputs_req = req.get("outputs")
    outputs: list[tuple[str, bool]]
    if outputs_req is None:
        outputs = [(name, default_binary) for name in OUTPUTS]
    else:
        if not isinstance(outputs_req, list):
            raise InvalidInputError("'outputs' must be a list")
        outputs = []
        for o in outputs_req:
            name = o.get("name") if isinstance(o, dict) else None
            if name not in OUTPUTS:
                raise InvalidInputError(f"unknown output {name!r}; this model has outputs {list(OUTPUTS)}")
            outputs.append((name, _want_binary(o.get("parameters"), default_binary)))
    rid = req.get("id")
    return InferRequest(x=x, id=rid if isinstance(rid, str) else None, outputs=outputs)


def _decode_tensor(i: int, t: Any, binary: bytes, offset: int, body_len: int) -> tuple[NDArray[Any], int]:
    if not isinstance(t, dict):
        raise InvalidInputError(f"inputs[{i}] must be an object")
    name = t.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInputError(f"inputs[{i}]: 'name' must be a non-empty string")
    shape = t.get("shape")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape) or not shape:
        raise InvalidInputError(f"input {name!r}: 'shape' must be a list of non-negative integers")
    if len(shape) > 2:
        raise InvalidInputError(
            f"input {name!r}: shape {shape} has {len(shape)} dimensions; use [rows, n_features], [rows] or [rows, 1]"
        )
    # Python ints: np.prod wraps around in int64 ([2**32, 2**32] -> 0). Every element of a tensor
    # takes at least one byte of the body, so a larger count (or dimension, for empty tensors) is
    # a malformed shape, refused before anything is allocated.
    count = math.prod(shape)
    if count > body_len or (count == 0 and max(shape) > body_len):
        raise InvalidInputError(
            f"input {name!r}: shape {shape} has {count} elements, more than the {body_len}-byte body can carry"
        )
    datatype = t.get("datatype")
    dtype = NUMERIC_DTYPES.get(datatype) if isinstance(datatype, str) else None
    if dtype is None:
        raise InvalidInputError(
            f"input {name!r}: datatype {datatype!r} is not supported; use one of {sorted(NUMERIC_DTYPES)}"
        )
    params = t.get("parameters")
    size = params.get("binary_data_size") if isinstance(params, dict) else None
    if size is not None:
        if type(size) is not int or size < 0:
            raise InvalidInputError(f"input {name!r}: binary_data_size must be a non-negative integer")
        if size != count * dtype.itemsize:
            raise InvalidInputError(
                f"input {name!r}: binary_data_size {size} != {count} elements x {dtype.itemsize} bytes "
                f"for shape {shape} {datatype}"
            )
        if offset + size > len(binary):
            raise InvalidInputError(f"input {name!r}: binary data is truncated")
        return np.frombuffer(binary, dtype=dtype, count=count, offset=offset).reshape(shape), size
    if "data" not in t:
        raise InvalidInputError(f"input {name!r}: has neither 'data' nor parameters.binary_data_size")
    data = t["data"]
    _check_data(name, data, shape)
    try:
        arr = np.asarray(data, dtype=np.float64)
    except ValueError:  # lists of different lengths
        raise InvalidInputError(
            f"input {name!r}: 'data' is nested as lists of different lengths; shape is {shape}"
        ) from None
    except OverflowError:
        raise InvalidInputError(f"input {name!r}: a value of 'data' is too large for float64") from None
    if arr.ndim > 1 and list(arr.shape) != shape:
        raise InvalidInputError(f"input {name!r}: 'data' is nested as {list(arr.shape)}; shape is {shape}")
    if arr.size != count:
        raise InvalidInputError(f"input {name!r}: shape {shape} needs {count} values, 'data' has {arr.size}")
    return arr.reshape(shape), 0


# Exact types: bool is a subclass of int, and np.asarray(..., float64) would read True and "1" as 1.0.
_NUMBER_TYPES = frozenset((int, float))


def _check_data(name: str, data: Any, shape: list[int]) -> None:
    """'data' is a list of JSON numbers, flat or nested at most as deep as the shape.

    One C-level pass per list (``set(map(type, row))``): ~20 ns per value."""
    if type(data) is not list:
        raise InvalidInputError(f"input {name!r}: 'data' must be a list, got {_type_name(data)}")
    if set(map(type, data)) <= _NUMBER_TYPES:  # flat: the common case
        return
    level: list[list[Any]] = [data]
    depth = 1
    while True:
        kinds: set[type] = set()
        for row in level:
            kinds.update(map(type, row))
        if kinds <= _NUMBER_TYPES:
            return
        if kinds == {list}:
            depth += 1
            if depth > len(shape):
                raise InvalidInputError(
                    f"input {name!r}: 'data' is nested {depth} deep; shape {shape} has {len(shape)} dimension(s)"
                )
            level = list(itertools.chain.from_iterable(level))
            continue
        bad = next(v for row in level for v in row if type(v) not in _NUMBER_TYPES)
        raise InvalidInputError(f"input {name!r}: 'data' must be numbers, got {_type_name(bad)}")


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", str: "string", list: "array", dict: "object"}.get(type(value), type(value).__name__)


def _to_matrix(tensors: list[tuple[str, NDArray[Any]]], feature_names: list[str]) -> NDArray[np.float64]:
    n = len(feature_names)
    if len(tensors) == 1 and tensors[0][1].ndim == 2 and tensors[0][0] not in feature_names:
        name, arr = tensors[0]
        if arr.shape[1] != n:
            raise InvalidInputError(f"input {name!r}: shape {list(arr.shape)} must be [rows, {n}] for this model")
        return arr.astype(np.float64, copy=False)
    by_name = dict(tensors)
    if len(by_name) != len(tensors):
        raise InvalidInputError("duplicate input names")
    missing = [f for f in feature_names if f not in by_name]
    unknown = sorted(set(by_name) - set(feature_names))
    if missing or unknown:
        if len(tensors) == 1:
            raise InvalidInputError(
                f"input {tensors[0][0]!r}: expected one [rows, {n}] tensor or one tensor per feature"
            )
        raise InvalidInputError(f"per-feature inputs: missing {missing}, unknown {unknown}")
    cols = []
    rows = None
    for f in feature_names:
        arr = by_name[f]
        if arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr[:, 0]
        if arr.ndim != 1:
            raise InvalidInputError(f"input {f!r}: shape {list(arr.shape)} must be [rows] or [rows, 1]")
        if rows is None:
            rows = arr.shape[0]
        elif arr.shape[0] != rows:
            raise InvalidInputError(f"input {f!r}: {arr.shape[0]} rows, other inputs have {rows}")
        cols.append(arr.astype(np.float64, copy=False))
    return np.stack(cols, axis=1)


def encode_infer_response(
    model_name: str,
    model_version: str,
    request_id: str | None,
    outputs: list[tuple[str, bool]],
    proba: NDArray[np.float64],
    labels: NDArray[Any],
) -> tuple[bytes, dict[str, str]]:
    """The response body and extra headers (binary outputs add Inference-Header-Content-Length)."""
    out_json: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, binary in outputs:
        if name == "predict_proba":
            arr: NDArray[Any] = proba
            datatype = "FP64"
        else:
            arr = labels
            datatype = "BYTES" if labels.dtype == object else "INT64"
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(arr.shape)}
        if binary:
            if datatype == "BYTES":
                blob = _bytes_tensor(arr)
            else:
                blob = np.ascontiguousarray(arr, dtype="<f8" if datatype == "FP64" else "<i8").tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = arr.reshape(-1).tolist()
        out_json.append(entry)
    resp: dict[str, Any] = {"model_name": model_name, "model_version": model_version, "outputs": out_json}
    if request_id is not None:
        resp["id"] = request_id
    header = orjson.dumps(resp)
    if not blobs:
        return header, {"content-type": "application/json"}
    return header + b"".join(blobs), {
        "content-type": "application/octet-stream",
        "inference-header-content-length": str(len(header)),
    }


def _bytes_tensor(arr: NDArray[Any]) -> bytes:
    parts = []
    for v in arr.reshape(-1):
        b = str(v).encode()
        parts.append(struct.pack("<I", len(b)) + b)
    return b"".join(parts)
