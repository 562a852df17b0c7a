"""The engine and the unit of work: a session per request, committed only at the service boundary."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from asyncpg.connection import LoggedQuery
from prometheus_client import Histogram
from sqlalchemy import event
from sqlalchemy import exc as sqlalchemy_exc
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from mesh.errors import UnavailableError
from mesh.metrics import LATENCY_BUCKETS

DB_QUERY_LATENCY = Histogram(
    "alerts_db_query_latency_seconds", "Time PostgreSQL took per statement", buckets=LATENCY_BUCKETS
)
_QUERY_STARTED = "alerts_query_started"

# Raised when the connection broke or the server is away, whatever the statement was: refused, reset or
# timed-out sockets, a protocol closed under a running query ("cannot switch to state ...; another
# operation is in progress" is asyncpg's InternalClientError after a connection died mid-statement), and
# SQLAlchemy's pool running out of connections while PostgreSQL is slow to answer.
_UNREACHABLE = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    sqlalchemy_exc.TimeoutError,
)
# What a background refresh meets while PostgreSQL is away: logged on one line, without a traceback.
DATABASE_AWAY: tuple[type[Exception], ...] = (OSError, TimeoutError, sqlalchemy_exc.DBAPIError)
# The longest pause between refreshes of the in-memory tables of revocations and runtime keys after
# failures: they are good for 5 s, and are read again within this once PostgreSQL is back.
REFRESH_MAX_BACKOFF_SECONDS = 4.0
# SQLSTATEs a server sends while it goes away or is not ready: class 08 (connection exception), 57P01-57P03
# (admin shutdown, crash shutdown, cannot connect now, e.g. while starting or recovering) and 53300 (too
# many connections: the same for a caller, try again shortly).
_UNREACHABLE_SQLSTATE_CLASSES = ("08",)
_UNREACHABLE_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "53300"})


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


class AttributeRecord(asyncpg.Record):  # type: ignore[misc]  # asyncpg publishes no types
    """A plain connection's row read by attribute too (`record.status`), as SQLAlchemy's rows are: what
    code written for ORM instances or Core rows (proto_mapping) reads. The pool has no JSON codec (its
    other statements pass JSON as text), so a statement selects its JSON columns as text, under a name
    in JSON_COLUMNS, and they are decoded where read."""

    JSON_COLUMNS = frozenset({"parse_problems", "extra"})

    def __getattr__(self, name: str) -> Any:
        try:
            value = self[name]
        except KeyError:
            raise AttributeError(name) from None
        if name in self.JSON_COLUMNS and isinstance(value, str):
            return json.loads(value)
        return value


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

    Looks through SQLAlchemy's wrapping (``orig``) and every cause and context, since the driver's error
    may surface under a later one (a rollback failing on the dead connection, say).
    """
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if _unreachable_itself(current):
            return True
        linked = [current.__cause__, current.__context__]
        if isinstance(current, sqlalchemy_exc.DBAPIError):
            linked.append(current.orig)
        pending.extend(item for item in linked if isinstance(item, BaseException))
    return False


def _unreachable_itself(exc: BaseException) -> bool:
    if isinstance(exc, _UNREACHABLE):
        return True
    if isinstance(exc, sqlalchemy_exc.DBAPIError) and exc.connection_invalidated:
        return True
    sqlstate = getattr(exc, "sqlstate", None)
    return isinstance(sqlstate, str) and (
        sqlstate in _UNREACHABLE_SQLSTATES or sqlstate.startswith(_UNREACHABLE_SQLSTATE_CLASSES)
    )


def database_error(exc: BaseException) -> UnavailableError | None:
    """What a caller is told when a handler failed because PostgreSQL is unreachable; None for any other
    failure. The gRPC server applies it to every call (mesh.grpc.create_server's `translate_error`)."""
    if not database_unreachable(exc):
        return None
    return UnavailableError("database unavailable", reason="DATABASE_UNAVAILABLE")
