"""Access tokens, runtime API keys and the user listing through a real gRPC server on real PostgreSQL:
what each refuses, with which reason, and that nothing shown once is ever shown again."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import grpc
import pytest

from apidevs.alerts.v1 import (
    api_key_service_pb2,
    api_key_service_pb2_grpc,
    resources_pb2,
    signal_service_pb2,
    signal_service_pb2_grpc,
    user_service_pb2,
    user_service_pb2_grpc,
)
from mesh.errors import from_rpc_error
from mesh.grpc import open_channel
from tests.keys import open_system_channel
from tests.support import create_user

USER_KEY = api_key_service_pb2.API_KEY_ROLE_USER


@pytest.fixture
async def channel(signal_server: str) -> AsyncIterator[grpc.aio.Channel]:
    async with open_system_channel(signal_server) as opened:
        yield opened


async def refusal(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call
    return refused.value.code(), from_rpc_error(refused.value).reason


async def test_access_token_lifetimes_and_users_are_checked(channel: grpc.aio.Channel) -> None:
    users = user_service_pb2_grpc.UserServiceStub(channel)
    user = await create_user(users)
    request = user_service_pb2.CreateAccessTokenRequest
    for ttl in (-1, 86_401):
        assert await refusal(
            users.CreateAccessToken(request(user_id=user.user.user_id, ttl_seconds=ttl))
        ) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_TTL",
        )
    assert await refusal(users.CreateAccessToken(request(user_id=str(uuid.uuid4())))) == (
        grpc.StatusCode.NOT_FOUND,
        "USER_NOT_FOUND",
    )
    assert await refusal(
        users.RevokeAccessTokens(user_service_pb2.RevokeAccessTokensRequest(user_id=str(uuid.uuid4())))
    ) == (grpc.StatusCode.NOT_FOUND, "USER_NOT_FOUND")


async def test_a_token_may_not_mint_tokens_nor_read_users_in_bulk(
    signal_server: str, channel: grpc.aio.Channel
) -> None:
    users = user_service_pb2_grpc.UserServiceStub(channel)
    user = await create_user(users)
    token = (
        await users.CreateAccessToken(user_service_pb2.CreateAccessTokenRequest(user_id=user.user.user_id))
    ).access_token
    async with open_channel(signal_server, token) as as_viewer:
        viewer_users = user_service_pb2_grpc.UserServiceStub(as_viewer)
        own = await viewer_users.GetUser(user_service_pb2.GetUserRequest(user_id=user.user.user_id))
        assert own.user_id == user.user.user_id
        for call in (
            viewer_users.CreateAccessToken(
                user_service_pb2.CreateAccessTokenRequest(user_id=user.user.user_id)
            ),
            viewer_users.ListUsers(user_service_pb2.ListUsersRequest()),
            api_key_service_pb2_grpc.ApiKeyServiceStub(as_viewer).ListApiKeys(
                api_key_service_pb2.ListApiKeysRequest()
            ),
        ):
            assert (await refusal(call))[0] == grpc.StatusCode.PERMISSION_DENIED


async def test_runtime_keys_are_validated_shown_once_and_revoked(
    signal_server: str, channel: grpc.aio.Channel
) -> None:
    keys = api_key_service_pb2_grpc.ApiKeyServiceStub(channel)
    user = await create_user(user_service_pb2_grpc.UserServiceStub(channel))
    create = api_key_service_pb2.CreateApiKeyRequest
    for request, reason in (
        (create(name="no role"), "INVALID_ROLE"),
        (create(role=api_key_service_pb2.API_KEY_ROLE_PLATFORM, name=" "), "INVALID_NAME"),
        (create(role=USER_KEY, name="no user"), "INVALID_USER_ID"),
        (
            create(role=api_key_service_pb2.API_KEY_ROLE_ADMIN, name="x", user_id=user.user.user_id),
            "INVALID_USER_ID",
        ),
        (create(role=USER_KEY, name="x", user_id="not-a-uuid"), "INVALID_USER_ID"),
    ):
        assert await refusal(keys.CreateApiKey(request)) == (grpc.StatusCode.INVALID_ARGUMENT, reason)
    assert await refusal(keys.CreateApiKey(create(role=USER_KEY, name="x", user_id=str(uuid.uuid4())))) == (
        grpc.StatusCode.NOT_FOUND,
        "USER_NOT_FOUND",
    )

    created = await keys.CreateApiKey(create(role=USER_KEY, name="proxy", user_id=user.user.user_id))
    assert created.key.startswith("ak_")
    listed = await keys.ListApiKeys(api_key_service_pb2.ListApiKeysRequest())
    assert created.key not in str(listed)
    mine = next(key for key in listed.api_keys if key.key_id == created.api_key.key_id)
    assert (mine.name, mine.role, mine.user_id) == ("proxy", USER_KEY, user.user.user_id)

    async with open_channel(signal_server, created.key) as with_key:
        signals = signal_service_pb2_grpc.SignalServiceStub(with_key)
        stats = signal_service_pb2.GetUserStatsRequest(user_id=user.user.user_id)
        assert (await signals.GetUserStats(stats)).user_id == user.user.user_id
        other = signal_service_pb2.GetUserStatsRequest(user_id=str(uuid.uuid4()))
        # Another user answers like an unknown one to a scoped caller (issue 19).
        assert (await refusal(signals.GetUserStats(other)))[0] == grpc.StatusCode.NOT_FOUND

        await keys.RevokeApiKey(api_key_service_pb2.RevokeApiKeyRequest(key_id=created.api_key.key_id))
        assert (await refusal(signals.GetUserStats(stats)))[0] == grpc.StatusCode.UNAUTHENTICATED

    active = await keys.ListApiKeys(api_key_service_pb2.ListApiKeysRequest())
    assert created.api_key.key_id not in {key.key_id for key in active.api_keys}
    everything = await keys.ListApiKeys(api_key_service_pb2.ListApiKeysRequest(include_revoked=True))
    revoked = next(key for key in everything.api_keys if key.key_id == created.api_key.key_id)
    assert revoked.HasField("revoked_at")
    assert await refusal(
        keys.RevokeApiKey(api_key_service_pb2.RevokeApiKeyRequest(key_id=str(uuid.uuid4())))
    ) == (
        grpc.StatusCode.NOT_FOUND,
        "API_KEY_NOT_FOUND",
    )


async def test_list_users_pages_through_every_user_once(channel: grpc.aio.Channel) -> None:
    users = user_service_pb2_grpc.UserServiceStub(channel)
    created = {(await create_user(users, plan=resources_pb2.PLAN_FREE)).user.user_id for _ in range(5)}
    seen: list[str] = []
    page_token = ""
    while True:
        page = await users.ListUsers(user_service_pb2.ListUsersRequest(page_size=2, page_token=page_token))
        assert len(page.users) <= 2
        seen.extend(user.user_id for user in page.users)
        page_token = page.next_page_token
        if not page_token:
            break
    assert len(seen) == len(set(seen))
    assert seen == sorted(seen)
    assert created <= set(seen)
    assert await refusal(users.ListUsers(user_service_pb2.ListUsersRequest(page_size=501))) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_PAGE_SIZE",
    )
