"""The stream scorer's decisions over HTTP: what a client that appended an event reads back."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from starlette.responses import Response

from app.common.errors import NotFoundError, error_responses, json_response
from app.predict.decisions import DecisionReader

router = APIRouter(prefix="/v1", tags=["stream"])


@router.get("/decisions/{event_id}", responses=error_responses(400, 404, 503))
async def decision(request: Request, event_id: Annotated[str, Path(min_length=1, max_length=128)]) -> Response:
    """The decision of an event the stream scorer scored: model, version, probabilities, feature status,
    streaming features."""
    reader: DecisionReader | None = request.app.state.decisions
    if reader is None:
        raise NotFoundError("the stream scorer's decisions are not configured here: set STREAM_REDIS_URL")
    return json_response(await reader.get(event_id))
