"""SQL of screenshot retention: expired screenshots and stored bytes by plan."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from signal_service.events.repository import EVENTS_CHANNEL
from signal_service.models import EventType, ScreenshotStatus, User, UserSignalCounts

_UUIDS = pg.ARRAY(pg.UUID(as_uuid=True))

_EXPIRED = sa.text(
    """
    SELECT due.signal_id, due.user_id, due.object_key
    FROM users u
    JOIN unnest(CAST(:plans AS text[]), CAST(:cutoffs AS timestamptz[])) AS c(plan, cutoff) ON c.plan = u.plan
    CROSS JOIN LATERAL (
        SELECT s.signal_id, s.user_id, s.object_key FROM screenshots s
        WHERE s.user_id = u.id AND s.status = 'completed' AND s.completed_at < c.cutoff
        ORDER BY s.completed_at
        LIMIT :limit
    ) due
    JOIN signals ON signals.id = due.signal_id
    ORDER BY u.id
    LIMIT :limit
    FOR UPDATE OF signals SKIP LOCKED
    """
)

# One statement each for a whole batch, whatever its size. Users first, in user-id order (as group commit
# locks them), so that a retention batch and an ingest batch never deadlock; each user's sequence moves
# once, by the number of its expired screenshots, and its events take the numbers in between.
_LOCK_USERS = sa.text("SELECT id FROM users WHERE id = ANY(:user_ids) ORDER BY id FOR UPDATE").bindparams(
    sa.bindparam("user_ids", type_=_UUIDS)
)
_BUMP_EVENT_SEQ = sa.text(
    """
    UPDATE users u SET event_seq = u.event_seq + due.events
    FROM (SELECT user_id, count(*) AS events FROM unnest(:user_ids) AS e(user_id) GROUP BY user_id) due
    WHERE u.id = due.user_id
    """
).bindparams(sa.bindparam("user_ids", type_=_UUIDS))
_EXPIRE_SCREENSHOTS = sa.text(
    "UPDATE screenshots SET status = :expired, updated_at = now() WHERE signal_id = ANY(:signal_ids)"
).bindparams(sa.bindparam("signal_ids", type_=_UUIDS))
# Heap-only (HOT) while no index of signals names screenshot_status: see models.Signal.
_EXPIRE_SIGNALS = sa.text(
    "UPDATE signals SET screenshot_status = :expired, updated_at = now() WHERE id = ANY(:signal_ids)"
).bindparams(sa.bindparam("signal_ids", type_=_UUIDS))
_ADD_EVENTS = sa.text(
    """
    INSERT INTO signal_events (user_id, seq, type, signal_id)
    SELECT e.user_id,
           u.event_seq - count(*) OVER (PARTITION BY e.user_id)
               + row_number() OVER (PARTITION BY e.user_id ORDER BY e.signal_id),
           :event_type, e.signal_id
    FROM unnest(:user_ids, :signal_ids) AS e(user_id, signal_id) JOIN users u ON u.id = e.user_id
    """
).bindparams(sa.bindparam("user_ids", type_=_UUIDS), sa.bindparam("signal_ids", type_=_UUIDS))
# One notification per user, carrying its newest seq: a stream reads everything up to it.
_NOTIFY = sa.text(
    "SELECT pg_notify(:channel, id::text || ':' || event_seq) FROM users WHERE id = ANY(:user_ids)"
).bindparams(sa.bindparam("user_ids", type_=_UUIDS))


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
    """Screenshots past their plan's retention, and stored bytes by plan (retention/service.py)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def expired(self, cutoffs: dict[str, datetime], limit: int) -> list[ExpiringScreenshot]:
        """COMPLETED screenshots finished before their user's plan cutoff, each user's oldest first, their
        signals locked until commit (skipping any another transaction holds).

        User by user rather than oldest first overall: walking all screenshots by age would re-read,
        every batch, the old screenshots of plans that keep them longer (a year for premium), which at 10 M
        signals is millions of rows per batch. Per user it is one index probe of
        ix_screenshots_user_completed per user with nothing due, then the due rows themselves.
        """
        if not cutoffs:
            return []
        plans, moments = zip(*cutoffs.items(), strict=True)
        rows = await self.session.execute(
            _EXPIRED, {"plans": list(plans), "cutoffs": list(moments), "limit": limit}
        )
        return [
            ExpiringScreenshot(signal_id=row.signal_id, user_id=row.user_id, object_key=row.object_key or "")
            for row in rows
        ]

    async def mark_expired(self, expired: list[ExpiringScreenshot]) -> None:
        """Marks the screenshots EXPIRED, on their signals too, with one SCREENSHOT_UPDATED event each."""
        if not expired:
            return
        user_ids = [item.user_id for item in expired]
        signal_ids = [item.signal_id for item in expired]
        distinct_users = list(set(user_ids))
        await self.session.execute(_LOCK_USERS, {"user_ids": distinct_users})
        await self.session.execute(_BUMP_EVENT_SEQ, {"user_ids": user_ids})
        await self.session.execute(
            _EXPIRE_SCREENSHOTS, {"signal_ids": signal_ids, "expired": ScreenshotStatus.EXPIRED.value}
        )
        await self.session.execute(
            _EXPIRE_SIGNALS, {"signal_ids": signal_ids, "expired": ScreenshotStatus.EXPIRED.value}
        )
        await self.session.execute(
            _ADD_EVENTS,
            {
                "user_ids": user_ids,
                "signal_ids": signal_ids,
                "event_type": EventType.SCREENSHOT_UPDATED.value,
            },
        )
        await self.session.execute(_NOTIFY, {"user_ids": distinct_users, "channel": EVENTS_CHANNEL})

    async def usage_by_plan(self) -> dict[str, PlanStorage]:
        """From the per-user counters (user_signal_counts), not a scan of every screenshot."""
        statement = (
            sa.select(
                col(User.plan),
                sa.cast(sa.func.sum(col(UserSignalCounts.storage_bytes)), sa.BigInteger),
                sa.cast(sa.func.sum(col(UserSignalCounts.storage_objects)), sa.BigInteger),
            )
            .select_from(UserSignalCounts)
            .join(User, col(User.id) == col(UserSignalCounts.user_id))
            .group_by(col(User.plan))
        )
        return {
            row[0]: PlanStorage(bytes=int(row[1]), objects=int(row[2]))
            for row in await self.session.execute(statement)
        }
