"""Telegram's webhook for the platform's bot, through the real edge and signal server: the secret token
is required, a `/start <code>` binds the chat and the answer tells the chat so."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from google.protobuf import json_format

from apidevs.alerts.v1 import user_service_pb2
from mesh.telegram_updates import LINKED_TEXT, NOT_LINKED_TEXT, SECRET_TOKEN_HEADER
from tests.integration.edge.conftest import edge_settings, running_edge
from tests.support import create_user

SECRET = "telegram-webhook-secret_1"


@pytest.fixture(scope="module")
async def telegram_edge(service_env: dict[str, str], signal_server: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = edge_settings(service_env, signal_server, telegram_webhook_secret=SECRET)
    async with running_edge(settings) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        yield client


def start(code: str, chat_id: int = 999) -> dict:
    return {"update_id": 1, "message": {"message_id": 5, "chat": {"id": chat_id}, "text": f"/start {code}"}}


async def test_a_start_update_binds_the_chat_and_answers_it(telegram_edge, users) -> None:
    user = await create_user(users)
    issued = await users.CreateTelegramLink(
        user_service_pb2.CreateTelegramLinkRequest(user_id=user.user.user_id)
    )
    headers = {SECRET_TOKEN_HEADER: SECRET}

    answer = await telegram_edge.post("/telegram/webhook", json=start(issued.code), headers=headers)

    assert answer.status_code == 200
    assert answer.json() == {"method": "sendMessage", "chat_id": "999", "text": LINKED_TEXT}
    stored = await users.GetUser(user_service_pb2.GetUserRequest(user_id=user.user.user_id))
    assert json_format.MessageToDict(stored.notification_preferences)["telegram"]["chat_id"] == "999"

    again = await telegram_edge.post("/telegram/webhook", json=start(issued.code, 555), headers=headers)
    assert again.json() == {"method": "sendMessage", "chat_id": "555", "text": NOT_LINKED_TEXT}


async def test_other_updates_are_acknowledged(telegram_edge) -> None:
    headers = {SECRET_TOKEN_HEADER: SECRET}
    other = {"update_id": 2, "message": {"message_id": 6, "chat": {"id": 1}, "text": "hello"}}

    answer = await telegram_edge.post("/telegram/webhook", json=other, headers=headers)

    assert (answer.status_code, answer.json()) == (200, {})
    garbage = await telegram_edge.post("/telegram/webhook", content=b"{not json", headers=headers)
    assert garbage.status_code == 400


@pytest.mark.parametrize("headers", [{}, {SECRET_TOKEN_HEADER: "wrong"}, {SECRET_TOKEN_HEADER: SECRET + "x"}])
async def test_updates_without_the_secret_token_are_refused(telegram_edge, headers) -> None:
    answer = await telegram_edge.post("/telegram/webhook", json=start("A" * 32), headers=headers)

    assert answer.status_code == 401


async def test_the_route_is_off_without_a_secret(http: httpx.AsyncClient) -> None:
    answer = await http.post("/telegram/webhook", json=start("A" * 32), headers={SECRET_TOKEN_HEADER: ""})

    assert answer.status_code == 404
