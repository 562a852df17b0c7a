"""Helpers shared by tests: the sample alert, and shortcuts for common gRPC calls."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf import timestamp_pb2

from apidevs.alerts.v1 import resources_pb2, signal_service_pb2, user_service_pb2

SAMPLE = """🚨 ADX DEF [APIDEVS]
📈 Señal: Divergencia Alcista
🪙 Ticker: BINANCE:BTCUSDT
💰 Precio: $67,890.50
⏱️ Timeframe: 15
🕒 Hora: 2026-11-27T14:30:00Z
""".encode()


def now_timestamp() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(datetime.now(UTC))
    return stamp


async def create_user(
    users, plan=resources_pb2.PLAN_PREMIUM, **fields
) -> user_service_pb2.CreateUserResponse:
    return await users.CreateUser(user_service_pb2.CreateUserRequest(plan=plan, **fields))


def ingest_request(token: str, body: bytes = SAMPLE, **fields) -> signal_service_pb2.IngestWebhookRequest:
    fields.setdefault("content_type", "text/plain")
    fields.setdefault("source_ip", "203.0.113.7")
    return signal_service_pb2.IngestWebhookRequest(
        webhook_token=token, body=body, received_at=now_timestamp(), **fields
    )
