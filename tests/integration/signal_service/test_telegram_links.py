"""Connecting a Telegram chat through a real gRPC server on real PostgreSQL: CreateTelegramLink's code
binds one chat, once, before it expires, and only its hash is stored."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import asyncpg
import grpc
import pytest
from google.protobuf import json_format, struct_pb2

from apidevs.alerts.v1 import user_service_pb2, user_service_pb2_grpc
from mesh.errors import from_rpc_error
from tests.conftest import TEST_BOT_USERNAME
from tests.keys import open_system_channel
from tests.support import create_user


@pytest.fixture
async def users(signal_server: str) -> AsyncIterator[user_service_pb2_grpc.UserServiceStub]:
    async with open_system_channel(signal_server) as channel:
        yield user_service_pb2_grpc.UserServiceStub(channel)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    yield connection
    await connection.close()


async def refusal(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call
    return refused.value.code(), from_rpc_error(refused.value).reason


def link_request(code: str, chat_id: str) -> user_service_pb2.LinkTelegramChatRequest:
    return user_service_pb2.LinkTelegramChatRequest(code=code, chat_id=chat_id)


async def telegram_preferences(users, user_id: str) -> dict:
    user = await users.GetUser(user_service_pb2.GetUserRequest(user_id=user_id))
    return json_format.MessageToDict(user.notification_preferences).get("telegram", {})


async def test_a_link_binds_the_chat_that_sends_its_code_once(users, db) -> None:
    user = await create_user(users)
    user_id = user.user.user_id

    issued = await users.CreateTelegramLink(user_service_pb2.CreateTelegramLinkRequest(user_id=user_id))

    link = urlsplit(issued.link)
    assert (link.scheme, link.netloc, link.path) == ("https", "t.me", f"/{TEST_BOT_USERNAME}")
    assert parse_qs(link.query) == {"start": [issued.code]}
    assert 880 <= issued.expires_at.seconds - time.time() <= 901
    stored = await db.fetch("SELECT * FROM telegram_links WHERE user_id = $1", uuid.UUID(user_id))
    assert [row["code_hash"] for row in stored] == [hashlib.sha256(issued.code.encode()).hexdigest()]
    assert issued.code not in str([dict(row) for row in stored])

    bound = await users.LinkTelegramChat(link_request(issued.code, "4242"))

    assert bound.user_id == user_id
    assert await telegram_preferences(users, user_id) == {
        "chat_id": "4242",
        "enabled": True,
        "with_screenshot": True,
    }
    # Single use: another chat sending the same code binds nothing.
    assert await refusal(users.LinkTelegramChat(link_request(issued.code, "5353"))) == (
        grpc.StatusCode.NOT_FOUND,
        "TELEGRAM_LINK_NOT_FOUND",
    )
    assert (await telegram_preferences(users, user_id))["chat_id"] == "4242"


async def test_expired_unknown_and_malformed_codes_bind_nothing(users, db) -> None:
    user = await create_user(users)
    issued = await users.CreateTelegramLink(
        user_service_pb2.CreateTelegramLinkRequest(user_id=user.user.user_id)
    )
    await db.execute(
        "UPDATE telegram_links SET expires_at = now() - interval '1 second' WHERE code_hash = $1",
        hashlib.sha256(issued.code.encode()).hexdigest(),
    )
    not_found = (grpc.StatusCode.NOT_FOUND, "TELEGRAM_LINK_NOT_FOUND")

    for code in (issued.code, "A" * 32, "not a code", ""):
        assert await refusal(users.LinkTelegramChat(link_request(code, "4242"))) == not_found
    assert await telegram_preferences(users, user.user.user_id) == {}
    assert await refusal(users.LinkTelegramChat(link_request(issued.code, "chat 1"))) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_CHAT_ID",
    )


async def test_linking_keeps_the_users_other_telegram_choice(users) -> None:
    preferences = struct_pb2.Struct()
    preferences.update({"telegram": {"chat_id": "111", "enabled": False, "with_screenshot": False}})
    user = await create_user(users, notification_preferences=preferences)
    issued = await users.CreateTelegramLink(
        user_service_pb2.CreateTelegramLinkRequest(user_id=user.user.user_id)
    )

    await users.LinkTelegramChat(link_request(issued.code, "-1001234567890"))

    assert await telegram_preferences(users, user.user.user_id) == {
        "chat_id": "-1001234567890",
        "enabled": True,
        "with_screenshot": False,
    }


async def test_a_new_link_drops_the_users_spent_codes(users, db) -> None:
    user = await create_user(users)
    request = user_service_pb2.CreateTelegramLinkRequest(user_id=user.user.user_id)
    used = await users.CreateTelegramLink(request)
    await users.LinkTelegramChat(link_request(used.code, "77"))
    waiting = await users.CreateTelegramLink(request)

    await users.CreateTelegramLink(request)

    hashes = {
        row["code_hash"]
        for row in await db.fetch(
            "SELECT code_hash FROM telegram_links WHERE user_id = $1", uuid.UUID(user.user.user_id)
        )
    }
    assert hashlib.sha256(used.code.encode()).hexdigest() not in hashes
    assert hashlib.sha256(waiting.code.encode()).hexdigest() in hashes
    assert len(hashes) == 2


async def test_links_are_for_existing_users(users) -> None:
    assert await refusal(
        users.CreateTelegramLink(user_service_pb2.CreateTelegramLinkRequest(user_id=str(uuid.uuid4())))
    ) == (grpc.StatusCode.NOT_FOUND, "USER_NOT_FOUND")
