"""The engine and the unit of work: a session per request, committed only at the service boundary."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

_UNREACHABLE = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
)


def create_engine(database_url: str, *, pool_size: int = 10) -> AsyncEngine:
    if not database_url:
        raise RuntimeError("ALERTS_DATABASE_URL is not set (only `alerts dev` provides an embedded one)")
    return create_async_engine(
        database_url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        connect_args={"server_settings": {"application_name": "alerts-signal"}},
    )


class Database:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False, autoflush=False)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self._sessions() as session:
            yield session

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """Commits when the block succeeds, rolls back when it raises."""
        async with self._sessions() as session, session.begin():
            yield session

    async def dispose(self) -> None:
        await self.engine.dispose()


def database_unreachable(exc: BaseException) -> bool:
    """Whether `exc` means PostgreSQL could not be reached or went away (down, restarting, network), as
    opposed to a statement that failed: the first is worth retrying later, the second is not.
    """
    if isinstance(exc, _UNREACHABLE):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    # SQLAlchemy wraps the driver's exception, which wraps asyncpg's own.
    cause: BaseException | None = exc.orig if isinstance(exc.orig, BaseException) else None
    while cause is not None:
        if isinstance(cause, _UNREACHABLE):
            return True
        cause = cause.__cause__
    return False
