"""The bot's incoming messages by long polling (dev): a trader's `/start <code>` connects their chat.

In production Telegram delivers the bot's updates to the edge's webhook (edge/telegram.py) and this
does not run; Telegram serves an update one way or the other, never both. Under `alerts dev`/`demo`
(`ALERTS_TELEGRAM_POLL_UPDATES=true`) the notify workers poll getUpdates instead. Telegram allows one
poller per bot (a second gets 409 Conflict), so the workers elect one through a Redis lease; the offset
(the next update id) lives in Redis too, so a new poller carries on where the last one stopped.

Each `/start <code>` goes to UserService.LinkTelegramChat, and the chat is told whether it is connected.
"""

from __future__ import annotations

import logging

import grpc
import redis.asyncio as redis_async

from apidevs.alerts.v1 import user_service_pb2, user_service_pb2_grpc
from mesh.errors import InvalidArgumentError, NotFoundError, from_rpc_error
from mesh.loops import BackgroundLoop
from mesh.telegram_updates import LINKED_TEXT, NOT_LINKED_TEXT, start_command
from notify_service.channels.errors import DeliveryError
from notify_service.channels.telegram import TelegramBot
from notify_service.ratelimit import TelegramRateLimiter

log = logging.getLogger(__name__)

# One long poll; the lease outlives it comfortably, and is renewed before each.
POLL_TIMEOUT_SECONDS = 10
_LEASE_MS = 60_000
# A worker that is not the poller looks again this often (the poller may have died).
_STANDBY_SECONDS = 5.0
_RPC_TIMEOUT_SECONDS = 10.0

# Takes the lease when free or ours, renewing it; 1 when this worker holds it.
_HOLD = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[2]))
return 1
"""


class TelegramUpdates:
    def __init__(
        self,
        *,
        bot: TelegramBot,
        users: user_service_pb2_grpc.UserServiceAsyncStub,
        redis: redis_async.Redis,
        limiter: TelegramRateLimiter,
        namespace: str,
        worker_id: str,
    ) -> None:
        self._bot = bot
        self._users = users
        self._redis = redis
        self._limiter = limiter
        self._worker_id = worker_id
        self._lease_key = f"{namespace}:notify:telegram:poller"
        self._offset_key = f"{namespace}:notify:telegram:offset"
        self._hold = redis.register_script(_HOLD)
        self.loop = BackgroundLoop(
            "telegram-updates",
            self.poll_once,
            interval_seconds=_STANDBY_SECONDS,
            expected_errors=(DeliveryError, redis_async.RedisError, grpc.aio.AioRpcError),
        )

    async def poll_once(self) -> bool:
        """One long poll when this worker is the poller; True to poll again at once."""
        if not await self._hold(keys=[self._lease_key], args=[self._worker_id, _LEASE_MS]):
            return False
        offset = int(await self._redis.get(self._offset_key) or 0)
        for update in await self._bot.get_updates(offset, POLL_TIMEOUT_SECONDS):
            update_id = update.get("update_id")
            if not isinstance(update_id, int) or isinstance(update_id, bool):
                continue
            await self.handle(update)
            # Past this update even when handling it failed for good: Telegram would resend it for ever.
            await self._redis.set(self._offset_key, update_id + 1)
        return True

    async def handle(self, update: dict[str, object]) -> None:
        command = start_command(update)
        if command is None:
            return
        request = user_service_pb2.LinkTelegramChatRequest(code=command.code, chat_id=command.chat_id)
        try:
            await self._users.LinkTelegramChat(request, timeout=_RPC_TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError as exc:
            error = from_rpc_error(exc)
            if not isinstance(error, NotFoundError | InvalidArgumentError):
                # The signal service is away: the loop backs off and the update is read again.
                raise
            log.info("telegram link refused", extra={"reason": error.reason})
            await self._reply(command.chat_id, NOT_LINKED_TEXT)
            return
        log.info("telegram chat linked")
        await self._reply(command.chat_id, LINKED_TEXT)

    async def _reply(self, chat_id: str, text: str) -> None:
        """Best effort within the bot's limits: the link itself is what matters."""
        if await self._limiter.admit(chat_id) > 0:
            log.warning("telegram link reply skipped: the chat is rate limited")
            return
        try:
            await self._bot.send_message(chat_id, text)
        except DeliveryError as exc:
            log.warning("telegram link reply failed", extra={"reason": exc.reason})
