"""The relay's pipelined enqueue leaves exactly what Dramatiq's own enqueue would, for real consumers."""

from __future__ import annotations

import uuid

import dramatiq
from redis.asyncio import Redis

from signal_service.outbox import PipelinedRedisBroker


async def test_enqueue_many_delivers_every_message_to_its_queue_in_order(redis_url: str) -> None:
    namespace = f"test-outbox-{uuid.uuid4().hex}"
    async_client = Redis.from_url(redis_url)
    broker = PipelinedRedisBroker(
        async_client=async_client, url=redis_url, namespace=namespace, middleware=[]
    )
    try:
        for queue in ("capture-premium", "capture-free"):
            broker.declare_queue(queue)
        sent = [
            dramatiq.Message(
                queue_name=queue, actor_name="capture", args=(str(n),), kwargs={}, options={"attempt": n}
            )
            for n, queue in enumerate(["capture-free", "capture-premium", "capture-free"])
        ]
        await broker.enqueue_many(sent)
        # The same message sent twice (the relay crashed before deleting its row) is delivered twice.
        await broker.enqueue_many(sent[:1])

        received: dict[str, list[dramatiq.Message]] = {}
        for queue, expected in (("capture-free", 3), ("capture-premium", 1)):
            consumer = broker.consume(queue, prefetch=10, timeout=1000)
            received[queue] = []
            for message in consumer:
                if message is None:
                    break
                received[queue].append(message)
                consumer.ack(message)
                if len(received[queue]) == expected:
                    break
            consumer.close()
    finally:
        for key in broker.client.scan_iter(f"{namespace}*"):
            broker.client.delete(key)
        broker.close()
        await async_client.aclose()

    assert [(m.message_id, m.args, m.options["attempt"]) for m in received["capture-free"]] == [
        (sent[0].message_id, ("0",), 0),
        (sent[2].message_id, ("2",), 2),
        (sent[0].message_id, ("0",), 0),
    ]
    assert [(m.message_id, m.args) for m in received["capture-premium"]] == [(sent[1].message_id, ("1",))]
    assert len({m.options["redis_message_id"] for m in received["capture-free"]}) == 3
