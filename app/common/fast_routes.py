"""Hot routes served by Starlette directly, documented by FastAPI.

FastAPI's per-request work (matching, dependency solving, its request and response wrapping) was about a
third of a prediction's time inside the app, measured in-process on the reference forest (docs/design.md,
"Performance of the HTTP path"). The inference routes need none of it: they read and validate their raw
bodies themselves (for speed and for their own 400 messages) and answer a ready-made ``Response``. So each
is registered twice, with the same endpoint:

* a plain Starlette ``Route``, first: it serves every request for the path (Starlette takes the first match);
* a FastAPI route after it, never reached, that puts the operation in the OpenAPI schema: body, path
  parameters, statuses.

Errors raised by the endpoint (``ApiError``, domain errors) go through the app's exception handlers either
way, and the access log and metrics label the request with the same route template.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

Endpoint = Callable[[Request], Awaitable[Response]]

_PARAM = re.compile(r"{(\w+)}")


def add_fast_route(
    router: APIRouter,
    path: str,
    endpoint: Endpoint,
    *,
    methods: list[str],
    responses: dict[int | str, dict[str, Any]],
    openapi_extra: dict[str, Any],
) -> None:
    """Serve ``endpoint(request)`` at ``path`` without FastAPI's request handling; document it with
    ``responses``, ``openapi_extra`` (its body) and the path's parameters, as strings."""
    full_path = router.prefix + path  # APIRouter.add_route does not apply the router's prefix; add_api_route does
    route = Route(full_path, endpoint, methods=methods, include_in_schema=False, name=endpoint.__name__)

    async def serve(request: Request) -> Response:
        # FastAPI's routes put themselves in the scope, Starlette's do not: the access log and the metrics
        # label each request by this template
        request.scope["route"] = route
        return await endpoint(request)

    router.add_route(full_path, serve, methods=methods, include_in_schema=False, name=endpoint.__name__)
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
