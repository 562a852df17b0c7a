"""The intake's SQL: the webhook users lookup and the call of the ingest function (intake/sql/)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg

from signal_service.events.repository import EVENTS_CHANNEL
from signal_service.outbox.repository import OutboxEntry
from signal_service.rows import storable


@dataclass(frozen=True, slots=True)
class WebhookUserRow:
    id: uuid.UUID
    plan: str
    webhook_enabled: bool
    ip_allowlist: list[str]
    require_tradingview_client_certificate: bool


@dataclass(frozen=True, slots=True)
class WebhookIngest:
    """One webhook as the intake's single statement takes it: what the caller believes about the user
    (re-verified under the user's lock), and the rows to write when it is a new alert within quota."""

    user_id: uuid.UUID
    token_hash: str
    plan: str
    ip_allowlist: Sequence[str]
    require_tradingview_client_certificate: bool
    now: datetime
    next_quota_reset: datetime
    idempotency_key: str | None
    body_sha256: bytes
    dedupe_since: datetime
    dedupe_until: datetime
    signal_id: uuid.UUID
    chart_id: str
    indicator: str | None
    indicator_key: str | None
    ticker: str | None
    exchange: str | None
    symbol: str | None
    price: Decimal | None
    signal_type: str | None
    interval: str | None
    alert_time: datetime
    bar_time: datetime | None
    fired_at: datetime | None
    delayed_feed: bool
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
    # "accepted", "duplicate", "quota_exceeded", "rate_limited" or "stale" (intake/sql/ingest_webhook_v4.sql).
    outcome: str
    signal_id: uuid.UUID | None
    screenshot_status: str | None
    quota: int | None
    quota_resets_at: datetime | None
    retry_after_seconds: float | None


# The input parameters of ingest_webhook as the latest version (intake/sql/ingest_webhook_v4.sql)
# declares them; tests/integration/signal_service/test_ingest_function.py compares them with the
# migrated database's function and with ingest_arguments.
INGEST_PARAMETERS = (
    "p_user_id",
    "p_token_hash",
    "p_plan",
    "p_ip_allowlist",
    "p_require_client_certificate",
    "p_now",
    "p_next_quota_reset",
    "p_idempotency_key",
    "p_body_sha256",
    "p_dedupe_since",
    "p_dedupe_until",
    "p_signal_id",
    "p_chart_id",
    "p_indicator",
    "p_indicator_key",
    "p_ticker",
    "p_exchange",
    "p_symbol",
    "p_price",
    "p_signal_type",
    "p_interval",
    "p_alert_time",
    "p_bar_time",
    "p_fired_at",
    "p_delayed_feed",
    "p_parse_status",
    "p_parse_problems",
    "p_extra",
    "p_raw_body",
    "p_content_type",
    "p_source_ip",
    "p_received_at",
    "p_screenshot_status",
    "p_outbox_queue",
    "p_outbox_actor",
    "p_outbox_args",
    "p_outbox_options",
    "p_events_channel",
    "p_request_id",
    "p_user_agent",
    "p_latency_ms",
    "p_body_sha256_hex",
    "p_audit_body",
    "p_body_size",
    "p_rate_interval",
    "p_rate_burst",
)


def _ingest_statement(parameters: Sequence[str]) -> str:
    """Named notation (`p_x => $n`), so an argument can only reach the parameter of its name."""
    arguments = ", ".join(f"{name} => ${position}" for position, name in enumerate(parameters, start=1))
    columns = "outcome, signal_id, screenshot_status, quota, quota_resets_at, retry_after_seconds"
    return f"SELECT {columns} FROM ingest_webhook({arguments})"  # noqa: S608 (constant names, bound values)


_INGEST_WEBHOOK = _ingest_statement(INGEST_PARAMETERS)


# Users by token hash: the current token, or the previous one within its grace period.
_WEBHOOK_USERS_QUERY = """
SELECT t.token_hash, u.id, u.plan, u.webhook_enabled, c.ip_allowlist, c.require_tradingview_client_certificate
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
        record = await self.connection.fetchrow(_INGEST_WEBHOOK, *_positional(row))
        assert record is not None
        return WebhookOutcome(*record)

    async def ingest_many(self, rows: Sequence[WebhookIngest]) -> list[WebhookOutcome]:
        """Stores several alerts in one transaction, in order: one round trip and one commit (one WAL
        flush) for all of them. Either every row's outcome holds or, when this raises, none does."""
        async with self.connection.transaction():
            records = await self.connection.fetchmany(_INGEST_WEBHOOK, [_positional(row) for row in rows])
        return [WebhookOutcome(*record) for record in records]


def ingest_arguments(row: WebhookIngest) -> dict[str, Any]:
    """The ingest function's arguments, by parameter name."""
    outbox = row.outbox
    return {
        "p_user_id": row.user_id,
        "p_token_hash": row.token_hash,
        "p_plan": row.plan,
        "p_ip_allowlist": list(row.ip_allowlist),
        "p_require_client_certificate": row.require_tradingview_client_certificate,
        "p_now": row.now,
        "p_next_quota_reset": row.next_quota_reset,
        "p_idempotency_key": row.idempotency_key,
        "p_body_sha256": row.body_sha256,
        "p_dedupe_since": row.dedupe_since,
        "p_dedupe_until": row.dedupe_until,
        "p_signal_id": row.signal_id,
        "p_chart_id": storable(row.chart_id),
        "p_indicator": storable(row.indicator),
        "p_indicator_key": storable(row.indicator_key),
        "p_ticker": storable(row.ticker),
        "p_exchange": storable(row.exchange),
        "p_symbol": storable(row.symbol),
        "p_price": row.price,
        "p_signal_type": storable(row.signal_type),
        "p_interval": storable(row.interval),
        "p_alert_time": row.alert_time,
        "p_bar_time": row.bar_time,
        "p_fired_at": row.fired_at,
        "p_delayed_feed": row.delayed_feed,
        "p_parse_status": row.parse_status,
        "p_parse_problems": json.dumps(storable(row.parse_problems)),
        "p_extra": json.dumps(storable(row.extra)),
        "p_raw_body": row.raw_body,
        "p_content_type": storable(row.content_type),
        "p_source_ip": storable(row.source_ip),
        "p_received_at": row.received_at,
        "p_screenshot_status": row.screenshot_status,
        "p_outbox_queue": outbox.queue_name if outbox else None,
        "p_outbox_actor": outbox.actor_name if outbox else None,
        "p_outbox_args": json.dumps(outbox.args) if outbox else None,
        "p_outbox_options": json.dumps(outbox.options) if outbox else None,
        "p_events_channel": EVENTS_CHANNEL,
        "p_request_id": row.request_id,
        "p_user_agent": storable(row.user_agent),
        "p_latency_ms": row.latency_ms,
        "p_body_sha256_hex": row.body_sha256.hex(),
        "p_audit_body": row.audit_body,
        "p_body_size": row.body_size,
        "p_rate_interval": row.rate_interval,
        "p_rate_burst": row.rate_burst,
    }


def _positional(row: WebhookIngest) -> list[Any]:
    arguments = ingest_arguments(row)
    return [arguments[name] for name in INGEST_PARAMETERS]
