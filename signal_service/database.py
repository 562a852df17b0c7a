"""The engine and the unit of work: a session per request, committed only at the service boundary."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from asyncpg.connection import LoggedQuery
from prometheus_client import Histogram
from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from mesh.metrics import LATENCY_BUCKETS

DB_QUERY_LATENCY = Histogram(
    "alerts_db_query_latency_seconds", "Time PostgreSQL took per statement", buckets=LATENCY_BUCKETS
)
_QUERY_STARTED = "alerts_query_started"

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
    engine = create_async_engine(
        database_url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        connect_args={"server_settings": {"application_name": "alerts-signal"}},
    )
    event.listen(engine.sync_engine, "before_cursor_execute", _query_started)
    event.listen(engine.sync_engine, "after_cursor_execute", _query_finished)
    return engine


# A connection runs one statement at a time, so one start time per connection is enough. Statements that
# fail are not observed, here (their start is overwritten by the next one) as on plain connections.
def _query_started(connection: Connection, *_: object) -> None:
    connection.info[_QUERY_STARTED] = time.perf_counter()


def _query_finished(connection: Connection, *_: object) -> None:
    started = connection.info.pop(_QUERY_STARTED, None)
    if started is not None:
        DB_QUERY_LATENCY.observe(time.perf_counter() - started)


async def _observe_query_latency(connection: asyncpg.Connection) -> None:
    connection.add_query_logger(_query_logged)


def _query_logged(query: LoggedQuery) -> None:
    if query.exception is None:
        DB_QUERY_LATENCY.observe(query.elapsed)


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Skips asyncpg's per-release RESET ALL round trip: these connections only ever run single
    statements, and never SET, LISTEN or take advisory locks. (An open transaction is still rolled back.)"""


class Database:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False, autoflush=False)
        self._pool: asyncpg.Pool | None = None
        self._pool_opening = asyncio.Lock()

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self._sessions() as session:
            yield session

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """Commits when the block succeeds, rolls back when it raises."""
        async with self._sessions() as session, session.begin():
            yield session

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A plain asyncpg connection, for the few hot statements that SQLAlchemy would slow down.

        Sized like the engine's pool; opened on first use, so a process that never needs it holds none.
        """
        pool = self._pool or await self._open_pool()
        async with pool.acquire() as connection:
            yield connection

    async def _open_pool(self) -> asyncpg.Pool:
        async with self._pool_opening:
            if self._pool is None:
                url = self.engine.url.set(drivername="postgresql")
                size = self.engine.pool.size() if hasattr(self.engine.pool, "size") else 10
                self._pool = await asyncpg.create_pool(
                    url.render_as_string(hide_password=False),
                    min_size=0,
                    max_size=size,
                    reset=_keep_session,
                    init=_observe_query_latency,
                    server_settings={"application_name": "alerts-signal"},
                )
            return self._pool

    async def dispose(self) -> None:
        if self._pool is not None:
            await self._pool.close()
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
