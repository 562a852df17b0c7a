"""SQL of the transactional outbox: rows written in a unit of work, taken and postponed by the relay."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from signal_service.models import OutboxMessage
from signal_service.rows import column_values


class OutboxRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, message: OutboxMessage) -> None:
        await self.session.execute(sa.insert(OutboxMessage).values(column_values(message)))

    async def backlog(self) -> int:
        return (
            await self.session.execute(sa.select(sa.func.count()).select_from(OutboxMessage))
        ).scalar_one()


class OutboxJob(Protocol):
    """What the relay sends of an outbox row: a Dramatiq message's queue, actor, arguments and options."""

    @property
    def queue_name(self) -> str: ...
    @property
    def actor_name(self) -> str: ...
    @property
    def args(self) -> list[Any]: ...
    @property
    def options(self) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class DueMessage:
    id: int
    queue_name: str
    actor_name: str
    args: list[Any]
    options: dict[str, Any]


# Due rows, oldest first, locked so that concurrent relays (one per signal replica) each take different
# ones; deleted by the relay's transaction, which commits only once the broker has taken them.
_TAKE_DUE = """
DELETE FROM outbox WHERE id IN (
    SELECT id FROM outbox WHERE available_at <= now() ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED
)
RETURNING id, queue_name, actor_name, args::text, options::text
"""


_POSTPONE = """
UPDATE outbox SET attempts = attempts + 1, last_error = $2, available_at = now() + make_interval(secs => $3)
WHERE id = ANY($1)
"""


class OutboxRelayRepository:
    """The relay's statements, on a plain asyncpg connection: a pass runs every 100 ms under load, and
    SQLAlchemy's session, pre-ping and ORM objects cost it more than the database work."""

    def __init__(self, connection: asyncpg.Connection) -> None:
        self.connection = connection

    async def take_due(self, limit: int) -> list[DueMessage]:
        """Due rows, deleted in the caller's transaction: they come back if it rolls back."""
        records = await self.connection.fetch(_TAKE_DUE, limit)
        messages = [
            DueMessage(record[0], record[1], record[2], json.loads(record[3]), json.loads(record[4]))
            for record in records
        ]
        return sorted(messages, key=lambda message: message.id)

    async def postpone(self, ids: Sequence[int], *, delay_seconds: float, error: str) -> None:
        await self.connection.execute(_POSTPONE, list(ids), error[:500], delay_seconds)


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """An outbox row's content, without the ORM object's construction cost, for the hot path."""

    queue_name: str
    actor_name: str
    args: list[Any]
    options: dict[str, Any]
