"""SQL of the API keys created at runtime."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from signal_service.models import ApiKey
from signal_service.rows import column_values


class ApiKeyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, key: ApiKey) -> ApiKey:
        statement = sa.insert(ApiKey).values(column_values(key)).returning(ApiKey)
        return (await self.session.execute(statement)).scalar_one()

    async def list(self, *, include_revoked: bool) -> Sequence[ApiKey]:
        statement = sa.select(ApiKey).order_by(col(ApiKey.created_at).desc(), col(ApiKey.id))
        if not include_revoked:
            statement = statement.where(col(ApiKey.revoked_at).is_(None))
        return (await self.session.execute(statement)).scalars().all()

    async def revoke(self, key_id: uuid.UUID) -> ApiKey | None:
        """Revokes the key (once: a second revocation keeps the first instant)."""
        statement = (
            sa.update(ApiKey)
            .where(col(ApiKey.id) == key_id)
            .values(revoked_at=sa.func.coalesce(col(ApiKey.revoked_at), sa.func.now()))
            .returning(ApiKey)
        )
        return (await self.session.execute(statement)).scalar_one_or_none()

    async def accepted(self) -> Sequence[tuple[str, str, uuid.UUID | None]]:
        """(key hash, role, user id) of every key not revoked."""
        statement = sa.select(col(ApiKey.key_hash), col(ApiKey.role), col(ApiKey.user_id)).where(
            col(ApiKey.revoked_at).is_(None)
        )
        return [(row[0], row[1], row[2]) for row in await self.session.execute(statement)]
