"""Work that touches several users locks them in user-id order, the order group-commit ingest locks them in,
so it cannot deadlock with ingest.

Each test holds the lower id's user row as an ingest batch would (on a connection of its own), lets the
capture retry or the stale-capture sweep queue behind it, then takes the higher id's row, as the batch
would next. Had the service locked the higher id first (its older capture), PostgreSQL would find a
deadlock and abort one of the two.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import asyncpg
import redis.asyncio as aioredis
import sqlalchemy as sa

from apidevs.alerts.v1 import resources_pb2, signal_service_pb2
from signal_service.captures.queued import CaptureMessages
from signal_service.captures.service import CaptureCoordinator
from signal_service.database import Database
from signal_service.events.service import listener_dsn
from signal_service.models import Screenshot, ScreenshotStatus, Signal
from signal_service.settings import SignalSettings
from tests.conftest import settings_from
from tests.support import create_user, ingest_request

# A guard against a hung test, not a measurement.
_GUARD_SECONDS = 30.0


def _coordinator(
    database: Database, service_env: dict[str, str], redis: aioredis.Redis
) -> CaptureCoordinator:
    # A namespace with no queues: no capture counts as owned by a message, so every stale one is swept.
    return CaptureCoordinator(
        database=database,
        settings=settings_from(service_env, SignalSettings),
        messages=CaptureMessages(redis, f"lock-order-{uuid.uuid4().hex}"),
    )


class IngestLikeTransaction:
    """A transaction on its own connection that locks user rows one at a time, as ingest does."""

    def __init__(self, connection: asyncpg.Connection, observer: asyncpg.Connection) -> None:
        self._connection = connection
        self._observer = observer

    async def lock_user(self, user_id: str) -> None:
        await self._connection.execute("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", uuid.UUID(user_id))

    async def wait_until_another_waits_for_it(self) -> None:
        pid = self._connection.get_server_pid()
        # Polled: PostgreSQL tells nobody when a backend starts waiting for a lock.
        while not await self._observer.fetchval(  # noqa: ASYNC110
            "SELECT count(*) > 0 FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))", pid
        ):
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def ingest_like(database_url: str) -> AsyncIterator[IngestLikeTransaction]:
    dsn = listener_dsn(database_url)
    connection, observer = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    try:
        async with connection.transaction():
            yield IngestLikeTransaction(connection, observer)
    finally:
        await connection.close()
        await observer.close()


async def _captures_of_two_users(signals, users) -> tuple[tuple[str, str], tuple[str, str]]:
    """(user id, signal id) of two new users in user-id order; the higher id's capture is the older."""
    created = [await create_user(users, plan=resources_pb2.PLAN_FREE) for _ in range(2)]
    lower, higher = sorted(created, key=lambda user: uuid.UUID(user.user.user_id).bytes)
    older = (await signals.IngestWebhook(ingest_request(higher.webhook_token))).signal_id
    newer = (await signals.IngestWebhook(ingest_request(lower.webhook_token))).signal_id
    return (lower.user.user_id, newer), (higher.user.user_id, older)


async def _set_capture(
    database: Database, signal_id: str, status: ScreenshotStatus, **columns: object
) -> None:
    parsed = uuid.UUID(signal_id)
    async with database.transaction() as session:
        await session.execute(
            sa.update(Screenshot).where(Screenshot.signal_id == parsed).values(status=status, **columns)
        )
        await session.execute(sa.update(Signal).where(Signal.id == parsed).values(screenshot_status=status))


async def _wait_sent(database: Database, signal_ids: list[str]) -> None:
    """Until the running server's outbox relay has sent the captures' jobs (a capture with an outbox row
    is not stale)."""
    while True:
        async with database.connection() as connection:
            waiting = await connection.fetchval(
                "SELECT count(*) FROM outbox WHERE args ?| $1::text[]", signal_ids
            )
        if not waiting:
            return
        await asyncio.sleep(0.05)


async def _race_with_ingest(
    database_url: str, work: Callable[[], Coroutine[Any, Any, int]], lower: str, higher: str
) -> int:
    """Runs `work` while an ingest-like transaction holds `lower`, then takes `higher` in that transaction."""
    async with asyncio.timeout(_GUARD_SECONDS):
        async with ingest_like(database_url) as ingest:
            await ingest.lock_user(lower)
            task = asyncio.create_task(work())
            await ingest.wait_until_another_waits_for_it()
            # Would deadlock if `work` held the higher id's row while waiting for the lower.
            await ingest.lock_user(higher)
        return await task


async def test_retrying_captures_of_several_users_locks_them_in_id_order(
    signals, users, database: Database, database_url: str, service_env, redis
) -> None:
    (lower, newer), (higher, older) = await _captures_of_two_users(signals, users)
    for signal_id in (older, newer):
        await _set_capture(database, signal_id, ScreenshotStatus.FAILED, error="timeout")
    coordinator = _coordinator(database, service_env, redis)

    retry = functools.partial(coordinator.retry, [older, newer], all_failed=False)
    assert await _race_with_ingest(database_url, retry, lower, higher) == 2

    for signal_id in (older, newer):
        signal = await signals.GetSignal(signal_service_pb2.GetSignalRequest(signal_id=signal_id))
        assert signal.screenshot_status == resources_pb2.SCREENSHOT_STATUS_PENDING


async def test_sweeping_stale_captures_of_several_users_locks_them_in_id_order(
    signals, users, database: Database, database_url: str, service_env, redis
) -> None:
    (lower, newer), (higher, older) = await _captures_of_two_users(signals, users)
    await _wait_sent(database, [older, newer])
    for signal_id, hours in ((older, 3), (newer, 2)):
        await _set_capture(
            database,
            signal_id,
            ScreenshotStatus.PENDING,
            updated_at=sa.func.now() - sa.text(f"interval '{hours} hours'"),
        )
    coordinator = _coordinator(database, service_env, redis)

    # Other tests' stale captures on this session's database may be swept too.
    assert await _race_with_ingest(database_url, coordinator.sweep_stale, lower, higher) >= 2

    async with database.session() as session:
        claims = await session.execute(
            sa.select(Screenshot.claim).where(Screenshot.signal_id.in_([uuid.UUID(older), uuid.UUID(newer)]))
        )
    # Each went back to its queue under a new claim generation.
    assert sorted(claim for (claim,) in claims) == [1, 1]
