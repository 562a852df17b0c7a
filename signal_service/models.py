"""Tables owned by the signal service. Only the domains' repository.py modules query them."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlmodel import Field, SQLModel


class Plan(StrEnum):
    FREE = "free"
    BASIC = "basic"
    PRO = "pro"
    PREMIUM = "premium"


class ScreenshotStatus(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"
    EXPIRED = "expired"


class SignalResult(StrEnum):
    PENDING = "pending"
    WIN = "win"
    LOSS = "loss"
    SKIP = "skip"


class EventType(StrEnum):
    CREATED = "created"
    SCREENSHOT_UPDATED = "screenshot_updated"
    OUTCOME_UPDATED = "outcome_updated"
    TRADINGVIEW_SESSION_UPDATED = "tradingview_session_updated"


def _utc_column(*, nullable: bool = False, index: bool = False) -> Any:
    return sa.Column(sa.DateTime(timezone=True), nullable=nullable, index=index)


def _now_column() -> Any:
    return sa.Column(sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now())


class User(SQLModel, table=True):
    __tablename__ = "users"
    # Every replica reads the recent revocations each second (users/access.py).
    __table_args__ = (sa.Index("ix_users_access_tokens_revoked_before", "access_tokens_revoked_before"),)

    id: uuid.UUID = Field(sa_column=sa.Column(pg.UUID(as_uuid=True), primary_key=True))
    external_id: str | None = Field(default=None, sa_column=sa.Column(sa.Text, unique=True))
    plan: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    webhook_token_hash: str = Field(sa_column=sa.Column(sa.Text, nullable=False, unique=True))
    previous_token_hash: str | None = Field(default=None, sa_column=sa.Column(sa.Text, unique=True))
    previous_token_expires_at: datetime | None = Field(default=None, sa_column=_utc_column(nullable=True))
    webhook_enabled: bool = Field(default=True, sa_column=sa.Column(sa.Boolean, nullable=False))
    signals_quota: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    signals_used: int = Field(default=0, sa_column=sa.Column(sa.BigInteger, nullable=False))
    quota_reset_at: datetime = Field(sa_column=_utc_column())
    # Per-user event sequence: incremented under the row lock, so a user's events commit in order.
    event_seq: int = Field(default=0, sa_column=sa.Column(sa.BigInteger, nullable=False))
    # The per-user rate limit's state (GCRA theoretical arrival time), kept by ingest_webhook().
    rate_tat: datetime | None = Field(default=None, sa_column=_utc_column(nullable=True))
    # Access tokens issued before this instant are refused (RevokeAccessTokens).
    access_tokens_revoked_before: datetime | None = Field(default=None, sa_column=_utc_column(nullable=True))
    created_at: datetime = Field(sa_column=_now_column())
    updated_at: datetime = Field(sa_column=_now_column())


class UserConfig(SQLModel, table=True):
    __tablename__ = "user_config"
    __table_args__ = (
        sa.Index(
            "ix_user_config_session_checked",
            "tv_cookies_checked_at",
            postgresql_where=sa.text("tv_session_ciphertext IS NOT NULL"),
        ),
    )

    user_id: uuid.UUID = Field(
        sa_column=sa.Column(
            pg.UUID(as_uuid=True), sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
        )
    )
    default_chart_id: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    ip_allowlist: list[str] = Field(
        default_factory=list, sa_column=sa.Column(pg.ARRAY(sa.Text), nullable=False, server_default="{}")
    )
    # Webhooks are admitted only when the edge vouches that Envoy verified TradingView's client
    # certificate on the connection (IngestWebhookRequest.tradingview_client_certificate_verified).
    require_tradingview_client_certificate: bool = Field(
        default=False, sa_column=sa.Column(sa.Boolean, nullable=False, server_default=sa.false())
    )
    notification_preferences: dict[str, Any] = Field(
        default_factory=dict, sa_column=sa.Column(pg.JSONB, nullable=False, server_default="{}")
    )
    # AES-GCM ciphertext of the preferences' secrets ({"webhook_secret", "discord_webhook_url"}); the
    # preferences document itself holds none (mesh.notification_preferences).
    notification_secrets_ciphertext: bytes | None = Field(default=None, sa_column=sa.Column(sa.LargeBinary))
    # AES-GCM ciphertext of {"sessionid", "sessionid_sign"}; see mesh.crypto.
    tv_session_ciphertext: bytes | None = Field(default=None, sa_column=sa.Column(sa.LargeBinary))
    tv_cookies_valid: bool | None = Field(default=None, sa_column=sa.Column(sa.Boolean))
    tv_cookies_checked_at: datetime | None = Field(default=None, sa_column=_utc_column(nullable=True))
    tv_cookies_changed_at: datetime | None = Field(default=None, sa_column=_utc_column(nullable=True))
    # When the stored cookies were set: a capture claimed before this used the previous ones.
    tv_session_set_at: datetime | None = Field(default=None, sa_column=_utc_column(nullable=True))
    # When a session check was last queued for this user, and when and by which job it was last claimed
    # (see signal_service/sessions/service.py).
    tv_check_requested_at: datetime | None = Field(default=None, sa_column=_utc_column(nullable=True))
    tv_check_claimed_at: datetime | None = Field(default=None, sa_column=_utc_column(nullable=True))
    tv_check_claimed_by: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    updated_at: datetime = Field(sa_column=_now_column())


class Signal(SQLModel, table=True):
    __tablename__ = "signals"
    __table_args__ = (
        sa.Index("ix_signals_user_created", "user_id", sa.text("created_at DESC"), sa.text("id DESC")),
        # Ingest's same-body check within the dedupe window: the user's last minute, the hash checked in
        # the index; inserts go to the end of the user's range (migration 0018).
        sa.Index("ix_signals_user_created_body", "user_id", "created_at", "body_sha256"),
        # ListSignals' equality filters, newest first (docs/perf/scale-plans.md).
        *(
            sa.Index(
                f"ix_signals_user_{name}_created",
                "user_id",
                column,
                sa.text("created_at DESC"),
                sa.text("id DESC"),
            )
            for name, column in (
                ("ticker", "ticker"),
                ("indicator", "indicator"),
                ("type", "signal_type"),
                ("result", "result"),
            )
        ),
        # No index names screenshot_status, in its columns or its predicate: a capture's claim and report
        # and retention's expiry then update the row heap-only (HOT), in the room fillfactor 90 leaves on
        # each page (migration 0016_retention_bytes). Failed captures are found by ix_screenshots_failed.
    )

    id: uuid.UUID = Field(sa_column=sa.Column(pg.UUID(as_uuid=True), primary_key=True))
    user_id: uuid.UUID = Field(
        sa_column=sa.Column(
            pg.UUID(as_uuid=True), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        )
    )
    chart_id: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    # The indicator as the alert named it; indicator_key is the catalog's name for it (None when the
    # catalog does not know it), which filters match so that every spelling counts as one indicator.
    indicator: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    indicator_key: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    ticker: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    exchange: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    symbol: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    price: Decimal | None = Field(default=None, sa_column=sa.Column(sa.Numeric))
    signal_type: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    interval: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    alert_time: datetime = Field(sa_column=_utc_column())
    # TradingView's {{time}} (the bar's open) and {{timenow}} (when the alert fired), where the message
    # says which is which.
    bar_time: datetime | None = Field(default=None, sa_column=_utc_column(nullable=True))
    fired_at: datetime | None = Field(default=None, sa_column=_utc_column(nullable=True))
    # The exchange is a delayed feed ("NASDAQ_DLY"): the price was not live.
    delayed_feed: bool = Field(
        default=False, sa_column=sa.Column(sa.Boolean, nullable=False, server_default=sa.false())
    )
    parse_status: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    parse_problems: list[str] = Field(
        default_factory=list, sa_column=sa.Column(pg.JSONB, nullable=False, server_default="[]")
    )
    extra: dict[str, Any] = Field(
        default_factory=dict, sa_column=sa.Column(pg.JSONB, nullable=False, server_default="{}")
    )
    raw_body: bytes = Field(sa_column=sa.Column(sa.LargeBinary, nullable=False))
    content_type: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    body_sha256: bytes = Field(sa_column=sa.Column(sa.LargeBinary, nullable=False))
    source_ip: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    # Set by the edge when it replays a spooled request: a replay of an already stored request is a no-op.
    idempotency_key: str | None = Field(default=None, sa_column=sa.Column(sa.Text, unique=True))
    result: str = Field(default=SignalResult.PENDING, sa_column=sa.Column(sa.Text, nullable=False))
    profit_loss: Decimal | None = Field(default=None, sa_column=sa.Column(sa.Numeric))
    notes: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    screenshot_status: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    created_at: datetime = Field(sa_column=_utc_column())
    updated_at: datetime = Field(sa_column=_now_column())


class UserSignalCounts(SQLModel, table=True):
    """One user's signal and screenshot counts for one calendar month (UTC), what GetUserStats reads.

    Kept by statement-level triggers on signals and screenshots (migration 0007_scale), never written
    by the service: every write to those tables is counted, whoever makes it.
    """

    __tablename__ = "user_signal_counts"

    user_id: uuid.UUID = Field(
        sa_column=sa.Column(
            pg.UUID(as_uuid=True), sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
        )
    )
    month: date = Field(sa_column=sa.Column(sa.Date, primary_key=True))
    signals: int = Field(default=0, sa_column=sa.Column(sa.BigInteger, nullable=False, server_default="0"))
    wins: int = Field(default=0, sa_column=sa.Column(sa.BigInteger, nullable=False, server_default="0"))
    losses: int = Field(default=0, sa_column=sa.Column(sa.BigInteger, nullable=False, server_default="0"))
    # Signals whose screenshot is PENDING or PROCESSING.
    screenshots_pending: int = Field(
        default=0, sa_column=sa.Column(sa.BigInteger, nullable=False, server_default="0")
    )
    # COMPLETED screenshots, by the month their row was created.
    storage_bytes: int = Field(
        default=0, sa_column=sa.Column(sa.BigInteger, nullable=False, server_default="0")
    )
    storage_objects: int = Field(
        default=0, sa_column=sa.Column(sa.BigInteger, nullable=False, server_default="0")
    )


class Screenshot(SQLModel, table=True):
    # fillfactor 90 (migration 0018): a row's updates keep to its page, and inserts go to the table's end
    # rather than into the last bytes of every old page.
    __tablename__ = "screenshots"
    __table_args__ = (
        sa.Index(
            "ix_screenshots_stale_processing",
            "claimed_at",
            postgresql_where=sa.text("status = 'processing'"),
        ),
        # Retention: each user's completed screenshots by age (retention/repository.py).
        sa.Index(
            "ix_screenshots_user_completed",
            "user_id",
            "completed_at",
            postgresql_where=sa.text("status = 'completed'"),
        ),
        # The failed captures, everyone's or one user's (captures/repository.py).
        sa.Index("ix_screenshots_failed", "user_id", postgresql_where=sa.text("status = 'failed'")),
        # The sweeper's PENDING captures untouched for long (captures/repository.py, migration 0017).
        sa.Index(
            "ix_screenshots_stale_pending",
            "updated_at",
            postgresql_where=sa.text("status = 'pending'"),
        ),
    )

    signal_id: uuid.UUID = Field(
        sa_column=sa.Column(
            pg.UUID(as_uuid=True), sa.ForeignKey("signals.id", ondelete="CASCADE"), primary_key=True
        )
    )
    user_id: uuid.UUID = Field(sa_column=sa.Column(pg.UUID(as_uuid=True), nullable=False))
    status: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    object_key: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    size_bytes: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger))
    width: int | None = Field(default=None, sa_column=sa.Column(sa.Integer))
    height: int | None = Field(default=None, sa_column=sa.Column(sa.Integer))
    duration_ms: int | None = Field(default=None, sa_column=sa.Column(sa.Integer))
    attempts: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0"))
    # Numbers every ClaimCapture that proceeds; reports name the claim they come from, so that a report
    # from a claim superseded since (a redelivery, a sweep) cannot overwrite the current one's outcome.
    claim: int = Field(default=0, sa_column=sa.Column(sa.BigInteger, nullable=False, server_default="0"))
    error: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    worker_id: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    claimed_at: datetime | None = Field(default=None, sa_column=_utc_column(nullable=True))
    completed_at: datetime | None = Field(default=None, sa_column=_utc_column(nullable=True))
    created_at: datetime = Field(sa_column=_now_column())
    updated_at: datetime = Field(sa_column=_now_column())


class AuditLog(SQLModel, table=True):
    """One webhook call, or (repeat_window set) every repeat of one summarised refusal within a minute.

    Summarised refusals (audit/service.py) keep the body's size and SHA-256 but not the body, and their
    source_ip is the source as rate limits count it (an IPv6 address's /64). Accepted calls keep no body
    either: their signal's raw_body is it (intake/sql/ingest_webhooks_v6.sql).
    """

    __tablename__ = "audit_logs"
    # One partition per calendar month (UTC), dropped whole by pruning (migration 0014_partitions): every
    # unique index includes created_at, the partition key.
    __table_args__ = (
        sa.Index("ix_audit_logs_user_created", "user_id", "created_at"),
        sa.Index(
            "ux_audit_logs_repeats",
            "repeat_window",
            "user_id",
            "source_ip",
            "outcome",
            "reason",
            "created_at",
            unique=True,
            postgresql_where=sa.text("repeat_window IS NOT NULL"),
            postgresql_nulls_not_distinct=True,
        ),
        {"postgresql_partition_by": "RANGE (created_at)"},
    )

    id: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger, sa.Identity(), primary_key=True))
    created_at: datetime = Field(
        sa_column=sa.Column(sa.DateTime(timezone=True), primary_key=True, nullable=False, index=True)
    )
    user_id: uuid.UUID | None = Field(default=None, sa_column=sa.Column(pg.UUID(as_uuid=True)))
    signal_id: uuid.UUID | None = Field(default=None, sa_column=sa.Column(pg.UUID(as_uuid=True)))
    request_id: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    source_ip: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    user_agent: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    # "accepted", "duplicate", or the refusal reason's status: "not_found", "forbidden", "rate_limited", ...
    outcome: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    reason: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    latency_ms: float | None = Field(default=None, sa_column=sa.Column(sa.Float))
    body_sha256: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    body: bytes | None = Field(default=None, sa_column=sa.Column(sa.LargeBinary))
    body_size: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger))
    content_type: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    # The minute whose repeats this row counts; NULL for a row that never merges.
    repeat_window: datetime | None = Field(default=None, sa_column=_utc_column(nullable=True))
    # Calls this row stands for: 1, or more for a summarised refusal repeated within its minute.
    repeat_count: int = Field(default=1, sa_column=sa.Column(sa.Integer, nullable=False, server_default="1"))


class OutboxMessage(SQLModel, table=True):
    """A message to send to the broker once its transaction has committed; deleted once sent."""

    __tablename__ = "outbox"
    __table_args__ = (sa.Index("ix_outbox_available", "available_at"),)

    id: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger, sa.Identity(), primary_key=True))
    queue_name: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    actor_name: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    args: list[Any] = Field(default_factory=list, sa_column=sa.Column(pg.JSONB, nullable=False))
    options: dict[str, Any] = Field(default_factory=dict, sa_column=sa.Column(pg.JSONB, nullable=False))
    attempts: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0"))
    last_error: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    available_at: datetime = Field(sa_column=_now_column())
    created_at: datetime = Field(sa_column=_now_column())


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    DELIVERED = "delivered"
    # Not needed after all, e.g. a photo follow-up when the alert itself carried the photo.
    SKIPPED = "skipped"
    # The provider refused it for good (a 4xx other than 429); last_error says why.
    FAILED = "failed"
    # Still failing when the delivery deadline passed.
    DEAD = "dead"


class NotificationDelivery(SQLModel, table=True):
    """The delivery ledger: one row per (signal, channel, kind), written by the notify_feed() trigger."""

    __tablename__ = "notification_deliveries"
    __table_args__ = (
        sa.UniqueConstraint("signal_id", "channel", "kind", name="uq_notification_deliveries_signal"),
        sa.Index(
            "ix_notification_deliveries_open",
            "user_id",
            "channel",
            "id",
            postgresql_where=sa.text("status IN ('pending', 'sending')"),
        ),
        sa.Index(
            "ix_notification_deliveries_failed",
            "updated_at",
            postgresql_where=sa.text("status IN ('failed', 'dead')"),
        ),
    )

    # int: deliveries are inserted by SQL (ingest, outcomes) and only ever read back, with their id.
    id: int = Field(default=None, sa_column=sa.Column(sa.BigInteger, sa.Identity(), primary_key=True))
    signal_id: uuid.UUID = Field(
        sa_column=sa.Column(
            pg.UUID(as_uuid=True), sa.ForeignKey("signals.id", ondelete="CASCADE"), nullable=False
        )
    )
    user_id: uuid.UUID = Field(sa_column=sa.Column(pg.UUID(as_uuid=True), nullable=False))
    channel: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    # "alert", "photo" (the chart as a reply to a text alert) or "outcome" (an edit of the alert).
    kind: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    status: str = Field(
        default=DeliveryStatus.PENDING, sa_column=sa.Column(sa.Text, nullable=False, server_default="pending")
    )
    attempts: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0"))
    # Bumped when a later outcome change re-arms an outcome delivery.
    revision: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0"))
    last_error: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    provider_message_id: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    with_photo: bool = Field(
        default=False, sa_column=sa.Column(sa.Boolean, nullable=False, server_default=sa.false())
    )
    claimed_by: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    # Names the attempt holding the lease; its report is accepted once, a stale one ignored.
    claim_id: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    lease_until: datetime | None = Field(default=None, sa_column=_utc_column(nullable=True))
    # When it became due: creation, or an operator's retry. The delivery deadline counts from here.
    due_since: datetime = Field(sa_column=_now_column())
    delivered_at: datetime | None = Field(default=None, sa_column=_utc_column(nullable=True))
    created_at: datetime = Field(sa_column=_now_column())
    updated_at: datetime = Field(sa_column=_now_column())


class SignalEvent(SQLModel, table=True):
    """The ordered log behind SubscribeSignals: one row per change, in the change's transaction."""

    __tablename__ = "signal_events"
    __table_args__ = (sa.UniqueConstraint("user_id", "seq", name="uq_signal_events_user_seq"),)

    id: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger, sa.Identity(), primary_key=True))
    user_id: uuid.UUID = Field(sa_column=sa.Column(pg.UUID(as_uuid=True), nullable=False))
    seq: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    type: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    signal_id: uuid.UUID | None = Field(default=None, sa_column=sa.Column(pg.UUID(as_uuid=True)))
    payload: dict[str, Any] = Field(
        default_factory=dict, sa_column=sa.Column(pg.JSONB, nullable=False, server_default="{}")
    )
    created_at: datetime = Field(sa_column=_now_column())


class ApiKey(SQLModel, table=True):
    """An API key created at runtime (ApiKeyService); only its SHA-256 is stored."""

    __tablename__ = "api_keys"

    id: uuid.UUID = Field(sa_column=sa.Column(pg.UUID(as_uuid=True), primary_key=True))
    key_hash: str = Field(sa_column=sa.Column(sa.Text, nullable=False, unique=True))
    name: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    # A mesh.auth.Role value; "user" keys name their user.
    role: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    user_id: uuid.UUID | None = Field(
        default=None,
        sa_column=sa.Column(pg.UUID(as_uuid=True), sa.ForeignKey("users.id", ondelete="CASCADE")),
    )
    created_at: datetime = Field(sa_column=_now_column())
    revoked_at: datetime | None = Field(default=None, sa_column=_utc_column(nullable=True))


class TelegramLink(SQLModel, table=True):
    """A one-time code binding the Telegram chat that sends it to the bot (`/start <code>`) to a user;
    only its SHA-256 is stored."""

    __tablename__ = "telegram_links"

    code_hash: str = Field(sa_column=sa.Column(sa.Text, primary_key=True))
    user_id: uuid.UUID = Field(
        sa_column=sa.Column(
            pg.UUID(as_uuid=True), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    created_at: datetime = Field(sa_column=_now_column())
    expires_at: datetime = Field(sa_column=_utc_column(nullable=False))
    used_at: datetime | None = Field(default=None, sa_column=_utc_column(nullable=True))
    # The chat it bound, once used.
    chat_id: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
