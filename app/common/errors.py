"""Errors, in two kinds.

Domain errors (``DomainError`` and its subclasses) say what went wrong in the terms of the code
that raised it: bad input, too much of it, something not found, a backend unavailable. Domain
code (request parsing, feature lookups) raises only these and never names an HTTP status; the
HTTP layer maps each kind to one (``app.common.app_factory``, ``HTTP_STATUS``).

``ApiError`` carries an HTTP status and belongs to the HTTP layer itself (routes, middleware).
Both are answered as ``{"error": "..."}`` (the Open Inference Protocol's shape).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from starlette.responses import Response


class DomainError(Exception):
    """A request the domain code cannot serve; the message says why, for the caller."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInputError(DomainError):
    """The request's content is wrong: the message names the field and the problem."""


class PayloadTooLargeError(DomainError):
    """The request asks for more than a configured limit (rows, instances, entities)."""


class NotFoundError(DomainError):
    """What the request names does not exist (or has no current value)."""


class UnavailableError(DomainError):
    """A backend the answer depends on cannot be reached now; retrying later may succeed."""


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)


def json_response(content: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
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
        raise InvalidInputError("request body is empty; expected JSON")
    try:
        # orjson rejects NaN/Infinity literals, which plain json would let through.
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInputError(f"request body is not valid JSON: {exc}") from exc


# --- OpenAPI: what the routes above answer, so the published schema matches the service ---

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"error": {"type": "string", "description": "names the field and the problem"}},
    "required": ["error"],
}
_MEANING = {
    400: "Bad input: wrong type, NaN/Infinity, missing or unknown field, malformed body",
    404: "Unknown model, version or entry",
    413: "Body, decompressed body, rows, entities or image above a limit",
    415: "Unsupported Content-Type or Content-Encoding",
    503: "Not ready: model not loaded yet, or a backend (Redis, Triton) unavailable",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route decorator: each status with the ``{"error": ...}`` body."""
    return {
        s: {"description": _MEANING[s], "content": {"application/json": {"schema": ERROR_SCHEMA}}} for s in statuses
    }


def json_body(schema: dict[str, Any], required: bool = True) -> dict[str, Any]:
    """``openapi_extra=`` declaring a JSON request body the route reads itself (raw, for speed and
    for its own 400 messages), so the schema documents it without FastAPI validating it."""
    return {"requestBody": {"required": required, "content": {"application/json": {"schema": schema}}}}
