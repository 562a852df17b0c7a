"""SQL of the TradingView session checks: due users, check targets, failed captures."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from signal_service.models import Screenshot, ScreenshotStatus, Signal, UserConfig
from signal_service.signals.repository import SignalRow


@dataclass(frozen=True, slots=True)
class CheckTarget:
    """The chart a session check opens: the user's latest signal's, else the user's default layout."""

    chart_id: str
    ticker: str
    interval: str


class TradingViewSessionRepository:
    """TradingView session state and check scheduling (sessions/service.py)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def try_lock(self, key: int) -> bool:
        """A transaction-scoped advisory lock, or False at once when another transaction holds it."""
        statement = sa.select(sa.func.pg_try_advisory_xact_lock(key))
        return bool((await self.session.execute(statement)).scalar_one())

    async def config(self, user_id: uuid.UUID) -> UserConfig | None:
        statement = sa.select(UserConfig).where(col(UserConfig.user_id) == user_id)
        # A fresh read even when the unit of work saw the row before taking the user's lock.
        statement = statement.execution_options(populate_existing=True)
        return (await self.session.execute(statement)).scalar_one_or_none()

    async def check_target(self, user_id: uuid.UUID, default_chart_id: str | None) -> CheckTarget:
        statement = (
            sa.select(col(Signal.chart_id), col(Signal.ticker), col(Signal.interval))
            .where(col(Signal.user_id) == user_id, col(Signal.ticker).is_not(None))
            .order_by(col(Signal.created_at).desc())
            .limit(1)
        )
        latest = (await self.session.execute(statement)).one_or_none()
        if latest is None:
            return CheckTarget(chart_id=default_chart_id or "", ticker="", interval="")
        return CheckTarget(
            chart_id=latest.chart_id or default_chart_id or "",
            ticker=latest.ticker or "",
            interval=latest.interval or "",
        )

    async def due_for_check(
        self,
        *,
        checked_before: datetime,
        requested_before: datetime,
        claimed_before: datetime,
        active_since: datetime,
        limit: int,
    ) -> list[uuid.UUID]:
        """Users with stored cookies, a signal since `active_since`, no result since `checked_before`, no
        check queued since `requested_before` and none claimed since `claimed_before` still without its
        result; least recently checked first, locked until commit."""
        active = sa.exists().where(
            col(Signal.user_id) == col(UserConfig.user_id), col(Signal.created_at) >= active_since
        )
        running = sa.and_(
            col(UserConfig.tv_check_claimed_at) >= claimed_before,
            sa.or_(
                col(UserConfig.tv_cookies_checked_at).is_(None),
                col(UserConfig.tv_cookies_checked_at) < col(UserConfig.tv_check_claimed_at),
            ),
        )
        statement = (
            sa.select(col(UserConfig.user_id))
            .where(
                col(UserConfig.tv_session_ciphertext).is_not(None),
                sa.or_(
                    col(UserConfig.tv_cookies_checked_at).is_(None),
                    col(UserConfig.tv_cookies_checked_at) < checked_before,
                ),
                sa.or_(
                    col(UserConfig.tv_check_requested_at).is_(None),
                    col(UserConfig.tv_check_requested_at) < requested_before,
                ),
                sa.not_(sa.func.coalesce(running, False)),
                active,
            )
            .order_by(col(UserConfig.tv_cookies_checked_at).asc().nulls_first(), col(UserConfig.user_id))
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return list((await self.session.execute(statement)).scalars())

    async def mark_check_requested(self, user_ids: Sequence[uuid.UUID], now: datetime) -> None:
        if user_ids:
            await self.session.execute(
                sa.update(UserConfig)
                .where(col(UserConfig.user_id).in_(user_ids))
                .values(tv_check_requested_at=now)
            )

    async def failed_captures(
        self, user_id: uuid.UUID, *, error: str, created_since: datetime, limit: int
    ) -> list[SignalRow]:
        """The user's FAILED captures with this error for signals since `created_since`, oldest first."""
        statement = (
            sa.select(Signal, Screenshot)
            .join(Screenshot, col(Screenshot.signal_id) == col(Signal.id))
            .where(
                col(Signal.user_id) == user_id,
                col(Signal.created_at) >= created_since,
                col(Screenshot.status) == ScreenshotStatus.FAILED,
                col(Screenshot.error) == error,
            )
            .order_by(col(Signal.created_at), col(Signal.id))
            .limit(limit)
            .with_for_update(of=Signal, skip_locked=True)
        )
        return [SignalRow(row[0], row[1]) for row in await self.session.execute(statement)]
