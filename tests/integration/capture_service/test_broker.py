"""The capture workers' broker marks every capture message it enqueues under its signal, so the signal
service's sweeper finds the job that owns a capture by one lookup (signal_service/captures/queued.py)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import dq_name

from capture_service.broker import CaptureOwnerMarks
from mesh.queues import SESSION_CHECK_QUEUE, capture_owner_key, capture_queue


@pytest.fixture
def broker(redis_url: str) -> Iterator[RedisBroker]:
    broker = RedisBroker(
        url=redis_url, namespace=f"test-marks-{uuid.uuid4().hex}:dramatiq", middleware=[CaptureOwnerMarks()]
    )
    yield broker
    for key in broker.client.scan_iter(f"{broker.namespace}*"):
        broker.client.delete(key)
    broker.close()


def _marked(broker: RedisBroker, signal_id: str) -> tuple[str, dict[str, object]] | None:
    """The queue the signal's mark names, and the message Redis holds there under the mark's id."""
    mark = broker.client.get(capture_owner_key(broker.namespace, signal_id))
    if mark is None:
        return None
    queue, redis_message_id = mark.decode().split("\n")
    body = broker.client.hget(f"{broker.namespace}:{queue}.msgs", redis_message_id)
    assert body is not None, "the mark names a message Redis does not hold"
    return queue, json.loads(body)


def test_each_copy_of_a_capture_job_moves_its_mark(broker: RedisBroker) -> None:
    signal_id = str(uuid.uuid4())
    queue = capture_queue("free")
    job = Message(
        queue_name=queue, actor_name="capture_screenshot_free", args=(signal_id,), kwargs={}, options={}
    )

    first = broker.enqueue(job)
    assert _marked(broker, signal_id) == (queue, json.loads(first.encode()))

    # A dependency wait (capture_service/tasks.py): a delayed copy, then the job is acknowledged.
    delayed = broker.enqueue(job.copy(options={"infrastructure_waits": 1}), delay=60_000)
    assert _marked(broker, signal_id) == (dq_name(queue), json.loads(delayed.encode()))

    # Its eta passed: the worker enqueues it on the plan queue (dramatiq.Worker.handle_delayed_messages).
    due = job.copy(options={"infrastructure_waits": 1})
    made_due = broker.enqueue(due)
    assert _marked(broker, signal_id) == (queue, json.loads(made_due.encode()))
    assert made_due.options["redis_message_id"] != first.options["redis_message_id"]


def test_session_checks_are_not_marked(broker: RedisBroker) -> None:
    account = str(uuid.uuid4())
    broker.enqueue(
        Message(
            queue_name=SESSION_CHECK_QUEUE,
            actor_name="check_tradingview_session",
            args=(account,),
            kwargs={},
            options={},
        )
    )
    assert _marked(broker, account) is None
