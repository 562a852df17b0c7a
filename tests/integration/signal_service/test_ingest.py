from __future__ import annotations

import asyncio

import grpc
import pytest

from apidevs.alerts.v1 import resources_pb2, signal_service_pb2, user_service_pb2
from mesh.errors import from_rpc_error
from tests.support import SAMPLE, create_user, ingest_request


async def test_sample_message_is_stored_and_listed(signals, users) -> None:
    created = await create_user(users, default_chart_id="abc123")
    token = created.webhook_url.rsplit("/", 1)[1]
    assert token == created.webhook_token

    answer = await signals.IngestWebhook(ingest_request(token))
    assert answer.signal_id
    assert answer.screenshot_status == resources_pb2.SCREENSHOT_STATUS_PENDING
    assert not answer.duplicate
    assert answer.estimated_wait_seconds > 0

    listed = await signals.ListSignals(signal_service_pb2.ListSignalsRequest(user_id=created.user.user_id))
    assert [signal.signal_id for signal in listed.signals] == [answer.signal_id]
    signal = listed.signals[0]
    assert signal.ticker == "BINANCE:BTCUSDT"
    assert signal.exchange == "BINANCE"
    assert signal.symbol == "BTCUSDT"
    assert signal.price == "67890.50"
    assert signal.chart_id == "abc123"
    assert signal.raw_text == SAMPLE.decode()
    assert signal.parse_status == resources_pb2.PARSE_STATUS_COMPLETE

    fetched = await signals.GetSignal(signal_service_pb2.GetSignalRequest(signal_id=answer.signal_id))
    assert fetched == signal


async def _error(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def test_unknown_and_malformed_tokens_are_not_found(signals) -> None:
    unknown = "whk_" + "A" * 43
    for token in (unknown, "not-a-token", "../../etc/passwd", "whk_ＡＡＡ"):
        error = from_rpc_error(await _error(signals.IngestWebhook(ingest_request(token))))
        assert error.code == grpc.StatusCode.NOT_FOUND
        assert error.reason == "UNKNOWN_TOKEN"


async def test_rotated_token_stops_working_at_once(signals, users) -> None:
    created = await create_user(users)
    rotated = await users.RotateWebhookToken(
        user_service_pb2.RotateWebhookTokenRequest(user_id=created.user.user_id)
    )
    old = await _error(signals.IngestWebhook(ingest_request(created.webhook_token)))
    assert old.code() == grpc.StatusCode.NOT_FOUND
    assert (await signals.IngestWebhook(ingest_request(rotated.webhook_token, b"BTCUSDT 1"))).signal_id


async def test_rotated_token_with_grace_keeps_working_until_expiry(signals, users) -> None:
    created = await create_user(users)
    rotated = await users.RotateWebhookToken(
        user_service_pb2.RotateWebhookTokenRequest(user_id=created.user.user_id, grace_period_seconds=600)
    )
    assert rotated.HasField("previous_token_expires_at")
    assert (await signals.IngestWebhook(ingest_request(created.webhook_token, b"ETHUSDT 2"))).signal_id


async def test_invalid_utf8_and_binary_bodies_are_stored_as_failed(signals, users) -> None:
    created = await create_user(users)
    for body in (b"\xff\xfe\x00garbage\x80", bytes(range(256))):
        answer = await signals.IngestWebhook(ingest_request(created.webhook_token, body))
        signal = await signals.GetSignal(signal_service_pb2.GetSignalRequest(signal_id=answer.signal_id))
        assert signal.parse_status == resources_pb2.PARSE_STATUS_FAILED
        assert answer.screenshot_status == resources_pb2.SCREENSHOT_STATUS_SKIPPED


async def test_oversize_body_is_refused(signals, users) -> None:
    created = await create_user(users)
    body = b"x" * (64 * 1024)
    error = from_rpc_error(
        await _error(signals.IngestWebhook(ingest_request(created.webhook_token, body, body_size=70_000)))
    )
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "BODY_TOO_LARGE"


async def test_identical_resend_within_window_is_a_duplicate(signals, users) -> None:
    created = await create_user(users)
    first = await signals.IngestWebhook(ingest_request(created.webhook_token))
    again = await signals.IngestWebhook(ingest_request(created.webhook_token))
    assert again.duplicate
    assert again.signal_id == first.signal_id
    different = await signals.IngestWebhook(
        ingest_request(created.webhook_token, SAMPLE.replace(b"50", b"51"))
    )
    assert not different.duplicate
    listed = await signals.ListSignals(signal_service_pb2.ListSignalsRequest(user_id=created.user.user_id))
    assert len(listed.signals) == 2


async def test_quota_holds_under_concurrency(signals, users) -> None:
    created = await create_user(users, plan=resources_pb2.PLAN_PREMIUM, signals_quota=10)
    bodies = [f"BINANCE:BTCUSDT {i}".encode() for i in range(50)]
    results = await asyncio.gather(
        *(signals.IngestWebhook(ingest_request(created.webhook_token, body)) for body in bodies),
        return_exceptions=True,
    )
    accepted = [result for result in results if not isinstance(result, Exception)]
    refused = [from_rpc_error(result) for result in results if isinstance(result, grpc.aio.AioRpcError)]
    assert len(accepted) == 10
    assert len(refused) == 40
    assert {error.reason for error in refused} <= {"QUOTA_EXCEEDED", "RATE_LIMITED"}
    assert any(error.reason == "QUOTA_EXCEEDED" for error in refused)


async def test_list_signals_paginates_newest_first_with_filters(signals, users) -> None:
    created = await create_user(users)
    ids = []
    for index in range(7):
        ticker = "BINANCE:ETHUSDT" if index % 2 else "BINANCE:BTCUSDT"
        body = f"Ticker: {ticker}\nPrice: {100 + index}\nSignal: buy".encode()
        ids.append((await signals.IngestWebhook(ingest_request(created.webhook_token, body))).signal_id)
    seen, token = [], ""
    while True:
        page = await signals.ListSignals(
            signal_service_pb2.ListSignalsRequest(user_id=created.user.user_id, page_size=3, page_token=token)
        )
        seen += [signal.signal_id for signal in page.signals]
        token = page.next_page_token
        if not token:
            break
    assert seen == list(reversed(ids))
    eth = await signals.ListSignals(
        signal_service_pb2.ListSignalsRequest(user_id=created.user.user_id, ticker="BINANCE:ETHUSDT")
    )
    assert [signal.signal_id for signal in eth.signals] == [ids[5], ids[3], ids[1]]


async def test_calls_without_a_valid_key_are_unauthenticated(signal_server) -> None:
    from apidevs.alerts.v1 import signal_service_pb2_grpc
    from mesh.grpc import open_channel

    for key in (None, "wrong-key"):
        async with open_channel(signal_server, key) as channel:
            stub = signal_service_pb2_grpc.SignalServiceStub(channel)
            error = await _error(stub.GetSignal(signal_service_pb2.GetSignalRequest(signal_id="x")))
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_plan_change_brings_the_new_plans_quota_unless_one_is_given(users) -> None:
    from google.protobuf import field_mask_pb2

    created = await create_user(users, plan=resources_pb2.PLAN_FREE)
    user = resources_pb2.User(user_id=created.user.user_id, plan=resources_pb2.PLAN_PREMIUM)
    upgraded = await users.UpdateUser(
        user_service_pb2.UpdateUserRequest(user=user, update_mask=field_mask_pb2.FieldMask(paths=["plan"]))
    )
    assert upgraded.plan == resources_pb2.PLAN_PREMIUM
    assert upgraded.signals_quota > created.user.signals_quota
    user.signals_quota = 7
    explicit = await users.UpdateUser(
        user_service_pb2.UpdateUserRequest(
            user=user, update_mask=field_mask_pb2.FieldMask(paths=["plan", "signals_quota"])
        )
    )
    assert explicit.signals_quota == 7
