from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from litestar import Litestar, get
from litestar.params import FromPath, FromQuery
from litestar.testing import TestClient

from edge.errors import EXCEPTION_HANDLERS, http_status_for
from mesh.errors import (
    AlertsError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
)

_SECRET = "whk_the-token-is-a-credential"
_RAISED: dict[str, Exception] = {
    "quota": ResourceExhaustedError("over quota", reason="QUOTA_EXCEEDED"),
    "limited": ResourceExhaustedError("slow down", reason="RATE_LIMITED", retry_after_seconds=1.2),
    "unauthenticated": UnauthenticatedError("missing bearer API key"),
    "unavailable": UnavailableError("away", retry_after_seconds=3),
    "link": PermissionDeniedError("media URL expired", reason="MEDIA_LINK_EXPIRED"),
    "storage": InternalError("storage refused an object read", reason="STORAGE_FAILED"),
    "bug": RuntimeError(f"a bug whose message holds {_SECRET}"),
}


@get("/raise/{name:str}", sync_to_thread=False)
def raising(name: FromPath[str]) -> None:
    raise _RAISED[name]


@get("/number", sync_to_thread=False)
def number(value: FromQuery[int]) -> dict[str, int]:
    return {"value": value}


@get("/tokens/{token:str}", sync_to_thread=False)
def token_number(token: FromPath[str], value: FromQuery[int]) -> dict[str, int]:
    return {"value": value}


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient[Litestar]]:
    app = Litestar(
        route_handlers=[raising, number, token_number],
        exception_handlers=EXCEPTION_HANDLERS,
        logging_config=None,
    )
    with TestClient(app) as test_client:
        yield test_client


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/raise/quota", 429, "quota_exceeded"),
        ("/raise/limited", 429, "rate_limited"),
        ("/raise/unauthenticated", 401, "unauthenticated"),
        ("/raise/unavailable", 503, "unavailable"),
        ("/raise/link", 403, "link_expired"),
        ("/raise/storage", 502, "storage_failed"),
        ("/raise/bug", 500, "internal"),
        # Litestar's own refusal of an unknown route.
        ("/nowhere", 404, "not_found"),
    ],
)
def test_every_error_answer_has_one_shape(
    client: TestClient[Litestar], path: str, status: int, code: str
) -> None:
    response = client.get(path)
    assert (response.status_code, response.json()) == (status, {"success": False, "error": code})
    assert response.headers["cache-control"] == "no-store"


def test_a_parameter_litestar_refuses_is_named_in_the_same_shape(client: TestClient[Litestar]) -> None:
    response = client.get("/number?value=seven")
    assert (response.status_code, response.json()) == (
        400,
        {"success": False, "error": "invalid_argument", "message": "invalid query parameter value"},
    )


def test_a_refused_parameter_never_echoes_the_path_or_the_value(client: TestClient[Litestar]) -> None:
    """Litestar's own detail names the request's path, which for a webhook holds its token."""
    response = client.get(f"/tokens/{_SECRET}?value={_SECRET}")
    assert response.json() == {
        "success": False,
        "error": "invalid_argument",
        "message": "invalid query parameter value",
    }
    assert _SECRET not in response.text


def test_wrong_method_answers_in_the_same_shape(client: TestClient[Litestar]) -> None:
    response = client.post("/number?value=7")
    assert (response.status_code, response.json()) == (405, {"success": False, "error": "method_not_allowed"})


def test_retry_after_is_whole_seconds_rounded_up_and_401_names_the_scheme(
    client: TestClient[Litestar],
) -> None:
    assert client.get("/raise/limited").headers["retry-after"] == "2"
    assert client.get("/raise/unavailable").headers["retry-after"] == "3"
    assert "retry-after" not in client.get("/raise/quota").headers
    assert client.get("/raise/unauthenticated").headers["www-authenticate"] == 'Bearer realm="alerts"'


def test_an_unexpected_error_is_logged_without_reaching_the_client(
    client: TestClient[Litestar], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="edge.errors")
    response = client.get("/raise/bug")
    assert _SECRET not in response.text
    (record,) = [r for r in caplog.records if r.name == "edge.errors"]
    assert record.exc_info is not None
    assert getattr(record, "route", None) == "/raise/{name}"


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (NotFoundError("gone", reason="TOKEN_NOT_FOUND"), (404, "not_found")),
        (InvalidArgumentError("big", reason="BODY_TOO_LARGE"), (413, "body_too_large")),
        (InvalidArgumentError("bad"), (400, "invalid_argument")),
        (AlertsError("unclassified"), (500, "internal")),
    ],
)
def test_a_reason_without_its_own_row_falls_back_to_its_status_row(
    error: AlertsError, expected: tuple[int, str]
) -> None:
    assert http_status_for(error) == expected
