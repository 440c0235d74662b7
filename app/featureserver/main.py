"""The feature server's ASGI app.

Served as ``gunicorn -c python:app.common.gunicorn_conf app.featureserver.main:app``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.common.app_factory import freeze_startup_objects, install_common, lazy_app
from app.common.logging import configure_logging
from app.common.settings import package_version
from app.features.definitions import load_repo
from app.features.online import AsyncOnlineReader
from app.featureserver.api.routes import features, health
from app.featureserver.core.config import Settings, get_settings

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.log_level)
    repo = load_repo(settings.require_repo())  # no repository: refuses to start, naming FEATURES_REPO

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.reader = AsyncOnlineReader(
            settings.redis_url, cluster=settings.redis_cluster, timeout_s=settings.read_timeout_ms / 1000
        )
        log.info("feature server started", extra={"views": sorted(repo.views)})
        freeze_startup_objects()
        try:
            yield
        finally:
            await app.state.reader.close()

    app = FastAPI(title="ml-platform feature server", version=package_version(), lifespan=lifespan, redoc_url=None)
    app.state.settings = settings
    app.state.repo = repo
    for router in (health.router, features.router):
        app.include_router(router)
    install_common(app, max_body_bytes=settings.max_body_bytes, access_log=settings.access_log)
    return app


__getattr__ = lazy_app(create_app, globals())
