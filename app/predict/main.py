"""The prediction service's ASGI app.

Served as ``gunicorn -c python:app.common.gunicorn_conf app.predict.main:app``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.common.app_factory import freeze_startup_objects, install_common, lazy_app
from app.common.fast_routes import FastRouteApp
from app.common.logging import configure_logging
from app.common.settings import package_version
from app.modelstore import model_store
from app.predict.api.routes import decisions, health, v1, v2
from app.predict.core.config import Settings, get_settings
from app.predict.decisions import DecisionReader
from app.runtime.registry import ModelRegistry

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = model_store(settings)
        registry = ModelRegistry(settings, store)
        app.state.registry = registry
        app.state.decisions = DecisionReader(settings) if settings.decisions_redis_url else None
        await registry.start()
        freeze_startup_objects()
        log.info("worker started", extra={"models": sorted(registry.models), "store": store.url})
        try:
            yield
        finally:
            await registry.stop()
            if app.state.decisions is not None:
                await app.state.decisions.close()
            log.info("worker stopped")

    app = FastRouteApp(
        title="ml-platform prediction service",
        version=package_version(),
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.settings = settings
    for router in (health.router, v1.router, v2.router, decisions.router):
        app.include_router(router)
    install_common(app, max_body_bytes=settings.max_body_bytes, access_log=settings.access_log)
    return app


__getattr__ = lazy_app(create_app, globals())
