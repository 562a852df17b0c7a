"""Screenshot retention by plan, and the stored-bytes figures by plan.

Expired screenshots are deleted from storage first and marked EXPIRED after, so a crash never leaves an
object nothing points to; one replica works at a time (advisory lock). Details:
docs/architecture.md, "Screenshot retention".
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc
from prometheus_client import Counter, Gauge

from apidevs.alerts.v1 import storage_service_pb2, storage_service_pb2_grpc
from mesh.loops import BackgroundLoop
from signal_service.audit.service import ensure_audit_partitions
from signal_service.database import DATABASE_AWAY, Database
from signal_service.retention.repository import ExpiringScreenshot, RetentionRepository
from signal_service.sessions.repository import TradingViewSessionRepository
from signal_service.settings import SignalSettings

log = logging.getLogger(__name__)

# pg_try_advisory_xact_lock key of the retention job: "retain" in ASCII.
RETENTION_LOCK_KEY = 0x72657461696E
_MAX_KEYS_PER_CALL = 1000  # StorageService.DeleteObjects' limit
# Quarter duty: a pass rests three times as long as each batch took. At half duty, 1 M expiries at 10 M
# signals ran at 3,185/s and wrote 2 GB of WAL a minute, mostly full-page images (289,292 in the minute)
# of the random old pages each expiry touches; the checkpoints that volume forced every 15 s made more of
# them, and ingest's p99 rose 1.7x (docs/perf/scale.md, Round 7).
_PAUSE_RATIO = 3.0
_DELETE_TIMEOUT_SECONDS = 30.0

STORAGE_BYTES = Gauge("alerts_storage_bytes", "Bytes of stored screenshots, by plan", ["plan"])
STORAGE_OBJECTS = Gauge("alerts_storage_objects", "Stored screenshots, by plan", ["plan"])
SCREENSHOTS_EXPIRED = Counter("alerts_screenshots_expired_total", "Screenshots deleted by retention")
RETENTION_DELETE_FAILURES = Counter(
    "alerts_retention_delete_failures_total", "Screenshot deletions that failed and wait for the next pass"
)


@dataclass(frozen=True, slots=True)
class RetentionPass:
    expired: int
    # Objects storage failed to delete: their rows stay COMPLETED, and the pass is retried soon.
    failed_deletions: int


@dataclass(frozen=True, slots=True)
class _Batch:
    expired: int
    failed: int
    # The batch was full: more may be due.
    more_due: bool


class RetentionIncompleteError(Exception):
    """A pass left screenshots whose objects storage did not delete: they are tried again soon."""


class RetentionJob:
    def __init__(
        self,
        *,
        database: Database,
        settings: SignalSettings,
        storage: storage_service_pb2_grpc.StorageServiceAsyncStub,
    ) -> None:
        self._database = database
        self._settings = settings
        self._storage = storage
        # A pass that failed (storage or the database away) is tried again after retention_retry_seconds
        # (with jitter), rather than a whole retention_interval_seconds later.
        self.expiry = BackgroundLoop(
            "screenshot-retention",
            self._expire,
            interval_seconds=settings.retention_interval_seconds,
            min_backoff_seconds=settings.retention_retry_seconds,
            max_backoff_seconds=settings.retention_retry_seconds,
            expected_errors=(*DATABASE_AWAY, RetentionIncompleteError),
        )
        self.usage = BackgroundLoop(
            "storage-usage",
            self.refresh_usage,
            interval_seconds=settings.storage_usage_refresh_seconds,
            max_backoff_seconds=settings.storage_usage_refresh_seconds,
            expected_errors=DATABASE_AWAY,
        )

    @property
    def loops(self) -> tuple[BackgroundLoop, ...]:
        return (self.expiry, self.usage)

    def cutoffs(self, now: datetime) -> dict[str, datetime]:
        return {
            plan: now - timedelta(days=days)
            for plan, days in self._settings.screenshot_retention_days.items()
        }

    async def expire_due(self, now: datetime | None = None) -> int:
        """One pass; returns how many screenshots expired (0 when another replica runs the job)."""
        return (await self.run_pass(now)).expired

    async def run_pass(self, now: datetime | None = None) -> RetentionPass:
        """Expires batch after batch until one is not full or a deletion fails.

        No cap on the batches: each is its own short transaction, and the pass rests as long as each
        batch took, so a backlog (a plan's retention shortened, say) is worked off in one pass instead of
        a slice per interval, at a pace ingest does not feel.
        """
        cutoffs = self.cutoffs(now or datetime.now(UTC))
        expired = failed = 0
        while True:
            started = time.perf_counter()
            batch = await self._expire_batch(cutoffs)
            expired += batch.expired
            failed += batch.failed
            if not batch.more_due or batch.failed:
                break
            # The storage deletions and the batch's statements share this process's event loop and the
            # machine with ingest, and PostgreSQL writes the batch's pages back after it commits: a backlog is
            # worked off at a quarter of full speed rather than at ingest's expense.
            await asyncio.sleep((time.perf_counter() - started) * _PAUSE_RATIO)
        if expired:
            log.info("screenshots expired", extra={"count": expired})
        return RetentionPass(expired=expired, failed_deletions=failed)

    async def _expire_batch(self, cutoffs: dict[str, datetime]) -> _Batch:
        limit = self._settings.retention_batch_size
        async with self._database.transaction() as session:
            if not await TradingViewSessionRepository(session).try_lock(RETENTION_LOCK_KEY):
                return _Batch(expired=0, failed=0, more_due=False)
            retention = RetentionRepository(session)
            due = await retention.expired(cutoffs, limit)
            deleted = await self._delete_objects(due)
            await retention.mark_expired(deleted)
        SCREENSHOTS_EXPIRED.inc(len(deleted))
        return _Batch(expired=len(deleted), failed=len(due) - len(deleted), more_due=len(due) == limit)

    async def _delete_objects(self, due: list[ExpiringScreenshot]) -> list[ExpiringScreenshot]:
        """The screenshots whose objects are gone now, whether deleted here or missing already: one
        DeleteObjects call per batch, not one call per object."""
        keys = [item.object_key for item in due if item.object_key]
        failed: set[str] = set()
        for start in range(0, len(keys), _MAX_KEYS_PER_CALL):
            chunk = keys[start : start + _MAX_KEYS_PER_CALL]
            try:
                response = await self._storage.DeleteObjects(
                    storage_service_pb2.DeleteObjectsRequest(keys=chunk), timeout=_DELETE_TIMEOUT_SECONDS
                )
            except grpc.aio.AioRpcError as exc:
                log.warning(
                    "deleting expired screenshots failed", extra={"keys": len(chunk), "code": exc.code().name}
                )
                failed.update(chunk)
                continue
            failed.update(response.failed_keys)
        if failed:
            RETENTION_DELETE_FAILURES.inc(len(failed))
        return [item for item in due if not item.object_key or item.object_key not in failed]

    async def refresh_usage(self) -> None:
        async with self._database.session() as session:
            usage = await RetentionRepository(session).usage_by_plan()
        for plan in self._settings.screenshot_retention_days:
            figures = usage.get(plan)
            STORAGE_BYTES.labels(plan).set(figures.bytes if figures else 0)
            STORAGE_OBJECTS.labels(plan).set(figures.objects if figures else 0)

    async def _expire(self) -> None:
        # The coming months' audit_logs partitions are made here, well before their first row (which would
        # otherwise land in the default partition); failing to make them must not hold up screenshot expiry.
        try:
            await ensure_audit_partitions(self._database)
        except Exception:
            log.exception("creating the coming months' audit partitions failed")
        if (await self.run_pass()).failed_deletions:
            raise RetentionIncompleteError("storage did not delete every expired screenshot")


__all__ = ["RETENTION_LOCK_KEY", "RetentionIncompleteError", "RetentionJob", "RetentionPass"]
