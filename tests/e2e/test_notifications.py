"""Notifications through real processes: storage, signal, a notify worker, the Telegram and Discord stubs.

The capture is played by the test (ClaimCapture, PutObject, ReportCapture with the workers' key), so that
when the chart is ready is the test's choice: before the notify worker's wait ends (photo + caption) or
after it (text, then the photo as a reply).
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import struct_pb2, timestamp_pb2

from alerts.processes import alerts_argv
from alerts.stack import Stack, build_stack
from apidevs.alerts.v1 import (
    resources_pb2,
    signal_service_pb2,
    signal_service_pb2_grpc,
    storage_service_pb2,
    storage_service_pb2_grpc,
    user_service_pb2,
    user_service_pb2_grpc,
)
from mesh.telegram_updates import LINKED_TEXT, NOT_LINKED_TEXT
from notify_service.signing import verify
from notify_service.telegram_stub import STUB_BOT_USERNAME
from tests.e2e.stacks import child_env, fresh_database
from tests.keys import SYSTEM_KEYS, open_system_channel
from tests.support import asgi_app_in_thread

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

SCREENSHOT_WAIT_SECONDS = 4
GUARD_SECONDS = 90.0
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYPj/HwADAgH/ey0ZAAAAAElFTkSuQmCC"
)
SECRET = "whsec_" + base64.b64encode(b"w" * 32).decode()


@pytest.fixture(scope="module")
def stack(service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    log_dir = tmp_path_factory.mktemp("notify-stack")
    with fresh_database(service_env["ALERTS_DATABASE_URL"]) as database_url:
        stack = build_stack(
            log_dir,
            database_url=database_url,
            redis_url=service_env["ALERTS_REDIS_URL"],
            data_dir=Path(service_env["ALERTS_DATA_DIR"]),
            keys=SYSTEM_KEYS,
            accepted_keys=service_env["ALERTS_API_KEYS"].split(","),
            objects_dir=log_dir / "objects",
            inherited=child_env(service_env),
            telegram_stub=True,
            discord_stub=True,
            ALERTS_REDIS_NAMESPACE=f"notify-e2e-{uuid.uuid4().hex[:8]}",
            ALERTS_NOTIFY_SCREENSHOT_WAIT_SECONDS=str(SCREENSHOT_WAIT_SECONDS),
            ALERTS_DRAMATIQ_HEARTBEAT_TIMEOUT_MS="3000",
            ALERTS_NOTIFY_MIN_BACKOFF_MS="300",
            ALERTS_NOTIFY_LEASE_SECONDS="5",
        )
        try:
            stack.start("telegram-stub", "discord-stub", "storage", "signal", "notify-0")
            yield stack
        finally:
            stack.close()


class Client:
    def __init__(self, stack: Stack, channels: list[grpc.aio.Channel]) -> None:
        self.stack = stack
        signal_channel, storage_channel = channels
        self.signals = signal_service_pb2_grpc.SignalServiceStub(signal_channel)
        self.users = user_service_pb2_grpc.UserServiceStub(signal_channel)
        self.storage = storage_service_pb2_grpc.StorageServiceStub(storage_channel)
        self.http = httpx.AsyncClient(base_url=stack.telegram_api_url)
        self.discord = httpx.AsyncClient(base_url=stack.discord_stub_url)

    async def user(self, preferences: dict[str, Any]) -> str:
        document = struct_pb2.Struct()
        document.update(preferences)
        created = await self.users.CreateUser(
            user_service_pb2.CreateUserRequest(
                plan=resources_pb2.PLAN_PREMIUM, notification_preferences=document
            )
        )
        return created.webhook_token

    async def ingest(self, token: str, body: bytes) -> str:
        received_at = timestamp_pb2.Timestamp()
        received_at.GetCurrentTime()
        answer = await self.signals.IngestWebhook(
            signal_service_pb2.IngestWebhookRequest(
                webhook_token=token,
                body=body,
                content_type="text/plain",
                source_ip="203.0.113.9",
                received_at=received_at,
            )
        )
        return answer.signal_id

    async def complete_capture(self, signal_id: str) -> None:
        claim = await self.signals.ClaimCapture(
            signal_service_pb2.ClaimCaptureRequest(signal_id=signal_id, worker_id="t")
        )
        key = claim.object_key

        async def parts() -> AsyncIterator[storage_service_pb2.PutObjectRequest]:
            yield storage_service_pb2.PutObjectRequest(
                header=storage_service_pb2.PutObjectHeader(key=key, content_type="image/png")
            )
            yield storage_service_pb2.PutObjectRequest(chunk=PNG)

        await self.storage.PutObject(parts())
        await self.signals.ReportCapture(
            signal_service_pb2.ReportCaptureRequest(
                signal_id=signal_id,
                status=resources_pb2.SCREENSHOT_STATUS_COMPLETED,
                object_key=key,
                size_bytes=len(PNG),
            )
        )

    async def telegram_calls(self, chat_id: str) -> list[dict[str, Any]]:
        answer = await self.http.get("/_stub/requests")
        return [call for call in answer.json() if str(call["params"].get("chat_id")) == chat_id]

    async def until(self, what: str, check: Callable[[], Any]) -> Any:
        deadline = time.monotonic() + GUARD_SECONDS
        while time.monotonic() < deadline:
            found = await check()
            if found:
                return found
            await asyncio.sleep(0.2)
        raise AssertionError(f"gave up waiting for {what}; logs:\n{self.stack.logs()[-4000:]}")

    async def sent(self, chat_id: str, method: str, count: int = 1) -> list[dict[str, Any]]:
        async def check() -> list[dict[str, Any]]:
            calls = [
                c for c in await self.telegram_calls(chat_id) if c["method"] == method and c["status"] == 200
            ]
            return calls if len(calls) >= count else []

        return await self.until(f"{method} to {chat_id}", check)

    async def discord_calls(self, webhook_id: str, method: str) -> list[dict[str, Any]]:
        answer = await self.discord.get("/_stub/requests")
        return [c for c in answer.json() if c["webhook_id"] == webhook_id and c["method"] == method]

    async def deliveries(self, signal_id: str) -> list[resources_pb2.NotificationDelivery]:
        signal = await self.signals.GetSignal(signal_service_pb2.GetSignalRequest(signal_id=signal_id))
        return list(signal.deliveries)


@pytest.fixture(scope="module")
async def client(stack: Stack) -> AsyncIterator[Client]:
    channels = [
        open_system_channel(stack.signal_addr),
        open_system_channel(stack.storage_addr),
    ]
    client = Client(stack, channels)
    yield client
    await client.http.aclose()
    await client.discord.aclose()
    for channel in channels:
        await channel.close()


def chat() -> str:
    return str(100_000 + uuid.uuid4().int % 1_000_000)


def alert(ticker: str = "BINANCE:BTCUSDT") -> bytes:
    return (
        f"🚨 ADX DEF [APIDEVS]\nTicker: {ticker}\nPrice: 67890.50\nSignal: buy\nid: {uuid.uuid4()}".encode()
    )


async def test_a_ready_chart_goes_as_photo_with_caption_and_the_outcome_edits_it(client: Client) -> None:
    chat_id = chat()
    token = await client.user({"telegram": {"chat_id": chat_id}})
    signal_id = await client.ingest(token, alert())
    await client.complete_capture(signal_id)
    [photo] = await client.sent(chat_id, "sendPhoto")
    assert "BINANCE:BTCUSDT" in photo["params"]["caption"]
    assert photo["photo_bytes"] == len(PNG)

    await client.signals.UpdateSignalOutcome(
        signal_service_pb2.UpdateSignalOutcomeRequest(
            signal_id=signal_id, result=resources_pb2.SIGNAL_RESULT_WIN, profit_loss="12.50"
        )
    )
    [edit] = await client.sent(chat_id, "editMessageCaption")
    assert "WIN" in edit["params"]["caption"]
    assert "12.50" in edit["params"]["caption"]
    calls = await client.telegram_calls(chat_id)
    assert [call["method"] for call in calls] == ["sendPhoto", "editMessageCaption"]


async def test_without_the_chart_in_time_text_goes_first_then_the_photo_as_a_reply(client: Client) -> None:
    chat_id = chat()
    token = await client.user({"telegram": {"chat_id": chat_id}})
    signal_id = await client.ingest(token, alert())
    [text] = await client.sent(chat_id, "sendMessage")
    assert "BINANCE:BTCUSDT" in text["params"]["text"]
    await client.complete_capture(signal_id)
    [photo] = await client.sent(chat_id, "sendPhoto")
    alert_delivery = next(
        d for d in await client.deliveries(signal_id) if d.kind == resources_pb2.NOTIFICATION_KIND_ALERT
    )
    assert str(photo["params"]["reply_to_message_id"]) == alert_delivery.provider_message_id

    await client.signals.UpdateSignalOutcome(
        signal_service_pb2.UpdateSignalOutcomeRequest(
            signal_id=signal_id, result=resources_pb2.SIGNAL_RESULT_LOSS
        )
    )
    [edit] = await client.sent(chat_id, "editMessageText")
    assert str(edit["params"]["message_id"]) == alert_delivery.provider_message_id
    assert "LOSS" in edit["params"]["text"]


async def test_a_429_is_honoured(client: Client) -> None:
    chat_id = chat()
    token = await client.user({"telegram": {"chat_id": chat_id, "with_screenshot": False}})
    await client.http.post("/_stub/mode", json={"mode": "429", "retry_after": 2, "count": 1})
    signal_id = await client.ingest(
        token, b"no chart expected for this one " + uuid.uuid4().bytes.hex().encode()
    )
    [delivered] = await client.sent(chat_id, "sendMessage")
    calls = await client.telegram_calls(chat_id)
    refused = [call for call in calls if call["status"] == 429]
    assert len(refused) == 1
    assert delivered["received_at"] - refused[0]["received_at"] >= 2.0
    [delivery] = await client.deliveries(signal_id)
    assert delivery.status == resources_pb2.DELIVERY_STATUS_DELIVERED
    assert delivery.attempts == 2


async def test_discord_gets_the_embed_with_its_chart_a_429_honoured_and_the_outcome_edit(
    client: Client,
) -> None:
    webhook_id = str(10**17 + uuid.uuid4().int % 10**17)
    token = await client.user(
        {"discord": {"webhook_url": f"https://discord.com/api/webhooks/{webhook_id}/{'d' * 68}"}}
    )
    await client.discord.post("/_stub/mode", json={"mode": "429", "retry_after": 1, "count": 1})
    signal_id = await client.ingest(token, alert())
    await client.complete_capture(signal_id)

    async def executed() -> list[dict[str, Any]]:
        calls = await client.discord_calls(webhook_id, "execute")
        return calls if any(call["status"] == 200 for call in calls) else []

    refused, sent = await client.until("the Discord message", executed)
    assert (refused["status"], sent["status"]) == (429, 200)
    assert sent["received_at"] - refused["received_at"] >= 1.0
    assert sent["query"] == {"wait": "true"}
    [attached] = sent["files"]
    assert (attached["filename"], attached["bytes"]) == ("chart.png", len(PNG))
    [embed] = sent["payload"]["embeds"]
    assert embed["image"] == {"url": "attachment://chart.png"}
    assert "BINANCE:BTCUSDT" in embed["description"]
    alert_delivery = next(
        d for d in await client.deliveries(signal_id) if d.kind == resources_pb2.NOTIFICATION_KIND_ALERT
    )
    assert alert_delivery.status == resources_pb2.DELIVERY_STATUS_DELIVERED
    assert alert_delivery.with_photo
    assert alert_delivery.attempts == 2

    await client.signals.UpdateSignalOutcome(
        signal_service_pb2.UpdateSignalOutcomeRequest(
            signal_id=signal_id, result=resources_pb2.SIGNAL_RESULT_WIN, profit_loss="7.25"
        )
    )

    async def edited() -> list[dict[str, Any]]:
        return [c for c in await client.discord_calls(webhook_id, "edit") if c["status"] == 200]

    [edit] = await client.until("the Discord edit", edited)
    assert edit["message_id"] == alert_delivery.provider_message_id
    assert "WIN" in edit["payload"]["embeds"][0]["description"]
    assert "7.25" in edit["payload"]["embeds"][0]["description"]


async def test_a_trader_connects_telegram_through_the_bots_start_link(client: Client) -> None:
    """Before the SIGKILL test: the killed worker may hold the update poller's lease for a minute."""
    created = await client.users.CreateUser(
        user_service_pb2.CreateUserRequest(plan=resources_pb2.PLAN_PREMIUM)
    )
    issued = await client.users.CreateTelegramLink(
        user_service_pb2.CreateTelegramLinkRequest(user_id=created.user.user_id)
    )
    assert issued.link == f"https://t.me/{STUB_BOT_USERNAME}?start={issued.code}"
    chat_id = chat()
    # What Telegram sends the bot when the trader opens the link and presses Start.
    message = {"message_id": 1, "date": int(time.time()), "chat": {"id": int(chat_id), "type": "private"}}
    await client.http.post("/_stub/updates", json={"message": message | {"text": f"/start {issued.code}"}})

    [reply] = await client.sent(chat_id, "sendMessage")
    assert reply["params"]["text"] == LINKED_TEXT
    signal_id = await client.ingest(created.webhook_token, alert())
    _, delivered = await client.sent(chat_id, "sendMessage", count=2)
    assert "BINANCE:BTCUSDT" in delivered["params"]["text"]
    [delivery] = await client.deliveries(signal_id)
    assert delivery.status == resources_pb2.DELIVERY_STATUS_DELIVERED

    # The code was used: sent again (from another chat), it binds nothing and says so.
    other_chat = chat()
    other = message | {"chat": {"id": int(other_chat), "type": "private"}, "text": f"/start {issued.code}"}
    await client.http.post("/_stub/updates", json={"message": other})
    [refusal] = await client.sent(other_chat, "sendMessage")
    assert refusal["params"]["text"] == NOT_LINKED_TEXT


async def test_nothing_is_sent_twice_across_a_worker_sigkill(client: Client, stack: Stack) -> None:
    chats = [chat() for _ in range(6)]
    tokens = [await client.user({"telegram": {"chat_id": chat_id}}) for chat_id in chats]
    # The worker dies while it holds these alerts' jobs (they wait for their charts).
    signals = [await client.ingest(token, alert()) for token in tokens]
    await asyncio.sleep(0.5)
    stack.kill("notify-0")
    stack.start("notify-1")
    for signal_id in signals[:3]:
        await client.complete_capture(signal_id)

    async def settled() -> bool:
        for signal_id in signals:
            deliveries = await client.deliveries(signal_id)
            if any(
                d.status in (resources_pb2.DELIVERY_STATUS_PENDING, resources_pb2.DELIVERY_STATUS_SENDING)
                for d in deliveries
            ):
                return False
            if not any(
                d.kind == resources_pb2.NOTIFICATION_KIND_ALERT
                and d.status == resources_pb2.DELIVERY_STATUS_DELIVERED
                for d in deliveries
            ):
                return False
        return True

    await client.until("every alert delivered", settled)
    for chat_id in chats:
        methods = [call["method"] for call in await client.telegram_calls(chat_id) if call["status"] == 200]
        assert methods in (["sendPhoto"], ["sendMessage"], ["sendMessage", "sendPhoto"]), methods


async def test_a_private_url_is_refused_and_the_reason_recorded(client: Client) -> None:
    token = await client.user(
        {"webhook": {"url": "http://169.254.169.254/latest/meta-data", "secret": SECRET}}
    )
    signal_id = await client.ingest(token, b"a webhook for the metadata service")

    async def failed() -> list[resources_pb2.NotificationDelivery]:
        return [
            d for d in await client.deliveries(signal_id) if d.status == resources_pb2.DELIVERY_STATUS_FAILED
        ]

    [delivery] = await client.until("the webhook delivery to fail", failed)
    assert delivery.channel == resources_pb2.NOTIFICATION_CHANNEL_WEBHOOK
    assert "forbidden destination" in delivery.last_error
    assert "link-local" in delivery.last_error
    assert delivery.attempts == 1


def run_alerts(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = child_env(
        {
            "ALERTS_DATA_DIR": stack.env["ALERTS_DATA_DIR"],
            "ALERTS_LOG_LEVEL": "WARNING",
            "ALERTS_SIGNAL_ADDR": stack.signal_addr,
            "ALERTS_SERVICE_API_KEY": stack.api_key,
        }
    )
    return subprocess.run(
        alerts_argv(*args), env=env, capture_output=True, text=True, timeout=120, check=False
    )


async def test_alerts_notifications_failed_and_retry(client: Client, stack: Stack) -> None:
    token = await client.user({"webhook": {"url": "http://10.1.2.3/hook", "secret": SECRET}})
    signal_id = await client.ingest(token, b"a webhook for a private address")

    async def failed() -> list[dict[str, Any]]:
        answer = await asyncio.to_thread(run_alerts, stack, "notifications", "failed", "--json")
        assert answer.returncode == 0, answer.stderr
        rows = [json.loads(line) for line in answer.stdout.splitlines()]
        return [row for row in rows if row["signal_id"] == signal_id]

    [row] = await client.until("the failed delivery to be listed", failed)
    assert (row["channel"], row["kind"], row["status"]) == ("webhook", "alert", "failed")
    assert "private" in row["last_error"]

    answer = await asyncio.to_thread(run_alerts, stack, "notifications", "retry", signal_id)
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.strip() == "signals queued for delivery again: 1"


class WebhookReceiver:
    """A trader's webhook endpoint: records every request's headers and body."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {name.decode().lower(): value.decode() for name, value in scope["headers"]}
        self.received.append((headers, body))
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})


async def test_a_signed_webhook_reaches_a_receiver_that_can_verify_it(client: Client) -> None:
    receiver = WebhookReceiver()
    with asgi_app_in_thread(receiver) as url:
        token = await client.user({"webhook": {"url": f"{url}/hooks/alerts", "secret": SECRET}})
        signal_id = await client.ingest(token, b"a webhook for the trader's own receiver")

        async def received() -> list[tuple[dict[str, str], bytes]]:
            return list(receiver.received)

        [(headers, body)] = await client.until("the signed webhook", received)
    assert verify(SECRET, headers, body, now=int(time.time()))
    assert not verify("whsec_" + base64.b64encode(b"x" * 32).decode(), headers, body, now=int(time.time()))
    event = json.loads(body)
    assert event["type"] == "signal.created"
    assert event["data"]["signal_id"] == signal_id
    [delivery] = await client.deliveries(signal_id)
    assert delivery.status == resources_pb2.DELIVERY_STATUS_DELIVERED
    assert delivery.provider_message_id == headers["webhook-id"]


async def test_no_notify_job_failed_unexpectedly(stack: Stack) -> None:
    """Provider failures are handled in the job; an exception escaping it is a bug (runs last)."""
    assert "unhandled exception" not in stack.logs()
