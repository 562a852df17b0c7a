"""Telegram's sending limits, shared by every notify worker through Redis.

Telegram allows about one message a second to a chat, 20 a minute to a group chat and 30 a second per
bot; beyond them it answers 429 with ``retry_after``. Two scripts share those limits between workers on
any machine, both on Redis's clock (workers' clocks do not matter):

- :meth:`TelegramRateLimiter.reserve` books a send's place in line: each limit is a GCRA cell (the
  theoretical arrival time of its next send) paced a little under Telegram's figures, and a booking takes
  the earliest time every cell allows and advances them all, so concurrent senders line up instead of
  retrying.
- :meth:`TelegramRateLimiter.admit`, called at the moment of sending, counts what was actually sent:
  the last send per chat, and sliding windows of send times per bot (1 s) and per group chat (60 s),
  the way Telegram counts. A booking only says when to try: a worker that wakes late, or a send
  retried after its booking's time, would otherwise crowd the sends after it (a chat's next booking was
  made from its previous booking, not from when that one really went). ``admit`` refuses with the wait
  until the send fits every window, and records it (and moves the chat's cell past it) when it does.

A 429 pushes the chat (or the whole bot) back by ``retry_after`` in both.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as redis_async

_NOW = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
"""

# KEYS: the cells; ARGV: each cell's interval in ms. Takes the earliest time every cell allows (now or
# later) and advances every cell past it. Returns the ms from now until that time.
_RESERVE = (
    _NOW
    + """
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
)

# KEYS: 1 bot window (sorted set of send times), 2 bot hold, 3 chat's last send, 4 chat hold, 5 chat's
# GCRA cell, 6 send counter, [7 group window]. ARGV: 1 sends per bot window, 2 bot window ms, 3 chat
# interval ms, 4 sends per group window, 5 group window ms. Returns 0 (admitted and recorded) or the ms
# until the send would fit every limit.
_ADMIT = (
    _NOW
    + """
local bot_limit, bot_window = tonumber(ARGV[1]), tonumber(ARGV[2])
local chat_interval = tonumber(ARGV[3])
local wait = 0
local function later(ms) if ms > wait then wait = ms end end
for _, hold in ipairs({KEYS[2], KEYS[4]}) do
  later(tonumber(redis.call('GET', hold) or 0) - now)
end
local last = tonumber(redis.call('GET', KEYS[3]) or -chat_interval)
later(last + chat_interval - now)
local function window_wait(key, limit, window)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  if redis.call('ZCARD', key) < limit then return 0 end
  local oldest = redis.call('ZRANGE', key, -limit, -limit, 'WITHSCORES')
  return tonumber(oldest[2]) + window - now
end
later(window_wait(KEYS[1], bot_limit, bot_window))
local group_limit, group_window = tonumber(ARGV[4]), tonumber(ARGV[5])
if KEYS[7] then later(window_wait(KEYS[7], group_limit, group_window)) end
if wait > 0 then return wait end
local member = tostring(redis.call('INCR', KEYS[6]))
redis.call('ZADD', KEYS[1], now, member)
redis.call('PEXPIRE', KEYS[1], bot_window + 60000)
redis.call('SET', KEYS[3], now, 'PX', chat_interval + 60000)
local cell = tonumber(redis.call('GET', KEYS[5]) or 0)
if cell < now + chat_interval then
  redis.call('SET', KEYS[5], now + chat_interval, 'PX', chat_interval + 60000)
end
if KEYS[7] then
  redis.call('ZADD', KEYS[7], now, member)
  redis.call('PEXPIRE', KEYS[7], group_window + 60000)
end
return 0
"""
)

# KEYS: a GCRA cell and its hold; ARGV[1]: ms from now before either allows anything again.
_PUSH_BACK = (
    _NOW
    + """
local until_ms = now + tonumber(ARGV[1])
for _, key in ipairs(KEYS) do
  local at = tonumber(redis.call('GET', key) or 0)
  if at < until_ms then redis.call('SET', key, until_ms, 'PX', tonumber(ARGV[1]) + 60000) end
end
return until_ms
"""
)


@dataclass(frozen=True)
class TelegramLimits:
    """Under Telegram's figures (a message a second per chat, 20 a minute per group, 30 a second per
    bot) by what a send may be delayed between admission and its arrival at Telegram (the worker's event
    loop, the network): sends admitted in step arrive up to a few hundred milliseconds apart from each
    other on a loaded machine, which bunches them. Bookings pace at about the rate admission allows."""

    per_chat_interval_ms: int = 1_250
    per_group_interval_ms: int = 3_100
    per_bot_interval_ms: int = 36
    bot_sends_per_window: int = 28
    bot_window_ms: int = 1_000
    group_sends_per_window: int = 19
    group_window_ms: int = 60_000


def is_group_chat(chat_id: str) -> bool:
    """Groups, supergroups and channels have negative ids (and channels may be named @handles)."""
    return chat_id.startswith("-") or chat_id.startswith("@")


class TelegramRateLimiter:
    def __init__(
        self, redis: redis_async.Redis, namespace: str, limits: TelegramLimits | None = None
    ) -> None:
        self._prefix = f"{namespace}:notify:telegram"
        self._limits = limits or TelegramLimits()
        self._reserve = redis.register_script(_RESERVE)
        self._admit = redis.register_script(_ADMIT)
        self._push_back = redis.register_script(_PUSH_BACK)

    def _cells(self, chat_id: str) -> tuple[list[str], list[int]]:
        keys = [f"{self._prefix}:bot", f"{self._prefix}:chat:{chat_id}"]
        intervals = [self._limits.per_bot_interval_ms, self._limits.per_chat_interval_ms]
        if is_group_chat(chat_id):
            keys.append(f"{self._prefix}:group:{chat_id}")
            intervals.append(self._limits.per_group_interval_ms)
        return keys, intervals

    async def reserve(self, chat_id: str) -> float:
        """Books the next send to `chat_id` that every limit allows; returns the seconds until it.

        The booking counts at once, so a sender that books must try at that time (or leave the slot
        unused): many workers with messages for the bot then line up at its pace instead of all retrying.
        """
        keys, intervals = self._cells(chat_id)
        wait_ms = int(await self._reserve(keys=keys, args=intervals))
        return wait_ms / 1000.0

    async def admit(self, chat_id: str) -> float:
        """0.0 when a message to `chat_id` may leave now (and it is counted as sent), else the seconds
        until it would fit every limit (nothing is counted)."""
        prefix, limits = self._prefix, self._limits
        keys = [
            f"{prefix}:sent:bot",
            f"{prefix}:hold:bot",
            f"{prefix}:sent:chat:{chat_id}",
            f"{prefix}:hold:chat:{chat_id}",
            f"{prefix}:chat:{chat_id}",
            f"{prefix}:sent:counter",
        ]
        if is_group_chat(chat_id):
            keys.append(f"{prefix}:sent:group:{chat_id}")
        args = [
            limits.bot_sends_per_window,
            limits.bot_window_ms,
            limits.per_chat_interval_ms,
            limits.group_sends_per_window,
            limits.group_window_ms,
        ]
        wait_ms = int(await self._admit(keys=keys, args=args))
        return wait_ms / 1000.0

    async def honour_retry_after(self, chat_id: str, retry_after_seconds: float, *, whole_bot: bool) -> None:
        """Telegram said 429: nothing more to this chat (or from the bot) until `retry_after` has passed."""
        scope = "bot" if whole_bot else f"chat:{chat_id}"
        keys = [f"{self._prefix}:{scope}", f"{self._prefix}:hold:{scope}"]
        await self._push_back(keys=keys, args=[int(retry_after_seconds * 1000)])
