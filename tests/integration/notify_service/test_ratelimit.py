"""Telegram's limits shared through the real Redis: two limiters (two workers) see the same cells."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis_async

from notify_service.ratelimit import TelegramLimits, TelegramRateLimiter

# Tests of one limit make the others too short to interfere.
ONLY_CHAT = TelegramLimits(per_chat_interval_ms=1_100, per_bot_interval_ms=1, bot_sends_per_window=1_000)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[redis_async.Redis]:
    client = redis_async.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def namespace(redis_namespace: str) -> str:
    return f"{redis_namespace}:{uuid.uuid4().hex[:8]}"


async def test_one_message_per_second_per_chat_across_workers(
    redis: redis_async.Redis, namespace: str
) -> None:
    first_worker = TelegramRateLimiter(redis, namespace, ONLY_CHAT)
    second_worker = TelegramRateLimiter(redis, namespace, ONLY_CHAT)

    assert await first_worker.admit("42") == 0.0
    wait = await second_worker.admit("42")
    other_chat = await second_worker.admit("43")

    assert 1.0 <= wait <= 1.1
    assert other_chat == 0.0


async def test_the_bot_window_counts_sends_to_every_chat(redis: redis_async.Redis, namespace: str) -> None:
    limiter = TelegramRateLimiter(redis, namespace, TelegramLimits(bot_sends_per_window=3))

    assert [await limiter.admit(str(chat)) for chat in range(3)] == [0.0, 0.0, 0.0]
    # The fourth send in a second waits until the first leaves the window.
    assert 0.0 < await limiter.admit("3") <= 1.0


async def test_a_refused_send_counts_against_no_limit(redis: redis_async.Redis, namespace: str) -> None:
    limits = TelegramLimits(bot_sends_per_window=2)
    limiter = TelegramRateLimiter(redis, namespace, limits)
    await limiter.admit("-100")

    assert await limiter.admit("-100") > 0.5
    # Had the refused send been counted, the bot's window (two a second) would now be full.
    assert await limiter.admit("5") == 0.0


async def test_group_chats_get_their_window(redis: redis_async.Redis, namespace: str) -> None:
    limits = TelegramLimits(per_chat_interval_ms=1, group_sends_per_window=2, group_window_ms=3_000)
    limiter = TelegramRateLimiter(redis, namespace, limits)
    await limiter.admit("-1001")
    await asyncio.sleep(0.005)
    await limiter.admit("-1001")

    assert 2.9 <= await limiter.admit("-1001") <= 3.0
    # A private chat has no group window.
    await limiter.admit("1001")
    await asyncio.sleep(0.005)
    assert await limiter.admit("1001") == 0.0


async def test_retry_after_holds_the_chat_back(redis: redis_async.Redis, namespace: str) -> None:
    limiter = TelegramRateLimiter(redis, namespace, ONLY_CHAT)

    await limiter.honour_retry_after("9", 5, whole_bot=False)

    assert 4.9 <= await limiter.admit("9") <= 5.0
    assert 4.9 <= await limiter.reserve("9") <= 5.0
    assert await limiter.admit("10") == 0.0


async def test_retry_after_for_the_bot_holds_every_chat(redis: redis_async.Redis, namespace: str) -> None:
    limiter = TelegramRateLimiter(redis, namespace, ONLY_CHAT)

    await limiter.honour_retry_after("9", 3, whole_bot=True)

    assert 2.9 <= await limiter.admit("10") <= 3.0


async def test_a_late_send_moves_the_chat_next_booking(redis: redis_async.Redis, namespace: str) -> None:
    limiter = TelegramRateLimiter(redis, namespace, ONLY_CHAT)
    assert await limiter.reserve("7") == 0.0
    # The booked send goes out late; the chat's next booking counts from when it really went.
    await asyncio.sleep(0.3)
    assert await limiter.admit("7") == 0.0

    assert 1.05 <= await limiter.reserve("7") <= 1.1


async def test_reservations_line_senders_up_at_the_bot_pace(redis: redis_async.Redis, namespace: str) -> None:
    limits = TelegramLimits(per_chat_interval_ms=1_100, per_bot_interval_ms=100)
    limiter = TelegramRateLimiter(redis, namespace, limits)
    waits = [await limiter.reserve(str(chat)) for chat in range(1, 6)]
    # One slot per 100 ms for the bot, whatever the chats: the fifth sender goes about 400 ms from now.
    assert waits[0] == 0.0
    assert all(later > earlier for earlier, later in itertools.pairwise(waits))
    assert 0.35 <= waits[-1] <= 0.4
    # The same chat twice: its own one-per-second cell decides.
    assert 1.0 <= await limiter.reserve("1") <= 1.1
