from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from app.predict import metrics

router = APIRouter(tags=["metrics"])


@router.get("/metrics")
def prometheus_metrics() -> Response:
    # A sync route: reading every worker's files is blocking I/O, keep it off the event loop.
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)
