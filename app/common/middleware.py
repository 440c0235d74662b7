"""One pure-ASGI middleware for what every request needs: request id, body limit,
content coding, metrics, access log. (Starlette's BaseHTTPMiddleware costs ~10x more per request.)"""

from __future__ import annotations

import logging
import os
import time
import zlib
from typing import Any

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.common import http_metrics as metrics
from app.common.errors import ApiError, error_response
from app.common.logging import request_id_var

access_log = logging.getLogger("app.access")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})  # bounded label values


class BodyTooLargeError(ApiError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body exceeds the limit of {limit} bytes")


# Content codings (RFC 9110: case-insensitive) -> zlib's wbits. "deflate" is the zlib format.
_DECODERS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int, access_log_enabled: bool) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.access_log_enabled = access_log_enabled
        self._counters: dict[tuple[str, str, int], Counter] = {}
        self._histograms: dict[tuple[str, str], Histogram] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        rid = None
        content_length = None
        coding = None
        for k, v in scope["headers"]:
            if k == b"x-request-id":
                rid = v.decode("latin-1")[:128]
            elif k == b"content-length":
                content_length = v
            elif k == b"content-encoding":
                coding = v
        if not rid:
            rid = os.urandom(16).hex()  # 128 random bits in hex, like uuid4().hex without building a UUID
        token = request_id_var.set(rid)
        status = 500
        rid_header = (b"x-request-id", rid.encode("latin-1"))

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), rid_header]
            await send(message)

        try:
            if content_length is not None and _too_large(content_length, self.max_body_bytes):
                await error_response(413, BodyTooLargeError(self.max_body_bytes).message)(scope, receive, send_wrapper)
                return
            limited = self._limited(receive)
            if coding is not None:
                name = coding.decode("latin-1").strip().lower()
                if name != "identity":
                    wbits = _DECODERS.get(name)
                    if wbits is None:
                        message = f"unsupported Content-Encoding {coding.decode('latin-1')!r}; use gzip or deflate"
                        await error_response(415, message)(scope, receive, send_wrapper)
                        return
                    limited = self._decoded(limited, name, wbits)
                # The app sees the decoded body, and no header claiming otherwise.
                scope = dict(scope)
                scope["headers"] = [
                    (k, v) for k, v in scope["headers"] if k not in (b"content-encoding", b"content-length")
                ]
            await self.app(scope, limited, send_wrapper)
        finally:
            elapsed = time.perf_counter() - start
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope["method"] if scope["method"] in _METHODS else "OTHER"
            self._count(template, method, status, elapsed)
            if self.access_log_enabled:
                access_log.info(
                    "request",
                    extra={
                        "method": method,
                        "path": scope["path"],
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 3),
                    },
                )
            request_id_var.reset(token)

    def _limited(self, receive: Receive) -> Receive:
        limit = self.max_body_bytes
        seen = 0

        async def wrapped() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLargeError(limit)
            return message

        return wrapped

    def _decoded(self, receive: Receive, name: str, wbits: int) -> Receive:
        """The body decompressed as it arrives, the decoded size held to the same limit as the raw
        one: a small compressed body cannot expand into gigabytes (zlib's max_length stops it)."""
        limit = self.max_body_bytes
        decoder = zlib.decompressobj(wbits)
        produced = 0
        consumed = 0

        async def wrapped() -> Message:
            nonlocal produced, consumed
            message = await receive()
            if message["type"] != "http.request":
                return message
            chunk = message.get("body", b"")
            more = message.get("more_body", False)
            consumed += len(chunk)
            try:
                data = decoder.decompress(chunk, limit + 1 - produced)
            except zlib.error as exc:
                raise ApiError(400, f"cannot decompress {name} body: {exc}") from None
            produced += len(data)
            if produced > limit or decoder.unconsumed_tail:
                raise ApiError(413, f"decompressed body exceeds the limit of {limit} bytes")
            if decoder.unused_data:
                raise ApiError(400, f"cannot decompress {name} body: data after the end of the compressed stream")
            if not more and consumed and not decoder.eof:
                raise ApiError(400, f"cannot decompress {name} body: truncated")
            return {"type": "http.request", "body": data, "more_body": more}

        return wrapped

    def _count(self, route: str, method: str, status: int, elapsed: float) -> None:
        key = (route, method, status)
        c = self._counters.get(key)
        if c is None:
            c = self._counters[key] = metrics.REQUESTS.labels(route, method, str(status))
        c.inc()
        hkey = (route, method)
        h = self._histograms.get(hkey)
        if h is None:
            h = self._histograms[hkey] = metrics.REQUEST_LATENCY.labels(route, method)
        h.observe(elapsed)


def _too_large(content_length: Any, limit: int) -> bool:
    try:
        return int(content_length) > limit
    except ValueError:
        return False
