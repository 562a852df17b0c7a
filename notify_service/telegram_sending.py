"""One delivery through the platform's Telegram bot, within Telegram's limits shared by every worker.

Telegram's limits (notify_service/ratelimit.py) are met in two steps. A delivery books the next slot
every limit allows, once: the booking is kept in Redis under the delivery's id, so whichever job claims
the delivery next uses it, however late, rather than booking again (a fresh booking would leave the old
slot empty and put the delivery at the back of the line). A slot within `_SLOT_HORIZON_SECONDS` is
waited for on the spot; for a later one the job hands the delivery back (:class:`Throttled`) and comes
back at its time. Workers therefore line up at the bot's pace instead of polling. Then, with the call
ready to go, the send is admitted against what was really sent in the last second (minute, for a group
chat) and waits if it would not fit, so late or retried sends never add up to more than Telegram allows.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import redis.asyncio as redis_async

from apidevs.alerts.v1 import signal_service_pb2
from notify_service import render
from notify_service.channels.errors import DeliveryError
from notify_service.channels.telegram import TelegramBot
from notify_service.ratelimit import TelegramRateLimiter

# A booked Telegram slot this close is waited for in the job; for a later one the job comes back this
# long before it (a delayed job's start is late on a loaded machine), to wait out the rest here. Longer
# than the line the worker threads themselves hold (threads x the bot's pace), so under a burst jobs
# wait in the queue rather than booking, handing back and claiming again.
_SLOT_HORIZON_SECONDS = 6.0
# Sends refused by admission come back spread over this much.
_ADMIT_JITTER_SECONDS = 0.02


class Throttled(Exception):
    """The delivery may not go yet (its Telegram slot is far ahead, its retry delay runs): come back."""

    def __init__(self, wait_seconds: float) -> None:
        super().__init__(f"not before {wait_seconds:.2f}s")
        self.wait_seconds = wait_seconds


@dataclass(frozen=True, slots=True)
class Sent:
    provider_message_id: str
    with_photo: bool = False


class TelegramSender:
    def __init__(
        self,
        bot: TelegramBot,
        limiter: TelegramRateLimiter,
        redis: redis_async.Redis,
        namespace: str,
        *,
        photo: Callable[[str], Awaitable[bytes | None]],
    ) -> None:
        self._bot = bot
        self._limiter = limiter
        self._redis = redis
        self._namespace = namespace
        # The chart's bytes by object key; None when it is gone.
        self._photo = photo

    async def send(self, task: signal_service_pb2.NotificationTask, kind: str, notice: render.Notice) -> Sent:
        await self._wait_for_slot(task)
        # Everything the call needs is ready before it is admitted: admission counts the send as gone,
        # and any time between the two (a chart fetched from storage) would bunch sends at Telegram.
        call = await self._call(task, kind, notice)
        await self._admit(task)
        return await call()

    async def _call(
        self, task: signal_service_pb2.NotificationTask, kind: str, notice: render.Notice
    ) -> Callable[[], Awaitable[Sent]]:
        """The Bot API call that delivers `task`, ready to make."""
        bot, chat = self._bot, task.target
        if kind == "outcome":
            limit = render.TELEGRAM_CAPTION_LIMIT if task.alert_with_photo else render.TELEGRAM_TEXT_LIMIT
            text = render.telegram_text(notice, limit=limit)

            async def edit() -> Sent:
                await bot.edit(chat, int(task.alert_message_id), text, is_caption=task.alert_with_photo)
                return Sent(task.alert_message_id)

            return edit
        caption = render.telegram_text(notice, limit=render.TELEGRAM_CAPTION_LIMIT)
        if kind == "photo":
            photo = await self._photo(task.screenshot_object_key)
            if photo is None:
                raise DeliveryError("the chart is no longer stored", permanent=True)
            reply_to: int | None = int(task.alert_message_id)
        else:
            photo = await self._photo(task.screenshot_object_key) if task.with_photo else None
            reply_to = None
        if photo is not None:
            chart = photo

            async def send_photo() -> Sent:
                message_id = await bot.send_photo(chat, chart, caption, reply_to=reply_to)
                return Sent(str(message_id), with_photo=True)

            return send_photo
        text = render.telegram_text(notice, limit=render.TELEGRAM_TEXT_LIMIT)

        async def send_message() -> Sent:
            return Sent(str(await bot.send_message(chat, text)))

        return send_message

    async def _wait_for_slot(self, task: signal_service_pb2.NotificationTask) -> None:
        """Waits for the delivery's booked slot (booking one if it has none); raises Throttled when it
        is too far ahead."""
        key = f"{self._namespace}:notify:slot:{task.delivery_id}"
        booked = await self._redis.get(key)
        if booked is None:
            now = time.time()
            at = now + await self._limiter.reserve(task.target)
            await self._redis.set(key, repr(at), ex=int(at - now) + 3_600)
        else:
            at = float(booked)
        wait = at - time.time()
        if wait > _SLOT_HORIZON_SECONDS:
            raise Throttled(wait - _SLOT_HORIZON_SECONDS)
        await self._redis.delete(key)
        if wait > 0:
            await asyncio.sleep(wait)

    async def _admit(self, task: signal_service_pb2.NotificationTask) -> None:
        """Waits until the send fits Telegram's limits as actually sent, and counts it as sent."""
        while (wait := await self._limiter.admit(task.target)) > 0:
            if wait > _SLOT_HORIZON_SECONDS:
                raise Throttled(wait)
            # Senders refused together would otherwise all come back at the same instant.
            await asyncio.sleep(wait + random.uniform(0.0, _ADMIT_JITTER_SECONDS))
