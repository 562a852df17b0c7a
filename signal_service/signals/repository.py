"""SQL of signals and their screenshots. Repositories never commit: the service does, at its boundary."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped
from sqlmodel import col

from signal_service.models import Screenshot, Signal, User, UserSignalCounts


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
    # The indicator as stored, and the catalog's key (SignalReader turns a catalog name into the key).
    indicator: str | None = None
    indicator_key: str | None = None
    signal_type: str | None = None
    result: str | None = None
    screenshot_status: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


def with_screenshot() -> sa.Select[Signal, Screenshot]:
    """Signals with their screenshot row, if any: what a SignalRow holds."""
    return sa.select(Signal, Screenshot).outerjoin(Screenshot, col(Screenshot.signal_id) == col(Signal.id))


class SignalRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(
        self, signal_id: uuid.UUID, *, for_update: bool = False, owner: uuid.UUID | None = None
    ) -> SignalRow | None:
        """The signal, if it exists (and, with `owner`, is that user's)."""
        statement = with_screenshot().where(col(Signal.id) == signal_id)
        if owner is not None:
            statement = statement.where(col(Signal.user_id) == owner)
        if for_update:
            statement = statement.with_for_update(of=Signal)
        row = (await self.session.execute(statement)).one_or_none()
        return SignalRow(row[0], row[1]) if row else None

    async def matching(
        self, where: SignalFilter, *, after: tuple[datetime, uuid.UUID] | None, limit: int
    ) -> list[SignalRow]:
        """Newest first, keyset-paginated on (created_at, id) so pages stay stable under inserts."""
        statement = with_screenshot().where(col(Signal.user_id) == where.user_id)
        for column, value in (
            (col(Signal.ticker), where.ticker),
            (col(Signal.indicator), where.indicator),
            (col(Signal.indicator_key), where.indicator_key),
            (col(Signal.signal_type), where.signal_type),
            (col(Signal.result), where.result),
            (col(Signal.screenshot_status), where.screenshot_status),
        ):
            if value is not None:
                statement = statement.where(column == value)
        if where.created_after is not None:
            statement = statement.where(col(Signal.created_at) > where.created_after)
        if where.created_before is not None:
            statement = statement.where(col(Signal.created_at) < where.created_before)
        if after is not None:
            statement = statement.where(sa.tuple_(col(Signal.created_at), col(Signal.id)) < sa.tuple_(*after))
        statement = statement.order_by(col(Signal.created_at).desc(), col(Signal.id).desc()).limit(limit)
        return [SignalRow(row[0], row[1]) for row in await self.session.execute(statement)]

    async def stats(self, user_id: uuid.UUID, month_start: datetime) -> UserStatsRow | None:
        """One user's counters: the sum of their monthly rows (a dozen a year), kept on write by triggers
        (migration 0007_scale), not a count of their signals; None when the user does not exist."""

        def total(column: Mapped[int], label: str) -> sa.Label[int]:
            return sa.cast(sa.func.coalesce(sa.func.sum(column), 0), sa.BigInteger).label(label)

        statement = (
            sa.select(
                total(col(UserSignalCounts.signals), "total_signals"),
                sa.cast(
                    sa.func.coalesce(
                        sa.func.sum(col(UserSignalCounts.signals)).filter(
                            col(UserSignalCounts.month) == month_start.date()
                        ),
                        0,
                    ),
                    sa.BigInteger,
                ).label("this_month"),
                total(col(UserSignalCounts.screenshots_pending), "screenshots_pending"),
                total(col(UserSignalCounts.wins), "wins"),
                total(col(UserSignalCounts.losses), "losses"),
                total(col(UserSignalCounts.storage_bytes), "storage_bytes"),
                total(col(UserSignalCounts.storage_objects), "storage_objects"),
            )
            .select_from(User)
            .outerjoin(UserSignalCounts, col(UserSignalCounts.user_id) == col(User.id))
            .where(col(User.id) == user_id)
            .group_by(col(User.id))
        )
        row = (await self.session.execute(statement)).one_or_none()
        return UserStatsRow(**row._asdict()) if row else None

    async def update_signal(self, signal_id: uuid.UUID, **values: Any) -> None:
        await self.session.execute(
            sa.update(Signal).where(col(Signal.id) == signal_id).values(**values, updated_at=sa.func.now())
        )
