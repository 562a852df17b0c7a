"""A user may accept only webhooks whose connection presented TradingView's client certificate (verified
by Envoy, reported by the edge); the requirement combines with the IP allowlist: both must pass."""

from __future__ import annotations

import uuid

import asyncpg
import grpc
import pytest
from google.protobuf import field_mask_pb2

from apidevs.alerts.v1 import resources_pb2, user_service_pb2
from mesh.errors import from_rpc_error
from tests.support import create_user, ingest_request


async def _refusal(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    error = from_rpc_error(caught.value)
    return error.code, error.reason


async def test_a_user_requiring_the_certificate_accepts_only_verified_webhooks(
    signals, users, database_url
) -> None:
    created = await create_user(users, require_tradingview_client_certificate=True)
    assert created.user.require_tradingview_client_certificate is True

    refused = await _refusal(signals.IngestWebhook(ingest_request(created.webhook_token, b"no cert")))
    assert refused == (grpc.StatusCode.PERMISSION_DENIED, "CLIENT_CERTIFICATE_REQUIRED")
    verified = ingest_request(created.webhook_token, b"cert", tradingview_client_certificate_verified=True)
    assert (await signals.IngestWebhook(verified)).signal_id

    connection = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        audited = await connection.fetch(
            "SELECT outcome, reason FROM audit_logs WHERE user_id = $1 AND outcome = 'refused'",
            uuid.UUID(created.user.user_id),
        )
    finally:
        await connection.close()
    assert [(row["outcome"], row["reason"]) for row in audited] == [
        ("refused", "CLIENT_CERTIFICATE_REQUIRED")
    ]


async def test_a_user_without_the_requirement_accepts_webhooks_either_way(signals, users) -> None:
    created = await create_user(users)
    assert created.user.require_tradingview_client_certificate is False
    plain = ingest_request(created.webhook_token, b"plain")
    verified = ingest_request(
        created.webhook_token, b"verified", tradingview_client_certificate_verified=True
    )
    assert (await signals.IngestWebhook(plain)).signal_id
    assert (await signals.IngestWebhook(verified)).signal_id


async def test_the_certificate_and_the_allowlist_must_both_pass(signals, users) -> None:
    created = await create_user(
        users, ip_allowlist=["198.51.100.0/24"], require_tradingview_client_certificate=True
    )
    token = created.webhook_token
    wrong_address = ingest_request(
        token, b"wrong address", source_ip="203.0.113.7", tradingview_client_certificate_verified=True
    )
    assert await _refusal(signals.IngestWebhook(wrong_address)) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "IP_NOT_ALLOWED",
    )
    no_certificate = ingest_request(token, b"no certificate", source_ip="198.51.100.9")
    assert await _refusal(signals.IngestWebhook(no_certificate)) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "CLIENT_CERTIFICATE_REQUIRED",
    )
    both = ingest_request(
        token, b"both", source_ip="198.51.100.9", tradingview_client_certificate_verified=True
    )
    assert (await signals.IngestWebhook(both)).signal_id


async def test_update_user_sets_and_clears_the_requirement(signals, users) -> None:
    created = await create_user(users)
    user_id = created.user.user_id

    async def set_requirement(required: bool) -> resources_pb2.User:
        return await users.UpdateUser(
            user_service_pb2.UpdateUserRequest(
                user=resources_pb2.User(user_id=user_id, require_tradingview_client_certificate=required),
                update_mask=field_mask_pb2.FieldMask(paths=["require_tradingview_client_certificate"]),
            )
        )

    assert (await set_requirement(True)).require_tradingview_client_certificate is True
    fetched = await users.GetUser(user_service_pb2.GetUserRequest(user_id=user_id))
    assert fetched.require_tradingview_client_certificate is True
    refused = await _refusal(signals.IngestWebhook(ingest_request(created.webhook_token, b"required")))
    assert refused == (grpc.StatusCode.PERMISSION_DENIED, "CLIENT_CERTIFICATE_REQUIRED")
    assert (await set_requirement(False)).require_tradingview_client_certificate is False
    assert (await signals.IngestWebhook(ingest_request(created.webhook_token, b"cleared"))).signal_id
