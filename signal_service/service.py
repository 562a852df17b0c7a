"""The signal service's domain logic: webhook intake, reads, captures and users.

Each public method is one unit of work: it opens a transaction, calls repositories, and commits at its
end; messages for the broker are written to the outbox in that same transaction and sent after commit.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import math
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy.exc import IntegrityError

from mesh.coalescer import Coalescer
from mesh.crypto import CookieCipher
from mesh.errors import (
    AlertsError,
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnavailableError,
)
from mesh.logging import request_id_var
from mesh.queues import PLANS_BY_PRIORITY, capture_actor, capture_queue
from signal_service import allowlist, tokens
from signal_service.audit import AuditWriter
from signal_service.database import Database, database_unreachable
from signal_service.group_commit import GroupCommit
from signal_service.ids import parse_uuid, uuid7
from signal_service.models import (
    AuditLog,
    EventType,
    OutboxMessage,
    Plan,
    ScreenshotStatus,
    SignalEvent,
    SignalResult,
    User,
    UserConfig,
)
from signal_service.parsing import IndicatorCatalog, ParsedAlert, parse_alert
from signal_service.ratelimit import RateLimiter
from signal_service.repository import (
    EventRepository,
    OutboxEntry,
    OutboxRepository,
    SessionRepository,
    SignalFilter,
    SignalRepository,
    SignalRow,
    UserRepository,
    UserStatsRow,
    WebhookIngest,
    WebhookRepository,
    WebhookUserRow,
)
from signal_service.sessions import (
    SESSION_INVALID_REASON,
    SessionChecks,
    record_capture_result,
    record_renewal,
)
from signal_service.settings import SignalSettings

log = logging.getLogger(__name__)

MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 20
_AUDIT_BODY_LIMIT = 64 * 1024


def _utcnow() -> datetime:
    return datetime.now(UTC)


def next_month_start(moment: datetime) -> datetime:
    first = moment.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return (first + timedelta(days=32)).replace(day=1)


def require_uuid(value: str, what: str) -> uuid.UUID:
    parsed = parse_uuid(value)
    if parsed is None:
        raise InvalidArgumentError(f"{what} must be a UUID", reason=f"INVALID_{what.upper()}")
    return parsed


# --- webhook intake ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IngestCommand:
    webhook_token: str
    body: bytes
    received_at: datetime
    chart_id: str = ""
    content_type: str = ""
    source_ip: str = ""
    user_agent: str = ""
    query: Mapping[str, str] = field(default_factory=dict)
    idempotency_key: str = ""
    # What the caller received; more than len(body) when the edge cut an oversize body short.
    body_size: int = 0
    # Set when the edge already refused the call itself and only reports it for the audit log.
    edge_refusal: str = ""


@dataclass(frozen=True, slots=True)
class IngestResult:
    signal_id: uuid.UUID
    screenshot_status: ScreenshotStatus
    estimated_wait_seconds: int
    duplicate: bool


class QueueBacklog:
    """The latest known length of each capture queue, refreshed by the outbox relay."""

    def __init__(self) -> None:
        self.lengths: dict[str, int] = {}

    def ahead_of(self, plan: str) -> int:
        """Jobs a new job of this plan waits behind: its own queue and every higher-priority one."""
        ahead = 0
        for candidate in PLANS_BY_PRIORITY:
            ahead += self.lengths.get(capture_queue(candidate), 0)
            if candidate == plan:
                break
        return ahead


def _is_replay(command: IngestCommand) -> bool:
    """Only the edge's spool replayer sets an idempotency key (see IngestWebhookRequest).

    Replays skip the rate limits: the edge took the request in while it could not be stored (or shed it
    under a burst), and a spool draining at full speed would otherwise be refused for its replay rate, not
    the user's sending rate. Quota, allowlist and every other check still apply.
    """
    return bool(command.idempotency_key)


@dataclass(frozen=True, slots=True)
class WebhookUser:
    """What intake reads about a token's user before its transaction; the transaction re-verifies it."""

    id: uuid.UUID
    plan: str
    webhook_enabled: bool
    ip_allowlist: tuple[str, ...]


class WebhookUserCache:
    """Recent token -> user lookups, so that a burst of one user's alerts reads the user once.

    Only users found are kept, keyed by the token's hash, and a hit is never trusted to write: the
    intake statement re-checks token, plan, enabled flag and allowlist under the user's row lock and
    answers "stale" when any changed, so a rotated token or a disabled webhook takes effect at once.
    Nor is a hit trusted to refuse: a refusal is decided on a fresh read.
    """

    def __init__(self, ttl_seconds: float, max_entries: int = 100_000) -> None:
        self._ttl = ttl_seconds
        self._max_entries = max_entries
        self._entries: dict[str, tuple[float, WebhookUser]] = {}

    def get(self, token_hash: str) -> WebhookUser | None:
        entry = self._entries.get(token_hash)
        if entry is None:
            return None
        if entry[0] < time.monotonic():
            del self._entries[token_hash]
            return None
        return entry[1]

    def put(self, token_hash: str, user: WebhookUser) -> None:
        if self._ttl <= 0:
            return
        if len(self._entries) >= self._max_entries:
            self._entries.clear()
        self._entries[token_hash] = (time.monotonic() + self._ttl, user)

    def forget(self, token_hash: str) -> None:
        self._entries.pop(token_hash, None)


# A user changed between reading it and storing its alert this many times in a row: let the edge retry.
_STALE_ATTEMPTS = 3


# Refusals the edge decides on its own and reports for the audit log (IngestWebhookRequest.edge_refusal).
EDGE_REFUSALS = frozenset({"BODY_TIMEOUT", "HEADERS_TOO_LARGE", "INCOMPLETE_BODY"})


class WebhookIngestor:
    def __init__(
        self,
        *,
        database: Database,
        settings: SignalSettings,
        catalog: IndicatorCatalog,
        rate_limiter: RateLimiter,
        audit: AuditWriter,
        backlog: QueueBacklog,
        on_commit: Any = None,
    ) -> None:
        self._database = database
        self._settings = settings
        self._catalog = catalog
        self._rate_limiter = rate_limiter
        self._audit = audit
        self._backlog = backlog
        self._on_commit = on_commit or (lambda: None)
        self._users = WebhookUserCache(settings.webhook_user_cache_seconds)
        # A burst of users not cached (a candle close) reads them in a few statements, not one each.
        self._user_reads: Coalescer[str, WebhookUserRow | None] = Coalescer(
            self._read_users, max_batch=500, max_inflight=2
        )
        self._group_commit = GroupCommit(
            database,
            max_batch=settings.ingest_group_commit_max_batch,
            max_inflight=settings.ingest_group_commit_max_inflight,
        )
        self._relay_kick_pending = False

    async def ingest(self, command: IngestCommand) -> IngestResult:
        started = time.perf_counter()
        body_sha256 = hashlib.sha256(command.body).digest()
        user_id: uuid.UUID | None = None
        try:
            if command.edge_refusal:
                user_id = self._known_user_id(command.webhook_token)
                reason = (
                    command.edge_refusal if command.edge_refusal in EDGE_REFUSALS else "INVALID_EDGE_REFUSAL"
                )
                raise InvalidArgumentError("refused at the edge", reason=reason)
            if not tokens.looks_like_token(command.webhook_token):
                await self._limit_unknown_source(command)
                raise NotFoundError("unknown webhook", reason="UNKNOWN_TOKEN")
            token_hash = tokens.hash_token(command.webhook_token)
            user = self._users.get(token_hash)
            if user is not None and not self._admits(user, command):
                user = None
            if user is None:
                user = await self._read_user(token_hash, command)
            user_id = user.id
            self._check_admission(user, command)
            parsed = parse_alert(
                command.body,
                content_type=command.content_type,
                query=command.query,
                received_at=command.received_at,
                catalog=self._catalog,
            )
            for _attempt in range(_STALE_ATTEMPTS):
                result = await self._store(command, token_hash, user, parsed, body_sha256, started)
                if result is not None:
                    return result
                # The user changed since it was read (token rotated, plan, allowlist, webhook disabled).
                self._users.forget(token_hash)
                user = await self._read_user(token_hash, command)
                self._check_admission(user, command)
            raise UnavailableError("the user is being changed; try again", reason="USER_CHANGED")
        except Exception as exc:
            if database_unreachable(exc):
                # UNAVAILABLE makes the edge spool the call and replay it later; the replay is audited.
                raise UnavailableError("database unavailable", reason="DATABASE_UNAVAILABLE") from exc
            reason = getattr(exc, "reason", "") or "INTERNAL_ERROR"
            self._audit.record(
                self._audit_row(command, body_sha256, started, user_id, None, "refused", reason)
            )
            raise

    def _known_user_id(self, token: str) -> uuid.UUID | None:
        """The caller's user for an edge refusal's audit row, when already cached: an edge refusal (a
        header flood, a trickled body) never costs a database read."""
        if not tokens.looks_like_token(token):
            return None
        cached = self._users.get(tokens.hash_token(token))
        return cached.id if cached is not None else None

    async def _read_users(self, token_hashes: list[str]) -> list[WebhookUserRow | None]:
        async with self._database.connection() as connection:
            found = await WebhookRepository(connection).find_users(token_hashes, _utcnow())
        return [found.get(token_hash) for token_hash in token_hashes]

    async def _read_user(self, token_hash: str, command: IngestCommand) -> WebhookUser:
        found = await self._user_reads.submit(token_hash)
        if found is None:
            await self._limit_unknown_source(command)
            raise NotFoundError("unknown webhook", reason="UNKNOWN_TOKEN")
        read = WebhookUser(
            id=found.id,
            plan=found.plan,
            webhook_enabled=found.webhook_enabled,
            ip_allowlist=tuple(found.ip_allowlist),
        )
        self._users.put(token_hash, read)
        return read

    async def _limit_unknown_source(self, command: IngestCommand) -> None:
        if _is_replay(command):
            return
        decision = await self._rate_limiter.acquire(
            f"unknown:{command.source_ip}",
            rate_per_second=self._settings.unknown_token_rate_per_second,
            burst=self._settings.unknown_token_burst,
        )
        if not decision.allowed:
            raise ResourceExhaustedError(
                "too many requests", reason="RATE_LIMITED", retry_after_seconds=decision.retry_after_seconds
            )

    def _admits(self, user: WebhookUser, command: IngestCommand) -> bool:
        try:
            self._check_admission(user, command)
        except AlertsError:
            return False
        return True

    def _check_admission(self, user: WebhookUser, command: IngestCommand) -> None:
        if not user.webhook_enabled:
            raise PermissionDeniedError("webhook disabled", reason="WEBHOOK_DISABLED")
        if not allowlist.allows(user.ip_allowlist, command.source_ip):
            raise PermissionDeniedError("source address not allowed", reason="IP_NOT_ALLOWED")
        if max(command.body_size, len(command.body)) > self._settings.max_body_bytes:
            raise InvalidArgumentError(
                f"body larger than {self._settings.max_body_bytes} bytes", reason="BODY_TOO_LARGE"
            )

    async def _store(
        self,
        command: IngestCommand,
        token_hash: str,
        user: WebhookUser,
        parsed: ParsedAlert,
        body_sha256: bytes,
        started: float,
    ) -> IngestResult | None:
        """Stores the alert in one statement and transaction; None when `user` no longer matches the row."""
        now = _utcnow()
        window = timedelta(seconds=self._settings.dedupe_window_seconds)
        signal_id = uuid7()
        capturable = parsed.ticker is not None
        limits = self._settings.plan_limits[user.plan]
        status = ScreenshotStatus.PENDING if capturable else ScreenshotStatus.SKIPPED
        row = WebhookIngest(
            user_id=user.id,
            token_hash=token_hash,
            plan=user.plan,
            ip_allowlist=user.ip_allowlist,
            now=now,
            next_quota_reset=next_month_start(now),
            idempotency_key=command.idempotency_key or None,
            body_sha256=body_sha256,
            # Both ways around received_at: a replayed request is older than signals stored since, and only
            # those within the window are the same alert.
            dedupe_since=command.received_at - window,
            dedupe_until=command.received_at + window,
            signal_id=signal_id,
            chart_id=command.chart_id,
            indicator=parsed.indicator,
            ticker=parsed.ticker,
            exchange=parsed.exchange,
            symbol=parsed.symbol,
            price=parsed.price,
            signal_type=parsed.signal_type,
            interval=parsed.interval,
            alert_time=parsed.alert_time,
            parse_status=str(parsed.status),
            parse_problems=list(parsed.problems),
            extra=parsed.extra,
            raw_body=command.body,
            content_type=command.content_type or None,
            source_ip=command.source_ip or None,
            received_at=command.received_at,
            screenshot_status=status,
            outbox=capture_job(signal_id, user.plan) if capturable else None,
            request_id=request_id_var.get() or None,
            user_agent=command.user_agent[:512] or None,
            latency_ms=(time.perf_counter() - started) * 1000,
            audit_body=command.body[:_AUDIT_BODY_LIMIT],
            body_size=max(command.body_size, len(command.body)),
            rate_interval=None if _is_replay(command) else timedelta(seconds=1 / limits.rate_per_second),
            rate_burst=limits.rate_burst,
        )
        stored = await self._group_commit.ingest(row)
        if stored.outcome == "stale":
            return None
        if stored.outcome == "rate_limited":
            raise ResourceExhaustedError(
                "too many webhooks; slow down",
                reason="RATE_LIMITED",
                retry_after_seconds=stored.retry_after_seconds,
            )
        if stored.outcome == "quota_exceeded":
            assert stored.quota_resets_at is not None
            raise ResourceExhaustedError(
                "monthly signal quota exhausted",
                reason="QUOTA_EXCEEDED",
                metadata={"quota": str(stored.quota), "resets_at": stored.quota_resets_at.isoformat()},
                retry_after_seconds=(stored.quota_resets_at - now).total_seconds(),
            )
        assert stored.signal_id is not None
        duplicate = stored.outcome == "duplicate"
        if not duplicate and row.outbox is not None:
            self._kick_relay()
        status = ScreenshotStatus(stored.screenshot_status)
        pending = status == ScreenshotStatus.PENDING
        return IngestResult(
            signal_id=stored.signal_id,
            screenshot_status=status,
            estimated_wait_seconds=self._estimate_wait(user.plan) if pending else 0,
            duplicate=duplicate,
        )

    def _kick_relay(self) -> None:
        """Wakes the outbox relay for the capture job just committed, once per short window: under load a
        relay pass per webhook costs more than the webhook, while one per window sends them all together."""
        if self._relay_kick_pending:
            return
        self._relay_kick_pending = True
        asyncio.get_running_loop().call_later(self._settings.outbox_kick_delay_seconds, self._send_kick)

    def _send_kick(self) -> None:
        self._relay_kick_pending = False
        self._on_commit()

    def _estimate_wait(self, plan: str) -> int:
        per_capture = self._settings.capture_seconds_estimate
        parallel = max(1, self._settings.capture_parallelism)
        return math.ceil(per_capture * (1 + self._backlog.ahead_of(plan) / parallel))

    @staticmethod
    def _audit_row(
        command: IngestCommand,
        body_sha256: bytes,
        started: float,
        user_id: uuid.UUID | None,
        signal_id: uuid.UUID | None,
        outcome: str,
        reason: str,
    ) -> AuditLog:
        return AuditLog(
            created_at=command.received_at,
            user_id=user_id,
            signal_id=signal_id,
            request_id=request_id_var.get() or None,
            source_ip=command.source_ip or None,
            user_agent=command.user_agent[:512] or None,
            outcome=outcome,
            reason=reason or None,
            latency_ms=(time.perf_counter() - started) * 1000,
            body_sha256=body_sha256.hex(),
            body=command.body[:_AUDIT_BODY_LIMIT],
            body_size=max(command.body_size, len(command.body)),
            content_type=command.content_type or None,
        )


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
    return OutboxMessage(
        queue_name=job.queue_name, actor_name=job.actor_name, args=job.args, options=job.options
    )


# --- reads -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SignalPage:
    rows: list[SignalRow]
    next_page_token: str


def encode_page_token(row: SignalRow) -> str:
    raw = json.dumps([row.signal.created_at.isoformat(), str(row.signal.id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str) -> tuple[datetime, uuid.UUID]:
    try:
        padded = token + "=" * (-len(token) % 4)
        created_at, signal_id = json.loads(base64.urlsafe_b64decode(padded))
        return datetime.fromisoformat(created_at), uuid.UUID(signal_id)
    except (ValueError, TypeError) as exc:
        raise InvalidArgumentError("invalid page_token", reason="INVALID_PAGE_TOKEN") from exc


def page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidArgumentError("page_size must not be negative", reason="INVALID_PAGE_SIZE")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


class SignalReader:
    def __init__(self, database: Database) -> None:
        self._database = database

    async def get(self, signal_id: str) -> SignalRow:
        parsed = require_uuid(signal_id, "signal_id")
        async with self._database.session() as session:
            row = await SignalRepository(session).get(parsed)
        if row is None:
            raise NotFoundError("no such signal", reason="SIGNAL_NOT_FOUND")
        return row

    async def list(self, where: SignalFilter, *, size: int, page_token: str) -> SignalPage:
        limit = page_size(size)
        after = decode_page_token(page_token) if page_token else None
        async with self._database.session() as session:
            rows = await SignalRepository(session).list(where, after=after, limit=limit + 1)
        next_token = encode_page_token(rows[limit - 1]) if len(rows) > limit else ""
        return SignalPage(rows=rows[:limit], next_page_token=next_token)

    async def stats(self, user_id: str) -> UserStats:
        parsed = require_uuid(user_id, "user_id")
        month_start = _utcnow().replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        async with self._database.session() as session:
            row = await SignalRepository(session).stats(parsed, month_start)
        if row is None:
            raise NotFoundError("no such user", reason="USER_NOT_FOUND")
        resolved = row.wins + row.losses
        return UserStats(
            user_id=str(parsed), counts=row, win_rate=row.wins / resolved * 100 if resolved else 0.0
        )


@dataclass(frozen=True, slots=True)
class UserStats:
    user_id: str
    counts: UserStatsRow
    # wins / (wins + losses) * 100; 0 when nothing is resolved.
    win_rate: float


# --- outcomes ----------------------------------------------------------------------------------------

MAX_NOTES_CHARS = 10_000
# A profit or loss of 10^31 or more, or finer than 10^-30, is a client bug rather than a trade.
_PROFIT_LOSS_DIGITS = 30


def parse_profit_loss(value: str) -> Decimal | None:
    """The exact decimal the platform sent ("-12.50" stays -12.50); None for empty."""
    parsed = parse_decimal(value.strip(), "profit_loss")
    if parsed is None:
        return None
    exponent = parsed.as_tuple().exponent
    assert isinstance(exponent, int)
    if exponent < -_PROFIT_LOSS_DIGITS or (parsed != 0 and parsed.adjusted() > _PROFIT_LOSS_DIGITS):
        raise InvalidArgumentError("profit_loss is out of range", reason="INVALID_PROFIT_LOSS")
    return parsed


class SignalOutcomes:
    """The trader's verdict on a signal, recorded with an OUTCOME_UPDATED event in the same transaction."""

    def __init__(self, database: Database) -> None:
        self._database = database

    async def update(
        self,
        signal_id: str,
        *,
        result: SignalResult | None,
        profit_loss: str,
        notes: str,
        ensure_access: Callable[[str], None],
    ) -> SignalRow:
        """Replaces result, profit_loss and notes. `ensure_access(owner_id)` raises for a foreign signal."""
        parsed = require_uuid(signal_id, "signal_id")
        if result is None:
            raise InvalidArgumentError("result is required", reason="INVALID_RESULT")
        amount = parse_profit_loss(profit_loss)
        if len(notes) > MAX_NOTES_CHARS:
            raise InvalidArgumentError(
                f"notes longer than {MAX_NOTES_CHARS} characters", reason="INVALID_NOTES"
            )
        async with self._database.transaction() as session:
            signals = SignalRepository(session)
            row = await signals.get(parsed, for_update=True)
            if row is None:
                raise NotFoundError("no such signal", reason="SIGNAL_NOT_FOUND")
            owner = row.signal.user_id
            ensure_access(str(owner))
            await signals.update_signal(parsed, result=result, profit_loss=amount, notes=notes or None)
            # Signal row, then user row: the same lock order as captures, so the two never deadlock.
            seq = await UserRepository(session).next_event_seq(owner)
            await EventRepository(session).add(
                SignalEvent(user_id=owner, seq=seq, type=EventType.OUTCOME_UPDATED, signal_id=parsed)
            )
            updated = await signals.get(parsed)
            assert updated is not None
        return updated


# --- users -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UserView:
    user: User
    config: UserConfig


@dataclass(frozen=True, slots=True)
class IssuedToken:
    view: UserView
    webhook_token: str
    webhook_url: str
    previous_token_expires_at: datetime | None = None


USER_UPDATABLE_FIELDS = frozenset(
    {
        "plan",
        "signals_quota",
        "webhook_enabled",
        "default_chart_id",
        "ip_allowlist",
        "notification_preferences",
    }
)


def webhook_url(settings: SignalSettings, token: str) -> str:
    return f"{settings.external_url}/webhook/u/{token}"


class UserManager:
    def __init__(
        self,
        *,
        database: Database,
        settings: SignalSettings,
        cipher: CookieCipher,
        captures: CaptureCoordinator | None = None,
        sessions: SessionChecks | None = None,
        on_commit: Any = None,
    ) -> None:
        self._database = database
        self._settings = settings
        self._cipher = cipher
        # Renewal re-queues failed captures and waits for the new cookies' check when these are given.
        self._captures = captures
        self._sessions = sessions
        self._on_commit = on_commit or (lambda: None)

    async def create(
        self,
        *,
        external_id: str,
        plan: str,
        default_chart_id: str,
        signals_quota: int,
        ip_allowlist: Sequence[str],
        notification_preferences: dict[str, Any],
    ) -> IssuedToken:
        if plan not in self._settings.plan_limits:
            raise InvalidArgumentError(f"unknown plan {plan!r}", reason="INVALID_PLAN")
        if signals_quota < 0:
            raise InvalidArgumentError("signals_quota must not be negative", reason="INVALID_QUOTA")
        token = tokens.generate_token()
        now = _utcnow()
        user = User(
            id=uuid.uuid4(),
            external_id=external_id or None,
            plan=plan,
            webhook_token_hash=tokens.hash_token(token),
            webhook_enabled=True,
            signals_quota=signals_quota or self._settings.plan_limits[plan].signals_quota,
            signals_used=0,
            quota_reset_at=next_month_start(now),
            event_seq=0,
        )
        config = UserConfig(
            user_id=user.id,
            default_chart_id=default_chart_id or None,
            ip_allowlist=allowlist.normalise(ip_allowlist),
            notification_preferences=notification_preferences,
        )
        try:
            async with self._database.transaction() as session:
                await UserRepository(session).add(user, config)
        except IntegrityError as exc:
            raise AlreadyExistsError(
                "a user with this external_id exists", reason="EXTERNAL_ID_TAKEN"
            ) from exc
        view = await self.get(user_id=str(user.id))
        return IssuedToken(view=view, webhook_token=token, webhook_url=webhook_url(self._settings, token))

    async def get(self, *, user_id: str = "", external_id: str = "") -> UserView:
        async with self._database.session() as session:
            repository = UserRepository(session)
            if user_id:
                found = await repository.get(require_uuid(user_id, "user_id"))
            elif external_id:
                found = await repository.get_by_external_id(external_id)
            else:
                raise InvalidArgumentError("user_id or external_id is required", reason="MISSING_USER")
        if found is None:
            raise NotFoundError("no such user", reason="USER_NOT_FOUND")
        return UserView(*found)

    async def update(self, user_id: str, values: dict[str, Any]) -> UserView:
        unknown = set(values) - USER_UPDATABLE_FIELDS
        if unknown:
            raise InvalidArgumentError(
                f"not updatable: {', '.join(sorted(unknown))}", reason="INVALID_UPDATE_MASK"
            )
        if not values:
            raise InvalidArgumentError("update_mask names no field", reason="INVALID_UPDATE_MASK")
        parsed_id = require_uuid(user_id, "user_id")
        user_values: dict[str, Any] = {}
        config_values: dict[str, Any] = {}
        if "plan" in values:
            if values["plan"] not in self._settings.plan_limits:
                raise InvalidArgumentError(f"unknown plan {values['plan']!r}", reason="INVALID_PLAN")
            user_values["plan"] = values["plan"]
            # A new plan brings its quota, unless the same update sets one explicitly.
            user_values["signals_quota"] = self._settings.plan_limits[values["plan"]].signals_quota
        if "signals_quota" in values:
            if values["signals_quota"] < 0:
                raise InvalidArgumentError("signals_quota must not be negative", reason="INVALID_QUOTA")
            user_values["signals_quota"] = values["signals_quota"]
        if "webhook_enabled" in values:
            user_values["webhook_enabled"] = bool(values["webhook_enabled"])
        if "default_chart_id" in values:
            config_values["default_chart_id"] = values["default_chart_id"] or None
        if "ip_allowlist" in values:
            config_values["ip_allowlist"] = allowlist.normalise(values["ip_allowlist"])
        if "notification_preferences" in values:
            config_values["notification_preferences"] = values["notification_preferences"]
        async with self._database.transaction() as session:
            repository = UserRepository(session)
            if await repository.lock(parsed_id) is None:
                raise NotFoundError("no such user", reason="USER_NOT_FOUND")
            if user_values:
                await repository.update_user(parsed_id, **user_values)
            if config_values:
                await repository.update_config(parsed_id, **config_values)
        return await self.get(user_id=user_id)

    async def rotate_token(self, user_id: str, grace_period_seconds: int) -> IssuedToken:
        if grace_period_seconds < 0 or grace_period_seconds > 7 * 24 * 3600:
            raise InvalidArgumentError(
                "grace_period_seconds must be between 0 and 7 days", reason="INVALID_GRACE_PERIOD"
            )
        parsed_id = require_uuid(user_id, "user_id")
        token = tokens.generate_token()
        expires_at = _utcnow() + timedelta(seconds=grace_period_seconds) if grace_period_seconds else None
        async with self._database.transaction() as session:
            repository = UserRepository(session)
            current = await repository.lock(parsed_id)
            if current is None:
                raise NotFoundError("no such user", reason="USER_NOT_FOUND")
            await repository.update_user(
                parsed_id,
                webhook_token_hash=tokens.hash_token(token),
                previous_token_hash=current.webhook_token_hash if expires_at else None,
                previous_token_expires_at=expires_at,
            )
        return IssuedToken(
            view=await self.get(user_id=user_id),
            webhook_token=token,
            webhook_url=webhook_url(self._settings, token),
            previous_token_expires_at=expires_at,
        )

    async def set_tradingview_session(self, user_id: str, sessionid: str, sessionid_sign: str) -> UserView:
        if not sessionid or not sessionid_sign:
            raise InvalidArgumentError(
                "sessionid and sessionid_sign are both required", reason="INVALID_TRADINGVIEW_SESSION"
            )
        if len(sessionid) > 4096 or len(sessionid_sign) > 4096:
            raise InvalidArgumentError("cookie values are too long", reason="INVALID_TRADINGVIEW_SESSION")
        parsed_id = require_uuid(user_id, "user_id")
        plaintext = json.dumps({"sessionid": sessionid, "sessionid_sign": sessionid_sign}).encode()
        ciphertext = self._cipher.encrypt(plaintext)
        now = _utcnow()
        async with self._database.transaction() as session:
            repository = UserRepository(session)
            user = await repository.lock(parsed_id)
            if user is None:
                raise NotFoundError("no such user", reason="USER_NOT_FOUND")
            await repository.update_config(
                parsed_id,
                tv_session_ciphertext=ciphertext,
                tv_cookies_valid=None,
                tv_cookies_checked_at=None,
                tv_cookies_changed_at=now,
                tv_session_set_at=now,
                tv_check_requested_at=now,
                tv_check_claimed_at=None,
                tv_check_claimed_by=None,
            )
            # One check of the new cookies, and the captures the old ones failed, in this transaction.
            await record_renewal(session, parsed_id)
            if self._captures is not None:
                await self._captures.requeue_session_failures(session, parsed_id, user.plan)
        self._on_commit()
        if self._sessions is not None:
            await self._sessions.wait_for_first_check(parsed_id, now)
        return await self.get(user_id=user_id)


# --- captures ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CaptureClaim:
    proceed: bool
    row: SignalRow
    chart_id: str
    session_ciphertext: bytes
    plan: str


_RETRY_BATCH_LIMIT = 10_000
_TERMINAL = {ScreenshotStatus.COMPLETED, ScreenshotStatus.SKIPPED, ScreenshotStatus.EXPIRED}


class CaptureCoordinator:
    def __init__(self, *, database: Database, settings: SignalSettings, on_commit: Any = None) -> None:
        self._database = database
        self._settings = settings
        self._on_commit = on_commit or (lambda: None)

    async def claim(self, signal_id: str, *, attempt: int, worker_id: str) -> CaptureClaim:
        parsed = require_uuid(signal_id, "signal_id")
        async with self._database.transaction() as session:
            signals, users = SignalRepository(session), UserRepository(session)
            row = await signals.get(parsed, for_update=True)
            if row is None or row.screenshot is None:
                raise NotFoundError("no capture for this signal", reason="CAPTURE_NOT_FOUND")
            found = await users.get(row.signal.user_id)
            assert found is not None
            user, config = found
            chart_id = row.signal.chart_id or config.default_chart_id or ""
            if ScreenshotStatus(row.screenshot.status) in _TERMINAL:
                return CaptureClaim(False, row, chart_id, b"", user.plan)
            now = _utcnow()
            await signals.update_screenshot(
                parsed,
                status=ScreenshotStatus.PROCESSING,
                attempts=row.screenshot.attempts + 1,
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
        return CaptureClaim(True, row, chart_id, config.tv_session_ciphertext or b"", user.plan)

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
    ) -> SignalRow:
        if status not in (ScreenshotStatus.PROCESSING, ScreenshotStatus.COMPLETED, ScreenshotStatus.FAILED):
            raise InvalidArgumentError(
                "status must be PROCESSING, COMPLETED or FAILED", reason="INVALID_CAPTURE_STATUS"
            )
        if status == ScreenshotStatus.COMPLETED and not object_key:
            raise InvalidArgumentError("COMPLETED needs object_key", reason="MISSING_OBJECT_KEY")
        parsed = require_uuid(signal_id, "signal_id")
        now = _utcnow()
        async with self._database.transaction() as session:
            signals = SignalRepository(session)
            row = await signals.get(parsed, for_update=True)
            if row is None or row.screenshot is None:
                raise NotFoundError("no capture for this signal", reason="CAPTURE_NOT_FOUND")
            current = ScreenshotStatus(row.screenshot.status)
            if current == ScreenshotStatus.COMPLETED:
                # At-least-once delivery: a late duplicate report never undoes a finished capture.
                if status == ScreenshotStatus.COMPLETED and object_key == row.screenshot.object_key:
                    return row
                raise FailedPreconditionError("capture already completed", reason="CAPTURE_COMPLETED")
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
                await signals.update_screenshot(parsed, **values)
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
        """Records what the capture showed about the user's TradingView session (signal_service/sessions.py).

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
        since = _utcnow() - timedelta(seconds=self._settings.session_requeue_window_seconds)
        rows = await SessionRepository(session).failed_captures(
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
            rows = await SignalRepository(session).failed(user_id=owner, after=after, limit=limit + 1)
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
            signals = SignalRepository(session)
            rows = await signals.failed_for_update(ids=ids or None, limit=_RETRY_BATCH_LIMIT)
            plans = await UserRepository(session).plans({row.signal.user_id for row in rows})
            for row in sorted(rows, key=lambda row: row.signal.created_at):
                await self._requeue(session, row, plans[row.signal.user_id])
                requeued += 1
        if requeued:
            self._on_commit()
        return requeued

    async def sweep_stale(self) -> int:
        """Captures whose worker died (left PROCESSING) or whose queue message was lost (left PENDING with
        no outbox row) go back to their queue; a capture that already had every attempt fails for good.
        Re-sending is safe: the capture actor does nothing for a capture that already finished."""
        now = _utcnow()
        processing_cutoff = now - timedelta(seconds=self._settings.capture_stale_after_seconds)
        pending_cutoff = now - timedelta(seconds=self._settings.capture_pending_stale_after_seconds)
        async with self._database.transaction() as session:
            signals = SignalRepository(session)
            processing = await signals.stale_processing(processing_cutoff, limit=_RETRY_BATCH_LIMIT)
            pending = await signals.stale_pending(pending_cutoff, limit=_RETRY_BATCH_LIMIT)
            plans = await UserRepository(session).plans({row.signal.user_id for row in processing + pending})
            for row in processing:
                assert row.screenshot is not None
                if row.screenshot.attempts >= self._settings.capture_max_attempts:
                    await signals.update_screenshot(
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
        signals = SignalRepository(session)
        await signals.update_screenshot(
            row.signal.id, status=ScreenshotStatus.PENDING, error=None, claimed_at=None, completed_at=None
        )
        await signals.update_signal(row.signal.id, screenshot_status=ScreenshotStatus.PENDING)
        await OutboxRepository(session).add(capture_message(row.signal.id, plan))
        await self._event(session, row.signal.user_id, row.signal.id, EventType.SCREENSHOT_UPDATED)

    async def _event(self, session: Any, user_id: uuid.UUID, signal_id: uuid.UUID, kind: EventType) -> None:
        seq = await UserRepository(session).next_event_seq(user_id)
        await EventRepository(session).add(
            SignalEvent(user_id=user_id, seq=seq, type=kind, signal_id=signal_id)
        )


def parse_decimal(value: str, what: str) -> Decimal | None:
    if not value:
        return None
    try:
        parsed = Decimal(value)
    except InvalidOperation as exc:
        raise InvalidArgumentError(
            f"{what} must be a decimal string", reason=f"INVALID_{what.upper()}"
        ) from exc
    if not parsed.is_finite():
        raise InvalidArgumentError(f"{what} must be finite", reason=f"INVALID_{what.upper()}")
    return parsed


__all__ = [
    "CaptureCoordinator",
    "IngestCommand",
    "IngestResult",
    "Plan",
    "QueueBacklog",
    "SignalOutcomes",
    "SignalReader",
    "UserManager",
    "UserStats",
    "WebhookIngestor",
]
