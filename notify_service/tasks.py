"""The notify actor, run under mesh.workers.WorkerLifecycle; the job itself is notify_service/worker.py."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import dramatiq
from dramatiq.broker import Broker
from dramatiq.middleware import CurrentMessage

from mesh.queues import NOTIFY_ACTOR, NOTIFY_QUEUE
from notify_service.worker import LookAgain, NotifyWorker, SignalServiceUnavailableError


def declare_notify_actor(broker: Broker, worker: NotifyWorker) -> dramatiq.Actor[..., Any]:
    async def deliver_notifications(signal_id: str) -> None:
        message = CurrentMessage.get_current_message()
        job_id = (
            f"{message.message_id}:{message.options.get('retries', 0)}" if message else os.urandom(8).hex()
        )
        try:
            look_again = await worker.run(signal_id, job_id=job_id)
        except SignalServiceUnavailableError as exc:
            raise dramatiq.Retry(str(exc)) from exc
        if look_again.delay_seconds > 0:
            await requeue(signal_id, look_again)

    async def requeue(signal_id: str, look_again: LookAgain) -> None:
        # A blocking Redis round trip: off the event loop.
        await asyncio.to_thread(
            actor.send_with_options, args=(signal_id,), delay=int(look_again.delay_seconds * 1000) or None
        )

    actor: dramatiq.Actor[..., Any] = dramatiq.Actor(
        deliver_notifications,
        broker=broker,
        actor_name=NOTIFY_ACTOR,
        queue_name=NOTIFY_QUEUE,
        priority=0,
        options={},
    )
    worker.requeue = requeue
    return actor
