"""Open Inference Protocol (KServe V2) REST endpoints."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.common.errors import ApiError, error_response, error_responses, json_body, json_response
from app.common.fast_routes import add_fast_route
from app.common.settings import package_version
from app.predict.api.deps import ModelDep, RegistryDep, lookup_model
from app.predict.v2_protocol import encode_infer_response, parse_infer_request
from app.runtime.registry import LoadedModel

router = APIRouter(prefix="/v2", tags=["v2"])

SERVER_NAME = "ml-platform"
SERVER_VERSION = package_version()  # pyproject.toml's, from the installed package's metadata

# The JSON form of the Open Inference Protocol's inference request (app/predict/v2_protocol.py parses
# it, and the binary-tensor form, from the raw body; this only documents).
_TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype", "data"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": {
            "type": "string",
            "enum": [
                "BOOL",
                "INT8",
                "INT16",
                "INT32",
                "INT64",
                "UINT8",
                "UINT16",
                "UINT32",
                "UINT64",
                "FP16",
                "FP32",
                "FP64",
                "BYTES",
            ],
        },
        "data": {"type": "array", "description": "row-major values, flat or nested"},
        "parameters": {"type": "object"},
    },
}
INFER_BODY = json_body(
    {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "parameters": {"type": "object", "properties": {"binary_data_output": {"type": "boolean"}}},
            "inputs": {
                "type": "array",
                "minItems": 1,
                "description": "one [rows, n_features] tensor, or one [rows] or [rows, 1] tensor per feature",
                "items": _TENSOR,
            },
            "outputs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string", "enum": ["predict_proba", "label"]},
                        "parameters": {"type": "object"},
                    },
                },
            },
        },
    }
)
INFER_ERRORS = error_responses(400, 404, 413, 415, 503)


@router.get("")
async def server_metadata() -> Response:
    return json_response({"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": ["binary_tensor_data"]})


def _check_version(lm: LoadedModel, version: str | None) -> None:
    if version is not None and version != lm.version:
        raise ApiError(404, f"model {lm.model.name!r} version {version!r} is not served (serving {lm.version!r})")


def _metadata(lm: LoadedModel) -> Response:
    m = lm.model
    label_type = "BYTES" if m.classes_array.dtype == object else "INT64"
    return json_response(
        {
            "name": m.name,
            "versions": [lm.version],
            "platform": f"sklearn/{m.engine}",
            "inputs": [{"name": "input-0", "datatype": "FP64", "shape": [-1, m.n_features]}],
            "outputs": [
                {"name": "predict_proba", "datatype": "FP64", "shape": [-1, len(m.classes)]},
                {"name": "label", "datatype": label_type, "shape": [-1]},
            ],
            "parameters": {"feature_names": m.feature_names, "classes": m.classes},
        }
    )


@router.get("/models/{name}", responses=error_responses(404, 503))
async def model_metadata(lm: ModelDep) -> Response:
    return _metadata(lm)


@router.get("/models/{name}/versions/{version}", responses=error_responses(404, 503))
async def model_version_metadata(lm: ModelDep, version: str) -> Response:
    _check_version(lm, version)
    return _metadata(lm)


@router.get("/models/{name}/ready", responses=error_responses(404, 503))
async def model_ready(name: str, registry: RegistryDep) -> Response:
    lookup_model(registry, name)  # 404 unknown, 503 not loaded yet
    if not registry.usable(name):  # loaded, but a dependency (the online store) does not answer
        return error_response(503, f"model {name!r} is not ready: {registry.online_error}")
    return json_response({"name": name, "ready": True})


@router.get("/models/{name}/versions/{version}/ready", responses=error_responses(404, 503))
async def model_version_ready(lm: ModelDep, version: str) -> Response:
    _check_version(lm, version)
    return json_response({"name": lm.model.name, "ready": True})


async def _infer(lm: LoadedModel, request: Request, max_rows: int) -> Response:
    body = await request.body()
    header_length = request.headers.get("inference-header-content-length")
    req = parse_infer_request(body, header_length, lm.input_names, max_rows, lm.value_rules)
    x, _ = await lm.prepare(req.x)
    proba = await lm.predict_proba(x)
    if lm.monitor is not None:  # bins the model input and score; never raises
        lm.monitor.observe(x, proba, req.x if lm.online is not None else None)
    idx = proba.argmax(axis=1)
    lm.count_predictions(idx)
    labels = lm.model.classes_array[idx]
    content, headers = encode_infer_response(lm.model.name, lm.version, req.id, req.outputs, proba, labels)
    return Response(content, headers=headers)


# Served without FastAPI's request handling, like v1's predict (app/common/fast_routes.py).
async def infer(request: Request) -> Response:
    state = request.app.state
    lm = lookup_model(state.registry, request.path_params["name"])
    return await _infer(lm, request, state.settings.max_instances)


async def infer_version(request: Request) -> Response:
    state = request.app.state
    lm = lookup_model(state.registry, request.path_params["name"])
    _check_version(lm, request.path_params["version"])
    return await _infer(lm, request, state.settings.max_instances)


for _path, _endpoint in (("/models/{name}/infer", infer), ("/models/{name}/versions/{version}/infer", infer_version)):
    add_fast_route(router, _path, _endpoint, methods=["POST"], responses=INFER_ERRORS, openapi_extra=INFER_BODY)
