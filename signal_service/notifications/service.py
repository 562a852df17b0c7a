"""The notification delivery ledger: what is due for a signal, claims under a lease, reports, retries.

The notify_feed() trigger (notifications/sql/) writes a signal's deliveries and queues the signal for the
notify workers in the transaction of each signal event. A worker then claims what is due now:

- an alert waits, when its channel wants the chart and a capture is still running, until the chart is
  ready or `screenshot_wait_seconds` after the signal arrived, whichever comes first; then it goes out
  with the chart when it is ready, as text otherwise;
- an alert waits behind the same user's older alerts on that channel, so a chat receives alerts in the
  order they arrived;
- the chart follow-up (PHOTO) and the outcome edit (OUTCOME) wait for their alert; they are skipped
  when it carried the chart already (PHOTO), or was never delivered.

A claim holds a delivery for a lease; a worker that dies mid-send loses it, and the next claim after the
lease sends again. A delivery is otherwise sent once: claims of one signal take turns on its rows' locks,
and a report counts once, for the claim that holds the delivery.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from prometheus_client import Gauge

from mesh import notification_preferences
from mesh.errors import InvalidArgumentError, NotFoundError
from mesh.loops import BackgroundLoop
from mesh.queues import NOTIFY_ACTOR, NOTIFY_QUEUE
from signal_service.clock import utcnow
from signal_service.database import DATABASE_AWAY, Database
from signal_service.ids import require_uuid
from signal_service.models import DeliveryStatus, NotificationDelivery, OutboxMessage, ScreenshotStatus
from signal_service.notifications.repository import (
    FAILED_STATUSES,
    OPEN_STATUSES,
    DeliveryReads,
    NotificationRepository,
)
from signal_service.signals.repository import SignalRepository, SignalRow
from signal_service.signals.service import page_size

log = logging.getLogger(__name__)

# Database-wide figures: every signal replica exports the same value, so aggregate with max, never sum.
OLDEST_UNDELIVERED = Gauge(
    "alerts_notifications_oldest_undelivered_seconds",
    "Age of the oldest notification delivery still pending or being sent",
)
DELIVERIES_BY_STATUS = Gauge(
    "alerts_notification_deliveries",
    "Notification deliveries in the ledger not delivered: pending, sending, failed or dead, by status",
    ["status"],
)
_METRICS_INTERVAL_SECONDS = 15.0

MAX_SCREENSHOT_WAIT_SECONDS = 300
MAX_LEASE_SECONDS = 300
DEFAULT_LEASE_SECONDS = 60
# How soon to look again at a delivery waiting for its own alert (usually sent by the same job).
_WAITING_RECHECK_SECONDS = 0.5
# How soon an alert waiting behind an older one looks again; the older one's job queues it when it is
# settled (next_signal_ids), and the waiting one nudges the older one, so this only covers lost jobs.
_BEHIND_RECHECK_SECONDS = 60.0
_SCREENSHOT_RUNNING = (ScreenshotStatus.PENDING, ScreenshotStatus.PROCESSING)
_MAX_ERROR_LENGTH = 500


class ReportOutcome:
    DELIVERED = "delivered"
    RETRY = "retry"
    FAILED = "failed"
    DEAD = "dead"
    RELEASED = "released"


@dataclass(frozen=True, slots=True)
class NotificationTask:
    delivery: NotificationDelivery
    target: str
    with_photo: bool
    screenshot_object_key: str
    alert_message_id: str
    alert_with_photo: bool


@dataclass(slots=True)
class NotificationClaim:
    row: SignalRow
    tasks: list[NotificationTask] = field(default_factory=list)
    secrets_ciphertext: bytes = b""
    retry_after_seconds: float = 0.0
    # An older signal whose alert this one waits behind; the worker nudges it along.
    waiting_for_signal_id: str = ""
    # Signals whose alerts wait behind the alerts claimed here.
    next_signal_ids: list[str] = field(default_factory=list)

    def wait(self, seconds: float) -> None:
        seconds = max(seconds, 0.0)
        if self.retry_after_seconds == 0.0 or seconds < self.retry_after_seconds:
            self.retry_after_seconds = seconds


@dataclass(frozen=True, slots=True)
class DeliveryPage:
    deliveries: list[NotificationDelivery]
    next_page_token: str


def notify_message(signal_id: uuid.UUID) -> OutboxMessage:
    # Columns with a server default (created_at, ...) are left to PostgreSQL.
    return OutboxMessage(queue_name=NOTIFY_QUEUE, actor_name=NOTIFY_ACTOR, args=[str(signal_id)], options={})  # type: ignore[call-arg]


def target_of(preferences: dict[str, Any], channel: str) -> str | None:
    """Where a channel delivers now; None when the user has switched it off since the signal."""
    if channel not in notification_preferences.enabled_channels(preferences):
        return None
    entry = preferences[channel]
    if channel == "telegram":
        return str(entry.get("chat_id") or "") or None
    if channel == "webhook":
        return str(entry.get("url") or "") or None
    return "" if entry.get("webhook_url_set") else None


def wants_photo_with_alert(preferences: dict[str, Any], channel: str) -> bool:
    if channel == "telegram":
        return bool(preferences.get("telegram", {}).get("with_screenshot", True))
    return channel == "discord"


class NotificationLedger:
    def __init__(self, database: Database, *, on_commit: Any = None) -> None:
        self._database = database
        self._on_commit = on_commit or (lambda: None)
        self.metrics_refresher = BackgroundLoop(
            "notification-metrics",
            self.refresh_metrics,
            interval_seconds=_METRICS_INTERVAL_SECONDS,
            max_backoff_seconds=_METRICS_INTERVAL_SECONDS,
            expected_errors=DATABASE_AWAY,
        )

    async def claim(
        self,
        signal_id: str,
        *,
        worker_id: str,
        claim_id: str,
        screenshot_wait_seconds: int,
        lease_seconds: int,
    ) -> NotificationClaim:
        parsed_id = require_uuid(signal_id, "signal_id")
        if not claim_id or len(claim_id) > 200:
            raise InvalidArgumentError(
                "claim_id is required (at most 200 characters)", reason="INVALID_CLAIM"
            )
        if not 0 <= screenshot_wait_seconds <= MAX_SCREENSHOT_WAIT_SECONDS:
            raise InvalidArgumentError(
                f"screenshot_wait_seconds must be 0 to {MAX_SCREENSHOT_WAIT_SECONDS}", reason="INVALID_CLAIM"
            )
        if not 0 <= lease_seconds <= MAX_LEASE_SECONDS:
            raise InvalidArgumentError(
                f"lease_seconds must be 0 to {MAX_LEASE_SECONDS}", reason="INVALID_CLAIM"
            )
        lease = timedelta(seconds=lease_seconds or DEFAULT_LEASE_SECONDS)
        async with self._database.transaction() as session:
            ledger = NotificationRepository(session)
            row = await SignalRepository(session).get(parsed_id)
            if row is None:
                raise NotFoundError("no such signal", reason="SIGNAL_NOT_FOUND")
            deliveries = await ledger.lock_for_signal(parsed_id)
            preferences, secrets = await ledger.preferences(row.signal.user_id)
            claim = NotificationClaim(row=row, secrets_ciphertext=secrets or b"")
            now = utcnow()
            alerts = {delivery.channel: delivery for delivery in deliveries if delivery.kind == "alert"}
            oldest = await ledger.oldest_open_alerts(row.signal.user_id, list(alerts), now)
            for delivery in deliveries:
                if delivery.status == DeliveryStatus.SENDING and delivery.lease_until is not None:
                    if delivery.lease_until > now:
                        claim.wait((delivery.lease_until - now).total_seconds())
                        continue
                elif delivery.status != DeliveryStatus.PENDING:
                    continue
                task = await self._due(
                    ledger, claim, delivery, preferences, alerts, oldest, now, screenshot_wait_seconds
                )
                if task is None:
                    continue
                claim_values = {
                    "status": DeliveryStatus.SENDING,
                    "attempts": delivery.attempts + 1,
                    "claimed_by": worker_id[:200],
                    "claim_id": claim_id,
                    "lease_until": now + lease,
                }
                await ledger.update(delivery.id, **claim_values)
                for name, value in claim_values.items():
                    setattr(delivery, name, value)
                claim.tasks.append(task)
                if delivery.kind == "alert":
                    following = await ledger.next_open_alert(
                        row.signal.user_id, delivery.channel, delivery.id
                    )
                    if following is not None:
                        claim.next_signal_ids.append(str(following))
        return claim

    async def _due(
        self,
        ledger: NotificationRepository,
        claim: NotificationClaim,
        delivery: NotificationDelivery,
        preferences: dict[str, Any],
        alerts: dict[str, NotificationDelivery],
        oldest: dict[str, tuple[int, uuid.UUID, bool]],
        now: datetime,
        screenshot_wait_seconds: int,
    ) -> NotificationTask | None:
        """The task when `delivery` is due now; otherwise records why not (a wait, or a skip) and None."""
        target = target_of(preferences, delivery.channel)
        if target is None:
            await self._skip(ledger, delivery, "channel switched off")
            return None
        screenshot = claim.row.screenshot
        screenshot_status = claim.row.signal.screenshot_status
        object_key = (screenshot.object_key or "") if screenshot is not None else ""
        chart_ready = screenshot_status == ScreenshotStatus.COMPLETED and bool(object_key)
        if delivery.kind == "alert":
            first_id, first_signal, first_held = oldest.get(
                delivery.channel, (delivery.id, delivery.signal_id, False)
            )
            if first_id < delivery.id:
                claim.wait(_BEHIND_RECHECK_SECONDS)
                # A worker holding the older alert queues this one when done (next_signal_ids): a nudge
                # is for an older alert nobody holds, whose job may have been lost.
                if not first_held:
                    claim.waiting_for_signal_id = str(first_signal)
                return None
            wants_photo = wants_photo_with_alert(preferences, delivery.channel)
            wait_until = claim.row.signal.created_at + timedelta(seconds=screenshot_wait_seconds)
            if wants_photo and screenshot_status in _SCREENSHOT_RUNNING and now < wait_until:
                claim.wait((wait_until - now).total_seconds())
                return None
            return NotificationTask(delivery, target, wants_photo and chart_ready, object_key, "", False)
        alert = alerts.get(delivery.channel)
        if alert is not None and alert.status in OPEN_STATUSES:
            claim.wait(_WAITING_RECHECK_SECONDS)
            return None
        if alert is None or alert.status != DeliveryStatus.DELIVERED:
            await self._skip(ledger, delivery, "the alert was not delivered")
            return None
        if delivery.kind == "photo" and (alert.with_photo or not chart_ready):
            await self._skip(ledger, delivery, "the alert carried the chart" if alert.with_photo else "")
            return None
        return NotificationTask(
            delivery,
            target,
            delivery.kind == "photo",
            object_key,
            alert.provider_message_id or "",
            alert.with_photo,
        )

    @staticmethod
    async def _skip(ledger: NotificationRepository, delivery: NotificationDelivery, why: str) -> None:
        await ledger.update(delivery.id, status=DeliveryStatus.SKIPPED, last_error=why or None)
        delivery.status = DeliveryStatus.SKIPPED

    async def report(
        self,
        delivery_id: int,
        *,
        claim_id: str,
        outcome: str,
        provider_message_id: str = "",
        error: str = "",
        with_photo: bool = False,
    ) -> tuple[bool, NotificationDelivery]:
        """Records a claimed delivery's result; (False, as stored) when this claim was reported already."""
        values: dict[str, Any]
        if outcome == ReportOutcome.DELIVERED:
            values = {
                "status": DeliveryStatus.DELIVERED,
                "provider_message_id": provider_message_id[:200] or None,
                "with_photo": with_photo,
                "delivered_at": utcnow(),
                "last_error": None,
            }
        elif outcome in (ReportOutcome.RETRY, ReportOutcome.FAILED, ReportOutcome.DEAD):
            status = {
                ReportOutcome.RETRY: DeliveryStatus.PENDING,
                ReportOutcome.FAILED: DeliveryStatus.FAILED,
                ReportOutcome.DEAD: DeliveryStatus.DEAD,
            }[outcome]
            values = {"status": status, "last_error": error[:_MAX_ERROR_LENGTH] or None}
        elif outcome == ReportOutcome.RELEASED:
            values = {"status": DeliveryStatus.PENDING, "attempts": NotificationDelivery.attempts - 1}
        else:
            raise InvalidArgumentError("outcome is required", reason="INVALID_OUTCOME")
        async with self._database.transaction() as session:
            ledger = NotificationRepository(session)
            reported = await ledger.report(delivery_id, claim_id, **values)
            if reported is not None:
                return True, reported
            current = await ledger.get(delivery_id)
        if current is None:
            raise NotFoundError("no such delivery", reason="DELIVERY_NOT_FOUND")
        return False, current

    async def refresh_metrics(self) -> None:
        """Keeps the ledger's figures fresh for the alert rules (deploy/prometheus/alerts.yml)."""
        async with self._database.session() as session:
            ledger = NotificationRepository(session)
            OLDEST_UNDELIVERED.set(await ledger.oldest_open_age_seconds())
            counts = await ledger.count_unfinished()
        for status in (*OPEN_STATUSES, *FAILED_STATUSES):
            DELIVERIES_BY_STATUS.labels(status.value).set(counts.get(status.value, 0))

    async def deliveries(
        self, signal_ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, list[NotificationDelivery]]:
        async with self._database.connection() as connection:
            rows = await DeliveryReads(connection).for_signals(signal_ids)
        found: dict[uuid.UUID, list[NotificationDelivery]] = {}
        for row in rows:
            found.setdefault(row.signal_id, []).append(row)
        return found

    async def delivery_records(self, signal_ids: Sequence[str]) -> list[asyncpg.Record]:
        """The signals' deliveries as a replay page's messages show them, oldest first (see
        notifications.repository.DELIVERIES_FOR_MESSAGES_SQL); none to read for no signals."""
        if not signal_ids:
            return []
        async with self._database.connection() as connection:
            return await DeliveryReads(connection).for_messages(signal_ids)

    async def failed(self, *, user_id: str, size: int, page_token: str) -> DeliveryPage:
        parsed_user = require_uuid(user_id, "user_id") if user_id else None
        limit = page_size(size)
        after = _decode_token(page_token) if page_token else None
        async with self._database.session() as session:
            rows = await NotificationRepository(session).failed(parsed_user, after, limit + 1)
        token = _encode_token(rows[limit - 1]) if len(rows) > limit else ""
        return DeliveryPage(rows[:limit], token)

    async def retry(self, signal_ids: Sequence[str], *, all_failed: bool) -> int:
        if all_failed == bool(signal_ids):
            raise InvalidArgumentError(
                "give signal_ids or all_failed, not both or neither", reason="INVALID_RETRY"
            )
        parsed = None if all_failed else [require_uuid(value, "signal_ids") for value in signal_ids]
        async with self._database.transaction() as session:
            ledger = NotificationRepository(session)
            signals = await ledger.rearm_failed(parsed)
            for signal_id in signals:
                await ledger.add_job(notify_message(signal_id))
        if signals:
            self._on_commit()
        return len(signals)


def _encode_token(delivery: NotificationDelivery) -> str:
    return json.dumps([delivery.updated_at.isoformat(), delivery.id]).encode().hex()


def _decode_token(token: str) -> tuple[datetime, int]:
    try:
        updated_at, delivery_id = json.loads(bytes.fromhex(token))
        return datetime.fromisoformat(updated_at), int(delivery_id)
    except (ValueError, TypeError) as exc:
        raise InvalidArgumentError("invalid page_token", reason="INVALID_PAGE_TOKEN") from exc
