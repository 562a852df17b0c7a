"""SQL of screenshot retention: expired screenshots and stored bytes by plan."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from signal_service.models import Screenshot, ScreenshotStatus, Signal, User


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
