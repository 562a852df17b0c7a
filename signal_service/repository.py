"""Every SQL statement of the signal service. Repositories never commit: the service does, at its boundary."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from signal_service.models import (
    AuditLog,
    OutboxMessage,
    Screenshot,
    ScreenshotStatus,
    Signal,
    SignalEvent,
    SignalResult,
    User,
    UserConfig,
)

EVENTS_CHANNEL = "alerts_signal_events"


@dataclass(frozen=True, slots=True)
class SignalRow:
    signal: Signal
    screenshot: Screenshot | None


@dataclass(frozen=True, slots=True)
class UserStatsRow:
    total_signals: int
    this_month: int
    screenshots_pending: int
    wins: int
    losses: int
    storage_bytes: int
    storage_objects: int


@dataclass(frozen=True, slots=True)
class SignalFilter:
    user_id: uuid.UUID
    ticker: str | None = None
    indicator: str | None = None
    signal_type: str | None = None
    result: str | None = None
    screenshot_status: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


def _storable(value: Any) -> Any:
    """PostgreSQL text and jsonb cannot hold NUL: it is dropped from strings, also inside JSON values.

    Raw bodies are bytea and keep every byte; only the text read out of them loses NULs.
    """
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {_storable(key): _storable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_storable(item) for item in value]
    return value


def _values(row: Any) -> dict[str, Any]:
    """The row's column values, leaving out unset server-defaulted columns so the database fills them."""
    return {
        column.name: _storable(getattr(row, column.name))
        for column in row.__table__.columns
        if not (getattr(row, column.name) is None and (column.server_default is not None or column.identity))
    }


@dataclass(frozen=True, slots=True)
class WebhookUserRow:
    id: uuid.UUID
    plan: str
    webhook_enabled: bool
    ip_allowlist: list[str]


class UserRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, user: User, config: UserConfig) -> None:
        await self.session.execute(sa.insert(User).values(_values(user)))
        await self.session.execute(sa.insert(UserConfig).values(_values(config)))

    async def get(self, user_id: uuid.UUID, *, for_update: bool = False) -> tuple[User, UserConfig] | None:
        statement = sa.select(User, UserConfig).join(UserConfig, UserConfig.user_id == User.id)
        statement = statement.where(User.id == user_id)
        if for_update:
            statement = statement.with_for_update(of=User)
        row = (await self.session.execute(statement)).one_or_none()
        return (row[0], row[1]) if row else None

    async def get_by_external_id(self, external_id: str) -> tuple[User, UserConfig] | None:
        statement = (
            sa.select(User, UserConfig)
            .join(UserConfig, UserConfig.user_id == User.id)
            .where(User.external_id == external_id)
        )
        row = (await self.session.execute(statement)).one_or_none()
        return (row[0], row[1]) if row else None

    async def lock(self, user_id: uuid.UUID) -> User | None:
        """Locks the user row until commit: a user's quota and event sequence change one writer at a time."""
        statement = sa.select(User).where(User.id == user_id).with_for_update()
        return (await self.session.execute(statement)).scalar_one_or_none()

    async def update_user(self, user_id: uuid.UUID, **values: Any) -> None:
        await self.session.execute(
            sa.update(User).where(User.id == user_id).values(**values, updated_at=sa.func.now())
        )

    async def update_config(self, user_id: uuid.UUID, **values: Any) -> None:
        await self.session.execute(
            sa.update(UserConfig)
            .where(UserConfig.user_id == user_id)
            .values(**values, updated_at=sa.func.now())
        )

    async def plans(self, user_ids: set[uuid.UUID]) -> dict[uuid.UUID, str]:
        if not user_ids:
            return {}
        statement = sa.select(User.id, User.plan).where(User.id.in_(user_ids))
        return {row.id: row.plan for row in await self.session.execute(statement)}

    async def next_event_seq(self, user_id: uuid.UUID) -> int:
        statement = (
            sa.update(User)
            .where(User.id == user_id)
            .values(event_seq=User.event_seq + 1)
            .returning(User.event_seq)
        )
        return (await self.session.execute(statement)).scalar_one()

    async def sessions_after(self, after: uuid.UUID | None, limit: int) -> list[tuple[uuid.UUID, bytes]]:
        """Stored TradingView session ciphertexts in user id order after `after`, locked until commit."""
        statement = (
            sa.select(UserConfig.user_id, UserConfig.tv_session_ciphertext)
            .where(UserConfig.tv_session_ciphertext.is_not(None))
            .order_by(UserConfig.user_id)
            .limit(limit)
            .with_for_update()
        )
        if after is not None:
            statement = statement.where(UserConfig.user_id > after)
        return [(row[0], row[1]) for row in await self.session.execute(statement)]


class SignalRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, signal: Signal) -> None:
        await self.session.execute(sa.insert(Signal).values(_values(signal)))

    async def add_screenshot(self, screenshot: Screenshot) -> None:
        await self.session.execute(sa.insert(Screenshot).values(_values(screenshot)))

    async def find_by_idempotency_key(self, key: str) -> uuid.UUID | None:
        statement = sa.select(Signal.id).where(Signal.idempotency_key == key)
        return (await self.session.execute(statement)).scalar_one_or_none()

    async def find_recent_duplicate(
        self, user_id: uuid.UUID, body_sha256: bytes, since: datetime, until: datetime
    ) -> uuid.UUID | None:
        statement = (
            sa.select(Signal.id)
            .where(
                Signal.user_id == user_id,
                Signal.body_sha256 == body_sha256,
                Signal.created_at >= since,
                Signal.created_at <= until,
            )
            .order_by(Signal.created_at)
            .limit(1)
        )
        return (await self.session.execute(statement)).scalar_one_or_none()

    def _with_screenshot(self) -> sa.Select[tuple[Signal, Screenshot]]:
        return sa.select(Signal, Screenshot).outerjoin(Screenshot, Screenshot.signal_id == Signal.id)

    async def get(self, signal_id: uuid.UUID, *, for_update: bool = False) -> SignalRow | None:
        statement = self._with_screenshot().where(Signal.id == signal_id)
        if for_update:
            statement = statement.with_for_update(of=Signal)
        row = (await self.session.execute(statement)).one_or_none()
        return SignalRow(row[0], row[1]) if row else None

    async def get_many(self, signal_ids: Sequence[uuid.UUID]) -> list[SignalRow]:
        statement = self._with_screenshot().where(Signal.id.in_(signal_ids))
        return [SignalRow(row[0], row[1]) for row in await self.session.execute(statement)]

    async def list(
        self, where: SignalFilter, *, after: tuple[datetime, uuid.UUID] | None, limit: int
    ) -> list[SignalRow]:
        """Newest first, keyset-paginated on (created_at, id) so pages stay stable under inserts."""
        statement = self._with_screenshot().where(Signal.user_id == where.user_id)
        for column, value in (
            (Signal.ticker, where.ticker),
            (Signal.indicator, where.indicator),
            (Signal.signal_type, where.signal_type),
            (Signal.result, where.result),
            (Signal.screenshot_status, where.screenshot_status),
        ):
            if value is not None:
                statement = statement.where(column == value)
        if where.created_after is not None:
            statement = statement.where(Signal.created_at > where.created_after)
        if where.created_before is not None:
            statement = statement.where(Signal.created_at < where.created_before)
        if after is not None:
            statement = statement.where(sa.tuple_(Signal.created_at, Signal.id) < sa.tuple_(*after))
        statement = statement.order_by(Signal.created_at.desc(), Signal.id.desc()).limit(limit)
        return [SignalRow(row[0], row[1]) for row in await self.session.execute(statement)]

    async def stats(self, user_id: uuid.UUID, month_start: datetime) -> UserStatsRow | None:
        """One user's counters in one statement; None when the user does not exist."""
        signal_totals = (
            sa.select(
                sa.func.count().label("total_signals"),
                sa.func.count().filter(Signal.created_at >= month_start).label("this_month"),
                sa.func.count()
                .filter(Signal.screenshot_status.in_([ScreenshotStatus.PENDING, ScreenshotStatus.PROCESSING]))
                .label("screenshots_pending"),
                sa.func.count().filter(Signal.result == SignalResult.WIN).label("wins"),
                sa.func.count().filter(Signal.result == SignalResult.LOSS).label("losses"),
            )
            .where(Signal.user_id == user_id)
            .subquery()
        )
        storage = (
            sa.select(
                sa.cast(sa.func.coalesce(sa.func.sum(Screenshot.size_bytes), 0), sa.BigInteger).label(
                    "storage_bytes"
                ),
                sa.func.count().label("storage_objects"),
            )
            .where(Screenshot.user_id == user_id, Screenshot.status == ScreenshotStatus.COMPLETED)
            .subquery()
        )
        statement = (
            sa.select(signal_totals, storage)
            .select_from(User)
            .join(signal_totals, sa.true())
            .join(storage, sa.true())
            .where(User.id == user_id)
        )
        row = (await self.session.execute(statement)).one_or_none()
        return UserStatsRow(**row._asdict()) if row else None

    async def update_signal(self, signal_id: uuid.UUID, **values: Any) -> None:
        await self.session.execute(
            sa.update(Signal).where(Signal.id == signal_id).values(**values, updated_at=sa.func.now())
        )

    async def update_screenshot(self, signal_id: uuid.UUID, **values: Any) -> None:
        await self.session.execute(
            sa.update(Screenshot)
            .where(Screenshot.signal_id == signal_id)
            .values(**values, updated_at=sa.func.now())
        )

    async def stale_processing(self, claimed_before: datetime, limit: int) -> list[SignalRow]:
        statement = (
            self._with_screenshot()
            .where(Screenshot.status == ScreenshotStatus.PROCESSING, Screenshot.claimed_at < claimed_before)
            .order_by(Screenshot.claimed_at)
            .limit(limit)
            .with_for_update(of=Signal, skip_locked=True)
        )
        return [SignalRow(row[0], row[1]) for row in await self.session.execute(statement)]

    async def stale_pending(self, updated_before: datetime, limit: int) -> list[SignalRow]:
        """PENDING captures untouched for long with no outbox row left: their queue message was lost."""
        in_outbox = (
            sa.select(OutboxMessage.id)
            .where(OutboxMessage.args.contains(sa.func.jsonb_build_array(sa.cast(Signal.id, sa.Text))))
            .exists()
        )
        statement = (
            self._with_screenshot()
            .where(Screenshot.status == ScreenshotStatus.PENDING, Screenshot.updated_at < updated_before)
            .where(~in_outbox)
            .order_by(Screenshot.updated_at)
            .limit(limit)
            .with_for_update(of=Signal, skip_locked=True)
        )
        return [SignalRow(row[0], row[1]) for row in await self.session.execute(statement)]

    async def failed_for_update(self, *, ids: Sequence[uuid.UUID] | None, limit: int) -> list[SignalRow]:
        statement = self._with_screenshot().where(Screenshot.status == ScreenshotStatus.FAILED)
        if ids is not None:
            statement = statement.where(Signal.id.in_(ids))
        statement = (
            statement.order_by(Signal.created_at).limit(limit).with_for_update(of=Signal, skip_locked=True)
        )
        return [SignalRow(row[0], row[1]) for row in await self.session.execute(statement)]

    async def failed(
        self, *, user_id: uuid.UUID | None, after: tuple[datetime, uuid.UUID] | None, limit: int
    ) -> list[SignalRow]:
        statement = self._with_screenshot().where(Signal.screenshot_status == ScreenshotStatus.FAILED)
        if user_id is not None:
            statement = statement.where(Signal.user_id == user_id)
        if after is not None:
            statement = statement.where(sa.tuple_(Signal.created_at, Signal.id) < sa.tuple_(*after))
        statement = statement.order_by(Signal.created_at.desc(), Signal.id.desc()).limit(limit)
        return [SignalRow(row[0], row[1]) for row in await self.session.execute(statement)]


class EventRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, event: SignalEvent) -> None:
        """Appends the event and notifies listeners; PostgreSQL delivers the notification only on commit."""
        await self.session.execute(sa.insert(SignalEvent).values(_values(event)))
        await self.session.execute(
            sa.select(sa.func.pg_notify(EVENTS_CHANNEL, f"{event.user_id}:{event.seq}"))
        )

    async def after(self, user_id: uuid.UUID, seq: int, limit: int) -> list[SignalEvent]:
        statement = (
            sa.select(SignalEvent)
            .where(SignalEvent.user_id == user_id, SignalEvent.seq > seq)
            .order_by(SignalEvent.seq)
            .limit(limit)
        )
        return list((await self.session.execute(statement)).scalars())

    async def head(self, user_id: uuid.UUID) -> int | None:
        """The user's last committed event sequence number; None when the user does not exist."""
        statement = sa.select(User.event_seq).where(User.id == user_id)
        return (await self.session.execute(statement)).scalar_one_or_none()

    async def last_seq(self, user_id: uuid.UUID) -> int:
        statement = sa.select(User.event_seq).where(User.id == user_id)
        return (await self.session.execute(statement)).scalar_one_or_none() or 0


class AuditRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, entry: AuditLog) -> None:
        await self.session.execute(sa.insert(AuditLog).values(_values(entry)))

    async def add_many(self, entries: Sequence[AuditLog]) -> None:
        if entries:
            await self.session.execute(sa.insert(AuditLog), [_values(entry) for entry in entries])

    async def delete_older_than(self, cutoff: datetime, *, limit: int | None = None) -> int:
        """Deletes rows created before `cutoff`, at most `limit` of them (oldest first) when given."""
        doomed = AuditLog.created_at < cutoff
        if limit is not None:
            oldest = sa.select(AuditLog.id).where(doomed).order_by(AuditLog.created_at).limit(limit)
            doomed = AuditLog.id.in_(oldest.scalar_subquery())
        result = await self.session.execute(sa.delete(AuditLog).where(doomed))
        return result.rowcount or 0


class OutboxRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, message: OutboxMessage) -> None:
        await self.session.execute(sa.insert(OutboxMessage).values(_values(message)))

    async def backlog(self) -> int:
        return (
            await self.session.execute(sa.select(sa.func.count()).select_from(OutboxMessage))
        ).scalar_one()


@dataclass(frozen=True, slots=True)
class DueMessage:
    id: int
    queue_name: str
    actor_name: str
    args: list[Any]
    options: dict[str, Any]


# Due rows, oldest first, locked so that concurrent relays (one per signal replica) each take different
# ones; deleted by the relay's transaction, which commits only once the broker has taken them.
_TAKE_DUE = """
DELETE FROM outbox WHERE id IN (
    SELECT id FROM outbox WHERE available_at <= now() ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED
)
RETURNING id, queue_name, actor_name, args::text, options::text
"""

_POSTPONE = """
UPDATE outbox SET attempts = attempts + 1, last_error = $2, available_at = now() + make_interval(secs => $3)
WHERE id = ANY($1)
"""


class OutboxRelayRepository:
    """The relay's statements, on a plain asyncpg connection: a pass runs every 100 ms under load, and
    SQLAlchemy's session, pre-ping and ORM objects cost it more than the database work."""

    def __init__(self, connection: asyncpg.Connection) -> None:
        self.connection = connection

    async def take_due(self, limit: int) -> list[DueMessage]:
        """Due rows, deleted in the caller's transaction: they come back if it rolls back."""
        records = await self.connection.fetch(_TAKE_DUE, limit)
        messages = [
            DueMessage(record[0], record[1], record[2], json.loads(record[3]), json.loads(record[4]))
            for record in records
        ]
        return sorted(messages, key=lambda message: message.id)

    async def postpone(self, ids: Sequence[int], *, delay_seconds: float, error: str) -> None:
        await self.connection.execute(_POSTPONE, list(ids), error[:500], delay_seconds)


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """An outbox row's content, without the ORM object's construction cost, for the hot path."""

    queue_name: str
    actor_name: str
    args: list[Any]
    options: dict[str, Any]


@dataclass(frozen=True, slots=True)
class WebhookIngest:
    """One webhook as the intake's single statement takes it: what the caller believes about the user
    (re-verified under the user's lock), and the rows to write when it is a new alert within quota."""

    user_id: uuid.UUID
    token_hash: str
    plan: str
    ip_allowlist: Sequence[str]
    now: datetime
    next_quota_reset: datetime
    idempotency_key: str | None
    body_sha256: bytes
    dedupe_since: datetime
    dedupe_until: datetime
    signal_id: uuid.UUID
    chart_id: str
    indicator: str | None
    ticker: str | None
    exchange: str | None
    symbol: str | None
    price: Decimal | None
    signal_type: str | None
    interval: str | None
    alert_time: datetime
    parse_status: str
    parse_problems: list[str]
    extra: dict[str, Any]
    raw_body: bytes
    content_type: str | None
    source_ip: str | None
    received_at: datetime
    screenshot_status: str
    outbox: OutboxEntry | None
    request_id: str | None
    user_agent: str | None
    latency_ms: float
    audit_body: bytes
    body_size: int
    # The user's plan's rate limit: time between webhooks and the burst tolerated; None is not limited.
    rate_interval: timedelta | None
    rate_burst: int


@dataclass(frozen=True, slots=True)
class WebhookOutcome:
    # "accepted", "duplicate", "quota_exceeded", "rate_limited" or "stale" (migrations 0002 and 0004).
    outcome: str
    signal_id: uuid.UUID | None
    screenshot_status: str | None
    quota: int | None
    quota_resets_at: datetime | None
    retry_after_seconds: float | None


_INGEST_WEBHOOK = (
    "SELECT outcome, signal_id, screenshot_status, quota, quota_resets_at, retry_after_seconds"
    " FROM ingest_webhook("
    "$1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, "
    "$21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $33, $34, $35, $36, $37, $38, $39, "
    "$40, $41)"
)


# Users by token hash: the current token, or the previous one within its grace period.
_WEBHOOK_USERS_QUERY = """
SELECT t.token_hash, u.id, u.plan, u.webhook_enabled, c.ip_allowlist
FROM unnest($1::text[]) AS t(token_hash)
JOIN users u ON u.webhook_token_hash = t.token_hash
             OR (u.previous_token_hash = t.token_hash AND u.previous_token_expires_at > $2)
JOIN user_config c ON c.user_id = u.id
"""


class WebhookRepository:
    """The webhook hot path on a plain asyncpg connection: one prepared statement, its own transaction.

    SQLAlchemy's per-statement compilation and ORM bookkeeping cost more CPU than the database's own
    work here; asyncpg prepares the statement once per connection and reuses it.
    """

    def __init__(self, connection: asyncpg.Connection) -> None:
        self.connection = connection

    async def find_users(self, token_hashes: Sequence[str], now: datetime) -> dict[str, WebhookUserRow]:
        """The users these token hashes belong to, in one statement; unknown hashes are left out."""
        records = await self.connection.fetch(_WEBHOOK_USERS_QUERY, list(token_hashes), now)
        return {record[0]: WebhookUserRow(*record[1:]) for record in records}

    async def ingest(self, row: WebhookIngest) -> WebhookOutcome:
        record = await self.connection.fetchrow(_INGEST_WEBHOOK, *_ingest_arguments(row))
        assert record is not None
        return WebhookOutcome(*record)

    async def ingest_many(self, rows: Sequence[WebhookIngest]) -> list[WebhookOutcome]:
        """Stores several alerts in one transaction, in order: one round trip and one commit (one WAL
        flush) for all of them. Either every row's outcome holds or, when this raises, none does."""
        async with self.connection.transaction():
            records = await self.connection.fetchmany(
                _INGEST_WEBHOOK, [_ingest_arguments(row) for row in rows]
            )
        return [WebhookOutcome(*record) for record in records]


def _ingest_arguments(row: WebhookIngest) -> tuple[Any, ...]:
    outbox = row.outbox
    return (
        row.user_id,
        row.token_hash,
        row.plan,
        list(row.ip_allowlist),
        row.now,
        row.next_quota_reset,
        row.idempotency_key,
        row.body_sha256,
        row.dedupe_since,
        row.dedupe_until,
        row.signal_id,
        _storable(row.chart_id),
        _storable(row.indicator),
        _storable(row.ticker),
        _storable(row.exchange),
        _storable(row.symbol),
        row.price,
        _storable(row.signal_type),
        _storable(row.interval),
        row.alert_time,
        row.parse_status,
        json.dumps(_storable(row.parse_problems)),
        json.dumps(_storable(row.extra)),
        row.raw_body,
        _storable(row.content_type),
        _storable(row.source_ip),
        row.received_at,
        row.screenshot_status,
        outbox.queue_name if outbox else None,
        outbox.actor_name if outbox else None,
        json.dumps(outbox.args) if outbox else None,
        json.dumps(outbox.options) if outbox else None,
        EVENTS_CHANNEL,
        row.request_id,
        _storable(row.user_agent),
        row.latency_ms,
        row.body_sha256.hex(),
        row.audit_body,
        row.body_size,
        row.rate_interval,
        row.rate_burst,
    )


@dataclass(frozen=True, slots=True)
class CheckTarget:
    """The chart a session check opens: the user's latest signal's, else the user's default layout."""

    chart_id: str
    ticker: str
    interval: str


class SessionRepository:
    """TradingView session state and check scheduling (signal_service/sessions.py)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def try_lock(self, key: int) -> bool:
        """A transaction-scoped advisory lock, or False at once when another transaction holds it."""
        statement = sa.select(sa.func.pg_try_advisory_xact_lock(key))
        return bool((await self.session.execute(statement)).scalar_one())

    async def config(self, user_id: uuid.UUID) -> UserConfig | None:
        statement = sa.select(UserConfig).where(UserConfig.user_id == user_id)
        # A fresh read even when the unit of work saw the row before taking the user's lock.
        statement = statement.execution_options(populate_existing=True)
        return (await self.session.execute(statement)).scalar_one_or_none()

    async def check_target(self, user_id: uuid.UUID, default_chart_id: str | None) -> CheckTarget:
        statement = (
            sa.select(Signal.chart_id, Signal.ticker, Signal.interval)
            .where(Signal.user_id == user_id, Signal.ticker.is_not(None))
            .order_by(Signal.created_at.desc())
            .limit(1)
        )
        latest = (await self.session.execute(statement)).one_or_none()
        if latest is None:
            return CheckTarget(chart_id=default_chart_id or "", ticker="", interval="")
        return CheckTarget(
            chart_id=latest.chart_id or default_chart_id or "",
            ticker=latest.ticker or "",
            interval=latest.interval or "",
        )

    async def due_for_check(
        self,
        *,
        checked_before: datetime,
        requested_before: datetime,
        claimed_before: datetime,
        active_since: datetime,
        limit: int,
    ) -> list[uuid.UUID]:
        """Users with stored cookies, a signal since `active_since`, no result since `checked_before`, no
        check queued since `requested_before` and none claimed since `claimed_before` still without its
        result; least recently checked first, locked until commit."""
        active = sa.exists().where(Signal.user_id == UserConfig.user_id, Signal.created_at >= active_since)
        running = sa.and_(
            UserConfig.tv_check_claimed_at >= claimed_before,
            sa.or_(
                UserConfig.tv_cookies_checked_at.is_(None),
                UserConfig.tv_cookies_checked_at < UserConfig.tv_check_claimed_at,
            ),
        )
        statement = (
            sa.select(UserConfig.user_id)
            .where(
                UserConfig.tv_session_ciphertext.is_not(None),
                sa.or_(
                    UserConfig.tv_cookies_checked_at.is_(None),
                    UserConfig.tv_cookies_checked_at < checked_before,
                ),
                sa.or_(
                    UserConfig.tv_check_requested_at.is_(None),
                    UserConfig.tv_check_requested_at < requested_before,
                ),
                sa.not_(sa.func.coalesce(running, False)),
                active,
            )
            .order_by(UserConfig.tv_cookies_checked_at.asc().nulls_first(), UserConfig.user_id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return list((await self.session.execute(statement)).scalars())

    async def mark_check_requested(self, user_ids: Sequence[uuid.UUID], now: datetime) -> None:
        if user_ids:
            await self.session.execute(
                sa.update(UserConfig)
                .where(UserConfig.user_id.in_(user_ids))
                .values(tv_check_requested_at=now)
            )

    async def failed_captures(
        self, user_id: uuid.UUID, *, error: str, created_since: datetime, limit: int
    ) -> list[SignalRow]:
        """The user's FAILED captures with this error for signals since `created_since`, oldest first."""
        statement = (
            sa.select(Signal, Screenshot)
            .join(Screenshot, Screenshot.signal_id == Signal.id)
            .where(
                Signal.user_id == user_id,
                Signal.created_at >= created_since,
                Screenshot.status == ScreenshotStatus.FAILED,
                Screenshot.error == error,
            )
            .order_by(Signal.created_at, Signal.id)
            .limit(limit)
            .with_for_update(of=Signal, skip_locked=True)
        )
        return [SignalRow(row[0], row[1]) for row in await self.session.execute(statement)]


@dataclass(frozen=True, slots=True)
class ExpiringScreenshot:
    signal_id: uuid.UUID
    user_id: uuid.UUID
    object_key: str


@dataclass(frozen=True, slots=True)
class PlanStorage:
    bytes: int
    objects: int


class RetentionRepository:
    """Screenshots past their plan's retention, and stored bytes by plan (signal_service/retention.py)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def expired(self, cutoffs: dict[str, datetime], limit: int) -> list[ExpiringScreenshot]:
        """COMPLETED screenshots finished before their user's plan cutoff, oldest first, their signals
        locked until commit (skipping any another transaction holds)."""
        if not cutoffs:
            return []
        due = sa.or_(
            *(
                sa.and_(User.plan == plan, Screenshot.completed_at < cutoff)
                for plan, cutoff in cutoffs.items()
            )
        )
        statement = (
            sa.select(Signal.id, Signal.user_id, Screenshot.object_key)
            .join(Screenshot, Screenshot.signal_id == Signal.id)
            .join(User, User.id == Signal.user_id)
            .where(Screenshot.status == ScreenshotStatus.COMPLETED, due)
            .order_by(Screenshot.completed_at)
            .limit(limit)
            .with_for_update(of=Signal, skip_locked=True)
        )
        return [
            ExpiringScreenshot(signal_id=row[0], user_id=row[1], object_key=row[2] or "")
            for row in await self.session.execute(statement)
        ]

    async def usage_by_plan(self) -> dict[str, PlanStorage]:
        statement = (
            sa.select(
                User.plan,
                sa.cast(sa.func.coalesce(sa.func.sum(Screenshot.size_bytes), 0), sa.BigInteger),
                sa.func.count(),
            )
            .select_from(Screenshot)
            .join(User, User.id == Screenshot.user_id)
            .where(Screenshot.status == ScreenshotStatus.COMPLETED)
            .group_by(User.plan)
        )
        return {
            row[0]: PlanStorage(bytes=int(row[1]), objects=int(row[2]))
            for row in await self.session.execute(statement)
        }
