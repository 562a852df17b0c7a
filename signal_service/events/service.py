"""Live signal events for SubscribeSignals: replay after a cursor, then live, with no gap and no duplicate.

Fan-out is PostgreSQL LISTEN/NOTIFY on one connection per process (EventHub); order and completeness come
from users.event_seq, not from notifications. Why, and how slow clients are handled:
docs/architecture.md, "Live signal events".
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import operator
import random
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeAlias, TypeVar

import asyncpg
from prometheus_client import Gauge
from sqlalchemy.engine import make_url

from mesh.errors import InvalidArgumentError, ResourceExhaustedError, UnavailableError
from mesh.loops import BackgroundLoop
from signal_service.database import Database
from signal_service.events.repository import EVENTS_CHANNEL, EventRepository, replay_page
from signal_service.visibility import no_such_user

log = logging.getLogger(__name__)
T = TypeVar("T")

EVENT_SUBSCRIBERS = Gauge("alerts_stream_subscribers", "Open SubscribeSignals streams in this process")
EVENT_LISTENER_UP = Gauge("alerts_event_listener_up", "1 while this process is LISTENing for signal events")

_MAX_CURSOR_DIGITS = 18  # fits a BIGINT
_INITIAL_BACKOFF_SECONDS = 0.2
# What the listener meets when PostgreSQL goes away: logged on one line, then it reconnects with backoff.
_LISTENER_AWAY = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)


def format_cursor(seq: int) -> str:
    return str(seq)


def parse_cursor(value: str) -> int | None:
    """The seq a cursor stands for; None for the empty cursor ("from now on")."""
    if not value:
        return None
    if not (value.isascii() and value.isdigit() and len(value) <= _MAX_CURSOR_DIGITS):
        raise InvalidArgumentError(
            "after_cursor is not a cursor this service issued", reason="INVALID_CURSOR"
        )
    return int(value)


def listener_dsn(database_url: str) -> str:
    """The plain asyncpg DSN for the SQLAlchemy URL the engine uses (``postgresql+asyncpg://...``)."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


class Waiter:
    """One stream's doorbell: set when its user may have new events."""

    __slots__ = ("key", "sent", "user_id", "woken")

    def __init__(self, user_id: uuid.UUID, key: str) -> None:
        self.user_id = user_id
        # The caller's API key fingerprint: streams are counted per key.
        self.key = key
        # The last seq this stream has sent; None until it starts.
        self.sent: int | None = None
        self.woken = asyncio.Event()


# One event with its signal as it is now (signal_service.events.repository.REPLAY_PAGE_SQL's columns);
# its seq is stored["seq"].
StoredEvent: TypeAlias = asyncpg.Record
_seq = operator.itemgetter("seq")

# Reads `limit` events of the user after a seq, with their signals.
PageReader = Callable[[uuid.UUID, int, int], Awaitable[list[StoredEvent]]]


@dataclass(slots=True)
class _UserFeed:
    """One user's streams in this process and the events they share.

    ``recent`` holds every committed event with seq in (start, end], as last read. A stream caught up
    with ``end`` asks for more; the first to ask reads the table once for all of them, and the others
    take the same events from ``recent``. A stream behind ``start`` (replaying) reads on its own until
    it reaches the window.
    """

    head: int = 0
    waiters: set[Waiter] = field(default_factory=set)
    recent: list[StoredEvent] = field(default_factory=list)
    start: int | None = None
    end: int | None = None
    # Set by a notification or a reconnect: the table may hold more than ``recent``.
    stale: bool = True
    read_at: float = 0.0
    reading: asyncio.Lock = field(default_factory=asyncio.Lock)

    def after(self, seq: int, limit: int) -> list[StoredEvent]:
        # ``recent`` is in seq order: found by bisection, not by a look at each of its thousands of events.
        first = bisect.bisect_right(self.recent, seq, key=_seq)
        return self.recent[first : first + limit]

    def keep_from(self, seq: int) -> None:
        if self.start is not None and seq > self.start:
            del self.recent[: bisect.bisect_right(self.recent, seq, key=_seq)]
            self.start = seq


class EventHub:
    """This process's one LISTEN connection, reconnecting with backoff, and the streams it wakes.

    Also where this process counts its streams: at most ``max_streams_per_user`` of one user and
    ``max_streams_per_key`` of one API key are open at once; one more is RESOURCE_EXHAUSTED.
    """

    def __init__(
        self,
        dsn: str,
        *,
        recheck_seconds: float = 5.0,
        listening_recheck_seconds: float = 30.0,
        health_check_seconds: float = 30.0,
        max_backoff_seconds: float = 10.0,
        max_streams_per_user: int = 5,
        max_streams_per_key: int = 1000,
    ) -> None:
        self._dsn = dsn
        self._recheck_seconds = recheck_seconds
        self._listening_recheck_seconds = listening_recheck_seconds
        self._health_check_seconds = health_check_seconds
        self._max_streams_per_user = max_streams_per_user
        self._max_streams_per_key = max_streams_per_key
        self._users: dict[uuid.UUID, _UserFeed] = {}
        self._streams_by_key: dict[str, int] = {}
        self._listening = asyncio.Event()
        self.listener = BackgroundLoop(
            "event-hub",
            self._listen_once,
            # Never waited: _listen_once returns only by raising.
            interval_seconds=0.0,
            min_backoff_seconds=_INITIAL_BACKOFF_SECONDS,
            max_backoff_seconds=max_backoff_seconds,
            expected_errors=_LISTENER_AWAY,
        )
        self.draining = False

    @property
    def listening(self) -> bool:
        return self._listening.is_set()

    @property
    def recheck_seconds(self) -> float:
        """How long a stream sleeps without a wake-up before it looks at the table anyway.

        Short while the listener is down (nothing else would wake it); longer while listening, where
        the re-check only guards against the unforeseen.
        """
        return self._listening_recheck_seconds if self.listening else self._recheck_seconds

    async def wait_listening(self) -> None:
        await self._listening.wait()

    def drain(self) -> None:
        """Ends every open stream at its next step, so that a shutting-down server is not held by them."""
        self.draining = True
        self._wake_all()

    def register(self, user_id: uuid.UUID, key: str) -> Waiter:
        """A new stream of `user_id` for the caller with API key fingerprint `key`, within the limits."""
        feed = self._users.get(user_id)
        if feed is not None and len(feed.waiters) >= self._max_streams_per_user:
            raise ResourceExhaustedError(
                f"at most {self._max_streams_per_user} open streams per user",
                reason="TOO_MANY_STREAMS",
                metadata={"limit": "user", "max_streams": str(self._max_streams_per_user)},
            )
        if self._streams_by_key.get(key, 0) >= self._max_streams_per_key:
            raise ResourceExhaustedError(
                f"at most {self._max_streams_per_key} open streams per API key",
                reason="TOO_MANY_STREAMS",
                metadata={"limit": "key", "max_streams": str(self._max_streams_per_key)},
            )
        waiter = Waiter(user_id, key)
        self._users.setdefault(user_id, _UserFeed()).waiters.add(waiter)
        self._streams_by_key[key] = self._streams_by_key.get(key, 0) + 1
        EVENT_SUBSCRIBERS.inc()
        return waiter

    def unregister(self, waiter: Waiter) -> None:
        feed = self._users.get(waiter.user_id)
        if feed is None or waiter not in feed.waiters:
            return
        feed.waiters.discard(waiter)
        remaining = self._streams_by_key[waiter.key] - 1
        if remaining:
            self._streams_by_key[waiter.key] = remaining
        else:
            del self._streams_by_key[waiter.key]
        EVENT_SUBSCRIBERS.dec()
        if not feed.waiters:
            del self._users[waiter.user_id]

    def head(self, user_id: uuid.UUID) -> int:
        """The newest seq known for a user with open streams (from reads and notifications)."""
        feed = self._users.get(user_id)
        return feed.head if feed else 0

    def observe(self, user_id: uuid.UUID, seq: int) -> None:
        feed = self._users.get(user_id)
        if feed is not None and seq > feed.head:
            feed.head = seq

    async def page_after(self, waiter: Waiter, seq: int, limit: int, read: PageReader) -> list[StoredEvent]:
        """The next events after `seq` for `waiter`'s stream: from what the user's streams share when it
        holds them, else from one table read for all of them (see _UserFeed). Empty when nothing is new.

        A read happens only when something may be new: a notification or reconnect since the last one,
        this stream being ahead of it, or no read for half a re-check interval (a lost notification).
        """
        feed = self._users[waiter.user_id]
        if feed.start is not None and seq < feed.start:
            return await read(waiter.user_id, seq, limit)
        shared = feed.after(seq, limit)
        if shared:
            return shared
        async with feed.reading:
            shared = feed.after(seq, limit)
            if shared:
                return shared
            if feed.end is None or seq > feed.end:
                feed.start = feed.end = seq
                feed.recent = []
            elif not feed.stale and time.monotonic() - feed.read_at < self.recheck_seconds / 2:
                return []
            # Cleared before the read: a commit after the read's snapshot marks it stale again.
            feed.stale = False
            page = await read(waiter.user_id, feed.end, limit)
            feed.read_at = time.monotonic()
            if page:
                feed.recent.extend(page)
                feed.end = page[-1]["seq"]
                self.observe(waiter.user_id, feed.end)
            # A full page: more may have committed before any notification this hub saw (a replay from far
            # back), so the next ask reads again instead of waiting for a wake-up that may never come.
            # (Only ever set here: a notification during the read has set it already.)
            if len(page) == limit:
                feed.stale = True
            # Kept: what a started stream has not sent yet, at most two pages (a slower stream reads alone).
            started = [other.sent for other in feed.waiters if other.sent is not None]
            feed.keep_from(min(max(min(started, default=seq), feed.end - 2 * limit), feed.end))
            return feed.after(seq, limit)

    def _on_notification(self, connection: object, pid: int, channel: str, payload: str) -> None:
        user_text, _, seq_text = payload.partition(":")
        try:
            user_id, seq = uuid.UUID(user_text), int(seq_text)
        except ValueError:
            log.warning("unexpected signal event notification", extra={"payload": payload[:200]})
            return
        feed = self._users.get(user_id)
        if feed is None:
            return
        feed.head = max(feed.head, seq)
        feed.stale = True
        for waiter in feed.waiters:
            waiter.woken.set()

    def _wake_all(self) -> None:
        for feed in self._users.values():
            feed.stale = True
            for waiter in feed.waiters:
                waiter.woken.set()

    async def _listen_once(self) -> None:
        """Listens until the connection is gone, then raises (ConnectionError when it closed cleanly), so
        that the loop reconnects with backoff. Every stream is woken on the way out: while nobody listens
        they re-check the table on their own, at the shorter interval."""
        connection: asyncpg.Connection | None = None
        lost = asyncio.Event()
        try:
            connection = await asyncpg.connect(
                self._dsn, timeout=10, server_settings={"application_name": "alerts-signal-events"}
            )
            connection.add_termination_listener(lambda _connection: lost.set())
            await connection.add_listener(EVENTS_CHANNEL, self._on_notification)
            self._listening.set()
            EVENT_LISTENER_UP.set(1)
            self.listener.reset_backoff()
            # Whatever committed while nobody listened: every stream looks at the table once.
            self._wake_all()
            while not lost.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lost.wait(), self._health_check_seconds)
                if not lost.is_set():
                    # A half-open connection never reports itself; a query times out instead.
                    await connection.fetchval("SELECT 1", timeout=10)
            raise ConnectionError("signal event listener connection closed")
        finally:
            self._listening.clear()
            EVENT_LISTENER_UP.set(0)
            if connection is not None:
                connection.terminate()
            self._wake_all()


class Subscription:
    """One stream's position in its user's event log."""

    def __init__(
        self,
        *,
        database: Database,
        hub: EventHub,
        waiter: Waiter,
        after_seq: int,
        live_from_seq: int,
        page_size: int,
        max_pending: int,
    ) -> None:
        self._database = database
        self._hub = hub
        self._waiter = waiter
        self._user_id = waiter.user_id
        self._start_seq = after_seq
        self._last_sent = after_seq
        waiter.sent = after_seq
        self._live_from_seq = live_from_seq
        self._page_size = page_size
        self._max_pending = max_pending
        # The read of the page after a full one, begun while that one is prepared: (after which seq, read).
        self._reading: tuple[int, asyncio.Task[list[StoredEvent]]] | None = None

    @property
    def start_cursor(self) -> str:
        """Where this stream starts: the request's cursor, or the user's newest event for "from now on"."""
        return format_cursor(self._start_seq)

    @property
    def cursor(self) -> str:
        return format_cursor(self._last_sent)

    async def batches(self, prepare: Callable[[list[StoredEvent]], Awaitable[T]]) -> AsyncGenerator[T, None]:
        """Pages of events in seq order, each as `prepare` makes it (the caller's conversion, which may
        wait on other services), forever; a page counts as sent once the caller asks for the next.

        After a full page (a replay from far back) the next page is prepared while the caller sends this
        one, and the page after it is read meanwhile, so that the database, `prepare` (with the services it
        waits on) and the send overlap instead of taking turns. Two pages ahead at most, one of them only
        read: a client that does not read holds this stream at three pages.
        """
        ahead: asyncio.Task[tuple[list[StoredEvent], T] | None] | None = None
        try:
            while True:
                if self._hub.draining:
                    raise UnavailableError(
                        "server shutting down; resume from the last cursor on another replica",
                        reason="SERVER_DRAINING",
                        metadata={"cursor": self.cursor},
                    )
                self._ensure_keeping_up()
                if ahead is None:
                    read = await self._next(self._last_sent, prepare)
                else:
                    read = await ahead
                    ahead = None
                if read is None:
                    jitter = random.uniform(0.8, 1.2)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._waiter.woken.wait(), self._hub.recheck_seconds * jitter)
                    continue
                page, prepared = read
                if len(page) == self._page_size:
                    ahead = asyncio.create_task(self._next(page[-1]["seq"], prepare))
                yield prepared
                self._last_sent = self._waiter.sent = page[-1]["seq"]
                self._hub.observe(self._user_id, self._last_sent)
        finally:
            unfinished = [task for task in (ahead, self._reading and self._reading[1]) if task is not None]
            for task in unfinished:
                task.cancel()
            # Whatever they ended with (cancelled, or a failure nobody will ask for now) stays here.
            await asyncio.gather(*unfinished, return_exceptions=True)

    async def _next(
        self, after_seq: int, prepare: Callable[[list[StoredEvent]], Awaitable[T]]
    ) -> tuple[list[StoredEvent], T] | None:
        """The page after `after_seq` and what `prepare` made of it; None when nothing is new. After a
        full page, the read of the next begins before this one is prepared."""
        page = await self._read_after(after_seq)
        if not page:
            return None
        if len(page) == self._page_size:
            last = page[-1]["seq"]
            self._reading = (last, asyncio.create_task(self._read_now(last)))
        return page, await prepare(page)

    async def _read_after(self, after_seq: int) -> list[StoredEvent]:
        """The page after `after_seq`: the read begun for it, or a read now."""
        if self._reading is not None:
            (begun_after, reading), self._reading = self._reading, None
            if begun_after == after_seq:
                return await reading
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)
        return await self._read_now(after_seq)

    async def _read_now(self, after_seq: int) -> list[StoredEvent]:
        # Cleared just before the read: a commit after the read's snapshot rings the bell again, so a
        # stream that finds nothing new and waits is woken by it.
        self._waiter.woken.clear()
        return await self._hub.page_after(self._waiter, after_seq, self._page_size, self._read_page)

    def _ensure_keeping_up(self) -> None:
        if self._last_sent < self._live_from_seq:
            return
        pending = self._hub.head(self._user_id) - self._last_sent
        if pending > self._max_pending:
            raise ResourceExhaustedError(
                f"more than {self._max_pending} events waiting for this stream; resume from its last cursor",
                reason="SUBSCRIBER_TOO_SLOW",
                metadata={"cursor": self.cursor, "pending": str(pending)},
            )

    async def _read_page(self, user_id: uuid.UUID, after_seq: int, limit: int) -> list[StoredEvent]:
        async with self._database.connection() as connection:
            return await replay_page(connection, user_id, after_seq, limit)


class EventFeed:
    """Opens subscriptions: checks the user and the cursor, then hands out a registered Subscription.

    Pages of up to 1000 events: a replay from far back reads each page in one query (the events with
    their signals and screenshots) and prepares it with one more (the signals' deliveries) and one storage
    call for its screenshot URLs, so per-page costs are spread over a thousand events (pages of 2,000
    measured no faster, and a stream would hold twice as much); a live stream's pages hold only what is
    new anyway (docs/perf/scale.md, "Round 5 (branch replay)").
    """

    def __init__(
        self, *, database: Database, hub: EventHub, page_size: int = 1000, max_pending: int = 1000
    ) -> None:
        self._database = database
        self._hub = hub
        self._page_size = page_size
        self._max_pending = max_pending

    @contextlib.asynccontextmanager
    async def subscribe(
        self, user_id: uuid.UUID, after_cursor: str, *, key: str
    ) -> AsyncIterator[Subscription]:
        """A stream of `user_id`'s events for the caller whose API key has fingerprint `key`."""
        after = parse_cursor(after_cursor)
        waiter = self._hub.register(user_id, key)
        try:
            async with self._database.session() as session:
                head = await EventRepository(session).head(user_id)
            if head is None:
                raise no_such_user()
            if after is not None and after > head:
                raise InvalidArgumentError(
                    "after_cursor is ahead of this user's events", reason="INVALID_CURSOR"
                )
            self._hub.observe(user_id, head)
            yield Subscription(
                database=self._database,
                hub=self._hub,
                waiter=waiter,
                after_seq=head if after is None else after,
                live_from_seq=head,
                page_size=self._page_size,
                max_pending=self._max_pending,
            )
        finally:
            self._hub.unregister(waiter)


__all__ = [
    "EventFeed",
    "EventHub",
    "StoredEvent",
    "Subscription",
    "format_cursor",
    "listener_dsn",
    "parse_cursor",
]
