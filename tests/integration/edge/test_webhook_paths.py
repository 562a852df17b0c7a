"""The raw webhook path (edge.webhook_fast_path) and the declared Litestar route answer alike.

A trailing slash is the Litestar route's (the raw path leaves it), so each case is posted both ways and the
answers compared: status, body (but for the ids each answer has of its own) and headers.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.integration.edge.test_webhook_security import fresh_address
from tests.support import SAMPLE, create_user

# Headers every answer has with a value of its own, or that the server adds on its own.
OWN_VALUES = {"x-request-id", "date"}
OWN_FIELDS = {"signal_id"}


def comparable(answer: httpx.Response) -> tuple[int, dict[str, Any], dict[str, str]]:
    body = {key: value for key, value in answer.json().items() if key not in OWN_FIELDS}
    headers = {name: value for name, value in answer.headers.items() if name not in OWN_VALUES}
    assert set(answer.headers) >= {"x-request-id", "content-type", "content-length"}
    return answer.status_code, body, headers


async def both_ways(http: httpx.AsyncClient, path: str, body: bytes, **kwargs: Any) -> list[Any]:
    """The answers of the raw path and of the Litestar route (each with a body of its own)."""
    answers = []
    for suffix in ("", "/"):
        headers = {"x-forwarded-for": fresh_address()} | kwargs.get("headers", {})
        sent = body.replace(b"{n}", uuid.uuid4().hex.encode())
        url = httpx.URL(path + suffix, params=kwargs.get("params"))
        answers.append(comparable(await http.post(url, content=sent, headers=headers)))
    return answers


async def test_an_accepted_alert_is_answered_alike(http: httpx.AsyncClient, users) -> None:
    created = await create_user(users)
    fast, litestar = await both_ways(http, f"/webhook/u/{created.webhook_token}", SAMPLE + b"\nid: {n}")
    assert fast[0] == 200
    assert fast == litestar


@pytest.mark.parametrize(
    ("token", "params", "headers", "status"),
    [
        ("whk_short", None, {}, 404),
        (f"whk_{'Q' * 43}", None, {}, 404),
        (None, {"chart": "a b"}, {}, 400),
        (None, None, {f"x-many-{index}": "v" for index in range(150)}, 431),
    ],
    ids=["malformed-token", "unknown-token", "invalid-chart", "header-flood"],
)
async def test_refusals_are_answered_alike(
    http: httpx.AsyncClient, users, token: str | None, params: Any, headers: dict[str, str], status: int
) -> None:
    token = token or (await create_user(users)).webhook_token
    fast, litestar = await both_ways(
        http, f"/webhook/u/{token}", SAMPLE + b"\nid: {n}", params=params, headers=headers
    )
    assert fast[0] == status
    assert fast == litestar
