"""SQL of the audit log."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
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
            index_elements=["repeat_window", "user_id", "source_ip", "outcome", "reason", "created_at"],
            index_where=sa.text("repeat_window IS NOT NULL"),
            set_={"repeat_count": col(AuditLog.repeat_count) + statement.excluded.repeat_count},
        )
        await self.session.execute(statement, [column_values(entry) for entry in entries])

    async def delete_older_than(self, cutoff: datetime, *, limit: int | None = None) -> int:
        """Deletes rows created before `cutoff`, oldest first: about `limit` of them when given."""
        doomed = col(AuditLog.created_at) < cutoff
        if limit is not None:
            # A time range ending at the limit-th oldest row (about `limit` rows: ties at the end go too),
            # rather than a list of keys: each partition reads its part by the created_at index, where a
            # join against 2,000 (id, created_at) keys was planned as a scan of every partition (533 ms,
            # docs/perf/scale-plans.md). Fewer than `limit` left: all of them.
            last = (
                sa.select(col(AuditLog.created_at))
                .where(doomed)
                .order_by(col(AuditLog.created_at))
                .offset(limit - 1)
                .limit(1)
                .scalar_subquery()
            )
            doomed = sa.and_(doomed, col(AuditLog.created_at) <= sa.func.coalesce(last, cutoff))
        result = await self.session.execute(sa.delete(AuditLog).where(doomed))
        return cast("sa.CursorResult[Any]", result).rowcount or 0

    async def month_partitions(self) -> dict[str, datetime]:
        """audit_logs' monthly partitions (migration 0014_partitions), each with where its month ends."""
        names = await self.session.scalars(
            sa.text(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                " WHERE i.inhparent = 'audit_logs'::regclass"
            )
        )
        ends = {}
        for name in names:
            match = _MONTH_PARTITION.fullmatch(name)
            if match:
                year, month = int(match["year"]), int(match["month"])
                ends[name] = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
        return ends

    async def partition_rows(self, name: str) -> int:
        if not _MONTH_PARTITION.fullmatch(name):
            raise ValueError(f"not an audit_logs month partition: {name!r}")
        return int(await self.session.scalar(sa.select(sa.func.count()).select_from(sa.table(name))) or 0)

    async def drop_partition(self, name: str, *, lock_timeout_ms: int) -> None:
        """Drops one monthly partition and its rows. Dropping locks audit_logs for an instant, after the
        transactions writing to it end: waiting longer than `lock_timeout_ms` for them fails instead of
        holding up the ingest behind the wait (sqlstate 55P03)."""
        if not _MONTH_PARTITION.fullmatch(name):
            raise ValueError(f"not an audit_logs month partition: {name!r}")
        await self.session.execute(sa.text(f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}"))
        await self.session.execute(sa.text(f'DROP TABLE "{name}"'))

    async def ensure_partitions(self, through: datetime) -> int:
        """Creates the monthly partitions from this month through `through` that do not exist yet."""
        created = await self.session.scalar(
            sa.text("SELECT ensure_audit_log_partitions(now(), :through)"), {"through": through}
        )
        return int(created or 0)


_MONTH_PARTITION = re.compile(r"audit_logs_p(?P<year>\d{4})(?P<month>\d{2})")
