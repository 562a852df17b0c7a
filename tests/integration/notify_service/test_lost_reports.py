"""A report lost after a successful send (the signal service or its database overloaded) does not make
the next claim send again: the provider's answer is kept in Redis and reported instead. Real Redis and
the Telegram stub; the signal service is played by a stand-in whose first report fails."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from apidevs.alerts.v1 import resources_pb2, signal_service_pb2
from notify_service.settings import NotifySettings
from notify_service.telegram_stub import create_telegram_stub_app
from notify_service.worker import NotifyWorker, SignalServiceUnavailableError, notice_of
from tests.support import asgi_app_in_thread


class FlakySignalService:
    """Answers reports, except the first: that one fails as an overloaded signal service does."""

    def __init__(self) -> None:
        self.reports: list[signal_service_pb2.ReportNotificationRequest] = []

    async def ReportNotification(
        self, request: signal_service_pb2.ReportNotificationRequest, **_: Any
    ) -> signal_service_pb2.ReportNotificationResponse:
        self.reports.append(request)
        if len(self.reports) == 1:
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "database unavailable"
            )
        return signal_service_pb2.ReportNotificationResponse(recorded=True)


@pytest.fixture(scope="module")
def stub_url() -> Iterator[str]:
    with asgi_app_in_thread(create_telegram_stub_app()) as url:
        yield url


@pytest.fixture
async def worker(
    stub_url: str, redis_url: str, redis_namespace: str, tmp_path: Path
) -> AsyncIterator[NotifyWorker]:
    settings = NotifySettings(
        redis_url=redis_url,
        redis_namespace=f"{redis_namespace}-{uuid.uuid4().hex[:8]}",
        telegram_bot_token="1:lost-reports",
        telegram_api_url=stub_url,
        data_dir=tmp_path,
        signal_addr="127.0.0.1:9",
        storage_addr="127.0.0.1:9",
    )
    notify_worker = NotifyWorker(settings)
    await notify_worker.start()
    yield notify_worker
    await notify_worker.close()


async def test_a_send_whose_report_was_lost_is_reported_not_sent_again(
    worker: NotifyWorker, stub_url: str
) -> None:
    signals = FlakySignalService()
    worker._signals = signals  # type: ignore[assignment]
    chat_id = str(700_000 + uuid.uuid4().int % 100_000)
    task = signal_service_pb2.NotificationTask(
        delivery_id=uuid.uuid4().int % 1_000_000_000,
        channel=resources_pb2.NOTIFICATION_CHANNEL_TELEGRAM,
        kind=resources_pb2.NOTIFICATION_KIND_ALERT,
        target=chat_id,
    )
    signal = resources_pb2.Signal(signal_id=str(uuid.uuid4()), ticker="BINANCE:BTCUSDT")

    with pytest.raises(SignalServiceUnavailableError):
        await worker._deliver(task, signal, notice_of(signal), {}, "claim-1")
    # The job is retried and claims the delivery again once the lease is over.
    assert await worker._deliver(task, signal, notice_of(signal), {}, "claim-2") == 0.0

    async with httpx.AsyncClient(base_url=stub_url) as stub:
        recorded_calls = (await stub.get("/_stub/requests")).json()
    calls = [call for call in recorded_calls if call["params"].get("chat_id") == chat_id]
    assert [call["method"] for call in calls] == ["sendMessage"]
    lost, recorded = signals.reports
    assert (lost.claim_id, recorded.claim_id) == ("claim-1", "claim-2")
    assert recorded.provider_message_id == lost.provider_message_id != ""
    assert recorded.outcome == signal_service_pb2.DELIVERY_REPORT_OUTCOME_DELIVERED
