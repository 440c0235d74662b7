from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.common.errors import error_response, error_responses, json_response
from app.features.online import OnlineStoreUnavailableError

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def live() -> Response:
    return json_response({"status": "alive"})


@router.get("/readyz", responses=error_responses(503))
async def ready(request: Request) -> Response:
    try:
        await request.app.state.reader.ping()
    except OnlineStoreUnavailableError as exc:
        return error_response(503, str(exc))
    return json_response({"status": "ready", "views": sorted(request.app.state.repo.views)})
