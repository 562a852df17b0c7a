"""Telegram's sending limits, shared by every notify worker through Redis.

Telegram allows about one message a second to a chat, 20 a minute to a group chat and 30 a second per
bot; beyond them it answers 429 with ``retry_after``. Each limit is a GCRA cell in Redis (the theoretical
arrival time of the next allowed send), checked and advanced for all of a send's limits in one script, so
workers on any machine share them exactly and a send either counts against every limit or none. Redis's
clock decides, so workers' clocks do not matter. A 429 pushes the chat's cell (or the bot's) out by
``retry_after``.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as redis_async

# KEYS: the cells; ARGV: each cell's interval in ms. Returns 0 (sent, every cell advanced) or the ms to wait.
_TAKE = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local wait = 0
local arrivals = {}
for index, key in ipairs(KEYS) do
  local arrival = tonumber(redis.call('GET', key) or now)
  if arrival < now then arrival = now end
  arrivals[index] = arrival
  if arrival - now > wait then wait = arrival - now end
end
if wait > 0 then return wait end
for index, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[index])
  redis.call('SET', key, arrivals[index] + interval, 'PX', interval + 60000)
end
return 0
"""

# KEYS: the cells; ARGV: each cell's interval in ms. Takes the earliest time every cell allows (now or
# later) and advances every cell past it, so concurrent senders queue in Redis instead of retrying.
# Returns the ms from now until that time.
_RESERVE = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local at = now
local arrivals = {}
for index, key in ipairs(KEYS) do
  local arrival = tonumber(redis.call('GET', key) or now)
  if arrival < now then arrival = now end
  arrivals[index] = arrival
  if arrival > at then at = arrival end
end
for index, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[index])
  local next_arrival = at + interval
  if arrivals[index] + interval > next_arrival then next_arrival = arrivals[index] + interval end
  redis.call('SET', key, next_arrival, 'PX', next_arrival - now + 60000)
end
return at - now
"""

# KEYS[1]: a cell; ARGV[1]: ms from now before it allows anything again.
_PUSH_BACK = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local until_ms = now + tonumber(ARGV[1])
local arrival = tonumber(redis.call('GET', KEYS[1]) or 0)
if arrival < until_ms then redis.call('SET', KEYS[1], until_ms, 'PX', tonumber(ARGV[1]) + 60000) end
return until_ms
"""


@dataclass(frozen=True)
class TelegramLimits:
    """Spacing between sends, a little under Telegram's figures: a send leaves its worker on time, but
    arrives with the network's and the event loop's jitter, and a bunch of early arrivals draws a 429. With
    exactly 1 s per chat and 34 ms per bot, a burst on a loaded machine drew about 3 % 429s."""

    per_chat_interval_ms: int = 1_100
    per_group_interval_ms: int = 3_100
    per_bot_interval_ms: int = 40


def is_group_chat(chat_id: str) -> bool:
    """Groups, supergroups and channels have negative ids (and channels may be named @handles)."""
    return chat_id.startswith("-") or chat_id.startswith("@")


class TelegramRateLimiter:
    def __init__(
        self, redis: redis_async.Redis, namespace: str, limits: TelegramLimits | None = None
    ) -> None:
        self._redis = redis
        self._prefix = f"{namespace}:notify:telegram"
        self._limits = limits or TelegramLimits()
        self._take = redis.register_script(_TAKE)
        self._reserve = redis.register_script(_RESERVE)
        self._push_back = redis.register_script(_PUSH_BACK)

    def _cells(self, chat_id: str) -> tuple[list[str], list[int]]:
        keys = [f"{self._prefix}:bot", f"{self._prefix}:chat:{chat_id}"]
        intervals = [self._limits.per_bot_interval_ms, self._limits.per_chat_interval_ms]
        if is_group_chat(chat_id):
            keys.append(f"{self._prefix}:group:{chat_id}")
            intervals.append(self._limits.per_group_interval_ms)
        return keys, intervals

    async def try_send(self, chat_id: str) -> float:
        """0.0 when a message to `chat_id` may go now (and is counted), else the seconds to wait."""
        keys, intervals = self._cells(chat_id)
        wait_ms = int(await self._take(keys=keys, args=intervals))
        return wait_ms / 1000.0

    async def reserve(self, chat_id: str) -> float:
        """Books the next send to `chat_id` that every limit allows; returns the seconds until it.

        The booking counts at once, so a sender that books must send at that time (or leave the slot
        unused): many workers with messages for the bot then line up at its pace instead of all retrying.
        """
        keys, intervals = self._cells(chat_id)
        wait_ms = int(await self._reserve(keys=keys, args=intervals))
        return wait_ms / 1000.0

    async def honour_retry_after(self, chat_id: str, retry_after_seconds: float, *, whole_bot: bool) -> None:
        """Telegram said 429: nothing more to this chat (or from the bot) until `retry_after` has passed."""
        key = f"{self._prefix}:bot" if whole_bot else f"{self._prefix}:chat:{chat_id}"
        await self._push_back(keys=[key], args=[int(retry_after_seconds * 1000)])
