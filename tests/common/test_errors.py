"""Domain errors reach the caller as the status their kind maps to, with the message as the body."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.common.app_factory import HTTP_STATUS, http_status, install_common
from app.common.errors import (
    DomainError,
    InvalidInputError,
    NotFoundError,
    PayloadTooLargeError,
    UnavailableError,
    load_json,
)
from app.runtime.online_inputs import EntityNotFoundError, FeaturesUnavailableError


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (InvalidInputError, 400),
        (NotFoundError, 404),
        (EntityNotFoundError, 404),
        (PayloadTooLargeError, 413),
        (UnavailableError, 503),
        (FeaturesUnavailableError, 503),
        (DomainError, 500),
    ],
)
def test_each_kind_answers_its_status_with_the_message(error: type[DomainError], status: int) -> None:
    app = FastAPI()
    install_common(app, max_body_bytes=1000, access_log=False)

    @app.get("/fail")
    async def fail() -> None:
        raise error("user_id 7: no current features")

    with TestClient(app) as client:
        response = client.get("/fail")
    assert response.status_code == status == http_status(error("x"))
    assert response.json() == {"error": "user_id 7: no current features"}


def test_every_kind_is_mapped() -> None:
    assert set(HTTP_STATUS) == {DomainError, *DomainError.__subclasses__()}


@pytest.mark.parametrize("body", [b"", b"{", b"[NaN]"])
def test_bad_json_is_invalid_input(body: bytes) -> None:
    with pytest.raises(InvalidInputError, match="request body"):
        load_json(body)
