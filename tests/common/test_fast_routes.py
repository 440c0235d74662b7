"""Hot routes: served before FastAPI's request handling by a FastRouteApp, through the app's own middleware
and exception handlers; documented by FastAPI; the same answers from a plain FastAPI app."""

from __future__ import annotations

import logging

import pytest
from fastapi import APIRouter, FastAPI, Request
from fastapi.testclient import TestClient
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from app.common.app_factory import install_common
from app.common.errors import ApiError, InvalidInputError, error_responses, json_body, json_response
from app.common.fast_routes import FastRouteApp, add_fast_route

PATH = "/v9/things/{name}/echo"


def make_app(cls: type[FastAPI]) -> tuple[FastAPI, list[object]]:
    served_by: list[object] = []
    router = APIRouter(prefix="/v9")

    async def echo(request: Request) -> Response:
        served_by.append(request.scope["route"])
        name = request.path_params["name"]
        if name == "missing":
            raise ApiError(404, "no such thing")
        if name == "bad":
            raise InvalidInputError("bad thing")  # a domain error: the app maps it to 400
        if name == "bug":
            raise RuntimeError("boom")
        return json_response({"name": name, "body": (await request.body()).decode()})

    body = json_body({"type": "object"})
    add_fast_route(
        router, "/things/{name}/echo", echo, methods=["POST"], responses=error_responses(404), openapi_extra=body
    )

    @router.get("/plain")
    async def plain() -> dict[str, str]:
        return {"ok": "yes"}

    app = cls()
    app.include_router(router)
    install_common(app, max_body_bytes=1000, access_log=True)
    return app, served_by


def answers(client: TestClient) -> list[tuple[int, object]]:
    out: list[tuple[int, object]] = []
    for name, content in (("a", b"{}"), ("missing", b"{}"), ("bad", b"{}"), ("bug", b"{}"), ("a", b"x" * 2000)):
        r = client.post(f"/v9/things/{name}/echo", content=content)
        out.append((r.status_code, r.json()))
    r = client.get("/v9/things/a/echo")  # a fast route's other method: FastAPI's answer
    out.append((r.status_code, r.headers.get("allow")))
    out.append((client.get("/v9/plain").status_code, client.get("/v9/plain").json()))
    out.append((client.post("/v9/things/a/b/echo").status_code, None))
    return out


def test_fast_route_skips_fastapis_stack_with_the_same_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    fast, served_fast = make_app(FastRouteApp)
    plain, served_plain = make_app(FastAPI)
    with TestClient(fast, raise_server_exceptions=False) as fc, TestClient(plain, raise_server_exceptions=False) as pc:
        got = answers(fc)
        assert got == answers(pc)
        assert got[:5] == [
            (200, {"name": "a", "body": "{}"}),
            (404, {"error": "no such thing"}),  # the app's exception handlers, by the exception's class
            (400, {"error": "bad thing"}),
            (500, {"error": "internal error: RuntimeError"}),
            (413, {"error": "request body exceeds the limit of 1000 bytes"}),  # the app's middleware
        ]
        assert got[5] == (405, "POST") and got[6] == (200, {"ok": "yes"}) and got[7][0] == 404

        # Both label the request with the route's template (the access log and the metrics read it).
        assert {getattr(r, "path", None) for r in served_fast + served_plain} == {PATH}
        for client in (fc, pc):
            metrics = client.get("/metrics").text.replace('method="POST",', "")
            assert f'route="{PATH}",status="404"' in metrics and f'route="{PATH}",status="413"' in metrics

        # The fast route never enters FastAPI's stack (middleware, routing, dependencies); other routes do.
        entered: list[str] = []
        stack = fast.middleware_stack
        assert stack is not None

        async def spy(scope: Scope, receive: Receive, send: Send) -> None:
            entered.append(scope["path"])
            await stack(scope, receive, send)

        monkeypatch.setattr(fast, "middleware_stack", spy)
        assert fc.post("/v9/things/a/echo", content=b"{}").status_code == 200
        assert fc.get("/v9/plain").status_code == 200
        assert entered == ["/v9/plain"]

    for app in (fast, plain):
        op = app.openapi()["paths"][PATH]["post"]
        assert op["parameters"] == [
            {"name": "name", "in": "path", "required": True, "schema": {"type": "string", "title": "Name"}}
        ]
        assert op["requestBody"] == json_body({"type": "object"})["requestBody"] and "404" in op["responses"]


def test_fast_route_logs_like_any_route(caplog: pytest.LogCaptureFixture) -> None:
    app, _ = make_app(FastRouteApp)
    with TestClient(app, raise_server_exceptions=False) as client, caplog.at_level(logging.INFO):
        r = client.post("/v9/things/bug/echo", content=b"{}", headers={"x-request-id": "req-42"})
    assert r.headers["x-request-id"] == "req-42"
    [access] = [rec for rec in caplog.records if rec.name == "app.access"]
    assert (access.__dict__["path"], access.__dict__["status"]) == ("/v9/things/bug/echo", 500)
    assert any(rec.levelname == "ERROR" and rec.exc_info for rec in caplog.records)  # the bug's traceback


def test_fast_route_under_a_root_path() -> None:
    app, served = make_app(FastRouteApp)
    with TestClient(app, root_path="/api") as client:
        r = client.post("/api/v9/things/a/echo", content=b"{}")
    assert r.status_code == 200 and r.json()["name"] == "a" and served
