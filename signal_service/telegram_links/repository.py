"""SQL of Telegram link codes."""

from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from signal_service.models import TelegramLink


class TelegramLinkRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, user_id: uuid.UUID, code_hash: str, expires_at: datetime) -> None:
        await self.session.execute(
            sa.insert(TelegramLink).values(code_hash=code_hash, user_id=user_id, expires_at=expires_at)
        )

    async def use(self, code_hash: str, chat_id: str, now: datetime) -> uuid.UUID | None:
        """Marks the code used by `chat_id` and returns its user; None when it is unknown, used or expired.
        One statement, so two chats sending the same code at once cannot both use it."""
        statement = (
            sa.update(TelegramLink)
            .where(
                col(TelegramLink.code_hash) == code_hash,
                col(TelegramLink.used_at).is_(None),
                col(TelegramLink.expires_at) > now,
            )
            .values(used_at=now, chat_id=chat_id)
            .returning(col(TelegramLink.user_id))
        )
        return (await self.session.execute(statement)).scalar_one_or_none()

    async def delete_spent(self, user_id: uuid.UUID, now: datetime) -> None:
        """Drops the user's used and expired codes: they bind nothing any more."""
        statement = sa.delete(TelegramLink).where(
            col(TelegramLink.user_id) == user_id,
            sa.or_(col(TelegramLink.used_at).is_not(None), col(TelegramLink.expires_at) <= now),
        )
        await self.session.execute(statement)
