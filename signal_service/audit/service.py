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
import random
import time
import uuid
from datetime import UTC, datetime, timedelta

from prometheus_client import Counter
from sqlalchemy.exc import DBAPIError

from signal_service.audit.repository import AuditRepository
from signal_service.database import Database
from signal_service.models import AuditLog

log = logging.getLogger(__name__)

# Dropping a month's partition waits at most this long for the table's writers (ingest), then tries again.
_DROP_LOCK_TIMEOUT_MS = 200
_DROP_ATTEMPTS = 20
_DROP_RETRY_SECONDS = 1.0
_LOCK_NOT_AVAILABLE = "55P03"
# Months of audit_logs partitions kept ready ahead of the current one.
_MONTHS_AHEAD = 2

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
    """A refusal's audit row without its body, counting the repeats of its minute (see the module).

    The row is dated by its minute: created_at is repeat_window, so that the unique index the repeats meet
    on may include created_at, as audit_logs' monthly partitions require.
    """
    window = created_at.replace(second=0, microsecond=0)
    return AuditLog(
        created_at=window,
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
        repeat_window=window,
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
    database: Database,
    *,
    retention_days: int,
    batch_size: int = 2_000,
    pause_ratio: float = 1.0,
    lock_timeout_ms: int = _DROP_LOCK_TIMEOUT_MS,
) -> int:
    """Deletes audit rows older than the retention period; returns how many.

    The months wholly past it go whole: their partitions are dropped (migration 0014_partitions), which
    costs no more at a million rows than at one. What is left (the month the cutoff falls in, rows that
    reached the default partition) is deleted a batch per transaction; batches keep each transaction
    short, and after each full batch it rests `pause_ratio` times as long as the batch took, so a backlog
    is pruned at a pace that leaves the disk to ingest (docs/PERFORMANCE.md, "Scale").
    """
    cutoff = datetime.now(UTC) - timedelta(days=retention_days)
    deleted = await _drop_past_months(database, cutoff, lock_timeout_ms)
    while True:
        started = time.perf_counter()
        async with database.transaction() as session:
            batch = await AuditRepository(session).delete_older_than(cutoff, limit=batch_size)
        deleted += batch
        if batch < batch_size:
            return deleted
        await asyncio.sleep((time.perf_counter() - started) * pause_ratio)


async def ensure_audit_partitions(database: Database, *, months_ahead: int = _MONTHS_AHEAD) -> int:
    """Creates audit_logs' monthly partitions from this month through `months_ahead` months on that do
    not exist yet; returns how many it created. Run by the retention loop every pass, so a month's
    partition exists long before its first row (which would otherwise land in the default partition)."""
    now = datetime.now(UTC)
    month = now.year * 12 + now.month - 1 + months_ahead
    through = datetime(month // 12, month % 12 + 1, 1, tzinfo=UTC)
    async with database.transaction() as session:
        return await AuditRepository(session).ensure_partitions(through)


async def _drop_past_months(database: Database, cutoff: datetime, lock_timeout_ms: int) -> int:
    """Drops the monthly partitions that end before `cutoff`; returns the rows they held.

    A drop waits for the transactions writing to audit_logs to end, and holds new ones up meanwhile: the
    wait is capped at `lock_timeout_ms` and tried again after a rest, so ingest is never queued for long.
    A partition still not dropped after _DROP_ATTEMPTS is left to the batched deletes.
    """
    async with database.session() as session:
        ends = await AuditRepository(session).month_partitions()
    dropped = 0
    for name, end in sorted(ends.items(), key=lambda item: item[1]):
        if end > cutoff:
            continue
        for _ in range(_DROP_ATTEMPTS):
            try:
                async with database.transaction() as session:
                    audit = AuditRepository(session)
                    rows = await audit.partition_rows(name)
                    await audit.drop_partition(name, lock_timeout_ms=lock_timeout_ms)
            except DBAPIError as exc:
                if getattr(exc.orig, "sqlstate", None) != _LOCK_NOT_AVAILABLE:
                    raise
                await asyncio.sleep(random.uniform(0.5, 1.5) * _DROP_RETRY_SECONDS)
                continue
            dropped += rows
            log.info("audit partition dropped", extra={"partition": name, "rows": rows})
            break
    return dropped
