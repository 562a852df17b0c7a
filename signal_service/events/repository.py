"""SQL of the per-user signal event log and its NOTIFY channel."""

from __future__ import annotations

import uuid

import asyncpg
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from signal_service.models import EventType, SignalEvent, User
from signal_service.rows import column_values, epoch_micros

EVENTS_CHANNEL = "alerts_signal_events"


# A page of a user's events after a seq, oldest first, each with its signal as it is now and the signal's
# screenshot, as positional records in exactly what a SignalEvent message needs (the order below is the
# one signal_service.event_messages unpacks): ids as text, times as epoch microseconds, JSON as text, and
# NULL rather than the empty documents most signals hold. One statement on a plain asyncpg connection: a
# replay reads a thousand events a page, and SQLAlchemy's execute path and its rows, the second query for
# the signals and the field-by-field copies were most of a page's read (docs/perf/scale.md, "Round 5
# (branch replay)").
# A signal shows only on its own user's events; NULL columns where the event names no signal, or one
# since deleted.
REPLAY_PAGE_SQL = f"""
SELECT e.seq,
       e.type,
       {epoch_micros("e.created_at")},
       CASE WHEN e.type = '{EventType.TRADINGVIEW_SESSION_UPDATED.value}' THEN e.payload::text END,
       s.id::text,
       s.chart_id,
       s.indicator,
       s.indicator_key,
       s.ticker,
       s.exchange,
       s.symbol,
       s.price,
       s.signal_type,
       s.interval,
       {epoch_micros("s.alert_time")},
       {epoch_micros("s.bar_time")},
       {epoch_micros("s.fired_at")},
       s.delayed_feed,
       s.parse_status,
       NULLIF(s.parse_problems, '[]'::jsonb)::text,
       NULLIF(s.extra, '{{}}'::jsonb)::text,
       s.raw_body,
       s.content_type,
       s.screenshot_status,
       s.result,
       s.profit_loss,
       s.notes,
       {epoch_micros("s.created_at")},
       {epoch_micros("s.updated_at")},
       sc.status,
       sc.object_key,
       sc.error,
       {epoch_micros("sc.completed_at")}
  FROM signal_events e
  LEFT JOIN signals s ON s.id = e.signal_id AND s.user_id = e.user_id
  LEFT JOIN screenshots sc ON sc.signal_id = s.id
 WHERE e.user_id = $1 AND e.seq > $2
 ORDER BY e.seq
 LIMIT $3
"""  # noqa: S608 (built from this module's constants)


async def replay_page(
    connection: asyncpg.Connection, user_id: uuid.UUID, after_seq: int, limit: int
) -> list[asyncpg.Record]:
    """Up to `limit` of the user's events after `after_seq`, oldest first (REPLAY_PAGE_SQL's records)."""
    return list(await connection.fetch(REPLAY_PAGE_SQL, user_id, after_seq, limit))


class EventRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, event: SignalEvent) -> None:
        """Appends the event and notifies listeners; PostgreSQL delivers the notification only on commit."""
        await self.session.execute(sa.insert(SignalEvent).values(column_values(event)))
        await self.session.execute(
            sa.select(sa.func.pg_notify(EVENTS_CHANNEL, f"{event.user_id}:{event.seq}"))
        )

    async def head(self, user_id: uuid.UUID) -> int | None:
        """The user's last committed event sequence number; None when the user does not exist."""
        statement = sa.select(col(User.event_seq)).where(col(User.id) == user_id)
        return (await self.session.execute(statement)).scalar_one_or_none()

    async def last_seq(self, user_id: uuid.UUID) -> int:
        statement = sa.select(col(User.event_seq)).where(col(User.id) == user_id)
        return (await self.session.execute(statement)).scalar_one_or_none() or 0
