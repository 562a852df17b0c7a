"""SQL of the audit log."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from signal_service.models import AuditLog
from signal_service.rows import column_values


class AuditRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, entry: AuditLog) -> None:
        await self.session.execute(sa.insert(AuditLog).values(column_values(entry)))

    async def add_many(self, entries: Sequence[AuditLog]) -> None:
        """Inserts the rows; a summarised refusal whose minute already has a row adds its count to it."""
        if not entries:
            return
        statement = pg.insert(AuditLog)
        statement = statement.on_conflict_do_update(
            index_elements=["repeat_window", "user_id", "source_ip", "outcome", "reason"],
            index_where=sa.text("repeat_window IS NOT NULL"),
            set_={"repeat_count": col(AuditLog.repeat_count) + statement.excluded.repeat_count},
        )
        await self.session.execute(statement, [column_values(entry) for entry in entries])

    async def delete_older_than(self, cutoff: datetime, *, limit: int | None = None) -> int:
        """Deletes rows created before `cutoff`, at most `limit` of them (oldest first) when given."""
        doomed = col(AuditLog.created_at) < cutoff
        if limit is not None:
            oldest = sa.select(col(AuditLog.id)).where(doomed).order_by(col(AuditLog.created_at)).limit(limit)
            doomed = col(AuditLog.id).in_(oldest.scalar_subquery())
        result = await self.session.execute(sa.delete(AuditLog).where(doomed))
        return cast("sa.CursorResult[Any]", result).rowcount or 0
