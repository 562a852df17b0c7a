"""Audit rows for refused webhook calls, written in batches off the request path.

Accepted calls write their audit row in the signal's own transaction. Refusals (unknown token, rate
limited, ...) are queued here and inserted together, so that a flood of bad requests costs one insert
per batch instead of one per request, and a refusal never waits on the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime, timedelta

from prometheus_client import Counter

from signal_service.audit.repository import AuditRepository
from signal_service.database import Database
from signal_service.models import AuditLog

log = logging.getLogger(__name__)

AUDIT_DROPPED = Counter("alerts_audit_dropped_total", "Audit rows dropped because the audit queue was full")


class AuditWriter:
    def __init__(self, database: Database, *, max_pending: int = 10_000, batch_size: int = 500) -> None:
        self._database = database
        self._queue: asyncio.Queue[AuditLog] = asyncio.Queue(maxsize=max_pending)
        self._batch_size = batch_size
        self._task: asyncio.Task[None] | None = None
        self._writing: asyncio.Future[None] | None = None

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
        if self._writing is not None:
            await self._writing
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
            # Shielded: stopping the writer must not roll back a batch already taken off the queue.
            self._writing = asyncio.ensure_future(self._write([first, *self._drain()]))
            await asyncio.shield(self._writing)

    async def _write(self, batch: list[AuditLog]) -> None:
        if not batch:
            return
        try:
            await self._insert(batch)
        except Exception:
            if len(batch) == 1:
                log.exception("writing an audit row failed", extra={"outcome": batch[0].outcome})
                return
            # One row the database refuses must not cost the others theirs.
            for entry in batch:
                await self._write([entry])

    async def _insert(self, batch: list[AuditLog]) -> None:
        async with self._database.transaction() as session:
            await AuditRepository(session).add_many(batch)


async def prune_audit_log(
    database: Database, *, retention_days: int, batch_size: int = 2_000, pause_ratio: float = 1.0
) -> int:
    """Deletes audit rows older than the retention period, a batch per transaction; returns how many.

    Batches keep each transaction short, so pruning a large backlog never holds locks for long; after
    each full batch it rests `pause_ratio` times as long as the batch took, so a year's backlog is pruned
    at a pace that leaves the disk to ingest (docs/PERFORMANCE.md, "Scale").
    """
    cutoff = datetime.now(UTC) - timedelta(days=retention_days)
    deleted = 0
    while True:
        started = time.perf_counter()
        async with database.transaction() as session:
            batch = await AuditRepository(session).delete_older_than(cutoff, limit=batch_size)
        deleted += batch
        if batch < batch_size:
            return deleted
        await asyncio.sleep((time.perf_counter() - started) * pause_ratio)
