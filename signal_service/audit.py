"""Audit rows for refused webhook calls, written in batches off the request path.

Accepted calls write their audit row in the signal's own transaction. Refusals (unknown token, rate
limited, ...) are queued here and inserted together, so that a flood of bad requests costs one insert
per batch instead of one per request, and a refusal never waits on the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from prometheus_client import Counter

from signal_service.database import Database
from signal_service.models import AuditLog
from signal_service.repository import AuditRepository

log = logging.getLogger(__name__)

AUDIT_DROPPED = Counter("alerts_audit_dropped_total", "Audit rows dropped because the audit queue was full")


class AuditWriter:
    def __init__(self, database: Database, *, max_pending: int = 10_000, batch_size: int = 500) -> None:
        self._database = database
        self._queue: asyncio.Queue[AuditLog] = asyncio.Queue(maxsize=max_pending)
        self._batch_size = batch_size
        self._task: asyncio.Task[None] | None = None

    def record(self, entry: AuditLog) -> None:
        try:
            self._queue.put_nowait(entry)
        except asyncio.QueueFull:
            AUDIT_DROPPED.inc()
            log.warning("audit queue full; row dropped", extra={"outcome": entry.outcome})

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="audit-writer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()

    async def flush(self) -> None:
        while not self._queue.empty():
            await self._write(self._drain())

    def _drain(self) -> list[AuditLog]:
        batch = []
        while len(batch) < self._batch_size and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        return batch

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            batch = [first, *self._drain()]
            await self._write(batch)

    async def _write(self, batch: list[AuditLog]) -> None:
        if not batch:
            return
        try:
            async with self._database.transaction() as session:
                await AuditRepository(session).add_many(batch)
        except Exception:
            log.exception("writing audit rows failed", extra={"rows": len(batch)})
