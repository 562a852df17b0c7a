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

    async def stale_processing(self, claimed_before: datetime, limit: int) -> list[SignalRow]:
        """PROCESSING captures claimed long ago with no outbox row (a re-queue not sent yet)."""
        statement = (
            with_screenshot()
            .where(
                col(Screenshot.status) == ScreenshotStatus.PROCESSING,
                col(Screenshot.claimed_at) < claimed_before,
            )
            .where(~_in_outbox())
            .order_by(col(Screenshot.claimed_at))
            .limit(limit)
            .with_for_update(of=Signal, skip_locked=True)
        )
        return [SignalRow(row[0], row[1]) for row in await self.session.execute(statement)]

    async def stale_pending(self, updated_before: datetime, limit: int) -> list[SignalRow]:
        """PENDING captures untouched for long with no outbox row left."""
        statement = (
            with_screenshot()
            .where(
                col(Screenshot.status) == ScreenshotStatus.PENDING,
                col(Screenshot.updated_at) < updated_before,
            )
            .where(~_in_outbox())
            .order_by(col(Screenshot.updated_at))
            .limit(limit)
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


def _in_outbox() -> sa.Exists:
    """The capture's signal has a message in the outbox: the relay has not sent it yet."""
    return (
        sa.select(col(OutboxMessage.id))
        .where(col(OutboxMessage.args).contains(sa.func.jsonb_build_array(sa.cast(col(Signal.id), sa.Text))))
        .exists()
    )
