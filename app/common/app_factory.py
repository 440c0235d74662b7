"""What every service's FastAPI app shares: middleware, /metrics, JSON errors, start-up GC freeze."""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from app.common.errors import (
    ApiError,
    DomainError,
    InvalidInputError,
    NotFoundError,
    PayloadTooLargeError,
    UnavailableError,
    error_response,
    json_response,
)
from app.common.http_metrics import router as metrics_router
from app.common.middleware import RequestContextMiddleware

log = logging.getLogger(__name__)

# The one place domain errors become HTTP statuses; a subclass answers its base's status.
HTTP_STATUS: dict[type[DomainError], int] = {
    InvalidInputError: 400,
    NotFoundError: 404,
    PayloadTooLargeError: 413,
    UnavailableError: 503,
    DomainError: 500,  # raised bare: a domain error nobody classified is our bug, not the caller's
}


def http_status(exc: DomainError) -> int:
    return next(HTTP_STATUS[c] for c in type(exc).__mro__ if c in HTTP_STATUS)


def install_common(app: FastAPI, *, max_body_bytes: int, access_log: bool) -> None:
    app.include_router(metrics_router)
    _describe_openapi(app)
    app.add_middleware(RequestContextMiddleware, max_body_bytes=max_body_bytes, access_log_enabled=access_log)

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> Response:
        return error_response(exc.status, exc.message)

    @app.exception_handler(DomainError)
    async def _domain_error(_: Request, exc: DomainError) -> Response:
        return error_response(http_status(exc), exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> Response:
        # Its headers too: a 405 must say which methods the path takes (Allow, RFC 9110).
        return json_response({"error": str(exc.detail)}, exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error_response(400, f"{where}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(500, f"internal error: {type(exc).__name__}")


def _describe_openapi(app: FastAPI) -> None:
    """Make the generated schema say what the service does: request validation errors are 400s
    (the handler above), never FastAPI's 422, and /metrics is Prometheus text, not JSON."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                operation.get("responses", {}).pop("422", None)
        for name in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(name, None)
        if not schema.get("components", {}).get("schemas", True):
            del schema["components"]["schemas"]
        if not schema.get("components", True):
            del schema["components"]
        metrics = schema.get("paths", {}).get("/metrics", {}).get("get")
        if metrics is not None:
            metrics["responses"]["200"] = {
                "description": "Prometheus text exposition, summed over all workers",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def freeze_startup_objects() -> None:
    """Call at the end of start-up. Everything allocated so far (modules, app, models) lives for
    the whole process: moving it out of the collector's sight keeps full collections from
    stalling requests while they scan it (docs/design.md, "Performance of the HTTP path")."""
    gc.collect()
    gc.freeze()


def lazy_app(create_app: Callable[[], FastAPI], module_globals: dict[str, Any]) -> Callable[[str], FastAPI]:
    """A module ``__getattr__`` that builds ``app`` on first access: ``gunicorn pkg.main:app`` gets it,
    while importing the module (tests, tools) has no side effects."""

    def __getattr__(name: str) -> FastAPI:  # noqa: N807
        if name == "app":
            module_globals["app"] = application = create_app()
            return application
        raise AttributeError(name)

    return __getattr__
