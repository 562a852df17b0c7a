"""What the edge's /health reports: dependency checks and the capture backlog."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import sqlalchemy as sa
from redis.asyncio import Redis

from mesh.queues import WORKER_HEARTBEAT_TIMEOUT_MS
from signal_service.database import Database
from signal_service.intake.service import QueueBacklog
from signal_service.outbox.repository import OutboxRepository


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    database_ok: bool
    broker_ok: bool
    queue_lengths: dict[str, int] = field(default_factory=dict)
    active_workers: int = 0
    outbox_backlog: int = 0


class StatusReporter:
    def __init__(self, *, database: Database, redis: Redis, backlog: QueueBacklog, workers_key: str) -> None:
        self._database = database
        self._redis = redis
        self._backlog = backlog
        self._workers_key = workers_key

    async def status(self) -> ServiceStatus:
        database_ok, outbox_backlog = True, 0
        try:
            async with self._database.session() as session:
                await session.execute(sa.text("SELECT 1"))
                outbox_backlog = await OutboxRepository(session).backlog()
        except Exception:
            database_ok = False
        broker_ok, workers = True, 0
        try:
            since = time.time() * 1000 - WORKER_HEARTBEAT_TIMEOUT_MS
            workers = await self._redis.zcount(self._workers_key, since, "+inf")
        except Exception:
            broker_ok = False
        return ServiceStatus(
            database_ok=database_ok,
            broker_ok=broker_ok,
            queue_lengths=dict(self._backlog.lengths),
            active_workers=int(workers),
            outbox_backlog=outbox_backlog,
        )
