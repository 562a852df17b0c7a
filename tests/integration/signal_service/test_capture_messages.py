"""Which captures a message in the broker owns, found by each message's mark: the outbox relay marks the
messages it sends, and a capture with no mark is decided by reading the queues."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import pytest
from dramatiq.common import dq_name
from redis.asyncio import Redis

from mesh.queues import capture_owner_key, capture_owner_mark, capture_queue
from signal_service.captures import queued
from signal_service.captures.queued import CaptureMessages
from signal_service.outbox.repository import OutboxEntry
from signal_service.outbox.service import PipelinedRedisBroker


@pytest.fixture
async def namespace(redis: Redis) -> AsyncIterator[str]:
    namespace = f"test-owners-{uuid.uuid4().hex}:dramatiq"
    yield namespace
    async for key in redis.scan_iter(f"{namespace}*"):
        await redis.delete(key)


async def _add_message(redis: Redis, namespace: str, queue: str, signal_id: uuid.UUID) -> str:
    """A capture message as Dramatiq keeps it, with no mark (enqueued by a release that wrote none)."""
    redis_message_id = str(uuid.uuid4())
    body = {"queue_name": queue, "actor_name": "capture_screenshot_free", "args": [str(signal_id)]}
    await redis.hset(f"{namespace}:{queue}.msgs", redis_message_id, json.dumps(body))
    return redis_message_id


async def _mark(redis: Redis, namespace: str, signal_id: uuid.UUID, queue: str, message_id: str) -> None:
    await redis.set(capture_owner_key(namespace, str(signal_id)), capture_owner_mark(queue, message_id))


async def test_a_capture_is_owned_while_the_message_its_mark_names_is_held(
    redis: Redis, namespace: str
) -> None:
    queue = capture_queue("free")
    waiting, delayed, finished, lost, unmarked_waiting, unmarked_lost = (uuid.uuid4() for _ in range(6))
    await _mark(redis, namespace, waiting, queue, await _add_message(redis, namespace, queue, waiting))
    delayed_id = await _add_message(redis, namespace, dq_name(queue), delayed)
    await _mark(redis, namespace, delayed, dq_name(queue), delayed_id)
    # Its mark names the copy that replaced the first message, which is gone.
    await _add_message(redis, namespace, queue, finished)
    await _mark(redis, namespace, finished, queue, str(uuid.uuid4()))
    await _mark(redis, namespace, lost, queue, str(uuid.uuid4()))
    await _add_message(redis, namespace, capture_queue("premium"), unmarked_waiting)

    messages = CaptureMessages(redis, namespace)
    assert await messages.unowned([waiting, delayed, finished, lost, unmarked_waiting, unmarked_lost]) == {
        finished,
        lost,
        unmarked_lost,
    }
    assert await messages.unowned([]) == set()


async def test_marked_candidates_are_decided_without_reading_the_queues(
    redis: Redis, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = capture_queue("basic")
    candidates = [uuid.uuid4() for _ in range(queued._LOOKUP_BATCH * 2 + 3)]
    for signal_id in candidates[::2]:
        message_id = await _add_message(redis, namespace, queue, signal_id)
        await _mark(redis, namespace, signal_id, queue, message_id)
    for signal_id in candidates[1::2]:
        await _mark(redis, namespace, signal_id, queue, str(uuid.uuid4()))
    messages = CaptureMessages(redis, namespace)

    async def no_queue_reads() -> queued.QueuedCaptures:
        raise AssertionError("every candidate has a mark: the queues should not be read")

    monkeypatch.setattr(messages, "queued", no_queue_reads)
    assert await messages.unowned(candidates) == set(candidates[1::2])


async def test_the_relay_marks_each_capture_message_it_sends(
    redis: Redis, redis_url: str, namespace: str
) -> None:
    broker = PipelinedRedisBroker(async_client=redis, url=redis_url, namespace=namespace, middleware=[])
    capture, other = str(uuid.uuid4()), str(uuid.uuid4())
    capture_job = OutboxEntry(queue_name=capture_queue("pro"), actor_name="a", args=[capture], options={})
    notify_job = OutboxEntry(queue_name="notify", actor_name="b", args=[other], options={})
    try:
        await broker.enqueue_many([capture_job, notify_job])
        # Sent again (the relay crashed before deleting its row): the mark names the newer message.
        await broker.enqueue_many([capture_job])
    finally:
        broker.close()

    queue, redis_message_id = (await redis.get(capture_owner_key(namespace, capture))).decode().split("\n")
    assert queue == capture_queue("pro")
    assert json.loads(await redis.hget(f"{namespace}:{queue}.msgs", redis_message_id))["args"] == [capture]
    assert redis_message_id == (await redis.lrange(f"{namespace}:{queue}", 0, -1))[-1].decode()
    assert await redis.get(capture_owner_key(namespace, other)) is None
    assert 0 < await redis.ttl(capture_owner_key(namespace, capture)) <= 86_400
