"""Notification preferences and the delivery ledger through the real signal service on real PostgreSQL."""

from __future__ import annotations

import base64
import json
import uuid

import asyncpg
import grpc
import pytest
from google.protobuf import field_mask_pb2, struct_pb2

from apidevs.alerts.v1 import resources_pb2, signal_service_pb2, user_service_pb2
from mesh.crypto import CookieCipher
from mesh.errors import from_rpc_error
from mesh.queues import NOTIFY_ACTOR, NOTIFY_QUEUE
from signal_service.settings import SignalSettings
from tests.conftest import settings_from
from tests.integration.signal_service.test_platform_api import alert, ingest, set_outcome
from tests.support import complete_capture

SECRET = "whsec_" + base64.b64encode(b"s" * 32).decode()
DISCORD = "https://discord.com/api/webhooks/123456789012345678/" + "t" * 68
TELEGRAM = {"telegram": {"chat_id": "-1001234567890", "with_screenshot": True}}
UNPARSABLE = b"nothing a parser can use"  # its screenshot is SKIPPED: no chart to wait for


def struct(document: dict) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(document)
    return message


async def create(users, preferences: dict) -> user_service_pb2.CreateUserResponse:
    return await users.CreateUser(
        user_service_pb2.CreateUserRequest(
            plan=resources_pb2.PLAN_PREMIUM, notification_preferences=struct(preferences)
        )
    )


async def claim(
    signals, signal_id: str, claim_id: str, wait: int = 0
) -> signal_service_pb2.ClaimNotificationResponse:
    return await signals.ClaimNotification(
        signal_service_pb2.ClaimNotificationRequest(
            signal_id=signal_id, worker_id="w", claim_id=claim_id, screenshot_wait_seconds=wait
        )
    )


async def report(
    signals, task, claim_id: str, outcome: int, **fields
) -> signal_service_pb2.ReportNotificationResponse:
    return await signals.ReportNotification(
        signal_service_pb2.ReportNotificationRequest(
            delivery_id=task.delivery_id, claim_id=claim_id, outcome=outcome, **fields
        )
    )


DELIVERED = signal_service_pb2.DELIVERY_REPORT_OUTCOME_DELIVERED


@pytest.fixture
async def connection(database_url: str):
    connection = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    yield connection
    await connection.close()


async def test_preferences_are_refused_naming_the_field(users) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await create(users, {"telegram": {"chat_id": "not a chat id"}})
    error = from_rpc_error(caught.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.metadata["field"] == "notification_preferences.telegram.chat_id"

    created = await create(users, TELEGRAM)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await users.UpdateUser(
            user_service_pb2.UpdateUserRequest(
                user=resources_pb2.User(
                    user_id=created.user.user_id,
                    notification_preferences=struct({"webhook": {"url": "https://example.com/h"}}),
                ),
                update_mask=field_mask_pb2.FieldMask(paths=["notification_preferences"]),
            )
        )
    assert from_rpc_error(caught.value).metadata["field"] == "notification_preferences.webhook.secret"


async def test_secrets_are_encrypted_at_rest_and_never_returned(
    users, signals, connection, service_env
) -> None:
    created = await create(
        users,
        {
            "webhook": {"url": "https://example.com/hook", "secret": SECRET},
            "discord": {"webhook_url": DISCORD},
        },
    )
    user_id = created.user.user_id
    shown = await users.GetUser(user_service_pb2.GetUserRequest(user_id=user_id))
    for message in (created.user, shown):
        text = str(message)
        assert SECRET not in text
        assert DISCORD not in text
    assert shown.notification_preferences["webhook"]["secret_set"] is True
    assert shown.notification_preferences["discord"]["webhook_url_set"] is True

    stored = await connection.fetchrow(
        "SELECT notification_preferences::text AS document, notification_secrets_ciphertext AS sealed "
        "FROM user_config WHERE user_id = $1",
        uuid.UUID(user_id),
    )
    assert SECRET not in stored["document"]
    assert DISCORD not in stored["document"]
    assert SECRET.encode() not in stored["sealed"]
    assert DISCORD.encode() not in stored["sealed"]

    # What GetUser shows can be sent back as it is: the secrets stay.
    await users.UpdateUser(
        user_service_pb2.UpdateUserRequest(
            user=resources_pb2.User(user_id=user_id, notification_preferences=shown.notification_preferences),
            update_mask=field_mask_pb2.FieldMask(paths=["notification_preferences"]),
        )
    )
    signal_id = await ingest(signals, created.webhook_token, UNPARSABLE)
    claimed = await claim(signals, signal_id, "c1")
    cipher = CookieCipher.from_settings(settings_from(service_env, SignalSettings))
    assert json.loads(cipher.decrypt(claimed.secrets_ciphertext)) == {
        "discord_webhook_url": DISCORD,
        "webhook_secret": SECRET,
    }
    assert {task.target for task in claimed.tasks} == {"", "https://example.com/hook"}


async def test_each_signal_event_queues_the_notify_workers_in_its_transaction(
    users, signals, connection
) -> None:
    created = await create(users, TELEGRAM)
    signal_id = await ingest(signals, created.webhook_token, UNPARSABLE)
    rows = await connection.fetch(
        "SELECT channel, kind, status FROM notification_deliveries WHERE signal_id = $1", uuid.UUID(signal_id)
    )
    assert [tuple(row) for row in rows] == [("telegram", "alert", "pending")]

    # The queued rows are locked first: the relay (DELETE ... SKIP LOCKED) cannot take them between counts.
    queued_rows = (
        "SELECT id FROM outbox WHERE queue_name = $1 AND actor_name = $2 AND args = $3::jsonb FOR UPDATE"
    )
    transaction = connection.transaction()
    await transaction.start()
    queued_before = len(
        await connection.fetch(queued_rows, NOTIFY_QUEUE, NOTIFY_ACTOR, json.dumps([signal_id]))
    )
    await connection.execute(
        "UPDATE users SET event_seq = event_seq + 1 WHERE id = $1", uuid.UUID(created.user.user_id)
    )
    await connection.execute(
        "INSERT INTO signal_events (user_id, seq, type, signal_id) "
        "SELECT id, event_seq, 'outcome_updated', $2 FROM users WHERE id = $1",
        uuid.UUID(created.user.user_id),
        uuid.UUID(signal_id),
    )
    # Not committed, so no relay can have taken it: the trigger queued it in the event's transaction.
    queued = len(await connection.fetch(queued_rows, NOTIFY_QUEUE, NOTIFY_ACTOR, json.dumps([signal_id])))
    assert queued == queued_before + 1
    kinds = await connection.fetch(
        "SELECT kind FROM notification_deliveries WHERE signal_id = $1 ORDER BY id", uuid.UUID(signal_id)
    )
    assert [row["kind"] for row in kinds] == ["alert", "outcome"]
    await transaction.rollback()
    # A user without an enabled channel gets no deliveries at all.
    quiet = await create(users, {"telegram": {"chat_id": "42", "enabled": False}})
    quiet_signal = await ingest(signals, quiet.webhook_token, UNPARSABLE)
    assert not await connection.fetch(
        "SELECT 1 FROM notification_deliveries WHERE signal_id = $1", uuid.UUID(quiet_signal)
    )


async def test_filters_decide_which_signals_notify(users, signals, connection) -> None:
    created = await create(users, {**TELEGRAM, "filters": {"tickers": ["BINANCE:ETHUSDT"]}})
    kept = await ingest(signals, created.webhook_token, alert(1, ticker="BINANCE:ETHUSDT"))
    dropped = await ingest(signals, created.webhook_token, alert(2, ticker="BINANCE:BTCUSDT"))
    found = await connection.fetch(
        "SELECT signal_id FROM notification_deliveries WHERE signal_id = ANY($1::uuid[])",
        [uuid.UUID(kept), uuid.UUID(dropped)],
    )
    assert [str(row["signal_id"]) for row in found] == [kept]


async def test_alert_waits_for_the_chart_then_photo_reply_then_outcome_edit(users, signals) -> None:
    created = await create(users, TELEGRAM)
    signal_id = await ingest(signals, created.webhook_token, alert(3))

    waiting = await claim(signals, signal_id, "a0", wait=30)
    assert not waiting.tasks
    assert 25 < waiting.retry_after_seconds <= 30

    # The wait is over and the chart is not ready: the alert goes as text.
    first = await claim(signals, signal_id, "a1", wait=0)
    [task] = first.tasks
    assert (task.kind, task.with_photo, task.target) == (
        resources_pb2.NOTIFICATION_KIND_ALERT,
        False,
        "-1001234567890",
    )
    assert not (await claim(signals, signal_id, "a2")).tasks, "a leased delivery is claimed once"
    assert (await report(signals, task, "a1", DELIVERED, provider_message_id="7")).recorded
    assert not (await report(signals, task, "a1", DELIVERED, provider_message_id="8")).recorded

    object_key = await complete_capture(signals, signal_id, worker_id="cw")
    [photo] = (await claim(signals, signal_id, "p1")).tasks
    assert (photo.kind, photo.alert_message_id, photo.screenshot_object_key) == (
        resources_pb2.NOTIFICATION_KIND_PHOTO,
        "7",
        object_key,
    )
    await report(signals, photo, "p1", DELIVERED, provider_message_id="9")

    await set_outcome(signals, signal_id, resources_pb2.SIGNAL_RESULT_WIN, profit_loss="12.5")
    [edit] = (await claim(signals, signal_id, "o1")).tasks
    assert (edit.kind, edit.alert_message_id, edit.alert_with_photo) == (
        resources_pb2.NOTIFICATION_KIND_OUTCOME,
        "7",
        False,
    )
    await report(signals, edit, "o1", DELIVERED, provider_message_id="7")

    shown = await signals.GetSignal(signal_service_pb2.GetSignalRequest(signal_id=signal_id))
    assert sorted((d.kind, d.status) for d in shown.deliveries) == [
        (resources_pb2.NOTIFICATION_KIND_ALERT, resources_pb2.DELIVERY_STATUS_DELIVERED),
        (resources_pb2.NOTIFICATION_KIND_PHOTO, resources_pb2.DELIVERY_STATUS_DELIVERED),
        (resources_pb2.NOTIFICATION_KIND_OUTCOME, resources_pb2.DELIVERY_STATUS_DELIVERED),
    ]


async def test_a_ready_chart_goes_with_the_alert_and_no_photo_follows(users, signals) -> None:
    created = await create(users, TELEGRAM)
    signal_id = await ingest(signals, created.webhook_token, alert(4))
    await complete_capture(signals, signal_id, worker_id="cw")
    [task] = (await claim(signals, signal_id, "c1", wait=30)).tasks
    assert task.with_photo
    assert task.screenshot_object_key
    await report(signals, task, "c1", DELIVERED, provider_message_id="11", with_photo=True)
    again = await claim(signals, signal_id, "c2")
    assert not again.tasks
    assert again.retry_after_seconds == 0
    shown = await signals.GetSignal(signal_service_pb2.GetSignalRequest(signal_id=signal_id))
    assert {(d.kind, d.status) for d in shown.deliveries} == {
        (resources_pb2.NOTIFICATION_KIND_ALERT, resources_pb2.DELIVERY_STATUS_DELIVERED),
        (resources_pb2.NOTIFICATION_KIND_PHOTO, resources_pb2.DELIVERY_STATUS_SKIPPED),
    }


async def test_a_chat_receives_alerts_in_arrival_order(users, signals) -> None:
    created = await create(users, TELEGRAM)
    first = await ingest(signals, created.webhook_token, UNPARSABLE + b" 1")
    second = await ingest(signals, created.webhook_token, UNPARSABLE + b" 2")
    blocked = await claim(signals, second, "s1")
    assert not blocked.tasks
    assert blocked.waiting_for_signal_id == first
    assert blocked.retry_after_seconds > 0
    claimed_first = await claim(signals, first, "f1")
    assert list(claimed_first.next_signal_ids) == [second]
    # The first is held by a live worker, which queues the second when done: nothing to nudge.
    held = await claim(signals, second, "s1b")
    assert (held.tasks, held.waiting_for_signal_id) == ([], "")
    [task] = claimed_first.tasks
    await report(signals, task, "f1", DELIVERED, provider_message_id="1")
    assert len((await claim(signals, second, "s2")).tasks) == 1


async def test_failed_deliveries_are_listed_and_retried(users, signals) -> None:
    created = await create(users, TELEGRAM)
    signal_id = await ingest(signals, created.webhook_token, UNPARSABLE + b" f")
    [task] = (await claim(signals, signal_id, "x1")).tasks
    await report(
        signals,
        task,
        "x1",
        signal_service_pb2.DELIVERY_REPORT_OUTCOME_FAILED,
        error="HTTP 400: chat not found",
    )
    failed = await signals.ListFailedNotifications(
        signal_service_pb2.ListFailedNotificationsRequest(user_id=created.user.user_id)
    )
    assert [(d.signal_id, d.last_error) for d in failed.deliveries] == [
        (signal_id, "HTTP 400: chat not found")
    ]
    retried = await signals.RetryNotifications(
        signal_service_pb2.RetryNotificationsRequest(signal_ids=[signal_id])
    )
    assert retried.requeued_count == 1
    [again] = (await claim(signals, signal_id, "x2")).tasks
    assert again.attempts == 1


async def test_a_later_outcome_change_edits_the_message_again(users, signals) -> None:
    created = await create(users, TELEGRAM)
    signal_id = await ingest(signals, created.webhook_token, UNPARSABLE + b" o")
    [task] = (await claim(signals, signal_id, "r1")).tasks
    await report(signals, task, "r1", DELIVERED, provider_message_id="5")
    await set_outcome(signals, signal_id, resources_pb2.SIGNAL_RESULT_WIN)
    [first_edit] = (await claim(signals, signal_id, "r2")).tasks
    await report(signals, first_edit, "r2", DELIVERED, provider_message_id="5")
    assert not (await claim(signals, signal_id, "r3")).tasks

    await set_outcome(signals, signal_id, resources_pb2.SIGNAL_RESULT_LOSS)
    [second_edit] = (await claim(signals, signal_id, "r4")).tasks
    assert second_edit.delivery_id == first_edit.delivery_id
    assert second_edit.kind == resources_pb2.NOTIFICATION_KIND_OUTCOME
    assert second_edit.alert_message_id == "5"
