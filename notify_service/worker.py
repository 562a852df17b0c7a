"""The notify job: claims a signal's due deliveries, sends them, reports each, and comes back when told.

The actor takes the signal id only. ``SignalService.ClaimNotification`` decides what is due (the ledger,
signal_service/notifications/service.py) and holds it under a lease, so duplicated or redelivered jobs
never send a delivery twice while its holder is alive; a send whose report was lost is remembered in
Redis and reported by the next claim, not sent again. What is not due yet (an alert waiting for its
chart, or behind an older alert to the same chat; a send throttled or failed for now) is looked at
again by re-enqueueing the job with a delay, never by sleeping on a worker thread.

Failures: a 4xx other than 429 (or a destination the guard refuses) fails the delivery at once with its
reason; anything else is retried with exponential backoff and jitter (a 429's retry_after when given)
until `notify_delivery_deadline_seconds` after the delivery became due, then it is DEAD; the delay is
kept in Redis under the delivery's id, so no job of the signal sends it sooner. Telegram's limits are
shared by every worker as bookings and admission (notify_service/telegram_sending.py): a delivery whose
slot is far ahead is handed back (RELEASED) and its job comes back at the slot. An alert delivered queues
the same chat's next alert at once (next_signal_ids).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from datetime import UTC
from typing import Any

import grpc
import httpx
import redis.asyncio as redis_async
from prometheus_client import Counter, Histogram

from apidevs.alerts.v1 import (
    resources_pb2,
    signal_service_pb2,
    signal_service_pb2_grpc,
    storage_service_pb2,
    storage_service_pb2_grpc,
    user_service_pb2_grpc,
)
from mesh.crypto import CookieCipher, CookieCipherError
from mesh.errors import AlertsError, Failure, NotFoundError, classify_failure, from_rpc_error
from mesh.grpc import GrpcTls, open_channel
from mesh.loops import backoff_delay
from notify_service import render
from notify_service.channels.discord import DiscordWebhook
from notify_service.channels.errors import DeliveryError
from notify_service.channels.telegram import TelegramBot
from notify_service.channels.webhook import SignedWebhook
from notify_service.outbound import guarded_client
from notify_service.ratelimit import TelegramRateLimiter
from notify_service.settings import NotifySettings
from notify_service.telegram_sending import Sent, TelegramSender, Throttled
from notify_service.updates import TelegramUpdates

log = logging.getLogger(__name__)

_RPC_TIMEOUT_SECONDS = 10.0
# Claims of one job in a row: an alert, then its chart reply or outcome edit, are due one after another.
_MAX_ROUNDS = 4
# A waiting job is never re-enqueued sooner than this.
_MIN_DELAY_SECONDS = 0.2
# A blocked alert nudges the older signal it waits for at most this often.
_NUDGE_SECONDS = 5
# How long a provider's answer is kept for a report that may have been lost: past any claim's lease and
# retry of the job.
_SENT_MEMORY_SECONDS = 24 * 3600

DELIVERIES = Counter(
    "alerts_notifications_total",
    "Notification sends by channel, kind and outcome: delivered, retried, throttled, failed, dead",
    ["channel", "kind", "outcome"],
)
DELIVERY_LATENCY = Histogram(
    "alerts_notification_latency_seconds",
    "From the signal's arrival to its alert's delivery, by channel",
    ["channel"],
    buckets=(0.25, 0.5, 1, 2, 5, 10, 20, 35, 60, 120, 300),
)

_CHANNELS = {
    resources_pb2.NOTIFICATION_CHANNEL_TELEGRAM: "telegram",
    resources_pb2.NOTIFICATION_CHANNEL_DISCORD: "discord",
    resources_pb2.NOTIFICATION_CHANNEL_WEBHOOK: "webhook",
}
_KINDS = {
    resources_pb2.NOTIFICATION_KIND_ALERT: "alert",
    resources_pb2.NOTIFICATION_KIND_PHOTO: "photo",
    resources_pb2.NOTIFICATION_KIND_OUTCOME: "outcome",
}
_WEBHOOK_EVENTS = {"alert": "created", "photo": "screenshot_updated", "outcome": "outcome_updated"}
_RESULTS = {
    resources_pb2.SIGNAL_RESULT_WIN: "win",
    resources_pb2.SIGNAL_RESULT_LOSS: "loss",
    resources_pb2.SIGNAL_RESULT_SKIP: "skip",
}


class SignalServiceUnavailableError(Exception):
    """The signal service did not answer; Dramatiq retries the job."""


@dataclass(frozen=True, slots=True)
class LookAgain:
    """When to run the job again; 0: not needed."""

    delay_seconds: float = 0.0


def notice_of(signal: resources_pb2.Signal) -> render.Notice:
    return render.Notice(
        signal_id=signal.signal_id,
        indicator=signal.indicator,
        signal_type=signal.signal_type,
        ticker=signal.ticker,
        price=signal.price,
        interval=signal.interval,
        alert_time=signal.alert_time.ToDatetime(UTC) if signal.HasField("alert_time") else None,
        result=_RESULTS.get(signal.result, ""),
        profit_loss=signal.profit_loss,
        notes=signal.notes,
    )


class NotifyWorker:
    """What one worker process holds for its jobs; lives on Dramatiq's event loop thread."""

    def __init__(self, settings: NotifySettings) -> None:
        self.settings = settings
        self.worker_id = settings.notify_worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self._cipher = CookieCipher.from_settings(settings)
        self._channels: list[grpc.aio.Channel] = []
        self._signals: signal_service_pb2_grpc.SignalServiceAsyncStub | None = None
        self._storage: storage_service_pb2_grpc.StorageServiceAsyncStub | None = None
        self._redis: redis_async.Redis | None = None
        self._limiter: TelegramRateLimiter | None = None
        self._clients: list[httpx.AsyncClient] = []
        self._telegram: TelegramSender | None = None
        self._discord: DiscordWebhook | None = None
        self._webhook: SignedWebhook | None = None
        self._updates: TelegramUpdates | None = None
        self.requeue: Any = None

    async def start(self) -> None:
        settings = self.settings
        api_key = settings.service_api_key.get_secret_value() if settings.service_api_key else None
        tls = GrpcTls.from_settings(settings)
        signal_channel = open_channel(settings.signal_addr, api_key, tls=tls)
        storage_channel = open_channel(settings.storage_addr, api_key, tls=tls)
        self._channels = [signal_channel, storage_channel]
        self._signals = signal_service_pb2_grpc.SignalServiceStub(signal_channel)
        self._storage = storage_service_pb2_grpc.StorageServiceStub(storage_channel)
        self._redis = redis_async.Redis.from_url(settings.redis_url)
        self._limiter = TelegramRateLimiter(self._redis, settings.redis_namespace)
        # The Bot API origin is the platform's own setting; user-supplied URLs go through the guard.
        bot_client = httpx.AsyncClient(timeout=settings.notify_http_timeout_seconds, trust_env=False)
        user_client = guarded_client(
            allow_loopback=settings.notify_allow_loopback,
            timeout_seconds=settings.notify_http_timeout_seconds,
        )
        self._clients = [bot_client, user_client]
        bot = None
        if settings.telegram_bot_token is not None:
            bot = TelegramBot(bot_client, settings.telegram_api_url, settings.telegram_bot_token)
            self._telegram = TelegramSender(
                bot, self._limiter, self._redis, settings.redis_namespace, photo=self._photo
            )
        self._discord = DiscordWebhook(user_client, settings.discord_api_url)
        self._webhook = SignedWebhook(user_client)
        if settings.telegram_poll_updates and bot is not None:
            self._updates = TelegramUpdates(
                bot=bot,
                users=user_service_pb2_grpc.UserServiceStub(signal_channel),
                redis=self._redis,
                limiter=self._limiter,
                namespace=settings.redis_namespace,
                worker_id=self.worker_id,
            )
            self._updates.loop.start()
        log.info("notify worker started", extra={"worker_id": self.worker_id})

    async def close(self) -> None:
        if self._updates is not None:
            await self._updates.loop.stop()
        for client in self._clients:
            await client.aclose()
        if self._redis is not None:
            await self._redis.aclose()
        for channel in self._channels:
            await channel.close()
        log.info("notify worker stopped", extra={"worker_id": self.worker_id})

    async def run(self, signal_id: str, *, job_id: str) -> LookAgain:
        """Sends what is due for the signal; says when to look again, if at all."""
        look_again = 0.0
        for round_number in range(_MAX_ROUNDS):
            claim = await self._claim(signal_id, f"{job_id}:{round_number}")
            if claim is None:
                return LookAgain()
            if claim.waiting_for_signal_id:
                await self._nudge(claim.waiting_for_signal_id)
            look_again = claim.retry_after_seconds
            if not claim.tasks:
                break
            secrets = self._secrets(claim.secrets_ciphertext)
            notice = notice_of(claim.signal)
            claim_id = f"{job_id}:{round_number}"
            delays = await asyncio.gather(
                *(self._deliver(task, claim.signal, notice, secrets, claim_id) for task in claim.tasks)
            )
            if any(delay == 0.0 for delay in delays) and self.requeue is not None:
                for next_signal_id in claim.next_signal_ids:
                    await self.requeue(next_signal_id, LookAgain())
            retry_delays = [delay for delay in delays if delay > 0]
            if retry_delays:
                look_again = min([*retry_delays, *([look_again] if look_again > 0 else [])])
                break
        if look_again <= 0:
            return LookAgain()
        return LookAgain(max(look_again, _MIN_DELAY_SECONDS))

    async def _deliver(
        self,
        task: signal_service_pb2.NotificationTask,
        signal: resources_pb2.Signal,
        notice: render.Notice,
        secrets: dict[str, str],
        claim_id: str,
    ) -> float:
        """Sends one claimed delivery and reports it; returns the retry delay, 0 when it is settled."""
        channel, kind = _CHANNELS.get(task.channel, "unknown"), _KINDS.get(task.kind, "unknown")
        try:
            sent = await self._sent_before(task)
            if sent is None:
                await self._wait_for_retry(task)
                if channel == "telegram":
                    sent = await self._send_telegram(task, kind, notice)
                elif channel == "discord":
                    url = _stored_secret(secrets, "discord_webhook_url", "Discord webhook URL")
                    sent = await self._send_discord(task, kind, notice, url)
                else:
                    secret = _stored_secret(secrets, "webhook_secret", "webhook secret")
                    sent = await self._send_webhook(task, kind, notice, secret)
                await self._remember_sent(task, sent)
        except Throttled as throttled:
            DELIVERIES.labels(channel, kind, "throttled").inc()
            await self._report(task, claim_id, signal_service_pb2.DELIVERY_REPORT_OUTCOME_RELEASED)
            return max(throttled.wait_seconds, _MIN_DELAY_SECONDS)
        except DeliveryError as exc:
            return await self._failed(task, channel, kind, claim_id, exc)
        await self._report(
            task,
            claim_id,
            signal_service_pb2.DELIVERY_REPORT_OUTCOME_DELIVERED,
            provider_message_id=sent.provider_message_id,
            with_photo=sent.with_photo,
        )
        DELIVERIES.labels(channel, kind, "delivered").inc()
        if kind == "alert" and signal.HasField("created_at"):
            DELIVERY_LATENCY.labels(channel).observe(max(0.0, time.time() - signal.created_at.ToSeconds()))
        log.info(
            "notification delivered",
            extra={"signal_id": signal.signal_id, "channel": channel, "kind": kind, "photo": sent.with_photo},
        )
        return 0.0

    async def _failed(
        self,
        task: signal_service_pb2.NotificationTask,
        channel: str,
        kind: str,
        claim_id: str,
        exc: DeliveryError,
    ) -> float:
        if exc.retry_after is not None and channel == "telegram" and self._limiter is not None:
            await self._limiter.honour_retry_after(task.target, exc.retry_after, whole_bot=False)
        due_for = time.time() - task.created_at.ToSeconds()
        if exc.permanent or due_for >= self.settings.notify_delivery_deadline_seconds:
            outcome = "failed" if exc.permanent else "dead"
            DELIVERIES.labels(channel, kind, outcome).inc()
            log.warning(
                "notification given up",
                extra={
                    "delivery_id": task.delivery_id,
                    "channel": channel,
                    "kind": kind,
                    "reason": exc.reason,
                },
            )
            await self._report(
                task,
                claim_id,
                signal_service_pb2.DELIVERY_REPORT_OUTCOME_FAILED
                if exc.permanent
                else signal_service_pb2.DELIVERY_REPORT_OUTCOME_DEAD,
                error=exc.reason,
            )
            return 0.0
        DELIVERIES.labels(channel, kind, "retried").inc()
        delay = exc.retry_after
        if delay is None:
            delay = backoff_delay(
                max(1, task.attempts),
                base_seconds=self.settings.notify_min_backoff_ms / 1000,
                max_seconds=self.settings.notify_max_backoff_ms / 1000,
            )
        await self._hold_for_retry(task, delay)
        await self._report(task, claim_id, signal_service_pb2.DELIVERY_REPORT_OUTCOME_RETRY, error=exc.reason)
        return delay

    def _sent_key(self, task: signal_service_pb2.NotificationTask) -> str:
        return f"{self.settings.redis_namespace}:notify:sent:{task.delivery_id}"

    async def _remember_sent(self, task: signal_service_pb2.NotificationTask, sent: Sent) -> None:
        """Keeps what the provider answered until the report is surely in: a report that fails (the
        signal service or its database overloaded) leaves the delivery claimed, and the claim after its
        lease would otherwise send it again."""
        assert self._redis is not None
        value = json.dumps({"id": sent.provider_message_id, "photo": sent.with_photo})
        with contextlib.suppress(redis_async.RedisError):
            await self._redis.set(self._sent_key(task), value, ex=_SENT_MEMORY_SECONDS)

    async def _sent_before(self, task: signal_service_pb2.NotificationTask) -> Sent | None:
        """The provider's answer to an earlier attempt of this delivery whose report was lost."""
        assert self._redis is not None
        stored = await self._redis.get(self._sent_key(task))
        if stored is None:
            return None
        value = json.loads(stored)
        log.info("notification sent before; reporting it", extra={"delivery_id": task.delivery_id})
        return Sent(str(value["id"]), with_photo=bool(value["photo"]))

    def _retry_key(self, task: signal_service_pb2.NotificationTask) -> str:
        return f"{self.settings.redis_namespace}:notify:retry:{task.delivery_id}"

    async def _hold_for_retry(self, task: signal_service_pb2.NotificationTask, delay: float) -> None:
        """The ledger puts a retried delivery back to pending at once, and any job of its signal (another
        delivery's recheck, a nudge) may claim it: the delay is kept in Redis, where every worker looks
        before sending (its time to live, so no worker's clock is involved)."""
        assert self._redis is not None
        await self._redis.set(self._retry_key(task), 1, px=max(1, int(delay * 1000)))

    async def _wait_for_retry(self, task: signal_service_pb2.NotificationTask) -> None:
        """Raises Throttled while a retried delivery's delay (a 429's retry_after, a backoff) runs."""
        assert self._redis is not None
        remaining_ms = int(await self._redis.pttl(self._retry_key(task)))
        if remaining_ms > 0:
            raise Throttled(remaining_ms / 1000)

    async def _send_telegram(
        self,
        task: signal_service_pb2.NotificationTask,
        kind: str,
        notice: render.Notice,
    ) -> Sent:
        if self._telegram is None:
            raise DeliveryError("ALERTS_TELEGRAM_BOT_TOKEN is not configured", permanent=False)
        return await self._telegram.send(task, kind, notice)

    async def _send_discord(
        self,
        task: signal_service_pb2.NotificationTask,
        kind: str,
        notice: render.Notice,
        url: str,
    ) -> Sent:
        assert self._discord is not None
        embed = render.discord_embed(notice)
        if kind == "outcome":
            if task.alert_with_photo:
                embed["image"] = {"url": "attachment://chart.png"}
            await self._discord.edit(url, task.alert_message_id, embed)
            return Sent(task.alert_message_id)
        photo = await self._photo(task.screenshot_object_key) if task.with_photo else None
        if kind == "photo" and photo is None:
            raise DeliveryError("the chart is no longer stored", permanent=True)
        return Sent(await self._discord.send(url, embed, photo), with_photo=photo is not None)

    async def _send_webhook(
        self,
        task: signal_service_pb2.NotificationTask,
        kind: str,
        notice: render.Notice,
        secret: str,
    ) -> Sent:
        assert self._webhook is not None
        screenshot_url = await self._screenshot_url(task.screenshot_object_key) if kind == "photo" else ""
        # The same id on every attempt of one delivery: receivers drop the repeats.
        message_id = f"msg_{notice.signal_id}_{kind}_{task.delivery_id}"
        event = render.webhook_event(notice, _WEBHOOK_EVENTS[kind], screenshot_url)
        await self._webhook.send(task.target, secret, message_id, event)
        return Sent(message_id)

    def _secrets(self, ciphertext: bytes) -> dict[str, str]:
        if not ciphertext:
            return {}
        try:
            return dict(json.loads(self._cipher.decrypt(ciphertext)))
        except (CookieCipherError, ValueError):
            log.error("stored notification secrets are unreadable with the configured keys")
            return {}

    async def _photo(self, key: str) -> bytes | None:
        """The chart's bytes; None when it is gone (retention deleted it)."""
        assert self._storage is not None
        if not key:
            return None
        data = bytearray()
        try:
            call = self._storage.GetObject(
                storage_service_pb2.GetObjectRequest(key=key), timeout=_RPC_TIMEOUT_SECONDS
            )
            async for part in call:
                if part.WhichOneof("part") == "chunk":
                    data += part.chunk
        except grpc.aio.AioRpcError as exc:
            error = from_rpc_error(exc)
            if isinstance(error, NotFoundError):
                return None
            raise _storage_failed(error) from None
        return bytes(data)

    async def _screenshot_url(self, key: str) -> str:
        assert self._storage is not None
        if not key:
            return ""
        try:
            answer = await self._storage.GetObjectUrl(
                storage_service_pb2.GetObjectUrlRequest(key=key, expires_in_seconds=7 * 24 * 3600),
                timeout=_RPC_TIMEOUT_SECONDS,
            )
        except grpc.aio.AioRpcError as exc:
            raise _storage_failed(from_rpc_error(exc)) from None
        return answer.url

    async def _claim(
        self, signal_id: str, claim_id: str
    ) -> signal_service_pb2.ClaimNotificationResponse | None:
        assert self._signals is not None
        request = signal_service_pb2.ClaimNotificationRequest(
            signal_id=signal_id,
            worker_id=self.worker_id,
            claim_id=claim_id,
            screenshot_wait_seconds=self.settings.notify_screenshot_wait_seconds,
            lease_seconds=self.settings.notify_lease_seconds,
        )
        try:
            return await self._signals.ClaimNotification(request, timeout=_RPC_TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError as exc:
            error = from_rpc_error(exc)
            # NOT_FOUND: the signal is gone. Any refusal would be repeated by every retry of the job.
            if classify_failure(error) is Failure.REFUSED:
                log.warning(
                    "notification claim refused; dropped",
                    extra={"signal_id": signal_id, "code": error.code.name, "reason": error.reason},
                )
                return None
            raise SignalServiceUnavailableError(f"ClaimNotification failed: {error.code.name}") from exc

    async def _report(
        self,
        task: signal_service_pb2.NotificationTask,
        claim_id: str,
        outcome: signal_service_pb2.DeliveryReportOutcome.ValueType,
        **fields: Any,
    ) -> None:
        assert self._signals is not None
        request = signal_service_pb2.ReportNotificationRequest(
            delivery_id=task.delivery_id, claim_id=claim_id, outcome=outcome, **fields
        )
        try:
            answer = await self._signals.ReportNotification(request, timeout=_RPC_TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError as exc:
            # The lease runs out and the delivery is claimed again: for a sent one, a repeat at worst.
            error = from_rpc_error(exc)
            raise SignalServiceUnavailableError(f"ReportNotification failed: {error.code.name}") from exc
        if not answer.recorded:
            log.warning(
                "notification report not recorded (lease lost)", extra={"delivery_id": task.delivery_id}
            )

    async def _nudge(self, signal_id: str) -> None:
        """Queues the older signal a chat waits for, once per few seconds: its own job may have been lost."""
        assert self._redis is not None
        key = f"{self.settings.redis_namespace}:notify:nudged:{signal_id}"
        with contextlib.suppress(redis_async.RedisError):
            if await self._redis.set(key, 1, nx=True, ex=_NUDGE_SECONDS) and self.requeue is not None:
                await self.requeue(signal_id, LookAgain())


def _storage_failed(error: AlertsError) -> DeliveryError:
    """A refused storage call fails the delivery for good; storage away (or misconfigured) is retried."""
    return DeliveryError(f"storage: {error.code.name}", permanent=classify_failure(error) is Failure.REFUSED)


def _stored_secret(secrets: dict[str, str], name: str, what: str) -> str:
    """The user's secret a channel sends with; without it no retry can succeed."""
    value = secrets.get(name)
    if not value:
        raise DeliveryError(f"no {what} is stored", permanent=True)
    return value
