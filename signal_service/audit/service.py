"""Audit rows for refused webhook calls, written in batches off the request path.

Accepted calls write their audit row in the signal's own transaction. Refusals (unknown token, rate
limited, ...) are queued here and inserted together, so that a flood of bad requests costs one insert
per batch instead of one per request, and a refusal never waits on the database.

Refusals anyone can cause in bulk are summarised (:func:`summarised_refusal`): the body's size and
SHA-256 without the body, and every repeat of one (user, source, outcome, reason) within a minute counted
on one row. Repeats merge in the queue while they wait, and in the database (ON CONFLICT on
ux_audit_logs_repeats) across batches and replicas, so a flood costs a row per source and minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from datetime import UTC, datetime, timedelta

from prometheus_client import Counter

from signal_service.audit.repository import AuditRepository
from signal_service.database import Database
from signal_service.models import AuditLog

log = logging.getLogger(__name__)

AUDIT_DROPPED = Counter("alerts_audit_dropped_total", "Audit rows dropped because the audit queue was full")

# What makes two summarised refusals one row: minute, user, source, outcome, reason.
_RepeatKey = tuple[datetime | None, uuid.UUID | None, str | None, str, str | None]


def summarised_refusal(
    *,
    created_at: datetime,
    user_id: uuid.UUID | None,
    source: str | None,
    reason: str,
    request_id: str | None,
    user_agent: str | None,
    latency_ms: float,
    body_sha256: str,
    body_size: int,
    content_type: str | None,
) -> AuditLog:
    """A refusal's audit row without its body, counting the repeats of its minute (see the module)."""
    return AuditLog(
        created_at=created_at,
        user_id=user_id,
        request_id=request_id,
        source_ip=source,
        user_agent=user_agent,
        outcome="refused",
        reason=reason or None,
        latency_ms=latency_ms,
        body_sha256=body_sha256,
        body=None,
        body_size=body_size,
        content_type=content_type,
        repeat_window=created_at.replace(second=0, microsecond=0),
        repeat_count=1,
    )


def _repeat_key(entry: AuditLog) -> _RepeatKey:
    return (entry.repeat_window, entry.user_id, entry.source_ip, entry.outcome, entry.reason)


class AuditWriter:
    def __init__(self, database: Database, *, max_pending: int = 10_000, batch_size: int = 500) -> None:
        self._database = database
        self._queue: asyncio.Queue[AuditLog] = asyncio.Queue(maxsize=max_pending)
        # Summarised refusals waiting in the queue, by what their repeats share: a repeat only counts.
        self._waiting_repeats: dict[_RepeatKey, AuditLog] = {}
        self._batch_size = batch_size
        self._task: asyncio.Task[None] | None = None
        self._writing: asyncio.Future[None] | None = None

    def record(self, entry: AuditLog) -> None:
        if entry.repeat_window is not None:
            waiting = self._waiting_repeats.get(_repeat_key(entry))
            if waiting is not None:
                waiting.repeat_count += entry.repeat_count
                return
        try:
            self._queue.put_nowait(entry)
        except asyncio.QueueFull:
            AUDIT_DROPPED.inc()
            log.warning("audit queue full; row dropped", extra={"outcome": entry.outcome})
            return
        if entry.repeat_window is not None:
            self._waiting_repeats[_repeat_key(entry)] = entry

    def _take(self, entry: AuditLog) -> AuditLog:
        """`entry`, just taken off the queue: repeats recorded from now on make a new row."""
        if entry.repeat_window is not None:
            self._waiting_repeats.pop(_repeat_key(entry), None)
        return entry

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
        batch: list[AuditLog] = []
        while len(batch) < self._batch_size and not self._queue.empty():
            batch.append(self._take(self._queue.get_nowait()))
        return batch

    async def _run(self) -> None:
        while True:
            first = self._take(await self._queue.get())
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
