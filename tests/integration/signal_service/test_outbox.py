"""The outbox relay: its pipelined enqueue leaves what Dramatiq's own would; Redis away loses nothing."""

from __future__ import annotations

import asyncio
import uuid

import dramatiq
from redis.asyncio import Redis

from signal_service.database import Database, create_engine
from signal_service.intake.service import QueueBacklog
from signal_service.models import OutboxMessage
from signal_service.outbox.repository import OutboxEntry, OutboxRepository
from signal_service.outbox.service import OutboxRelay, PipelinedRedisBroker
from tests.e2e.stacks import fresh_database


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
            OutboxEntry(queue_name=queue, actor_name="capture", args=[str(n)], options={"attempt": n})
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

    assert [(m.actor_name, m.args, m.options["attempt"]) for m in received["capture-free"]] == [
        ("capture", ("0",), 0),
        ("capture", ("2",), 2),
        ("capture", ("0",), 0),
    ]
    # Each send is a message of its own, as when Dramatiq's enqueue sends a message again.
    assert len({m.message_id for m in received["capture-free"]}) == 3
    assert [(m.queue_name, m.args) for m in received["capture-premium"]] == [("capture-premium", ("1",))]
    assert len({m.options["redis_message_id"] for m in received["capture-free"]}) == 3


async def _relay_scenario(database_url: str, redis_url: str) -> None:
    namespace = f"test-relay-{uuid.uuid4().hex}"
    database = Database(create_engine(database_url))
    away = Redis.from_url("redis://127.0.0.1:1", socket_timeout=0.5, socket_connect_timeout=0.5)
    here = Redis.from_url(redis_url)
    brokers = [
        PipelinedRedisBroker(async_client=client, url=url, namespace=namespace, middleware=[])
        for client, url in ((away, "redis://127.0.0.1:1"), (here, redis_url))
    ]
    try:
        async with database.transaction() as session:
            for n in range(3):
                await OutboxRepository(session).add(
                    OutboxMessage(queue_name="capture-free", actor_name="capture", args=[str(n)], options={})
                )

        def relay(broker: PipelinedRedisBroker) -> OutboxRelay:
            return OutboxRelay(
                database=database,
                broker=broker,
                redis=here,
                namespace=namespace,
                backlog=QueueBacklog(),
                workers_key=f"{namespace}:workers",
            )

        assert await relay(brokers[0]).relay_once() == 0
        async with database.connection() as connection:
            kept = await connection.fetch(
                "SELECT attempts, last_error, available_at > now() AS later FROM outbox"
            )
            assert [(row["attempts"], row["later"]) for row in kept] == [(1, True)] * 3
            assert all(row["last_error"] for row in kept)
            await connection.execute("UPDATE outbox SET available_at = now()")

        assert await relay(brokers[1]).relay_once() == 3
        async with database.connection() as connection:
            assert await connection.fetchval("SELECT count(*) FROM outbox") == 0
        assert await here.llen(f"{namespace}:capture-free") == 3
    finally:
        async for key in here.scan_iter(f"{namespace}*"):
            await here.delete(key)
        for broker in brokers:
            broker.close()
        await away.aclose()
        await here.aclose()
        await database.dispose()


def test_the_relay_keeps_rows_while_redis_is_away_and_sends_them_once_it_is_back(
    database_url: str, redis_url: str
) -> None:
    # A database of its own: the session's signal server relays the shared one's outbox.
    with fresh_database(database_url) as url:
        asyncio.run(_relay_scenario(url, redis_url))
