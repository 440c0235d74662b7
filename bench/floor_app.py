"""The HTTP floor: an ASGI app that reads the body and answers a constant prediction-sized JSON, served as
ours is (gunicorn, app.common.gunicorn_conf). No service behind the same server can answer faster, so it
bounds every requests-per-second and latency target of bench/engines.py."""

from __future__ import annotations

from starlette.types import Receive, Scope, Send

_BODY = b'{"model":"reference","version":"v","predictions":[1],"probabilities":[{"0":0.25,"1":0.75}]}'
_HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(_BODY)).encode())]


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            kind = (await receive())["type"]
            await send({"type": kind + ".complete"})
            if kind == "lifespan.shutdown":
                return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": _BODY})
