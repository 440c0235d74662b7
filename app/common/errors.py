"""Errors the API answers as ``{"error": "..."}`` (the Open Inference Protocol's shape)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)


def json_response(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def error_response(status: int, message: str) -> Response:
    return json_response({"error": message}, status)


def load_json(body: bytes) -> Any:
    if not body:
        raise bad_request("request body is empty; expected JSON")
    try:
        # orjson rejects NaN/Infinity literals, which plain json would let through.
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"request body is not valid JSON: {exc}") from exc
