"""Liveness and readiness, in Kubernetes' and the Open Inference Protocol's spellings."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from app.common.errors import error_response, error_responses, json_response
from app.predict.api.deps import RegistryDep

router = APIRouter(tags=["health"])


def _ready(registry: RegistryDep) -> Response:
    """200 with each model's state (ready: version and engine; failed: why; loading), or 503 naming them."""
    if registry.ready:
        return json_response({"status": "ready", "models": registry.model_states()})
    return error_response(503, registry.not_ready_reason())


@router.get("/healthz")
@router.get("/v2/health/live")
async def live() -> Response:
    # Alive means the event loop answers; model problems are readiness, not liveness.
    return json_response({"status": "alive"})


@router.get("/readyz", responses=error_responses(503))
@router.get("/v2/health/ready", responses=error_responses(503))
async def ready(registry: RegistryDep) -> Response:
    return _ready(registry)
