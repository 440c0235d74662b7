"""``POST /v1/features``: values of several views for many entities, one Redis round trip."""

from __future__ import annotations

import time
from collections import Counter as Tally
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.common.epoch import from_epoch_us
from app.common.errors import ApiError, bad_request, error_responses, json_body, json_response, load_json
from app.features.definitions import DefinitionError, FeatureRepo, FeatureView
from app.features.online import AsyncOnlineReader, OnlineStoreUnavailableError
from app.featureserver import metrics

router = APIRouter(prefix="/v1", tags=["features"])


ViewRequest = tuple[FeatureView, list[str]]
USAGE = 'body must be {"entities": {"<join key>": [ids]}, "features": ["view:feature", ...]}'


def parse_request(payload: Any, repo: FeatureRepo, max_entities: int) -> tuple[str, list[int], list[ViewRequest]]:
    if not isinstance(payload, dict) or set(payload) != {"entities", "features"}:
        raise bad_request(USAGE)
    refs = payload["features"]
    if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
        raise bad_request("'features' must be a list of 'view:feature' strings")
    try:
        wanted = repo.resolve(refs)
    except DefinitionError as exc:
        raise bad_request(str(exc)) from None
    entities = payload["entities"]
    if not isinstance(entities, dict) or len(entities) != 1:
        raise bad_request("'entities' must be an object with exactly one join key")
    ((key, ids),) = entities.items()
    views = [repo.view(v) for v in wanted]
    for v in views:
        if v.entity.join_key != key:
            raise bad_request(f"feature view {v.name!r} is keyed by {v.entity.join_key!r}, not {key!r}")
    if not isinstance(ids, list) or not ids:
        raise bad_request(f"entities.{key} must be a non-empty list of integer ids")
    if len(ids) > max_entities:
        raise ApiError(413, f"too many entities: {len(ids)} > limit {max_entities}")
    for i, e in enumerate(ids):
        if type(e) is not int:
            raise bad_request(f"entities.{key}[{i}]: expected an integer id, got {type(e).__name__}")
        if not -(2**63) <= e < 2**63:
            raise bad_request(f"entities.{key}[{i}]: id out of int64 range")
    return key, ids, [(v, wanted[v.name]) for v in views]


FEATURES_BODY = json_body(
    {
        "type": "object",
        "required": ["entities", "features"],
        "additionalProperties": False,
        "properties": {
            "entities": {
                "type": "object",
                "description": "exactly one join key, with the entity ids to read",
                "minProperties": 1,
                "maxProperties": 1,
                "additionalProperties": {"type": "array", "minItems": 1, "items": {"type": "integer"}},
            },
            "features": {"type": "array", "items": {"type": "string", "description": "view:feature or view:*"}},
        },
    }
)


@router.post("/features", responses=error_responses(400, 413, 415, 503), openapi_extra=FEATURES_BODY)
async def get_online_features(request: Request) -> Response:
    state = request.app.state
    key, ids, requests = parse_request(load_json(await request.body()), state.repo, state.settings.max_entities)
    metrics.ENTITIES.observe(len(ids))
    reader: AsyncOnlineReader = state.reader
    start = time.perf_counter()
    try:
        vectors = await reader.read(requests, ids)
    except OnlineStoreUnavailableError as exc:
        metrics.READ_ERRORS.inc()
        raise ApiError(503, str(exc)) from None
    metrics.READ_LATENCY.observe(time.perf_counter() - start)
    features: dict[str, list[Any]] = {}
    statuses: dict[str, list[str]] = {}
    stamps: dict[str, list[str | None]] = {}
    for vec in vectors:
        for f in vec.features:
            features[f"{vec.view}:{f}"] = vec.values[f]
        statuses[vec.view] = [s.value for s in vec.statuses]
        stamps[vec.view] = [from_epoch_us(t).isoformat() if t is not None else None for t in vec.event_timestamps_us]
        for status, n in Tally(vec.statuses).items():
            metrics.STATUSES.labels(vec.view, status.value).inc(n)
    return json_response(
        {"entities": {key: ids}, "features": features, "statuses": statuses, "event_timestamps": stamps}
    )
