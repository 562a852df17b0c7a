"""SQL of the notification delivery ledger (the rows themselves are written by the notify_feed() trigger)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

import asyncpg
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from signal_service.database import AttributeRecord
from signal_service.models import DeliveryStatus, NotificationDelivery, OutboxMessage, UserConfig
from signal_service.rows import epoch_micros

OPEN_STATUSES = (DeliveryStatus.PENDING, DeliveryStatus.SENDING)
FAILED_STATUSES = (DeliveryStatus.FAILED, DeliveryStatus.DEAD)

# The deliveries of a replay page's signals, oldest first, as positional records in what a
# NotificationDelivery message shows (the order signal_service.event_messages unpacks): ids as text, times
# as epoch microseconds. A plain asyncpg statement for the same reason as the page's own
# (signal_service.events.repository.REPLAY_PAGE_SQL).
DELIVERIES_FOR_MESSAGES_SQL = f"""
SELECT signal_id::text,
       channel,
       kind,
       status,
       attempts,
       last_error,
       provider_message_id,
       with_photo,
       {epoch_micros("created_at")},
       {epoch_micros("updated_at")},
       {epoch_micros("delivered_at")}
  FROM notification_deliveries
 WHERE signal_id = ANY($1::text[]::uuid[])
 ORDER BY id
"""  # noqa: S608 (built from this module's constants)


class DeliveryReads:
    """The deliveries that Signal messages show, on a plain asyncpg connection: one round trip, where a
    session added a ping, BEGIN and ROLLBACK (docs/perf/scale.md, "ListSignals")."""

    def __init__(self, connection: asyncpg.Connection) -> None:
        self.connection = connection

    async def for_signals(self, signal_ids: Sequence[uuid.UUID]) -> list[NotificationDelivery]:
        """The signals' deliveries, oldest first, as read-only records with the model's attribute names (a
        page of listed signals; a replay page's come from for_messages): no ORM instances, and one array
        parameter rather than a list compiled and planned again for every length."""
        records = await self.connection.fetch(
            "SELECT * FROM notification_deliveries WHERE signal_id = ANY($1::uuid[]) ORDER BY id",
            list(signal_ids),
            record_class=AttributeRecord,
        )
        return cast(list[NotificationDelivery], records)

    async def for_messages(self, signal_ids: Sequence[str]) -> list[asyncpg.Record]:
        """The deliveries of the signals (ids as text) as DELIVERIES_FOR_MESSAGES_SQL's positional records."""
        return list(await self.connection.fetch(DELIVERIES_FOR_MESSAGES_SQL, list(signal_ids)))


class NotificationRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def lock_for_signal(self, signal_id: uuid.UUID) -> list[NotificationDelivery]:
        """The signal's deliveries, locked until commit: claims and reports of one signal take turns."""
        statement = (
            sa.select(NotificationDelivery)
            .where(col(NotificationDelivery.signal_id) == signal_id)
            .order_by(col(NotificationDelivery.id))
            .with_for_update()
        )
        return list((await self.session.execute(statement)).scalars())

    async def oldest_open_alerts(
        self, user_id: uuid.UUID, channels: Sequence[str], now: datetime
    ) -> dict[str, tuple[int, uuid.UUID, bool]]:
        """Per channel, the user's oldest alert delivery still open: (delivery id, signal id, whether a
        worker holds it under a live lease)."""
        statement = (
            sa.select(
                col(NotificationDelivery.channel),
                col(NotificationDelivery.id),
                col(NotificationDelivery.signal_id),
                col(NotificationDelivery.status),
                col(NotificationDelivery.lease_until),
            )
            .where(
                col(NotificationDelivery.user_id) == user_id,
                col(NotificationDelivery.channel).in_(channels),
                col(NotificationDelivery.kind) == "alert",
                col(NotificationDelivery.status).in_(OPEN_STATUSES),
            )
            .order_by(col(NotificationDelivery.channel), col(NotificationDelivery.id))
            .ext(distinct_on(col(NotificationDelivery.channel)))
        )
        rows = await self.session.execute(statement)
        return {row.channel: (row.id, row.signal_id, _held(row.status, row.lease_until, now)) for row in rows}

    async def next_open_alert(self, user_id: uuid.UUID, channel: str, after_id: int) -> uuid.UUID | None:
        """The signal of the user's next open alert on `channel` after delivery `after_id`."""
        statement = (
            sa.select(col(NotificationDelivery.signal_id))
            .where(
                col(NotificationDelivery.user_id) == user_id,
                col(NotificationDelivery.channel) == channel,
                col(NotificationDelivery.kind) == "alert",
                col(NotificationDelivery.status).in_(OPEN_STATUSES),
                col(NotificationDelivery.id) > after_id,
            )
            .order_by(col(NotificationDelivery.id))
            .limit(1)
        )
        return (await self.session.execute(statement)).scalar_one_or_none()

    async def preferences(self, user_id: uuid.UUID) -> tuple[dict[str, Any], bytes | None]:
        statement = sa.select(
            col(UserConfig.notification_preferences), col(UserConfig.notification_secrets_ciphertext)
        ).where(col(UserConfig.user_id) == user_id)
        row = (await self.session.execute(statement)).one_or_none()
        return (row[0] or {}, row[1]) if row else ({}, None)

    async def update(self, delivery_id: int, **values: Any) -> None:
        await self.session.execute(
            sa.update(NotificationDelivery)
            .where(col(NotificationDelivery.id) == delivery_id)
            .values(**values, updated_at=sa.func.now())
        )

    async def report(self, delivery_id: int, claim_id: str, **values: Any) -> NotificationDelivery | None:
        """Records a claim's result once: None when the claim was already reported or lost its lease."""
        statement = (
            sa.update(NotificationDelivery)
            .where(
                col(NotificationDelivery.id) == delivery_id,
                col(NotificationDelivery.claim_id) == claim_id,
                col(NotificationDelivery.status) == DeliveryStatus.SENDING,
            )
            .values(**values, lease_until=None, updated_at=sa.func.now())
            .returning(NotificationDelivery)
        )
        return (await self.session.execute(statement)).scalar_one_or_none()

    async def get(self, delivery_id: int) -> NotificationDelivery | None:
        return await self.session.get(NotificationDelivery, delivery_id)

    async def failed(
        self, user_id: uuid.UUID | None, after: tuple[datetime, int] | None, limit: int
    ) -> list[NotificationDelivery]:
        statement = sa.select(NotificationDelivery).where(
            col(NotificationDelivery.status).in_(FAILED_STATUSES)
        )
        if user_id is not None:
            statement = statement.where(col(NotificationDelivery.user_id) == user_id)
        if after is not None:
            statement = statement.where(
                sa.tuple_(col(NotificationDelivery.updated_at), col(NotificationDelivery.id))
                < sa.tuple_(*after)
            )
        statement = statement.order_by(
            col(NotificationDelivery.updated_at).desc(), col(NotificationDelivery.id).desc()
        ).limit(limit)
        return list((await self.session.execute(statement)).scalars())

    async def rearm_failed(self, signal_ids: Sequence[uuid.UUID] | None) -> list[uuid.UUID]:
        """FAILED and DEAD deliveries back to PENDING; returns their signals, each once."""
        statement = (
            sa.update(NotificationDelivery)
            .where(col(NotificationDelivery.status).in_(FAILED_STATUSES))
            .values(
                status=DeliveryStatus.PENDING,
                attempts=0,
                last_error=None,
                due_since=sa.func.now(),
                updated_at=sa.func.now(),
            )
            .returning(col(NotificationDelivery.signal_id))
        )
        if signal_ids is not None:
            statement = statement.where(col(NotificationDelivery.signal_id).in_(signal_ids))
        return list(dict.fromkeys((await self.session.execute(statement)).scalars()))

    async def add_job(self, message: OutboxMessage) -> None:
        await self.session.execute(
            sa.insert(OutboxMessage).values(
                queue_name=message.queue_name,
                actor_name=message.actor_name,
                args=message.args,
                options=message.options,
            )
        )

    async def oldest_open_age_seconds(self) -> float:
        statement = sa.select(
            sa.func.coalesce(
                sa.func.extract("epoch", sa.func.now() - sa.func.min(col(NotificationDelivery.due_since))), 0
            )
        ).where(col(NotificationDelivery.status).in_(OPEN_STATUSES))
        return float((await self.session.execute(statement)).scalar_one())

    async def count_unfinished(self) -> dict[str, int]:
        """The open and the failed deliveries by status, each set read from its partial index: the
        delivered ones, nearly all of a year's ledger, are never counted (refreshed every 15 s)."""
        statement = sa.union_all(
            *(
                sa.select(col(NotificationDelivery.status), sa.func.count())
                .where(col(NotificationDelivery.status).in_(statuses))
                .group_by(col(NotificationDelivery.status))
                for statuses in (OPEN_STATUSES, FAILED_STATUSES)
            )
        )
        return {row[0]: row[1] for row in await self.session.execute(statement)}


def _held(status: str, lease_until: datetime | None, now: datetime) -> bool:
    """Whether a worker holds the delivery now: sending, under a lease that has not run out."""
    return status == DeliveryStatus.SENDING and lease_until is not None and lease_until > now
