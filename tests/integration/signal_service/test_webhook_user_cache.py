"""Intake keeps recent token lookups; none of a user's changes may wait for that cache to expire.

Each test first ingests once, so that the user is cached, then changes the user and ingests again.
"""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import field_mask_pb2

from apidevs.alerts.v1 import resources_pb2, signal_service_pb2, user_service_pb2
from mesh.errors import from_rpc_error
from tests.support import create_user, ingest_request


async def _refusal(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    error = from_rpc_error(caught.value)
    return error.code, error.reason


async def _update(users, user_id: str, paths: list[str], **fields) -> None:
    await users.UpdateUser(
        user_service_pb2.UpdateUserRequest(
            user=resources_pb2.User(user_id=user_id, **fields),
            update_mask=field_mask_pb2.FieldMask(paths=paths),
        )
    )


async def test_a_rotated_token_fails_at_once_although_its_user_is_cached(signals, users) -> None:
    created = await create_user(users)
    assert (await signals.IngestWebhook(ingest_request(created.webhook_token, b"cached 1"))).signal_id
    rotated = await users.RotateWebhookToken(
        user_service_pb2.RotateWebhookTokenRequest(user_id=created.user.user_id)
    )
    refused = await _refusal(signals.IngestWebhook(ingest_request(created.webhook_token, b"cached 2")))
    assert refused == (grpc.StatusCode.NOT_FOUND, "UNKNOWN_TOKEN")
    assert (await signals.IngestWebhook(ingest_request(rotated.webhook_token, b"cached 3"))).signal_id


async def test_disabling_and_enabling_a_cached_users_webhook_apply_at_once(signals, users) -> None:
    created = await create_user(users)
    user_id = created.user.user_id
    assert (await signals.IngestWebhook(ingest_request(created.webhook_token, b"toggle 1"))).signal_id
    await _update(users, user_id, ["webhook_enabled"], webhook_enabled=False)
    refused = await _refusal(signals.IngestWebhook(ingest_request(created.webhook_token, b"toggle 2")))
    assert refused == (grpc.StatusCode.PERMISSION_DENIED, "WEBHOOK_DISABLED")
    await _update(users, user_id, ["webhook_enabled"], webhook_enabled=True)
    assert (await signals.IngestWebhook(ingest_request(created.webhook_token, b"toggle 3"))).signal_id


async def test_a_new_allowlist_applies_at_once_to_a_cached_user(signals, users) -> None:
    created = await create_user(users)
    user_id = created.user.user_id
    assert (await signals.IngestWebhook(ingest_request(created.webhook_token, b"allow 1"))).signal_id
    await _update(users, user_id, ["ip_allowlist"], ip_allowlist=["198.51.100.0/24"])
    refused = await _refusal(signals.IngestWebhook(ingest_request(created.webhook_token, b"allow 2")))
    assert refused == (grpc.StatusCode.PERMISSION_DENIED, "IP_NOT_ALLOWED")
    allowed = ingest_request(created.webhook_token, b"allow 3", source_ip="198.51.100.9")
    assert (await signals.IngestWebhook(allowed)).signal_id


async def test_a_plan_change_reaches_the_next_alert_of_a_cached_user(signals, users) -> None:
    created = await create_user(users, plan=resources_pb2.PLAN_FREE)
    user_id = created.user.user_id
    assert (await signals.IngestWebhook(ingest_request(created.webhook_token, b"plan 1"))).signal_id
    await _update(users, user_id, ["plan", "signals_quota"], plan=resources_pb2.PLAN_PREMIUM, signals_quota=1)
    refused = await _refusal(signals.IngestWebhook(ingest_request(created.webhook_token, b"plan 2")))
    assert refused == (grpc.StatusCode.RESOURCE_EXHAUSTED, "QUOTA_EXCEEDED")
    listed = await signals.ListSignals(signal_service_pb2.ListSignalsRequest(user_id=user_id))
    assert len(listed.signals) == 1


async def test_requiring_the_client_certificate_applies_at_once_to_a_cached_user(signals, users) -> None:
    created = await create_user(users)
    user_id = created.user.user_id
    assert (await signals.IngestWebhook(ingest_request(created.webhook_token, b"certificate 1"))).signal_id
    await _update(
        users,
        user_id,
        ["require_tradingview_client_certificate"],
        require_tradingview_client_certificate=True,
    )
    refused = await _refusal(signals.IngestWebhook(ingest_request(created.webhook_token, b"certificate 2")))
    assert refused == (grpc.StatusCode.PERMISSION_DENIED, "CLIENT_CERTIFICATE_REQUIRED")
    verified = ingest_request(
        created.webhook_token, b"certificate 3", tradingview_client_certificate_verified=True
    )
    assert (await signals.IngestWebhook(verified)).signal_id
