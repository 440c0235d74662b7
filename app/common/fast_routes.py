"""Hot routes served before FastAPI's request handling, documented by FastAPI.

FastAPI's per-request work (its middleware stack, route matching, dependency solving, request and response
wrapping) cost more than the model on the reference forest: 420 µs of a prediction's 420 µs in-process
went to everything but the 25 µs onnxruntime call, and this path halves it (docs/design.md, "Performance
of the HTTP path"). The inference routes need none of that work: they read and validate their raw bodies
themselves (for speed and for their own 400 messages) and answer a ready-made ``Response``. So:

* ``add_fast_route`` registers the endpoint as an ordinary FastAPI route, which documents it (body, path
  parameters, statuses) and marks it;
* ``FastRouteApp``, a ``FastAPI``, matches the marked routes first (path and method) and runs them through
  the app's own middleware (``add_middleware``: request id, body limit, metrics, access log) and its own
  exception handlers, and nothing else. Every other request, and a marked route's wrong method, takes
  FastAPI's full path.

A plain ``FastAPI`` app serves the same routes through FastAPI, with the same answers, only slower.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

Endpoint = Callable[[Request], Awaitable[Response]]

_PARAM = re.compile(r"{(\w+)}")
_MARK = "_ml_platform_fast_route"


def add_fast_route(
    router: APIRouter,
    path: str,
    endpoint: Endpoint,
    *,
    methods: list[str],
    responses: dict[int | str, dict[str, Any]],
    openapi_extra: dict[str, Any],
) -> None:
    """Serve ``endpoint(request)`` at ``path`` (in a ``FastRouteApp``: without FastAPI's request handling);
    document it with ``responses``, ``openapi_extra`` (its body) and the path's parameters, as strings."""
    setattr(endpoint, _MARK, True)
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string", "title": name.title()}}
        for name in _PARAM.findall(path)
    ]
    router.add_api_route(
        path,
        endpoint,
        methods=methods,
        responses=responses,
        openapi_extra={**openapi_extra, "parameters": parameters},
        name=endpoint.__name__,
    )


class FastRouteApp(FastAPI):
    """FastAPI, with the routes of ``add_fast_route`` served by the app's middleware and exception handlers
    alone. Build it as ``FastAPI``; the fast routes are those of the routers it includes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Matched first, with their full paths; Starlette's Route is the matcher and the route template.
        self._fast_routes: list[Route] = []
        self._fast_stack: ASGIApp | None = None

    def include_router(self, router: APIRouter, *, prefix: str = "", **kwargs: Any) -> None:
        super().include_router(router, prefix=prefix, **kwargs)
        for r in router.routes:
            if isinstance(r, APIRoute) and getattr(r.endpoint, _MARK, False):
                self._fast_routes.append(
                    Route(prefix + r.path, r.endpoint, methods=sorted(r.methods or ()), name=r.name)
                )

    def build_middleware_stack(self) -> ASGIApp:
        stack: ASGIApp = self._serve_fast
        for cls, args, kwargs in reversed(self.user_middleware):
            stack = cls(stack, *args, **kwargs)
        self._fast_stack = stack
        return super().build_middleware_stack()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if self.middleware_stack is None:
                self.middleware_stack = self.build_middleware_stack()
            if self._match(scope):
                assert self._fast_stack is not None  # built with middleware_stack
                scope["app"] = self
                await self._fast_stack(scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    def _match(self, scope: Scope) -> bool:
        """Whether a fast route takes this request; if so, put it and its path parameters in the scope, as
        FastAPI's routing does (the access log and the metrics label each request by ``scope["route"]``)."""
        method = scope["method"]
        path = _route_path(scope)
        for route in self._fast_routes:
            if route.methods is not None and method in route.methods:
                m = route.path_regex.match(path)
                if m is not None:
                    convert = route.param_convertors
                    scope["route"] = route
                    scope["endpoint"] = route.endpoint
                    scope["path_params"] = {k: convert[k].convert(v) for k, v in m.groupdict().items()}
                    return True
        return False

    async def _serve_fast(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            response = await scope["endpoint"](request)
        except Exception as exc:
            response = await self._handle(request, exc)
        await response(scope, receive, send)

    async def _handle(self, request: Request, exc: Exception) -> Response:
        """The app's handler for ``exc`` (the nearest class in its MRO), as FastAPI's stack would pick it."""
        for cls in type(exc).__mro__:
            handler = self.exception_handlers.get(cls)
            if handler is not None:
                result = handler(request, exc)
                response = await result if inspect.isawaitable(result) else result
                assert isinstance(response, Response)  # our handlers all answer a Response
                return response
        raise exc


def _route_path(scope: Scope) -> str:
    """The path below the app's root path (Starlette's rule, which is private to it)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path != root and path[len(root)] == "/":
        return path[len(root) :]
    return path
