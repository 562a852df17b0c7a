"""The capture lifecycle as workers and operators drive it over gRPC: claim, report, fail, retry, sweep."""

from __future__ import annotations

import json

import grpc
import pytest
import redis.asyncio as aioredis

from apidevs.alerts.v1 import resources_pb2, signal_service_pb2, user_service_pb2
from mesh.crypto import CookieCipher
from mesh.settings import CommonSettings
from tests.support import SAMPLE, create_user, ingest_request

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def _new_capture(signals, users, *, plan=resources_pb2.PLAN_PRO) -> tuple[str, str]:
    created = await create_user(users, plan=plan, default_chart_id="layout1")
    await users.SetTradingViewSession(
        user_service_pb2.SetTradingViewSessionRequest(
            user_id=created.user.user_id, sessionid="sess-123", sessionid_sign="sign-456"
        )
    )
    answer = await signals.IngestWebhook(ingest_request(created.webhook_token, SAMPLE))
    return created.user.user_id, answer.signal_id


async def test_claim_hands_over_the_encrypted_session_and_marks_processing(
    signals, users, service_env
) -> None:
    _, signal_id = await _new_capture(signals, users)
    claim = await signals.ClaimCapture(
        signal_service_pb2.ClaimCaptureRequest(signal_id=signal_id, worker_id="w1")
    )
    assert claim.proceed
    assert claim.chart_id == "layout1"
    assert claim.plan == resources_pb2.PLAN_PRO
    assert b"sess-123" not in claim.tradingview_session_ciphertext
    cipher = CookieCipher.from_settings(CommonSettings(**{"data_dir": service_env["ALERTS_DATA_DIR"]}))
    cookies = json.loads(cipher.decrypt(claim.tradingview_session_ciphertext))
    assert cookies == {"sessionid": "sess-123", "sessionid_sign": "sign-456"}
    assert claim.signal.screenshot_status == resources_pb2.SCREENSHOT_STATUS_PROCESSING


async def test_completed_capture_is_final_and_duplicate_reports_are_harmless(signals, users) -> None:
    _, signal_id = await _new_capture(signals, users)
    claim = await signals.ClaimCapture(signal_service_pb2.ClaimCaptureRequest(signal_id=signal_id))
    report = signal_service_pb2.ReportCaptureRequest(
        signal_id=signal_id,
        status=resources_pb2.SCREENSHOT_STATUS_COMPLETED,
        object_key=claim.object_key,
        size_bytes=1234,
        width=1280,
        height=720,
        duration_ms=900,
    )
    done = await signals.ReportCapture(report)
    assert done.screenshot_status == resources_pb2.SCREENSHOT_STATUS_COMPLETED
    assert done.screenshot_object_key == report.object_key
    assert (
        await signals.ReportCapture(report)
    ).screenshot_status == resources_pb2.SCREENSHOT_STATUS_COMPLETED
    again = await signals.ClaimCapture(signal_service_pb2.ClaimCaptureRequest(signal_id=signal_id))
    assert not again.proceed
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await signals.ReportCapture(
            signal_service_pb2.ReportCaptureRequest(
                signal_id=signal_id, status=resources_pb2.SCREENSHOT_STATUS_FAILED, error="late"
            )
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_failed_captures_are_listed_and_retried_onto_their_plan_queue(
    signals, users, redis_url, redis_namespace
) -> None:
    user_id, signal_id = await _new_capture(signals, users, plan=resources_pb2.PLAN_BASIC)
    await signals.ClaimCapture(signal_service_pb2.ClaimCaptureRequest(signal_id=signal_id))
    failed = await signals.ReportCapture(
        signal_service_pb2.ReportCaptureRequest(
            signal_id=signal_id, status=resources_pb2.SCREENSHOT_STATUS_FAILED, error="TIMEOUT"
        )
    )
    assert failed.screenshot_error == "TIMEOUT"
    listed = await signals.ListFailedCaptures(signal_service_pb2.ListFailedCapturesRequest(user_id=user_id))
    assert [signal.signal_id for signal in listed.signals] == [signal_id]

    redis = aioredis.Redis.from_url(redis_url)
    queue = f"{redis_namespace}:dramatiq:capture.basic"
    before = await redis.llen(queue)
    retried = await signals.RetryCaptures(signal_service_pb2.RetryCapturesRequest(signal_ids=[signal_id]))
    assert retried.requeued_count == 1
    signal = await signals.GetSignal(signal_service_pb2.GetSignalRequest(signal_id=signal_id))
    assert signal.screenshot_status == resources_pb2.SCREENSHOT_STATUS_PENDING
    for _ in range(50):
        if await redis.llen(queue) > before:
            break
        await __import__("asyncio").sleep(0.1)
    assert await redis.llen(queue) > before
    await redis.aclose()
    listed = await signals.ListFailedCaptures(signal_service_pb2.ListFailedCapturesRequest(user_id=user_id))
    assert not listed.signals


async def test_retry_needs_exactly_one_selection(signals) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await signals.RetryCaptures(signal_service_pb2.RetryCapturesRequest())
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_claim_assigns_the_object_key_under_the_owner_and_signal(signals, users) -> None:
    user_id, signal_id = await _new_capture(signals, users)
    claim = await signals.ClaimCapture(signal_service_pb2.ClaimCaptureRequest(signal_id=signal_id))
    created = claim.signal.created_at.ToDatetime()
    assert claim.object_key == f"screenshots/{user_id}/{created:%Y}/{created:%m}/{signal_id}.png"


@pytest.mark.parametrize(
    "status", [resources_pb2.SCREENSHOT_STATUS_COMPLETED, resources_pb2.SCREENSHOT_STATUS_FAILED]
)
async def test_a_report_naming_any_other_key_is_refused_and_changes_nothing(signals, users, status) -> None:
    _, victim_signal = await _new_capture(signals, users)
    _, attacker_signal = await _new_capture(signals, users)
    victim_claim = await signals.ClaimCapture(signal_service_pb2.ClaimCaptureRequest(signal_id=victim_signal))
    attacker_claim = await signals.ClaimCapture(
        signal_service_pb2.ClaimCaptureRequest(signal_id=attacker_signal)
    )
    for key in (
        victim_claim.object_key,
        victim_claim.object_key.replace(".png", ".jpg"),
        f"screenshots/{attacker_signal}.png",
        "../" + attacker_claim.object_key,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await signals.ReportCapture(
                signal_service_pb2.ReportCaptureRequest(
                    signal_id=attacker_signal, status=status, object_key=key, error="x"
                )
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert key not in (caught.value.details() or "")
    unchanged = await signals.GetSignal(signal_service_pb2.GetSignalRequest(signal_id=attacker_signal))
    assert unchanged.screenshot_status == resources_pb2.SCREENSHOT_STATUS_PROCESSING
    assert unchanged.screenshot_object_key == ""

    done = await signals.ReportCapture(
        signal_service_pb2.ReportCaptureRequest(
            signal_id=attacker_signal,
            status=resources_pb2.SCREENSHOT_STATUS_COMPLETED,
            object_key=attacker_claim.object_key,
        )
    )
    assert done.screenshot_object_key == attacker_claim.object_key
