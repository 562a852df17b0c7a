"""The intake's SQL: the webhook users lookup and the call of the batch ingest function (intake/sql/)."""

from __future__ import annotations

import dataclasses
import json
import operator
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg

from signal_service.events.repository import EVENTS_CHANNEL
from signal_service.rows import storable

# What an audit row keeps of a body; the rest is counted in body_size.
AUDIT_BODY_LIMIT = 64 * 1024


@dataclass(frozen=True, slots=True)
class WebhookUserRow:
    id: uuid.UUID
    plan: str
    webhook_enabled: bool
    ip_allowlist: list[str]
    require_tradingview_client_certificate: bool


# Not frozen, as no row here is changed once built: a frozen dataclass sets each field through
# object.__setattr__, which tripled the construction of these 43 fields (11 against 34 microseconds).
@dataclass(slots=True)
class WebhookIngest:
    """One webhook as the intake's batch statement takes it, one attribute of the ingest_webhook_row type
    (intake/sql/ingest_webhook_row_v5.sql) per field, in its order and already in its form (text without
    NUL, JSON as text): what the caller believes about the user (re-verified under the user's lock), and
    the rows to write when it is a new alert within quota.

    tests/integration/signal_service/test_ingest_function.py compares these fields with the migrated type.
    """

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
    parse_problems: str  # JSON
    extra: str  # JSON
    raw_body: bytes
    content_type: str | None
    source_ip: str | None
    received_at: datetime
    screenshot_status: str
    # The capture job to send after commit (outbox), None when nothing is to be captured.
    outbox_queue: str | None
    outbox_actor: str | None
    outbox_args: str | None  # JSON
    outbox_options: str | None  # JSON
    request_id: str | None
    user_agent: str | None
    latency_ms: float
    body_size: int
    # The user's plan's rate limit: time between webhooks and the burst tolerated; None is not limited.
    rate_interval: timedelta | None
    rate_burst: int


@dataclass(slots=True)
class WebhookOutcome:
    # "accepted", "duplicate", "quota_exceeded", "rate_limited" or "stale" (ingest_webhooks(), intake/sql/).
    outcome: str
    signal_id: uuid.UUID | None
    screenshot_status: str | None
    quota: int | None
    quota_resets_at: datetime | None
    retry_after_seconds: float | None


INGEST_ROW_FIELDS = tuple(field.name for field in dataclasses.fields(WebhookIngest))
# The row as asyncpg encodes a composite: a tuple of its attributes in declaration order, in one C call.
_row_values = operator.attrgetter(*INGEST_ROW_FIELDS)

_INGEST_WEBHOOKS = (
    "SELECT outcome, signal_id, screenshot_status, quota, quota_resets_at, retry_after_seconds"
    " FROM ingest_webhooks($1::ingest_webhook_row[], $2, $3)"
)

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

    async def ingest_many(self, rows: Sequence[WebhookIngest]) -> list[WebhookOutcome]:
        """Stores several alerts with one statement, in user-id order (the caller's order among one user's
        alerts): one round trip and one commit (one WAL flush) for all of them, each with its own outcome,
        in the order given. Either every row's outcome holds or, when this raises, none does.

        The statement is its own transaction, and asyncpg hands its rows back only at ReadyForQuery, which
        PostgreSQL sends after the commit (and its WAL flush): an outcome returned is durable."""
        records = await self.connection.fetch(
            _INGEST_WEBHOOKS, [_row_values(row) for row in rows], EVENTS_CHANNEL, AUDIT_BODY_LIMIT
        )
        return [WebhookOutcome(*record) for record in records]


def json_text(value: Any) -> str:
    """A jsonb attribute's value: JSON text without NUL (which jsonb cannot hold)."""
    return json.dumps(storable(value))
