"""The TradingView session lifecycle: periodic checks, recorded results, renewal.

State lives in user_config (the cookies only as ciphertext); results come from session check jobs and
from every capture. One replica schedules at a time (advisory lock), one check of a user runs at a time.
The state, scheduling and renewal rules are in docs/architecture.md, "TradingView sessions".
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import Counter
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession

from mesh.errors import FailedPreconditionError, InvalidArgumentError
from mesh.logging import request_id_var
from mesh.loops import BackgroundLoop
from mesh.queues import SESSION_CHECK_ACTOR, SESSION_CHECK_QUEUE, WORKER_HEARTBEAT_TIMEOUT_MS
from signal_service.database import DATABASE_AWAY, Database
from signal_service.events.repository import EventRepository
from signal_service.ids import parse_uuid
from signal_service.models import EventType, OutboxMessage, SignalEvent, User, UserConfig
from signal_service.outbox.repository import OutboxRepository
from signal_service.sessions.repository import CheckTarget, TradingViewSessionRepository
from signal_service.settings import SignalSettings
from signal_service.users.repository import UserRepository
from signal_service.visibility import no_such_user

log = logging.getLogger(__name__)

# The capture failure reason that means "TradingView showed its sign-in page" (capture_service/errors.py).
SESSION_INVALID_REASON = "tradingview_session_invalid"
# pg_try_advisory_xact_lock key of the check scheduler: "tvcheck" in ASCII.
SCHEDULER_LOCK_KEY = 0x7476636865636B
_WAIT_POLL_SECONDS = 0.25

SESSION_CHECKS_SCHEDULED = Counter(
    "alerts_session_checks_scheduled_total", "TradingView session checks queued, by cause", ["cause"]
)
SESSION_RESULTS = Counter(
    "alerts_session_results_total",
    "TradingView session results recorded, by source (check, capture) and validity",
    ["source", "valid"],
)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def session_version(ciphertext: bytes) -> str:
    """Names one stored session without revealing it: every SetTradingViewSession encrypts afresh."""
    return hashlib.sha256(ciphertext).hexdigest()[:32]


def session_check_message(user_id: uuid.UUID) -> OutboxMessage:
    options: dict[str, Any] = {}
    request_id = request_id_var.get()
    if request_id:
        options["request_id"] = request_id
    # Columns with a server default (created_at, ...) are left to PostgreSQL.
    return OutboxMessage(  # type: ignore[call-arg]
        queue_name=SESSION_CHECK_QUEUE, actor_name=SESSION_CHECK_ACTOR, args=[str(user_id)], options=options
    )


def session_state(config: UserConfig) -> dict[str, Any]:
    """The state an event carries and GetUser shows; JSON-ready, with no secret in it."""
    checked = config.tv_cookies_checked_at is not None
    return {
        "configured": config.tv_session_ciphertext is not None,
        "checked": checked,
        "valid": bool(config.tv_cookies_valid) and checked,
        "checked_at": _iso(config.tv_cookies_checked_at),
        "changed_at": _iso(config.tv_cookies_changed_at),
    }


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat() if moment is not None else None


async def _session_event(session: AsyncSession, user_id: uuid.UUID) -> None:
    """Appends the user's current session state to their event log; the caller holds the user's lock."""
    config = await TradingViewSessionRepository(session).config(user_id)
    assert config is not None
    seq = await UserRepository(session).next_event_seq(user_id)
    await EventRepository(session).add(
        # Columns with a server default (created_at, ...) are left to PostgreSQL.
        SignalEvent(  # type: ignore[call-arg]
            user_id=user_id,
            seq=seq,
            type=EventType.TRADINGVIEW_SESSION_UPDATED,
            signal_id=None,
            payload=session_state(config),
        )
    )


async def _record_result(
    session: AsyncSession, config: UserConfig, *, valid: bool, now: datetime, source: str
) -> None:
    """Stores a result for the stored cookies; the caller holds the user lock and read `config` under it."""
    changed = config.tv_cookies_checked_at is None or config.tv_cookies_valid is not valid
    values: dict[str, Any] = {"tv_cookies_valid": valid, "tv_cookies_checked_at": now}
    if changed:
        values["tv_cookies_changed_at"] = now
    await UserRepository(session).update_config(config.user_id, **values)
    if changed:
        await _session_event(session, config.user_id)
        log.info(
            "TradingView session state changed",
            extra={"user_id": str(config.user_id), "valid": valid, "source": source},
        )
    SESSION_RESULTS.labels(source, str(valid).lower()).inc()


async def record_renewal(session: AsyncSession, user_id: uuid.UUID) -> None:
    """New cookies were stored (the caller holds the user's lock): announce them and queue their check."""
    await _session_event(session, user_id)
    await OutboxRepository(session).add(session_check_message(user_id))
    SESSION_CHECKS_SCHEDULED.labels("renewal").inc()


async def record_capture_result(
    session: AsyncSession,
    user_id: uuid.UUID,
    *,
    valid: bool,
    claimed_at: datetime | None,
    now: datetime,
    spacing: timedelta,
) -> bool:
    """What a finished capture learned about its user's session.

    Returns False when the capture ran on cookies that were replaced after its claim: its result says
    nothing about the stored ones (a failed one is then worth trying again with them).
    """
    repository = TradingViewSessionRepository(session)
    config = await repository.config(user_id)
    if config is None or config.tv_session_ciphertext is None:
        return False
    if valid and _recently_confirmed(config, now, spacing):
        return not _replaced_since(config, claimed_at)
    await UserRepository(session).lock(user_id)
    config = await repository.config(user_id)
    assert config is not None
    if _replaced_since(config, claimed_at):
        return False
    if not (valid and _recently_confirmed(config, now, spacing)):
        await _record_result(session, config, valid=valid, now=now, source="capture")
    return True


def _recently_confirmed(config: UserConfig, now: datetime, spacing: timedelta) -> bool:
    checked_at = config.tv_cookies_checked_at
    return config.tv_cookies_valid is True and checked_at is not None and checked_at > now - spacing


def _replaced_since(config: UserConfig, claimed_at: datetime | None) -> bool:
    set_at = config.tv_session_set_at
    return claimed_at is None or (set_at is not None and claimed_at < set_at)


def _answered(config: UserConfig) -> bool:
    """A result arrived after the latest check was queued."""
    checked_at, requested_at = config.tv_cookies_checked_at, config.tv_check_requested_at
    return checked_at is not None and requested_at is not None and checked_at >= requested_at


def _running_elsewhere(config: UserConfig, check_id: str, claimed_since: datetime) -> bool:
    """Another job claimed a check since `claimed_since` and has given no result yet."""
    claimed_at, checked_at = config.tv_check_claimed_at, config.tv_cookies_checked_at
    if claimed_at is None or claimed_at < claimed_since:
        return False
    if checked_at is not None and checked_at >= claimed_at:
        return False
    return not check_id or config.tv_check_claimed_by != check_id


def _user_id(value: str) -> uuid.UUID:
    parsed = parse_uuid(value)
    if parsed is None:
        raise InvalidArgumentError("user_id must be a UUID", reason="INVALID_USER_ID")
    return parsed


@dataclass(frozen=True, slots=True)
class SessionCheckClaim:
    proceed: bool
    version: str = ""
    ciphertext: bytes = b""
    target: CheckTarget | None = None


class SessionChecks:
    """The check job's two calls, and SetTradingViewSession's bounded wait for the first result."""

    def __init__(
        self, *, database: Database, settings: SignalSettings, redis: Redis | None, workers_key: str
    ) -> None:
        self._database = database
        self._settings = settings
        self._redis = redis
        self._workers_key = workers_key

    async def claim(self, user_id: str, check_id: str) -> SessionCheckClaim:
        parsed = _user_id(user_id)
        now = _utcnow()
        lease = timedelta(seconds=self._settings.session_check_lease_seconds)
        async with self._database.transaction() as session:
            users, repository = UserRepository(session), TradingViewSessionRepository(session)
            if await users.lock(parsed) is None:
                raise no_such_user()
            config = await repository.config(parsed)
            assert config is not None
            ciphertext = config.tv_session_ciphertext
            if ciphertext is None or _answered(config) or _running_elsewhere(config, check_id, now - lease):
                return SessionCheckClaim(proceed=False)
            await users.update_config(
                parsed, tv_check_claimed_at=now, tv_check_claimed_by=check_id[:200] or None
            )
            target = await repository.check_target(parsed, config.default_chart_id)
        return SessionCheckClaim(
            proceed=True, version=session_version(ciphertext), ciphertext=ciphertext, target=target
        )

    async def report(self, user_id: str, *, version: str, valid: bool) -> tuple[User, UserConfig]:
        parsed = _user_id(user_id)
        async with self._database.transaction() as session:
            users = UserRepository(session)
            if await users.lock(parsed) is None:
                raise no_such_user()
            config = await TradingViewSessionRepository(session).config(parsed)
            assert config is not None
            ciphertext = config.tv_session_ciphertext
            if ciphertext is None or session_version(ciphertext) != version:
                raise FailedPreconditionError(
                    "the checked session is no longer the stored one", reason="SESSION_REPLACED"
                )
            await _record_result(session, config, valid=valid, now=_utcnow(), source="check")
            found = await users.get(parsed)
        assert found is not None
        return found

    async def wait_for_first_check(self, user_id: uuid.UUID, set_at: datetime) -> None:
        """Returns once the cookies set at `set_at` have a result, were replaced, or the wait is over.

        Waits only while some capture worker is alive: without one, nobody would run the check.
        """
        timeout = self._settings.session_check_wait_seconds
        if timeout <= 0 or not await self._worker_alive():
            return
        deadline = time.monotonic() + timeout
        while True:
            async with self._database.session() as session:
                config = await TradingViewSessionRepository(session).config(user_id)
            if config is None or config.tv_session_set_at != set_at:
                return
            if config.tv_cookies_checked_at is not None:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log.info("session check still running; answering unchecked", extra={"user_id": str(user_id)})
                return
            await asyncio.sleep(min(_WAIT_POLL_SECONDS, remaining))

    async def _worker_alive(self) -> bool:
        if self._redis is None:
            return False
        try:
            since = time.time() * 1000 - WORKER_HEARTBEAT_TIMEOUT_MS
            return await self._redis.zcount(self._workers_key, since, "+inf") > 0
        except RedisError:
            return False


class SessionCheckScheduler:
    """Queues due users' session checks; every replica runs one, one at a time does the work."""

    def __init__(self, *, database: Database, settings: SignalSettings, on_commit: Any = None) -> None:
        self._database = database
        self._settings = settings
        self._on_commit = on_commit or (lambda: None)
        self.loop = BackgroundLoop(
            "session-check-scheduler",
            self._tick,
            interval_seconds=settings.session_check_tick_seconds,
            min_backoff_seconds=settings.session_check_tick_seconds / 4,
            max_backoff_seconds=settings.session_check_tick_seconds,
            expected_errors=DATABASE_AWAY,
            first_run_after_interval=True,
        )

    async def schedule_due(self, now: datetime | None = None) -> int:
        """One tick: queues up to a batch of due checks; 0 when another replica holds the scheduler lock."""
        now = now or _utcnow()
        settings = self._settings
        async with self._database.transaction() as session:
            repository = TradingViewSessionRepository(session)
            if not await repository.try_lock(SCHEDULER_LOCK_KEY):
                return 0
            due = await repository.due_for_check(
                checked_before=now - timedelta(seconds=settings.session_check_interval_seconds),
                requested_before=now - timedelta(seconds=settings.session_check_min_spacing_seconds),
                claimed_before=now - timedelta(seconds=settings.session_check_lease_seconds),
                active_since=now - timedelta(days=settings.session_check_active_days),
                limit=settings.session_check_batch_size,
            )
            outbox = OutboxRepository(session)
            for user_id in due:
                await outbox.add(session_check_message(user_id))
            await repository.mark_check_requested(due, now)
        if due:
            SESSION_CHECKS_SCHEDULED.labels("periodic").inc(len(due))
            log.info("session checks queued", extra={"count": len(due)})
            self._on_commit()
        return len(due)

    async def _tick(self) -> None:
        await self.schedule_due()


__all__ = [
    "SESSION_INVALID_REASON",
    "SessionCheckClaim",
    "SessionCheckScheduler",
    "SessionChecks",
    "record_capture_result",
    "record_renewal",
    "session_check_message",
    "session_state",
    "session_version",
]
