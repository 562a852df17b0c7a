"""SQL of users and their configuration."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from signal_service.models import User, UserConfig
from signal_service.rows import column_values


class UserRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, user: User, config: UserConfig) -> None:
        await self.session.execute(sa.insert(User).values(column_values(user)))
        await self.session.execute(sa.insert(UserConfig).values(column_values(config)))

    async def get(self, user_id: uuid.UUID, *, for_update: bool = False) -> tuple[User, UserConfig] | None:
        statement = sa.select(User, UserConfig).join(UserConfig, col(UserConfig.user_id) == col(User.id))
        statement = statement.where(col(User.id) == user_id)
        if for_update:
            statement = statement.with_for_update(of=User)
        row = (await self.session.execute(statement)).one_or_none()
        return (row[0], row[1]) if row else None

    async def page(self, after: uuid.UUID | None, limit: int) -> list[tuple[User, UserConfig]]:
        statement = (
            sa.select(User, UserConfig)
            .join(UserConfig, col(UserConfig.user_id) == col(User.id))
            .order_by(col(User.id))
            .limit(limit)
        )
        if after is not None:
            statement = statement.where(col(User.id) > after)
        return [(row[0], row[1]) for row in await self.session.execute(statement)]

    async def get_by_external_id(
        self, external_id: str, *, owner: uuid.UUID | None = None
    ) -> tuple[User, UserConfig] | None:
        """The user with this external id (and, with `owner`, that id)."""
        statement = (
            sa.select(User, UserConfig)
            .join(UserConfig, col(UserConfig.user_id) == col(User.id))
            .where(col(User.external_id) == external_id)
        )
        if owner is not None:
            statement = statement.where(col(User.id) == owner)
        row = (await self.session.execute(statement)).one_or_none()
        return (row[0], row[1]) if row else None

    async def lock(self, user_id: uuid.UUID) -> User | None:
        """Locks the user row until commit: a user's quota and event sequence change one writer at a time."""
        statement = sa.select(User).where(col(User.id) == user_id).with_for_update()
        return (await self.session.execute(statement)).scalar_one_or_none()

    async def update_user(self, user_id: uuid.UUID, **values: Any) -> None:
        await self.session.execute(
            sa.update(User).where(col(User.id) == user_id).values(**values, updated_at=sa.func.now())
        )

    async def update_config(self, user_id: uuid.UUID, **values: Any) -> None:
        await self.session.execute(
            sa.update(UserConfig)
            .where(col(UserConfig.user_id) == user_id)
            .values(**values, updated_at=sa.func.now())
        )

    async def notification_secrets_ciphertext(self, user_id: uuid.UUID) -> bytes | None:
        statement = sa.select(col(UserConfig.notification_secrets_ciphertext)).where(
            col(UserConfig.user_id) == user_id
        )
        return (await self.session.execute(statement)).scalar_one_or_none()

    async def plans(self, user_ids: set[uuid.UUID], *, lock: bool = False) -> dict[uuid.UUID, str]:
        """The users' plans; with `lock`, their rows locked until commit, in user-id order.

        Work that then bumps several users' event_seq locks them all first: rows are locked in the order
        the query returns them, the id order group-commit ingest and retention lock users in too, so two
        such transactions never each hold a user the other waits for (a deadlock).
        """
        if not user_ids:
            return {}
        statement = sa.select(col(User.id), col(User.plan)).where(col(User.id).in_(user_ids))
        if lock:
            # NO KEY: what the event_seq updates take anyway; signals and audit rows may still name them.
            statement = statement.order_by(col(User.id)).with_for_update(key_share=True)
        return {row.id: row.plan for row in await self.session.execute(statement)}

    async def next_event_seq(self, user_id: uuid.UUID) -> int:
        statement = (
            sa.update(User)
            .where(col(User.id) == user_id)
            .values(event_seq=col(User.event_seq) + 1)
            .returning(col(User.event_seq))
        )
        return (await self.session.execute(statement)).scalar_one()

    async def sessions_after(self, after: uuid.UUID | None, limit: int) -> list[tuple[uuid.UUID, bytes]]:
        """Stored TradingView session ciphertexts in user id order after `after`, locked until commit."""
        return await self._ciphertexts_after(col(UserConfig.tv_session_ciphertext), after, limit)

    async def notification_secrets_after(
        self, after: uuid.UUID | None, limit: int
    ) -> list[tuple[uuid.UUID, bytes]]:
        """Stored notification secret ciphertexts in user id order after `after`, locked until commit."""
        return await self._ciphertexts_after(col(UserConfig.notification_secrets_ciphertext), after, limit)

    async def _ciphertexts_after(
        self, column: Any, after: uuid.UUID | None, limit: int
    ) -> list[tuple[uuid.UUID, bytes]]:
        statement = (
            sa.select(col(UserConfig.user_id), column)
            .where(column.is_not(None))
            .order_by(col(UserConfig.user_id))
            .limit(limit)
            .with_for_update()
        )
        if after is not None:
            statement = statement.where(col(UserConfig.user_id) > after)
        return [(row[0], row[1]) for row in await self.session.execute(statement)]

    async def revoke_access_tokens(self, user_id: uuid.UUID) -> datetime | None:
        """Sets the user's revocation instant to the database's clock, which every replica compares with."""
        statement = (
            sa.update(User)
            .where(col(User.id) == user_id)
            .values(access_tokens_revoked_before=sa.func.clock_timestamp(), updated_at=sa.func.now())
            .returning(col(User.access_tokens_revoked_before))
        )
        return (await self.session.execute(statement)).scalar_one_or_none()

    async def access_token_revocations(self, since: datetime) -> dict[uuid.UUID, datetime]:
        """Revocation instants after `since`: older ones only refuse tokens that have expired anyway."""
        statement = sa.select(col(User.id), col(User.access_tokens_revoked_before)).where(
            col(User.access_tokens_revoked_before) > since
        )
        # The WHERE leaves out NULLs; the condition tells the type checker so.
        return {row[0]: row[1] for row in await self.session.execute(statement) if row[1] is not None}
