"""The real gunicorn service: predictions, both protocols, every bad input, logs and metrics."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from app.modelstore import LocalModelStore
from devharness import GunicornService
from tests.predict.helpers import instances, reference

pytestmark = pytest.mark.integration

# The service runs the models' ONNX graphs in scikit-learn's dtypes (app/onnx/sklearn_convert.py), held to
# scikit-learn at 1e-6 at publish and at this tolerance at load (PREDICT_ONNX_TOLERANCE).
SERVED_ATOL = 1e-5


def test_ready_lists_models(service: GunicornService) -> None:
    r = httpx.get(service.url + "/readyz")
    assert r.status_code == 200 and set(r.json()["models"]) == {"breast-cancer", "iris"}
    assert httpx.get(service.url + "/v2/health/live").status_code == 200
    assert httpx.get(service.url + "/v2/health/ready").status_code == 200
    models = httpx.get(service.url + "/v1/models").json()
    assert {m["engine"] for m in models["models"]} == {"onnxruntime"}


def test_v1_predictions_equal_sklearn(service: GunicornService, trained_store: Path) -> None:
    ref = reference(LocalModelStore(trained_store), "breast-cancer")
    x = np.asarray(ref.meta.verification.inputs)
    r = httpx.post(service.url + "/v1/models/breast-cancer/predict", json={"instances": instances(ref, x)})
    assert r.status_code == 200, r.text
    body = r.json()
    expected = ref.estimator.predict_proba(x)
    got = np.array([[p[str(c)] for c in ref.classes] for p in body["probabilities"]])
    np.testing.assert_allclose(got, expected, atol=SERVED_ATOL)
    assert body["predictions"] == ref.estimator.predict(x).tolist()
    assert body["version"] == ref.version and body["model"] == "breast-cancer"
    # the short alias serves the default model
    r2 = httpx.post(service.url + "/v1/predict", json={"instances": instances(ref, x[:1])})
    assert r2.json()["predictions"] == body["predictions"][:1]


def test_tritonclient_http_defaults_roundtrip(service: GunicornService, trained_store: Path) -> None:
    import tritonclient.http as httpclient

    ref = reference(LocalModelStore(trained_store), "iris")
    x = np.asarray(ref.meta.verification.inputs, dtype=np.float64)
    client = httpclient.InferenceServerClient(url=service.url.removeprefix("http://"))
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("iris")
        meta = client.get_model_metadata("iris")
        assert meta["inputs"][0]["shape"] == [-1, 4]
        inp = httpclient.InferInput("input-0", list(x.shape), "FP64")
        inp.set_data_from_numpy(x)  # binary_data=True by default
        result = client.infer("iris", [inp])  # no outputs requested: binary_data_output
        np.testing.assert_allclose(result.as_numpy("predict_proba"), ref.estimator.predict_proba(x), atol=SERVED_ATOL)
        np.testing.assert_array_equal(result.as_numpy("label"), ref.estimator.predict(x))
        # explicit outputs, one binary and one JSON, FP32 input
        inp32 = httpclient.InferInput("input-0", list(x.shape), "FP32")
        inp32.set_data_from_numpy(x.astype(np.float32), binary_data=False)
        outs = [
            httpclient.InferRequestedOutput("label", binary_data=False),
            httpclient.InferRequestedOutput("predict_proba", binary_data=True),
        ]
        result = client.infer("iris", [inp32], outputs=outs, request_id="abc")
        assert result.get_response()["id"] == "abc"
        assert result.as_numpy("predict_proba").shape == (len(x), 3)
        with pytest.raises(Exception, match="unknown model"):
            client.infer("nope", [inp])
    finally:
        client.close()


def test_v2_json_clients(service: GunicornService, trained_store: Path) -> None:
    """What MLServer's and KServe's JSON clients send: one [n, F] tensor, or one tensor per feature."""
    ref = reference(LocalModelStore(trained_store), "iris")
    x = np.asarray(ref.meta.verification.inputs)[:4]
    expected = ref.estimator.predict_proba(x)
    r = httpx.post(
        service.url + "/v2/models/iris/infer",
        json={"inputs": [{"name": "input-0", "shape": list(x.shape), "datatype": "FP64", "data": x.tolist()}]},
    )
    assert r.status_code == 200, r.text
    out = {o["name"]: o for o in r.json()["outputs"]}
    np.testing.assert_allclose(np.array(out["predict_proba"]["data"]).reshape(4, 3), expected, atol=SERVED_ATOL)
    per_feature = [
        {"name": f, "shape": [4], "datatype": "FP64", "data": x[:, i].tolist()} for i, f in enumerate(ref.feature_names)
    ]
    r = httpx.post(service.url + f"/v2/models/iris/versions/{ref.version}/infer", json={"inputs": per_feature})
    assert r.status_code == 200, r.text
    assert r.json()["model_version"] == ref.version
    r = httpx.post(service.url + "/v2/models/iris/versions/old/infer", json={"inputs": per_feature})
    assert r.status_code == 404 and "not served" in r.json()["error"]
    assert httpx.get(service.url + "/v2").json()["extensions"] == ["binary_tensor_data"]


def _row(n: int = 4) -> dict[str, float]:
    return {f: 1.0 for f in ["sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm"][:n]}


V1 = "/v1/models/iris/predict"
_NAN_HEADER = b'{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP64","parameters":{"binary_data_size":32}}]}'
V2 = "/v2/models/iris/infer"
BAD_INPUTS = [
    (
        "wrong type",
        V1,
        orjson.dumps({"instances": [{**_row(), "petal_width_cm": "wide"}]}),
        {},
        400,
        "petal_width_cm: expected a number, got string",
    ),
    (
        "NaN literal",
        V1,
        b'{"instances": [{"sepal_length_cm": NaN, "sepal_width_cm": 1, "petal_length_cm": 1, "petal_width_cm": 1}]}',
        {},
        400,
        "not valid JSON",
    ),
    (
        "infinity",
        V1,
        b'{"instances": [{"sepal_length_cm": 1e999, "sepal_width_cm": 1, "petal_length_cm": 1, "petal_width_cm": 1}]}',
        {},
        400,
        "number is infinity",
    ),
    (
        "missing feature",
        V1,
        orjson.dumps({"instances": [_row(3)]}),
        {},
        400,
        "missing feature(s) ['petal_width_cm']",
    ),
    (
        "unknown feature",
        V1,
        orjson.dumps({"instances": [{**_row(), "colour": 1}]}),
        {},
        400,
        "unknown feature(s) ['colour']",
    ),
    ("too many instances", V1, orjson.dumps({"instances": [_row()] * 101}), {}, 413, "too many instances"),
    ("empty body", V1, b"", {}, 400, "empty"),
    ("not JSON", V1, b"hello", {}, 400, "not valid JSON"),
    (
        "unknown model",
        "/v1/models/nope/predict",
        orjson.dumps({"instances": [_row()]}),
        {},
        404,
        "unknown model 'nope'",
    ),
    (
        "v2 wrong shape",
        V2,
        orjson.dumps({"inputs": [{"name": "x", "shape": [1, 5], "datatype": "FP64", "data": [1, 2, 3, 4, 5]}]}),
        {},
        400,
        "must be [rows, 4]",
    ),
    (
        "v2 wrong datatype",
        V2,
        orjson.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "BYTES", "data": ["a", "b", "c", "d"]}]}),
        {},
        400,
        "BYTES",
    ),
    (
        "v2 shape/data mismatch",
        V2,
        orjson.dumps({"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP64", "data": [1, 2, 3, 4]}]}),
        {},
        400,
        "needs 8 values",
    ),
    (
        # NaN is a missing value, which these forests take (scikit-learn routes it): infinity never is
        "v2 infinity in binary tensor",
        V2,
        _NAN_HEADER + np.array([1, 2, np.inf, 4], "<f8").tobytes(),
        {"Inference-Header-Content-Length": str(len(_NAN_HEADER))},
        400,
        "must be finite, got inf",
    ),
    (
        "v2 shape whose element count overflows int64",
        V2,
        b'{"inputs":[{"name":"input-0","shape":[4294967296,4294967296],"datatype":"FP64","data":[]}]}',
        {},
        400,
        "shape [4294967296, 4294967296] has 18446744073709551616 elements",
    ),
    (
        "v2 shape of 10**36 elements",
        V2,
        b'{"inputs":[{"name":"input-0","shape":[1000000000000000000,1000000000000000000],"datatype":"FP64","data":[]}]}',
        {},
        400,
        "more than the",
    ),
    ("v2 bad header length", V2, b"{}", {"Inference-Header-Content-Length": "abc"}, 400, "not an integer"),
    ("v2 unknown encoding", V2, b"xx", {"Content-Encoding": "br"}, 415, "Content-Encoding"),
    (
        "v2 too many rows",
        V2,
        orjson.dumps({"inputs": [{"name": "x", "shape": [101, 4], "datatype": "FP64", "data": [0] * 404}]}),
        {},
        413,
        "too many rows",
    ),
    ("oversized body", V1, b"{" + b" " * 70_000 + b"}", {}, 413, "exceeds the limit of 65536 bytes"),
]


@pytest.mark.parametrize(
    ("case", "path", "body", "headers", "status", "message"), BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS]
)
def test_bad_input_gets_clear_4xx(
    service: GunicornService,
    case: str,
    path: str,
    body: bytes,
    headers: dict[str, str],
    status: int,
    message: str,
) -> None:
    r = httpx.post(service.url + path, content=body, headers={"content-type": "application/json", **headers})
    assert r.status_code == status, r.text
    assert message in r.json()["error"]


def test_oversized_chunked_body_is_413(service: GunicornService) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is enforced while reading
        for _ in range(20):
            yield b" " * 8192

    r = httpx.post(service.url + V1, content=chunks())
    assert r.status_code == 413 and "exceeds" in r.json()["error"]


def test_unknown_route_and_method_are_json(service: GunicornService) -> None:
    r = httpx.get(service.url + "/nope")
    assert r.status_code == 404 and r.json() == {"error": "Not Found"}
    r = httpx.get(service.url + V1)
    assert r.status_code == 405 and "error" in r.json()


def test_garbage_on_the_socket_does_not_kill_workers(service: GunicornService) -> None:
    for payload in (b"\x00\xff" * 100 + b"\r\n\r\n", b"POST / HTTP/1.1\r\nContent-Length: -5\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", service.port), timeout=5) as s:
            s.sendall(payload)
            s.recv(1024)
    assert httpx.get(service.url + "/readyz").status_code == 200


def test_no_server_errors_after_bad_inputs(service: GunicornService) -> None:
    """Runs after the bad-input tests in this module: no 5xx, no traceback, no worker died."""
    metrics = httpx.get(service.url + "/metrics").text
    assert 'status="5' not in metrics
    log = service.server.log_text()
    assert "Traceback" not in log and "unhandled error" not in log
    assert "Worker exited" not in log and "was sent SIGKILL" not in log


def test_request_id_is_echoed_and_logged(service: GunicornService) -> None:
    r = httpx.get(service.url + "/readyz", headers={"X-Request-ID": "req-12345"})
    assert r.headers["x-request-id"] == "req-12345"
    assert httpx.get(service.url + "/healthz").headers["x-request-id"]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [orjson.loads(ln) for ln in service.server.log_text().splitlines() if ln.startswith("{")]
        hits = [ln for ln in lines if ln.get("request_id") == "req-12345"]
        if hits:
            assert hits[0]["path"] == "/readyz" and hits[0]["status"] == 200
            return
        time.sleep(0.1)
    pytest.fail("no JSON access-log line with the request id")


def _v1_and_v2_bodies(ref_x: np.ndarray, feature_names: list[str]) -> list[tuple[str, bytes]]:
    v1 = orjson.dumps({"instances": [dict(zip(feature_names, row.tolist(), strict=True)) for row in ref_x]})
    v2 = orjson.dumps(
        {"inputs": [{"name": "x", "shape": list(ref_x.shape), "datatype": "FP64", "data": ref_x.ravel().tolist()}]}
    )
    return [(V1, v1), (V2, v2)]


@pytest.mark.parametrize("coding", ["gzip", "GZIP", "x-gzip", "Deflate", "identity"])
def test_content_codings_decode_the_same_on_both_protocols(
    service: GunicornService, trained_store: Path, coding: str
) -> None:
    """v1 used to ignore Content-Encoding (400 "not valid UTF-8"); 'GZIP' got a 415. Content codings
    are case-insensitive (RFC 9110), and one decoding path serves every route."""
    import gzip
    import zlib

    ref = reference(LocalModelStore(trained_store), "iris")
    x = np.asarray(ref.meta.verification.inputs)[:3]
    expected = ref.predict_proba(x)
    encode: dict[str, Callable[[bytes], bytes]] = {
        "gzip": gzip.compress,
        "x-gzip": gzip.compress,
        "deflate": zlib.compress,
        "identity": bytes,
    }
    for path, body in _v1_and_v2_bodies(x, ref.feature_names):
        encoded = encode[coding.strip().lower()](body)
        r = httpx.post(service.url + path, content=encoded, headers={"Content-Encoding": coding})
        assert r.status_code == 200, (path, r.text)
        if path == V1:
            got = [[p[str(c)] for c in ref.classes] for p in r.json()["probabilities"]]
        else:
            got = next(o for o in r.json()["outputs"] if o["name"] == "predict_proba")["data"]
        np.testing.assert_allclose(np.asarray(got).reshape(expected.shape), expected, atol=SERVED_ATOL)


@pytest.mark.parametrize("path", [V1, V2])
def test_bad_content_codings_get_clear_4xx(service: GunicornService, path: str) -> None:
    import gzip

    # 10 MB of spaces compress to ~10 kB: under the 64 kB body limit, far above it decoded.
    bomb = gzip.compress(b"{" + b" " * 10_000_000 + b"}")
    assert len(bomb) < 65536
    cases = [
        (bomb, "gzip", 413, "decompressed body exceeds the limit of 65536 bytes"),
        (b"not gzip at all", "gzip", 400, "cannot decompress gzip body"),
        (gzip.compress(b'{"instances": []}')[:-6], "gzip", 400, "truncated"),
        (b"xx", "br", 415, "unsupported Content-Encoding 'br'"),
        (gzip.compress(gzip.compress(b"{}")), "gzip, gzip", 415, "unsupported Content-Encoding 'gzip, gzip'"),
    ]
    for body, coding, status, message in cases:
        r = httpx.post(service.url + path, content=body, headers={"Content-Encoding": coding})
        assert r.status_code == status, (coding, r.text)
        assert message in r.json()["error"], r.text


def test_poison_values_among_valid_requests_fail_alone(service: GunicornService, trained_store: Path) -> None:
    """Issue 23: 1e300 (past float32, where the forest computes) is a 400 naming the feature, and the valid
    requests sent at the same time, on the same workers and in the same micro-batches, all succeed."""
    model = reference(LocalModelStore(trained_store), "breast-cancer")
    rows = instances(model, np.asarray(model.meta.verification.inputs[:4]))
    poison = dict(rows[0], **{model.feature_names[3]: 1e300})
    bodies = [{"instances": [poison]} if i % 7 == 3 else {"instances": rows} for i in range(280)]

    def send(body: dict[str, Any]) -> tuple[bool, int, str]:
        with httpx.Client(timeout=30) as c:
            r = c.post(service.url + "/v1/models/breast-cancer/predict", json=body)
        return body["instances"][0] is poison, r.status_code, r.text

    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(send, bodies))
    valid = [code for is_poison, code, _ in results if not is_poison]
    refused = [(code, text) for is_poison, code, text in results if is_poison]
    assert valid.count(200) == len(valid) == 240
    assert all(code == 400 and f"{model.feature_names[3]}: 1e+300 is too large" in text for code, text in refused)


def test_missing_values_are_answered_as_scikit_learn_answers_them(
    service: GunicornService, trained_store: Path
) -> None:
    """Issue 22: a model that takes missing values (scikit-learn's forests route them) takes v1 null and V2 NaN,
    and the answer is scikit-learn's."""
    model = reference(LocalModelStore(trained_store), "iris")
    assert model.value_rules.accepts_missing
    x = np.asarray(model.meta.verification.inputs[:3], dtype=np.float64)
    x[0, 1], x[1, 0], x[2, 3] = np.nan, np.nan, np.nan
    expected = model.estimator.predict_proba(x)
    rows = [{n: (None if np.isnan(v) else v) for n, v in zip(model.feature_names, r.tolist(), strict=True)} for r in x]
    r = httpx.post(service.url + "/v1/models/iris/predict", json={"instances": rows})
    assert r.status_code == 200, r.text
    got = np.array([[p[str(c)] for c in model.classes] for p in r.json()["probabilities"]])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    header = orjson.dumps(
        {"inputs": [{"name": "x", "shape": [3, 4], "datatype": "FP64", "parameters": {"binary_data_size": 96}}]}
    )
    r = httpx.post(
        service.url + "/v2/models/iris/infer",
        content=header + x.astype("<f8").tobytes(),
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert r.status_code == 200, r.text
    (proba,) = [o for o in r.json()["outputs"] if o["name"] == "predict_proba"]
    np.testing.assert_allclose(np.reshape(proba["data"], (3, -1)), expected, rtol=0, atol=1e-6)
