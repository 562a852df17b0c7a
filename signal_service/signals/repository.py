"""SQL of signals and their screenshots. Repositories never commit: the service does, at its boundary."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import asyncpg
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped
from sqlmodel import col

from signal_service.database import AttributeRecord
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


# The signals columns a Signal message shows, besides parse_problems and extra (proto_mapping.signal_fields).
_MESSAGE_COLUMNS = (
    "id",
    "user_id",
    "chart_id",
    "indicator",
    "indicator_key",
    "ticker",
    "exchange",
    "symbol",
    "price",
    "signal_type",
    "interval",
    "alert_time",
    "bar_time",
    "fired_at",
    "delayed_feed",
    "parse_status",
    "raw_body",
    "content_type",
    "screenshot_status",
    "result",
    "profit_loss",
    "notes",
    "created_at",
    "updated_at",
)


# ListSignals' page: what proto_mapping.signal_fields reads of a signal and its screenshot, JSON as text
# (AttributeRecord).
_PAGE_SELECT = f"""
SELECT {", ".join(f"s.{name}" for name in _MESSAGE_COLUMNS)},
       nullif(s.parse_problems, '[]'::jsonb)::text AS parse_problems,
       nullif(s.extra, '{{}}'::jsonb)::text AS extra,
       sc.signal_id AS screenshot_signal_id, sc.status, sc.object_key, sc.error, sc.completed_at
FROM signals s LEFT JOIN screenshots sc ON sc.signal_id = s.id
WHERE s.user_id = $1"""  # noqa: S608 (column names of this module, no value)
# SignalFilter's equality filters and the column each compares.
_EQUALITY_FILTERS = (
    ("ticker", "ticker"),
    ("indicator", "indicator"),
    ("indicator_key", "indicator_key"),
    ("signal_type", "signal_type"),
    ("result", "result"),
    ("screenshot_status", "screenshot_status"),
)


def page_statement(
    where: SignalFilter, *, after: tuple[datetime, uuid.UUID] | None, limit: int
) -> tuple[str, list[Any]]:
    """ListSignals' page as one statement and its arguments: newest first, keyset-paginated on
    (created_at, id) so pages stay stable under inserts. A filter left out is left out of the text, not
    compared with NULL: each combination of filters is its own prepared statement, whose plan uses the
    index of its filter (docs/perf/scale-plans.md)."""
    text = [_PAGE_SELECT]
    arguments: list[Any] = [where.user_id]

    def argument(value: Any, cast_to: str) -> str:
        arguments.append(value)
        return f"${len(arguments)}::{cast_to}"

    for name, column in _EQUALITY_FILTERS:
        value = getattr(where, name)
        if value is not None:
            text.append(f"AND s.{column} = {argument(value, 'text')}")
    if where.created_after is not None:
        text.append(f"AND s.created_at > {argument(where.created_after, 'timestamptz')}")
    if where.created_before is not None:
        text.append(f"AND s.created_at < {argument(where.created_before, 'timestamptz')}")
    if after is not None:
        created_at, signal_id = after
        key = f"{argument(created_at, 'timestamptz')}, {argument(signal_id, 'uuid')}"
        text.append(f"AND (s.created_at, s.id) < ({key})")
    text.append(f"ORDER BY s.created_at DESC, s.id DESC LIMIT {argument(limit, 'int')}")
    return "\n".join(text), arguments


class SignalPages:
    """ListSignals' pages on a plain asyncpg connection: one round trip a page, where a session added a
    ping, BEGIN and ROLLBACK, and read-only records rather than ORM instances (docs/perf/scale.md,
    "ListSignals")."""

    def __init__(self, connection: asyncpg.Connection) -> None:
        self.connection = connection

    async def matching(
        self, where: SignalFilter, *, after: tuple[datetime, uuid.UUID] | None, limit: int
    ) -> list[SignalRow]:
        """Each record is both the row's `signal` and, when the signal has one, its `screenshot`, holding of
        the screenshot only `status`, `object_key`, `error` and `completed_at`."""
        text, arguments = page_statement(where, after=after, limit=limit)
        records = await self.connection.fetch(text, *arguments, record_class=AttributeRecord)
        return [
            SignalRow(
                cast(Signal, record),
                cast(Screenshot, record) if record["screenshot_signal_id"] is not None else None,
            )
            for record in records
        ]


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
