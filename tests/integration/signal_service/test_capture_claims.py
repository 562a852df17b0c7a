"""ReportCapture is idempotent per claim: claims are numbered, a report from a superseded claim is refused,
a repeated failure changes nothing, COMPLETED is taken from any claim; `attempts` counts attempts at the
chart, not deliveries that resumed a claim after waiting for a dependency."""

from __future__ import annotations

import uuid

import asyncpg
import grpc
import pytest

from apidevs.alerts.v1 import resources_pb2, signal_service_pb2
from mesh.errors import from_rpc_error
from tests.support import SAMPLE, create_user, ingest_request

pytestmark = pytest.mark.asyncio(loop_scope="session")

FAILED = resources_pb2.SCREENSHOT_STATUS_FAILED
COMPLETED = resources_pb2.SCREENSHOT_STATUS_COMPLETED


async def _new_capture(signals, users) -> str:
    created = await create_user(users, plan=resources_pb2.PLAN_PRO)
    return (await signals.IngestWebhook(ingest_request(created.webhook_token, SAMPLE))).signal_id


async def _claim(signals, signal_id: str, **fields) -> signal_service_pb2.ClaimCaptureResponse:
    return await signals.ClaimCapture(signal_service_pb2.ClaimCaptureRequest(signal_id=signal_id, **fields))


async def _screenshot(database_url: str, signal_id: str) -> asyncpg.Record:
    connection = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        row = await connection.fetchrow(
            "SELECT s.*, (SELECT count(*) FROM signal_events e WHERE e.signal_id = s.signal_id) AS events"
            " FROM screenshots s WHERE s.signal_id = $1",
            uuid.UUID(signal_id),
        )
    finally:
        await connection.close()
    assert row is not None
    return row


async def test_a_failure_reported_by_a_superseded_claim_is_refused(signals, users, database_url) -> None:
    signal_id = await _new_capture(signals, users)
    first = await _claim(signals, signal_id, worker_id="w1")
    second = await _claim(signals, signal_id, worker_id="w2")
    assert (first.claim, second.claim) == (1, 2)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await signals.ReportCapture(
            signal_service_pb2.ReportCaptureRequest(
                signal_id=signal_id, status=FAILED, error="timeout", claim=first.claim
            )
        )
    error = from_rpc_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "STALE_CLAIM")
    assert (await _screenshot(database_url, signal_id))["status"] == "processing"

    current = await signals.ReportCapture(
        signal_service_pb2.ReportCaptureRequest(
            signal_id=signal_id, status=FAILED, error="timeout", claim=second.claim
        )
    )
    assert (current.screenshot_status, current.screenshot_error) == (FAILED, "timeout")


async def test_completed_is_taken_from_any_claim(signals, users) -> None:
    signal_id = await _new_capture(signals, users)
    first = await _claim(signals, signal_id)
    await _claim(signals, signal_id)
    report = signal_service_pb2.ReportCaptureRequest(
        signal_id=signal_id, status=COMPLETED, object_key=first.object_key, claim=first.claim
    )
    assert (await signals.ReportCapture(report)).screenshot_status == COMPLETED


async def test_a_repeated_failure_of_the_same_claim_changes_nothing(signals, users, database_url) -> None:
    signal_id = await _new_capture(signals, users)
    claim = await _claim(signals, signal_id)
    report = signal_service_pb2.ReportCaptureRequest(
        signal_id=signal_id, status=FAILED, error="infrastructure_unavailable", claim=claim.claim
    )
    await signals.ReportCapture(report)
    recorded = await _screenshot(database_url, signal_id)

    again = await signals.ReportCapture(
        signal_service_pb2.ReportCaptureRequest(
            signal_id=signal_id, status=FAILED, error="worker_error", claim=claim.claim
        )
    )

    assert again.screenshot_error == "infrastructure_unavailable"
    unchanged = await _screenshot(database_url, signal_id)
    assert dict(unchanged) == dict(recorded)


async def test_a_report_from_before_a_retry_is_refused(signals, users) -> None:
    signal_id = await _new_capture(signals, users)
    claim = await _claim(signals, signal_id)
    failure = signal_service_pb2.ReportCaptureRequest(
        signal_id=signal_id, status=FAILED, error="timeout", claim=claim.claim
    )
    await signals.ReportCapture(failure)
    await signals.RetryCaptures(signal_service_pb2.RetryCapturesRequest(signal_ids=[signal_id]))

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await signals.ReportCapture(failure)
    assert from_rpc_error(caught.value).reason == "STALE_CLAIM"
    signal = await signals.GetSignal(signal_service_pb2.GetSignalRequest(signal_id=signal_id))
    assert signal.screenshot_status == resources_pb2.SCREENSHOT_STATUS_PENDING


async def test_a_report_without_a_claim_is_taken_as_the_latest(signals, users) -> None:
    signal_id = await _new_capture(signals, users)
    await _claim(signals, signal_id)
    await _claim(signals, signal_id)
    answer = await signals.ReportCapture(
        signal_service_pb2.ReportCaptureRequest(signal_id=signal_id, status=FAILED, error="timeout")
    )
    assert answer.screenshot_status == FAILED


async def test_resuming_a_claim_after_a_wait_is_not_a_new_attempt(signals, users, database_url) -> None:
    signal_id = await _new_capture(signals, users)
    first = await _claim(signals, signal_id, attempt=0)
    resumed = await _claim(signals, signal_id, attempt=0, resumes_claim=first.claim)
    assert resumed.proceed
    assert resumed.claim == first.claim + 1
    assert (await _screenshot(database_url, signal_id))["attempts"] == 1

    # A claim that is no longer the latest (someone claimed since) cannot be resumed.
    stale_resume = await _claim(signals, signal_id, attempt=0, resumes_claim=first.claim)
    assert stale_resume.proceed
    assert (await _screenshot(database_url, signal_id))["attempts"] == 2
    await _claim(signals, signal_id, attempt=1)
    assert (await _screenshot(database_url, signal_id))["attempts"] == 3
