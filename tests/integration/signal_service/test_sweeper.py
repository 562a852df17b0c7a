"""The sweeper returns captures lost with a dead worker or a lost queue message to their queue, and leaves
alone every capture a message in the broker still owns (queued, delayed, or an outcome held)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis
import sqlalchemy as sa
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker

from apidevs.alerts.v1 import resources_pb2, signal_service_pb2
from capture_service.broker import CaptureOwnerMarks
from mesh.queues import dramatiq_namespace
from mesh.settings import CommonSettings
from signal_service.captures.queued import CaptureMessages
from signal_service.captures.service import CaptureCoordinator
from signal_service.database import Database
from signal_service.models import Screenshot
from signal_service.settings import SignalSettings
from tests.conftest import settings_from
from tests.support import SAMPLE, create_user, ingest_request


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


def _sweeper(database: Database, service_env, redis, redis_namespace: str) -> CaptureCoordinator:
    namespace = dramatiq_namespace(CommonSettings(redis_namespace=redis_namespace))
    return CaptureCoordinator(
        database=database,
        settings=settings_from(service_env, SignalSettings),
        messages=CaptureMessages(redis, namespace),
    )


async def _drop_queued(redis, queue: str) -> None:
    """The queue's messages gone, as after Redis restarted empty."""
    await redis.delete(queue, f"{queue}.msgs")


async def _delay(redis_url: str, queue: str, signal_id: str, **options: object) -> None:
    """A delayed copy of the capture's job on the queue's .DQ, enqueued by the capture workers' broker as a
    worker re-queues a job that waits for a dependency or holds its report."""
    namespace, queue_name = queue.rsplit(":", 1)
    broker = RedisBroker(url=redis_url, namespace=namespace, middleware=[CaptureOwnerMarks()])
    try:
        job = Message(
            queue_name=queue_name,
            actor_name="capture_screenshot_free",
            args=(signal_id,),
            kwargs={},
            options=options,
        )
        await asyncio.to_thread(broker.enqueue, job, delay=3_600_000)
    finally:
        broker.close()


async def test_lost_queue_messages_and_dead_workers_are_swept_back(
    signals, users, database, service_env, redis, redis_url, redis_namespace
) -> None:
    settings = settings_from(service_env, SignalSettings)
    sweeper = _sweeper(database, service_env, redis, redis_namespace)
    queue = f"{redis_namespace}:dramatiq:capture.free"
    created = await create_user(users, plan=resources_pb2.PLAN_FREE)

    lost = (await signals.IngestWebhook(ingest_request(created.webhook_token, SAMPLE))).signal_id
    await _wait_queued(redis_url, queue, lost)
    await _age(database, lost, updated_at=sa.func.now() - sa.text("interval '2 hours'"))

    orphaned = (
        await signals.IngestWebhook(ingest_request(created.webhook_token, b"BINANCE:ETHUSDT 1"))
    ).signal_id
    await _wait_queued(redis_url, queue, orphaned)
    await signals.ClaimCapture(signal_service_pb2.ClaimCaptureRequest(signal_id=orphaned, worker_id="dead"))
    await _age(database, orphaned, claimed_at=sa.func.now() - sa.text("interval '1 hour'"))

    exhausted = (
        await signals.IngestWebhook(ingest_request(created.webhook_token, b"BINANCE:XRPUSDT 2"))
    ).signal_id
    await _wait_queued(redis_url, queue, exhausted)
    await signals.ClaimCapture(signal_service_pb2.ClaimCaptureRequest(signal_id=exhausted, worker_id="dead"))
    await _age(
        database,
        exhausted,
        claimed_at=sa.func.now() - sa.text("interval '1 hour'"),
        attempts=settings.capture_max_attempts,
    )
    # While their messages are in the queue, a job still owns each of them.
    await sweeper.sweep_stale()
    for signal_id, status in (
        (lost, resources_pb2.SCREENSHOT_STATUS_PENDING),
        (orphaned, resources_pb2.SCREENSHOT_STATUS_PROCESSING),
        (exhausted, resources_pb2.SCREENSHOT_STATUS_PROCESSING),
    ):
        untouched = await signals.GetSignal(signal_service_pb2.GetSignalRequest(signal_id=signal_id))
        assert untouched.screenshot_status == status
    await _drop_queued(redis, queue)

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


async def test_captures_whose_job_waits_on_the_delay_queue_are_left_alone(
    signals, users, database, service_env, redis, redis_url, redis_namespace
) -> None:
    sweeper = _sweeper(database, service_env, redis, redis_namespace)
    queue = f"{redis_namespace}:dramatiq:capture.free"
    created = await create_user(users, plan=resources_pb2.PLAN_FREE)

    async def stale_capture(body: bytes, *, claimed: bool) -> str:
        signal_id = (await signals.IngestWebhook(ingest_request(created.webhook_token, body))).signal_id
        await _wait_queued(redis_url, queue, signal_id)
        if claimed:
            await signals.ClaimCapture(signal_service_pb2.ClaimCaptureRequest(signal_id=signal_id))
        return signal_id

    # Claimed, then the upload found storage away: the job waits, delayed, to resume its claim.
    waiting_for_storage = await stale_capture(b"BINANCE:BTCUSDT storage", claimed=True)
    # Claimed, failed, and the failure could not be reported yet: held on the delay queue.
    held_report = await stale_capture(b"BINANCE:ETHUSDT held", claimed=True)
    # Never claimed: the signal service was away, the job waits to claim.
    waiting_to_claim = await stale_capture(b"BINANCE:XRPUSDT claim", claimed=False)
    # Nothing left of its job anywhere.
    lost = await stale_capture(b"BINANCE:SOLUSDT lost", claimed=False)
    await _drop_queued(redis, queue)
    await _delay(redis_url, queue, waiting_for_storage, resumes_claim=1, infrastructure_waits=3)
    await _delay(redis_url, queue, held_report, held_report="CgA=")
    await _delay(redis_url, queue, waiting_to_claim, infrastructure_waits=1)
    for signal_id in (waiting_for_storage, held_report):
        await _age(database, signal_id, claimed_at=sa.func.now() - sa.text("interval '1 hour'"))
    for signal_id in (waiting_to_claim, lost):
        await _age(database, signal_id, updated_at=sa.func.now() - sa.text("interval '1 hour'"))

    queued = await CaptureMessages(redis, f"{redis_namespace}:dramatiq").queued()
    assert {waiting_for_storage, held_report, waiting_to_claim} <= {str(id_) for id_ in queued.signal_ids}
    assert queued.delayed >= 3
    assert queued.held_reports >= 1

    # Other tests' stale captures on this session's database may be swept too: count only these four.
    assert await sweeper.sweep_stale() >= 1
    statuses = {
        signal_id: (await signals.GetSignal(signal_service_pb2.GetSignalRequest(signal_id=signal_id)))
        for signal_id in (waiting_for_storage, held_report, waiting_to_claim, lost)
    }
    assert statuses[waiting_for_storage].screenshot_status == resources_pb2.SCREENSHOT_STATUS_PROCESSING
    assert statuses[held_report].screenshot_status == resources_pb2.SCREENSHOT_STATUS_PROCESSING
    assert statuses[waiting_to_claim].screenshot_status == resources_pb2.SCREENSHOT_STATUS_PENDING
    await _wait_queued(redis_url, queue, lost)
    main_queue = await _queued(redis_url, queue)
    assert not any(waiting_to_claim.encode() in (body or b"") for body in main_queue)


async def test_a_sweep_waits_while_redis_cannot_be_read(
    signals, users, database, service_env, redis_url, redis_namespace
) -> None:
    unreachable = aioredis.Redis.from_url("redis://127.0.0.1:1", socket_connect_timeout=0.5)
    sweeper = _sweeper(database, service_env, unreachable, redis_namespace)
    created = await create_user(users, plan=resources_pb2.PLAN_FREE)
    signal_id = (await signals.IngestWebhook(ingest_request(created.webhook_token, SAMPLE))).signal_id
    await _wait_queued(redis_url, f"{redis_namespace}:dramatiq:capture.free", signal_id)
    await _age(database, signal_id, updated_at=sa.func.now() - sa.text("interval '1 hour'"))
    try:
        with pytest.raises(aioredis.ConnectionError):
            await sweeper.sweep_stale()
    finally:
        await unreachable.aclose()
    signal = await signals.GetSignal(signal_service_pb2.GetSignalRequest(signal_id=signal_id))
    assert signal.screenshot_status == resources_pb2.SCREENSHOT_STATUS_PENDING
