"""The preprocessing service's ASGI app.

Served as ``gunicorn -c python:app.common.gunicorn_conf app.preprocess.main:app``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI, Request
from starlette.responses import Response

from app.common.app_factory import freeze_startup_objects, install_common, lazy_app
from app.common.errors import error_response, error_responses, json_response
from app.common.logging import configure_logging
from app.common.settings import package_version
from app.preprocess.api.routes import classify
from app.preprocess.core.config import Settings, get_settings
from app.preprocess.triton import TritonModel, TritonUnavailableError

log = logging.getLogger(__name__)
health = APIRouter(tags=["health"])


@health.get("/healthz")
async def live() -> Response:
    return json_response({"status": "alive"})


@health.get("/readyz", responses=error_responses(503))
async def ready(request: Request) -> Response:
    triton: TritonModel = request.app.state.triton
    if await triton.ready():
        return json_response({"status": "ready", "model": triton.model})
    return error_response(503, f"model {triton.model!r} is not ready on Triton at {triton.url}")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.triton = TritonModel(settings.triton_url, settings.model_name, settings.triton_timeout_ms / 1000)
        app.state.decode_pool = ThreadPoolExecutor(settings.decode_threads, thread_name_prefix="decode")
        try:  # the class names and vocabulary, from the model's config on Triton; if Triton is not up, on first use
            await app.state.triton.served()
        except TritonUnavailableError as exc:
            log.warning("model config not readable at start-up", extra={"error": str(exc)})
        freeze_startup_objects()
        log.info("preprocessing service started", extra={"triton": settings.triton_url})
        try:
            yield
        finally:
            await app.state.triton.close()
            app.state.decode_pool.shutdown(wait=False)

    app = FastAPI(
        title="ml-platform preprocessing service", version=package_version(), lifespan=lifespan, redoc_url=None
    )
    app.state.settings = settings
    for router in (health, classify.router):
        app.include_router(router)
    install_common(app, max_body_bytes=settings.max_body_bytes, access_log=settings.access_log)
    return app


__getattr__ = lazy_app(create_app, globals())
