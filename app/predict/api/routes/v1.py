"""The readable JSON API: named features in, labels and class probabilities out."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.common.errors import ApiError, error_responses, json_body, json_response, load_json
from app.common.fast_routes import add_fast_route
from app.features.online import OnlineStoreUnavailableError
from app.predict import precomputed
from app.predict.api.deps import ModelDep, RegistryDep, lookup_model
from app.predict.v1_inputs import parse_instances
from app.runtime.registry import LoadedModel, ModelRegistry

router = APIRouter(prefix="/v1", tags=["v1"])

# What the route reads (app/predict/v1_inputs.py); it parses the raw body itself, so this only documents.
PREDICT_BODY = json_body(
    {
        "type": "object",
        "required": ["instances"],
        "additionalProperties": False,
        "properties": {
            "instances": {
                "type": "array",
                "minItems": 1,
                "description": "one object per row: every feature of the model by name, a finite number each",
                "items": {"type": "object", "additionalProperties": {"type": "number"}},
            }
        },
    }
)
PREDICT_ERRORS = error_responses(400, 404, 413, 415, 503)


async def _predict(lm: LoadedModel, request: Request, max_instances: int) -> Response:
    raw = parse_instances(load_json(await request.body()), lm.input_names, max_instances, lm.value_rules)
    x, feature_status = await lm.prepare(raw)
    proba = await lm.predict_proba(x)
    if lm.monitor is not None:  # bins the model input and score; never raises
        lm.monitor.observe(x, proba, raw if lm.online is not None else None)
    idx = proba.argmax(axis=1)
    lm.count_predictions(idx)
    classes = lm.model.classes
    keys = [str(c) for c in classes]
    body = {
        "model": lm.model.name,
        "version": lm.version,
        "predictions": [classes[i] for i in idx.tolist()],
        "probabilities": [dict(zip(keys, row, strict=True)) for row in proba.tolist()],
    }
    if feature_status is not None:
        body["feature_status"] = feature_status
    return json_response(body)


# The two inference routes skip FastAPI's request handling (app/common/fast_routes.py): they read the app's
# state themselves instead of through FastAPI's dependencies, which cost more than the model.
async def predict(request: Request) -> Response:
    state = request.app.state
    lm = lookup_model(state.registry, request.path_params["name"])
    return await _predict(lm, request, state.settings.max_instances)


async def predict_default(request: Request) -> Response:
    registry: ModelRegistry = request.app.state.registry
    name = registry.default_model
    if name is None:
        raise ApiError(404, "no default model: the store has no models")
    return await _predict(lookup_model(registry, name), request, request.app.state.settings.max_instances)


for _path, _endpoint in (("/models/{name}/predict", predict), ("/predict", predict_default)):
    add_fast_route(router, _path, _endpoint, methods=["POST"], responses=PREDICT_ERRORS, openapi_extra=PREDICT_BODY)


@router.get("/models")
async def list_models(registry: RegistryDep) -> Response:
    return json_response(
        {
            "default": registry.default_model,
            "models": [
                {"name": n, "version": m.version, "engine": m.model.engine, "ready": True}
                for n, m in sorted(registry.models.items())
            ],
        }
    )


@router.get("/models/{name}", responses=error_responses(404, 503))
async def model_metadata(lm: ModelDep) -> Response:
    meta = lm.model.meta
    return json_response(
        {
            "name": meta.name,
            "version": meta.version,
            "engine": lm.model.engine,
            "features": [f.model_dump() for f in meta.features],
            "inputs": lm.input_names,
            "online_features": meta.online_features.model_dump() if meta.online_features else None,
            "classes": meta.classes,
            "metrics": meta.metrics,
            "created_at": meta.created_at,
            "training_data": meta.training_data.model_dump(),
            "library_versions": meta.library_versions,
        }
    )


@router.get("/models/{name}/precomputed/{entity_id}", responses=error_responses(400, 404, 503))
async def precomputed_prediction(name: str, entity_id: int, registry: RegistryDep) -> Response:
    """A prediction written by ``python -m jobs batch-predict``: no model call, one Redis GET."""
    reader = registry.reader
    if reader is None:
        raise ApiError(404, "precomputed predictions need the online store: set FEATURES_REDIS_URL")
    try:
        raw = await reader.get(precomputed.prediction_key(name, entity_id))
    except OnlineStoreUnavailableError as exc:
        raise ApiError(503, str(exc)) from None
    if raw is None:
        raise ApiError(404, f"no precomputed prediction for model {name!r}, entity {entity_id}")
    return json_response({"model": name, "entity_id": entity_id, **precomputed.decode(raw)})
