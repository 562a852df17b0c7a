"""The outbox relay: sends committed outbox rows to Dramatiq, and keeps the capture backlog figure fresh.

Rows are claimed with FOR UPDATE SKIP LOCKED, so every signal replica runs a relay and they share the
work. A row is deleted only after Redis accepted its message; when Redis is down the rows wait, with
backoff, and nothing is lost. A crash between enqueue and delete re-sends a message: the capture actor
is idempotent, so that costs at most a repeated no-op.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis
from prometheus_client import Counter, Gauge
from redis.asyncio import Redis
from redis.exceptions import RedisError

from mesh.loops import BackgroundLoop, backoff_delay
from mesh.queues import (
    CAPTURE_OWNER_TTL_SECONDS,
    CAPTURE_QUEUES,
    WORKER_HEARTBEAT_TIMEOUT_MS,
    capture_owner_key,
    capture_owner_mark,
)
from signal_service.database import DATABASE_AWAY, Database
from signal_service.intake.service import QueueBacklog
from signal_service.outbox.repository import DueMessage, OutboxJob, OutboxRelayRepository, OutboxRepository

log = logging.getLogger(__name__)

OUTBOX_BACKLOG = Gauge("alerts_outbox_backlog", "Outbox rows not yet sent to the broker")
OUTBOX_SENT = Counter("alerts_outbox_sent_total", "Outbox messages sent to the broker")
OUTBOX_FAILURES = Counter("alerts_outbox_failures_total", "Failed attempts to send outbox messages")
QUEUE_LENGTH = Gauge("alerts_queue_length", "Capture jobs waiting, by queue", ["queue"])
# Every signal replica reports the same figure: aggregate with max(), or sum() over one replica.
ACTIVE_WORKERS = Gauge("alerts_active_workers", "Capture worker processes with a recent heartbeat")

# How long postponed rows wait after consecutive broker failures: 1 s doubling to 30 s, with jitter.
_POSTPONE_BASE_SECONDS = 1.0
_POSTPONE_MAX_SECONDS = 30.0
_BACKLOG_REFRESH_SECONDS = 2.0
# A failed pass (the database away) is tried again within this: wake() does not cut a backoff short, and
# captures committed meanwhile should not wait long once the database is back.
_RELAY_MAX_BACKOFF_SECONDS = 5.0


class _BrokerUnavailable(Exception):
    """Redis did not take a pass's messages; raised inside the pass's transaction to roll it back."""

    def __init__(self, rows: list[DueMessage], error: Exception) -> None:
        super().__init__(str(error))
        self.rows = rows
        self.error = error


class PipelinedRedisBroker(RedisBroker):
    """Dramatiq's Redis broker, plus enqueue_many: a relay pass's messages in one pipelined round trip.

    RedisBroker.enqueue is a blocking round trip per message; run in a thread it also took the GIL from
    the event loop for milliseconds per relay pass, which showed in every webhook's latency. enqueue_many
    runs Dramatiq's own dispatch script, with the arguments RedisBroker.enqueue gives it, on the service's
    asyncio Redis client. It encodes each message as Dramatiq's Message.encode would, from the outbox row
    itself: building, copying and encoding a Message per row cost the relay a third of its time. So no
    middleware hook runs for these messages, and a broker with middleware is refused. A capture message is
    marked under its signal once Redis holds it (mesh.queues.capture_owner_key), as the capture workers'
    broker marks the copies it enqueues.
    """

    def __init__(self, *, async_client: Redis, **options: Any) -> None:
        super().__init__(**options)
        if self.middleware:
            raise ValueError("enqueue_many runs no middleware hooks: give the relay's broker middleware=[]")
        self._dispatch_script = async_client.register_script(self.scripts["dispatch"].script)
        self._async_client = async_client
        self._unpack_size: int | None = None

    async def enqueue_many(self, jobs: Sequence[OutboxJob]) -> None:
        unpack_size = self._unpack_size
        if unpack_size is None:
            # Asks Redis once per process, on Dramatiq's blocking client: off the event loop.
            # int(): Dramatiq's method is unannotated, and an Any would not narrow `unpack_size`.
            unpack_size = self._unpack_size = int(await asyncio.to_thread(self._max_unpack_size))
        encode = dramatiq.get_encoder().encode
        sha = self._dispatch_script.sha
        async with self._async_client.pipeline(transaction=False) as pipe:
            # EVALSHA straight onto the pipeline, which loads the script first should Redis not have it, as
            # AsyncScript.__call__ registers it; redis-py annotates the set with the blocking Script class,
            # but the pipeline reads only the two attributes both classes have (sha, script).
            pipe.scripts.add(self._dispatch_script)  # type: ignore[arg-type]
            for job in jobs:
                # A unique id per enqueue, as RedisBroker.enqueue gives: a message may be sent again.
                redis_message_id = str(uuid.uuid4())
                now = current_millis()
                # Message.asdict()'s fields in its order, with the options RedisBroker.enqueue adds.
                message = encode(
                    {
                        "queue_name": job.queue_name,
                        "actor_name": job.actor_name,
                        "args": job.args,
                        "kwargs": {},
                        "options": {**job.options, "redis_message_id": redis_message_id},
                        "message_id": str(uuid.uuid4()),
                        "message_timestamp": now,
                    }
                )
                pipe.evalsha(
                    sha,
                    1,
                    self.namespace,
                    "enqueue",
                    now,
                    job.queue_name,
                    self.broker_id,
                    self.heartbeat_timeout,
                    self.dead_message_ttl,
                    self._should_do_maintenance("enqueue"),
                    unpack_size,
                    redis_message_id,
                    message,
                )
                if job.queue_name in CAPTURE_QUEUES:
                    pipe.set(
                        capture_owner_key(self.namespace, job.args[0]),
                        capture_owner_mark(job.queue_name, redis_message_id),
                        ex=CAPTURE_OWNER_TTL_SECONDS,
                    )
            await pipe.execute()


class OutboxRelay:
    def __init__(
        self,
        *,
        database: Database,
        broker: PipelinedRedisBroker,
        redis: Redis,
        namespace: str,
        backlog: QueueBacklog,
        workers_key: str,
        batch_size: int = 200,
        poll_seconds: float = 1.0,
    ) -> None:
        self._database = database
        self._broker = broker
        self._redis = redis
        self._namespace = namespace
        self._backlog = backlog
        self._workers_key = workers_key
        self._batch_size = batch_size
        self._failures = 0
        self.relay_loop = BackgroundLoop(
            "outbox-relay",
            self._relay_step,
            interval_seconds=poll_seconds,
            min_backoff_seconds=min(poll_seconds, _RELAY_MAX_BACKOFF_SECONDS),
            max_backoff_seconds=_RELAY_MAX_BACKOFF_SECONDS,
            expected_errors=DATABASE_AWAY,
        )
        self.backlog_loop = BackgroundLoop(
            "queue-backlog",
            self.refresh_backlog,
            interval_seconds=_BACKLOG_REFRESH_SECONDS,
            min_backoff_seconds=_BACKLOG_REFRESH_SECONDS / 4,
            max_backoff_seconds=_BACKLOG_REFRESH_SECONDS,
            expected_errors=(*DATABASE_AWAY, RedisError),
        )

    @property
    def loops(self) -> tuple[BackgroundLoop, ...]:
        return (self.relay_loop, self.backlog_loop)

    def wake(self) -> None:
        """Called after a commit that wrote outbox rows: send them now rather than at the next poll."""
        self.relay_loop.wake()

    async def relay_once(self) -> int:
        """Sends one batch of due rows; returns how many were sent."""
        try:
            async with self._database.connection() as connection, connection.transaction():
                rows = await OutboxRelayRepository(connection).take_due(self._batch_size)
                if rows:
                    # Raising rolls the transaction back: the rows were not sent and stay.
                    await self._enqueue_all(rows)
        except _BrokerUnavailable as unavailable:
            await self._postpone(unavailable.rows, unavailable.error)
            return 0
        if rows:
            self._failures = 0
            OUTBOX_SENT.inc(len(rows))
        return len(rows)

    async def _postpone(self, rows: list[DueMessage], error: Exception) -> None:
        self._failures += 1
        OUTBOX_FAILURES.inc()
        delay = backoff_delay(
            self._failures, base_seconds=_POSTPONE_BASE_SECONDS, max_seconds=_POSTPONE_MAX_SECONDS
        )
        log.warning(
            "broker unavailable; outbox rows postponed", extra={"rows": len(rows), "error": str(error)}
        )
        async with self._database.connection() as connection:
            await OutboxRelayRepository(connection).postpone(
                [row.id for row in rows], delay_seconds=delay, error=str(error)
            )

    async def _enqueue_all(self, rows: list[DueMessage]) -> None:
        try:
            await self._broker.enqueue_many(rows)
        except Exception as exc:
            raise _BrokerUnavailable(rows, exc) from exc

    async def _relay_step(self) -> bool:
        """A full batch means more rows may be due: the loop runs again at once."""
        return await self.relay_once() >= self._batch_size

    async def refresh_backlog(self) -> None:
        """The capture queues' lengths, live workers and the outbox backlog: for GetStatus and metrics."""
        heartbeats_since = time.time() * 1000 - WORKER_HEARTBEAT_TIMEOUT_MS
        async with self._redis.pipeline(transaction=False) as pipe:
            for queue in CAPTURE_QUEUES:
                pipe.llen(f"{self._namespace}:{queue}")
            pipe.zcount(self._workers_key, heartbeats_since, "+inf")
            *lengths, workers = await pipe.execute()
        self._backlog.lengths = dict(zip(CAPTURE_QUEUES, lengths, strict=True))
        ACTIVE_WORKERS.set(workers)
        for queue, length in self._backlog.lengths.items():
            QUEUE_LENGTH.labels(queue).set(length)
        async with self._database.session() as session:
            OUTBOX_BACKLOG.set(await OutboxRepository(session).backlog())
