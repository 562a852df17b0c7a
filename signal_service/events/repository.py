"""SQL of the per-user signal event log and its NOTIFY channel."""

from __future__ import annotations

import uuid
from typing import cast

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from signal_service.models import EventType, SignalEvent, User
from signal_service.rows import column_values

EVENTS_CHANNEL = "alerts_signal_events"


class EventRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, event: SignalEvent) -> None:
        """Appends the event and notifies listeners; PostgreSQL delivers the notification only on commit."""
        await self.session.execute(sa.insert(SignalEvent).values(column_values(event)))
        await self.session.execute(
            sa.select(sa.func.pg_notify(EVENTS_CHANNEL, f"{event.user_id}:{event.seq}"))
        )

    async def after(self, user_id: uuid.UUID, seq: int, limit: int) -> list[SignalEvent]:
        """The user's events after `seq`, oldest first, as read-only records with the model's attribute
        names rather than ORM instances: a replay reads a thousand a page, and building (then collecting)
        ORM objects was the largest share of its CPU (docs/perf/scale.md). Each holds seq, type,
        signal_id, created_at and payload, the payload only where a message shows it (session events):
        decoding the others' empty documents cost a share more (docs/perf/analysis.md, "Round 4: replay")."""
        table = sa.inspect(SignalEvent).local_table
        statement = (
            sa.select(
                table.c.seq,
                table.c.type,
                table.c.signal_id,
                table.c.created_at,
                sa.case((table.c.type == EventType.TRADINGVIEW_SESSION_UPDATED.value, table.c.payload)).label(
                    "payload"
                ),
            )
            .where(table.c.user_id == user_id, table.c.seq > seq)
            .order_by(table.c.seq)
            .limit(limit)
        )
        return cast(list[SignalEvent], list(await self.session.execute(statement)))

    async def head(self, user_id: uuid.UUID) -> int | None:
        """The user's last committed event sequence number; None when the user does not exist."""
        statement = sa.select(col(User.event_seq)).where(col(User.id) == user_id)
        return (await self.session.execute(statement)).scalar_one_or_none()

    async def last_seq(self, user_id: uuid.UUID) -> int:
        statement = sa.select(col(User.event_seq)).where(col(User.id) == user_id)
        return (await self.session.execute(statement)).scalar_one_or_none() or 0
