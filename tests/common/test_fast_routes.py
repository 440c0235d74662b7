"""Hot routes: served by the Starlette route, documented by the FastAPI one, errors and metrics as any route's."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.responses import Response

from app.common.app_factory import install_common
from app.common.errors import ApiError, error_responses, json_body, json_response
from app.common.fast_routes import add_fast_route


def make_app() -> tuple[FastAPI, list[object]]:
    served_by: list[object] = []
    router = APIRouter(prefix="/v9")

    async def echo(request: Request) -> Response:
        served_by.append(request.scope["route"])
        if request.path_params["name"] == "missing":
            raise ApiError(404, "no such thing")
        return json_response({"name": request.path_params["name"], "body": (await request.body()).decode()})

    body = json_body({"type": "object"})
    add_fast_route(
        router, "/things/{name}/echo", echo, methods=["POST"], responses=error_responses(404), openapi_extra=body
    )
    app = FastAPI()
    app.include_router(router)
    install_common(app, max_body_bytes=1000, access_log=False)
    return app, served_by


def test_served_by_starlette_documented_by_fastapi() -> None:
    app, served_by = make_app()
    with TestClient(app) as client:
        r = client.post("/v9/things/a/echo", content=b"{}")
        assert r.status_code == 200 and r.json() == {"name": "a", "body": "{}"}
        [route] = served_by
        assert not isinstance(route, APIRoute)  # FastAPI's request handling is skipped
        assert getattr(route, "path", None) == "/v9/things/{name}/echo"
        r = client.post("/v9/things/missing/echo", content=b"{}")
        assert (r.status_code, r.json()) == (404, {"error": "no such thing"})  # the app's exception handlers
        metrics = client.get("/metrics").text
        assert 'route="/v9/things/{name}/echo",status="404"' in metrics.replace('method="POST",', "")
    op = app.openapi()["paths"]["/v9/things/{name}/echo"]["post"]
    assert op["parameters"] == [
        {"name": "name", "in": "path", "required": True, "schema": {"type": "string", "title": "Name"}}
    ]
    assert op["requestBody"] == json_body({"type": "object"})["requestBody"] and "404" in op["responses"]
