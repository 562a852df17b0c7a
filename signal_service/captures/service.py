"""Screenshot capture coordination: claims, reported results, retries and the stale-capture sweeper."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from mesh.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError
from mesh.logging import request_id_var
from mesh.loops import BackgroundLoop
from mesh.queues import capture_actor, capture_queue
from signal_service.captures.queued import CaptureMessages
from signal_service.captures.repository import CaptureRepository
from signal_service.clock import utcnow
from signal_service.database import DATABASE_AWAY, Database
from signal_service.events.repository import EventRepository
from signal_service.ids import require_uuid
from signal_service.models import EventType, OutboxMessage, Screenshot, ScreenshotStatus, Signal, SignalEvent
from signal_service.outbox.repository import OutboxEntry, OutboxRepository
from signal_service.sessions.repository import TradingViewSessionRepository
from signal_service.sessions.service import SESSION_INVALID_REASON, record_capture_result
from signal_service.settings import SignalSettings
from signal_service.signals.repository import SignalRepository, SignalRow
from signal_service.signals.service import SignalPage, decode_page_token, encode_page_token, page_size
from signal_service.users.repository import UserRepository

log = logging.getLogger(__name__)


def capture_job(signal_id: uuid.UUID, plan: str) -> OutboxEntry:
    options: dict[str, Any] = {}
    request_id = request_id_var.get()
    if request_id:
        options["request_id"] = request_id
    return OutboxEntry(
        # One actor per plan queue, "capture_screenshot_<plan>": a Dramatiq worker orders prefetched jobs by
        # their actor's priority, so the plan's priority travels in the actor name (capture_service/tasks.py).
        queue_name=capture_queue(plan),
        actor_name=capture_actor(plan),
        args=[str(signal_id)],
        options=options,
    )


def capture_message(signal_id: uuid.UUID, plan: str) -> OutboxMessage:
    job = capture_job(signal_id, plan)
    # Columns with a server default (created_at, ...) are left to PostgreSQL.
    return OutboxMessage(  # type: ignore[call-arg]
        queue_name=job.queue_name, actor_name=job.actor_name, args=job.args, options=job.options
    )


def assigned_object_key(signal: Signal) -> str:
    """The one storage key a signal's screenshot may have: under its owner's prefix, named by its id.

    Derived here rather than by the worker, so that a report can name no other user's object (which
    the signal's viewer would then show and its retention delete).
    """
    created_at = signal.created_at.astimezone(UTC)
    return f"screenshots/{signal.user_id}/{created_at:%Y}/{created_at:%m}/{signal.id}.png"


@dataclass(frozen=True, slots=True)
class CaptureClaim:
    proceed: bool
    row: SignalRow
    chart_id: str
    session_ciphertext: bytes
    plan: str
    # The claim's number (screenshots.claim); 0 when it does not proceed.
    claim: int = 0

    @property
    def object_key(self) -> str:
        return assigned_object_key(self.row.signal)


_RETRY_BATCH_LIMIT = 10_000
_TERMINAL = {ScreenshotStatus.COMPLETED, ScreenshotStatus.SKIPPED, ScreenshotStatus.EXPIRED}


class CaptureCoordinator:
    def __init__(
        self,
        *,
        database: Database,
        settings: SignalSettings,
        messages: CaptureMessages,
        on_commit: Any = None,
    ) -> None:
        self._database = database
        self._settings = settings
        self._messages = messages
        self._on_commit = on_commit or (lambda: None)
        self.sweeper = BackgroundLoop(
            "capture-sweeper",
            self._sweep,
            interval_seconds=settings.sweep_interval_seconds,
            max_backoff_seconds=settings.sweep_interval_seconds,
            expected_errors=DATABASE_AWAY,
            first_run_after_interval=True,
        )

    async def _sweep(self) -> None:
        await self.sweep_stale()

    async def claim(
        self, signal_id: str, *, attempt: int, worker_id: str, resumes_claim: int = 0
    ) -> CaptureClaim:
        """Marks the capture PROCESSING under a new claim number.

        `attempts` counts attempts at the chart: a delivery resuming the latest claim (its job put back on
        the queue because a dependency was unavailable, nobody having claimed since) continues that attempt.
        """
        parsed = require_uuid(signal_id, "signal_id")
        async with self._database.transaction() as session:
            signals, captures, users = (
                SignalRepository(session),
                CaptureRepository(session),
                UserRepository(session),
            )
            row = await signals.get(parsed, for_update=True)
            if row is None or row.screenshot is None:
                raise NotFoundError("no capture for this signal", reason="CAPTURE_NOT_FOUND")
            found = await users.get(row.signal.user_id)
            assert found is not None
            user, config = found
            chart_id = row.signal.chart_id or config.default_chart_id or ""
            if ScreenshotStatus(row.screenshot.status) in _TERMINAL:
                return CaptureClaim(False, row, chart_id, b"", user.plan)
            now = utcnow()
            resumed = resumes_claim != 0 and resumes_claim == row.screenshot.claim
            claim_number = row.screenshot.claim + 1
            await captures.update_screenshot(
                parsed,
                status=ScreenshotStatus.PROCESSING,
                attempts=row.screenshot.attempts + (0 if resumed else 1),
                claim=claim_number,
                worker_id=worker_id[:200] or None,
                claimed_at=now,
                error=None,
            )
            if row.signal.screenshot_status != ScreenshotStatus.PROCESSING:
                await signals.update_signal(parsed, screenshot_status=ScreenshotStatus.PROCESSING)
                await self._event(session, user.id, parsed, EventType.SCREENSHOT_UPDATED)
            row = await signals.get(parsed)
            assert row is not None
        self._on_commit()
        return CaptureClaim(True, row, chart_id, config.tv_session_ciphertext or b"", user.plan, claim_number)

    async def report(
        self,
        signal_id: str,
        *,
        status: ScreenshotStatus,
        object_key: str,
        error: str,
        size_bytes: int,
        width: int,
        height: int,
        duration_ms: int,
        claim: int = 0,
    ) -> SignalRow:
        """Records a claim's outcome; idempotent per claim (see ReportCaptureRequest.claim). COMPLETED is
        taken from any claim, with the assigned key only."""
        if status not in (ScreenshotStatus.PROCESSING, ScreenshotStatus.COMPLETED, ScreenshotStatus.FAILED):
            raise InvalidArgumentError(
                "status must be PROCESSING, COMPLETED or FAILED", reason="INVALID_CAPTURE_STATUS"
            )
        if status == ScreenshotStatus.COMPLETED and not object_key:
            raise InvalidArgumentError("COMPLETED needs object_key", reason="MISSING_OBJECT_KEY")
        parsed = require_uuid(signal_id, "signal_id")
        now = utcnow()
        async with self._database.transaction() as session:
            signals, captures = SignalRepository(session), CaptureRepository(session)
            row = await signals.get(parsed, for_update=True)
            if row is None or row.screenshot is None:
                raise NotFoundError("no capture for this signal", reason="CAPTURE_NOT_FOUND")
            if object_key and object_key != assigned_object_key(row.signal):
                raise InvalidArgumentError(
                    "object_key is not the key assigned to this signal (ClaimCaptureResponse.object_key)",
                    reason="OBJECT_KEY_NOT_ASSIGNED",
                )
            current = ScreenshotStatus(row.screenshot.status)
            if current == ScreenshotStatus.COMPLETED:
                # At-least-once delivery: a late duplicate report never undoes a finished capture.
                if status == ScreenshotStatus.COMPLETED and object_key == row.screenshot.object_key:
                    return row
                raise FailedPreconditionError("capture already completed", reason="CAPTURE_COMPLETED")
            latest = row.screenshot.claim
            if status != ScreenshotStatus.COMPLETED and claim:
                if claim < latest:
                    raise FailedPreconditionError(
                        f"claim {claim} was superseded by claim {latest}", reason="STALE_CLAIM"
                    )
                if status == current == ScreenshotStatus.FAILED:
                    # The same claim's failure again (a held report sent twice): already recorded.
                    return row
            values: dict[str, Any] = {"status": status}
            if status == ScreenshotStatus.COMPLETED:
                values |= {
                    "object_key": object_key,
                    "size_bytes": size_bytes or None,
                    "width": width or None,
                    "height": height or None,
                    "duration_ms": duration_ms or None,
                    "completed_at": now,
                    "error": None,
                }
            elif status == ScreenshotStatus.FAILED:
                values |= {"error": (error or "unknown")[:500], "completed_at": now}
            else:
                values |= {"claimed_at": now}
            retry_with_new_session = await self._note_session_result(session, row, status, error, now)
            if retry_with_new_session:
                plans = await UserRepository(session).plans({row.signal.user_id})
                await self._requeue(session, row, plans[row.signal.user_id])
            else:
                await captures.update_screenshot(parsed, **values)
                await signals.update_signal(parsed, screenshot_status=status)
                if status != current:
                    await self._event(session, row.signal.user_id, parsed, EventType.SCREENSHOT_UPDATED)
            updated = await signals.get(parsed)
            assert updated is not None
        if retry_with_new_session:
            self._on_commit()
        return updated

    async def _note_session_result(
        self, session: Any, row: SignalRow, status: ScreenshotStatus, error: str, now: datetime
    ) -> bool:
        """Records what the capture showed about the user's TradingView session (sessions/service.py).

        True when it failed for an invalid session on cookies the user has replaced since it was claimed:
        it is then queued again rather than failed.
        """
        assert row.screenshot is not None
        invalid = status == ScreenshotStatus.FAILED and error == SESSION_INVALID_REASON
        if not invalid and status != ScreenshotStatus.COMPLETED:
            return False
        used_stored_session = await record_capture_result(
            session,
            row.signal.user_id,
            valid=not invalid,
            claimed_at=row.screenshot.claimed_at,
            now=now,
            spacing=timedelta(seconds=self._settings.session_check_min_spacing_seconds),
        )
        return invalid and not used_stored_session

    async def requeue_session_failures(self, session: Any, user_id: uuid.UUID, plan: str) -> int:
        """Within the caller's transaction, re-queues the user's captures that failed for an invalid
        session on recent signals (``session_requeue_window_seconds``), oldest first, on the plan's queue."""
        since = utcnow() - timedelta(seconds=self._settings.session_requeue_window_seconds)
        rows = await TradingViewSessionRepository(session).failed_captures(
            user_id, error=SESSION_INVALID_REASON, created_since=since, limit=_RETRY_BATCH_LIMIT
        )
        for row in rows:
            await self._requeue(session, row, plan)
        return len(rows)

    async def failed(self, *, user_id: str, size: int, page_token: str) -> SignalPage:
        limit = page_size(size)
        after = decode_page_token(page_token) if page_token else None
        owner = require_uuid(user_id, "user_id") if user_id else None
        async with self._database.session() as session:
            rows = await CaptureRepository(session).failed(user_id=owner, after=after, limit=limit + 1)
        next_token = encode_page_token(rows[limit - 1]) if len(rows) > limit else ""
        return SignalPage(rows=rows[:limit], next_page_token=next_token)

    async def retry(self, signal_ids: Sequence[str], *, all_failed: bool) -> int:
        """Puts FAILED captures back on their plan's queue, oldest first; returns how many."""
        if all_failed == bool(signal_ids):
            raise InvalidArgumentError(
                "give either signal_ids or all_failed", reason="INVALID_RETRY_SELECTION"
            )
        ids = [require_uuid(value, "signal_id") for value in signal_ids]
        requeued = 0
        async with self._database.transaction() as session:
            rows = await CaptureRepository(session).failed_for_update(
                ids=ids or None, limit=_RETRY_BATCH_LIMIT
            )
            plans = await UserRepository(session).plans({row.signal.user_id for row in rows}, lock=True)
            for row in sorted(rows, key=lambda row: row.signal.created_at):
                await self._requeue(session, row, plans[row.signal.user_id])
                requeued += 1
        if requeued:
            self._on_commit()
        return requeued

    async def sweep_stale(self) -> int:
        """Captures left with no job go back to their queue: PROCESSING past its claim's staleness (the
        worker died and its message is gone) or PENDING past its own (the queue message was lost, e.g.
        Redis restarted empty), in either case with no outbox row and no message in the broker. A message
        waiting in the queue, fetched by a worker, or delayed (a job waiting for storage or the signal
        service, an outcome held until recorded, a retry's backoff) means a job still owns the capture.
        A capture that already had every attempt fails for good. Re-sending is safe anyway: the capture
        actor does nothing for a capture that already finished, and reports are idempotent per claim."""
        now = utcnow()
        cutoffs = {
            ScreenshotStatus.PROCESSING: now - timedelta(seconds=self._settings.capture_stale_after_seconds),
            ScreenshotStatus.PENDING: now
            - timedelta(seconds=self._settings.capture_pending_stale_after_seconds),
        }
        # The candidates' ids first, with no lock and no row: while the workers are behind, thousands of
        # captures are stale and every one of them still queued, and locking and loading them all every
        # pass stalled ingest (bench_scale at 10 M: 300 ms every 31 s, docs/perf/scale.md).
        async with self._database.session() as session:
            captures = CaptureRepository(session)
            candidates = {
                status: await captures.stale_ids(status, cutoff, _RETRY_BATCH_LIMIT)
                for status, cutoff in cutoffs.items()
            }
        if not any(candidates.values()):
            return 0
        # Asked after the candidates were read: the outbox relay enqueues (and marks) before it deletes a
        # row, and a worker enqueues (and marks) a job's delayed copy before it acknowledges the job, so
        # one of the two is seen.
        without_job = await self._messages.unowned({id_ for ids in candidates.values() for id_ in ids})
        unowned = {
            status: [signal_id for signal_id in ids if signal_id in without_job]
            for status, ids in candidates.items()
        }
        if not any(unowned.values()):
            return 0
        async with self._database.transaction() as session:
            signals, captures = SignalRepository(session), CaptureRepository(session)
            # Locked, and checked again: a capture claimed, re-queued or finished since it was read drops out.
            locked = {
                status: await captures.lock_stale(status, cutoffs[status], ids) if ids else []
                for status, ids in unowned.items()
            }
            processing, pending = locked[ScreenshotStatus.PROCESSING], locked[ScreenshotStatus.PENDING]
            plans = await UserRepository(session).plans(
                {row.signal.user_id for row in processing + pending}, lock=True
            )
            for row in processing:
                assert row.screenshot is not None
                if row.screenshot.attempts >= self._settings.capture_max_attempts:
                    await captures.update_screenshot(
                        row.signal.id, status=ScreenshotStatus.FAILED, error="WORKER_LOST", completed_at=now
                    )
                    await signals.update_signal(row.signal.id, screenshot_status=ScreenshotStatus.FAILED)
                    await self._event(
                        session, row.signal.user_id, row.signal.id, EventType.SCREENSHOT_UPDATED
                    )
                else:
                    await self._requeue(session, row, plans[row.signal.user_id])
            for row in pending:
                await self._requeue(session, row, plans[row.signal.user_id])
        swept = len(processing) + len(pending)
        if swept:
            log.warning(
                "stale captures swept", extra={"processing": len(processing), "pending": len(pending)}
            )
            self._on_commit()
        return swept

    async def _requeue(self, session: Any, row: SignalRow, plan: str) -> None:
        signals, captures = SignalRepository(session), CaptureRepository(session)
        # A new claim generation: a late report from a claim before the re-queue is refused as stale.
        await captures.update_screenshot(
            row.signal.id,
            status=ScreenshotStatus.PENDING,
            error=None,
            claimed_at=None,
            completed_at=None,
            claim=Screenshot.claim + 1,
        )
        await signals.update_signal(row.signal.id, screenshot_status=ScreenshotStatus.PENDING)
        await OutboxRepository(session).add(capture_message(row.signal.id, plan))
        await self._event(session, row.signal.user_id, row.signal.id, EventType.SCREENSHOT_UPDATED)

    async def _event(self, session: Any, user_id: uuid.UUID, signal_id: uuid.UUID, kind: EventType) -> None:
        seq = await UserRepository(session).next_event_seq(user_id)
        await EventRepository(session).add(
            # Columns with a server default (created_at, ...) are left to PostgreSQL.
            SignalEvent(user_id=user_id, seq=seq, type=kind, signal_id=signal_id)  # type: ignore[call-arg]
        )
