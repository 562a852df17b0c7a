"""BatchIngestWebhooks: each webhook of a batch is answered as IngestWebhook would answer it alone."""

from __future__ import annotations

import uuid

import asyncpg
import grpc
import pytest
from google.rpc import status_pb2

from apidevs.alerts.v1 import resources_pb2, signal_service_pb2
from mesh.errors import from_rpc_error, from_rpc_status
from signal_service.servicer import MAX_INGEST_BATCH
from tests.support import create_user, ingest_request


def _error(result: signal_service_pb2.IngestWebhookResult):
    assert result.WhichOneof("result") == "error_status"
    return from_rpc_status(status_pb2.Status.FromString(result.error_status))


async def test_each_webhook_of_a_batch_gets_its_own_answer_in_order(signals, users, database_url) -> None:
    first = await create_user(users)
    second = await create_user(users)
    elsewhere = await create_user(users, ip_allowlist=["198.51.100.0/24"])
    batch = [
        ingest_request(first.webhook_token, b"BINANCE:BTCUSDT batch 1", request_id="req-1"),
        ingest_request("whk_" + "B" * 43, b"unknown token"),
        ingest_request(second.webhook_token, b"no ticker here"),
        ingest_request(elsewhere.webhook_token, b"BINANCE:BTCUSDT from elsewhere"),
        ingest_request(first.webhook_token, b"BINANCE:BTCUSDT batch 1", request_id="req-5"),
        ingest_request(second.webhook_token, b"x" * 70_000),
    ]

    answer = await signals.BatchIngestWebhooks(signal_service_pb2.BatchIngestWebhooksRequest(requests=batch))

    assert len(answer.results) == len(batch)
    # The same body twice in one batch: TradingView's re-send. Both are answered with one signal; which
    # of the two is stored first is up to the race between them.
    twins = [answer.results[0].response, answer.results[4].response]
    assert twins[0].signal_id == twins[1].signal_id != ""
    assert sorted(twin.duplicate for twin in twins) == [False, True]
    stored = twins[0]
    assert stored.screenshot_status == resources_pb2.SCREENSHOT_STATUS_PENDING
    unknown = _error(answer.results[1])
    assert (unknown.code, unknown.reason) == (grpc.StatusCode.NOT_FOUND, "UNKNOWN_TOKEN")
    assert answer.results[2].response.screenshot_status == resources_pb2.SCREENSHOT_STATUS_SKIPPED
    refused = _error(answer.results[3])
    assert (refused.code, refused.reason) == (grpc.StatusCode.PERMISSION_DENIED, "IP_NOT_ALLOWED")
    too_large = _error(answer.results[5])
    assert (too_large.code, too_large.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "BODY_TOO_LARGE")

    listed = await signals.ListSignals(signal_service_pb2.ListSignalsRequest(user_id=first.user.user_id))
    assert [signal.signal_id for signal in listed.signals] == [stored.signal_id]
    connection = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        audited = await connection.fetch(
            "SELECT outcome, request_id FROM audit_logs WHERE signal_id = $1", uuid.UUID(stored.signal_id)
        )
    finally:
        await connection.close()
    # Each webhook of the batch is logged and audited under its own request id.
    request_ids = {"req-1": twins[0], "req-5": twins[1]}
    assert sorted((row["outcome"], row["request_id"]) for row in audited) == sorted(
        ("duplicate" if twin.duplicate else "accepted", request_id)
        for request_id, twin in request_ids.items()
    )


async def test_a_batch_over_the_limit_is_refused_whole(signals, users) -> None:
    created = await create_user(users)
    oversized = [ingest_request(created.webhook_token, b"x")] * (MAX_INGEST_BATCH + 1)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await signals.BatchIngestWebhooks(signal_service_pb2.BatchIngestWebhooksRequest(requests=oversized))
    error = from_rpc_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "BATCH_TOO_LARGE")
