"""SQL of screenshot captures: their state, and the failed or stale captures to retry or sweep."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from signal_service.models import OutboxMessage, Screenshot, ScreenshotStatus, Signal
from signal_service.signals.repository import SignalRow, with_screenshot


class CaptureRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def update_screenshot(self, signal_id: uuid.UUID, **values: Any) -> None:
        await self.session.execute(
            sa.update(Screenshot)
            .where(col(Screenshot.signal_id) == signal_id)
            .values(**values, updated_at=sa.func.now())
        )

    async def stale_ids(self, status: ScreenshotStatus, before: datetime, limit: int) -> list[uuid.UUID]:
        """The signal ids of `status` captures (PROCESSING or PENDING) stale since before `before`, with
        no outbox row (a re-queue not sent yet), oldest first: read without locks, only the ids."""
        since = _STALE_SINCE[status]
        statement = (
            sa.select(col(Screenshot.signal_id))
            .where(col(Screenshot.status) == status, since < before)
            .where(~_in_outbox(col(Screenshot.signal_id)))
            .order_by(since)
            .limit(limit)
        )
        return list((await self.session.execute(statement)).scalars())

    async def lock_stale(
        self, status: ScreenshotStatus, before: datetime, ids: Sequence[uuid.UUID]
    ) -> list[SignalRow]:
        """Those of `ids` still stale as stale_ids() found them, their signals locked until commit
        (skipping any another transaction holds)."""
        since = _STALE_SINCE[status]
        statement = (
            with_screenshot()
            .where(col(Signal.id).in_(ids), col(Screenshot.status) == status, since < before)
            .where(~_in_outbox(col(Signal.id)))
            .order_by(since)
            .with_for_update(of=Signal, skip_locked=True)
        )
        return [SignalRow(row[0], row[1]) for row in await self.session.execute(statement)]

    async def failed_for_update(self, *, ids: Sequence[uuid.UUID] | None, limit: int) -> list[SignalRow]:
        statement = with_screenshot().where(col(Screenshot.status) == ScreenshotStatus.FAILED)
        if ids is not None:
            statement = statement.where(col(Signal.id).in_(ids))
        statement = (
            statement.order_by(col(Signal.created_at))
            .limit(limit)
            .with_for_update(of=Signal, skip_locked=True)
        )
        return [SignalRow(row[0], row[1]) for row in await self.session.execute(statement)]

    async def failed(
        self, *, user_id: uuid.UUID | None, after: tuple[datetime, uuid.UUID] | None, limit: int
    ) -> list[SignalRow]:
        # By the screenshot's status, which ix_screenshots_failed covers: no index names the signal's copy
        # of it, so that changing it stays a heap-only update (models.Signal).
        statement = with_screenshot().where(col(Screenshot.status) == ScreenshotStatus.FAILED)
        if user_id is not None:
            statement = statement.where(col(Screenshot.user_id) == user_id)
        if after is not None:
            statement = statement.where(sa.tuple_(col(Signal.created_at), col(Signal.id)) < sa.tuple_(*after))
        statement = statement.order_by(col(Signal.created_at).desc(), col(Signal.id).desc()).limit(limit)
        return [SignalRow(row[0], row[1]) for row in await self.session.execute(statement)]


def _in_outbox(signal_id: Any) -> sa.Exists:
    """The capture's signal has a message in the outbox: the relay has not sent it yet.

    Every message about a signal carries its id as the first argument. Compared by equality, which the
    planner joins by hash (one read of the outbox per statement), where containment (`args @> [id]`)
    read the whole outbox once per candidate: 10,000 stale captures times the outbox's rows."""
    return (
        sa.select(col(OutboxMessage.id))
        .where(col(OutboxMessage.args).op("->>")(0) == sa.cast(signal_id, sa.Text))
        .exists()
    )


# What makes a capture of each status stale: the age of its claim (PROCESSING) or of its last change
# (PENDING), each read through its partial index (ix_screenshots_stale_processing, _stale_pending).
_STALE_SINCE: dict[ScreenshotStatus, Any] = {
    ScreenshotStatus.PROCESSING: col(Screenshot.claimed_at),
    ScreenshotStatus.PENDING: col(Screenshot.updated_at),
}
