"""The sweeper returns captures lost with a dead worker or a lost queue message to their queue."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis
import sqlalchemy as sa

from apidevs.alerts.v1 import resources_pb2, signal_service_pb2
from signal_service.captures.service import CaptureCoordinator
from signal_service.database import Database, create_engine
from signal_service.models import Screenshot
from signal_service.settings import SignalSettings
from tests.conftest import settings_from
from tests.support import SAMPLE, create_user, ingest_request


@pytest.fixture
async def database(database_url: str):
    database = Database(create_engine(database_url, pool_size=2))
    yield database
    await database.dispose()


async def _queued(redis_url: str, queue: str) -> list[bytes]:
    redis = aioredis.Redis.from_url(redis_url)
    try:
        return [
            await redis.hget(f"{queue}.msgs", message_id) for message_id in await redis.lrange(queue, 0, -1)
        ]
    finally:
        await redis.aclose()


async def _wait_queued(redis_url: str, queue: str, signal_id: str) -> None:
    for _ in range(100):
        if any(signal_id.encode() in (body or b"") for body in await _queued(redis_url, queue)):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{signal_id} never reached {queue}")


async def _age(database: Database, signal_id: str, **columns: object) -> None:
    async with database.transaction() as session:
        await session.execute(
            sa.update(Screenshot).where(Screenshot.signal_id == uuid.UUID(signal_id)).values(**columns)
        )


async def test_lost_queue_messages_and_dead_workers_are_swept_back(
    signals, users, database, service_env, redis_url, redis_namespace
) -> None:
    settings = settings_from(service_env, SignalSettings)
    sweeper = CaptureCoordinator(database=database, settings=settings)
    queue = f"{redis_namespace}:dramatiq:capture.free"
    created = await create_user(users, plan=resources_pb2.PLAN_FREE)

    lost = (await signals.IngestWebhook(ingest_request(created.webhook_token, SAMPLE))).signal_id
    await _wait_queued(redis_url, queue, lost)
    redis = aioredis.Redis.from_url(redis_url)
    await redis.delete(queue, f"{queue}.msgs")
    await redis.aclose()
    await _age(database, lost, updated_at=sa.func.now() - sa.text("interval '2 hours'"))

    orphaned = (
        await signals.IngestWebhook(ingest_request(created.webhook_token, b"BINANCE:ETHUSDT 1"))
    ).signal_id
    await signals.ClaimCapture(signal_service_pb2.ClaimCaptureRequest(signal_id=orphaned, worker_id="dead"))
    await _age(database, orphaned, claimed_at=sa.func.now() - sa.text("interval '1 hour'"))

    exhausted = (
        await signals.IngestWebhook(ingest_request(created.webhook_token, b"BINANCE:XRPUSDT 2"))
    ).signal_id
    await signals.ClaimCapture(signal_service_pb2.ClaimCaptureRequest(signal_id=exhausted, worker_id="dead"))
    await _age(
        database,
        exhausted,
        claimed_at=sa.func.now() - sa.text("interval '1 hour'"),
        attempts=settings.capture_max_attempts,
    )

    assert await sweeper.sweep_stale() >= 3
    for signal_id in (lost, orphaned):
        signal = await signals.GetSignal(signal_service_pb2.GetSignalRequest(signal_id=signal_id))
        assert signal.screenshot_status == resources_pb2.SCREENSHOT_STATUS_PENDING
    failed = await signals.GetSignal(signal_service_pb2.GetSignalRequest(signal_id=exhausted))
    assert failed.screenshot_status == resources_pb2.SCREENSHOT_STATUS_FAILED
    assert failed.screenshot_error == "WORKER_LOST"
    # The sweeper wrote outbox rows; the relay of the running signal server sends them.
    await _wait_queued(redis_url, queue, lost)
    await _wait_queued(redis_url, queue, orphaned)
