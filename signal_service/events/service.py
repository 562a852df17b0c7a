"""Live signal events for SubscribeSignals: replay after a cursor, then live, with no gap and no duplicate.

Fan-out is PostgreSQL LISTEN/NOTIFY on one connection per process (EventHub); order and completeness come
from users.event_seq, not from notifications. Why, and how slow clients are handled:
docs/architecture-signal.md, "Live signal events".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import asyncpg
from prometheus_client import Gauge
from sqlalchemy.engine import make_url

from mesh.errors import InvalidArgumentError, NotFoundError, ResourceExhaustedError, UnavailableError
from signal_service.database import Database
from signal_service.events.repository import EVENTS_CHANNEL, EventRepository
from signal_service.models import SignalEvent
from signal_service.signals.repository import SignalRepository, SignalRow

log = logging.getLogger(__name__)

EVENT_SUBSCRIBERS = Gauge("alerts_stream_subscribers", "Open SubscribeSignals streams in this process")
EVENT_LISTENER_UP = Gauge("alerts_event_listener_up", "1 while this process is LISTENing for signal events")

_MAX_CURSOR_DIGITS = 18  # fits a BIGINT
_INITIAL_BACKOFF_SECONDS = 0.2


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

    __slots__ = ("user_id", "woken")

    def __init__(self, user_id: uuid.UUID) -> None:
        self.user_id = user_id
        self.woken = asyncio.Event()


@dataclass(slots=True)
class _UserStreams:
    head: int = 0
    waiters: set[Waiter] = field(default_factory=set)


class EventHub:
    """This process's one LISTEN connection, reconnecting with backoff, and the streams it wakes."""

    def __init__(
        self,
        dsn: str,
        *,
        recheck_seconds: float = 5.0,
        listening_recheck_seconds: float = 30.0,
        health_check_seconds: float = 30.0,
        max_backoff_seconds: float = 10.0,
    ) -> None:
        self._dsn = dsn
        self._recheck_seconds = recheck_seconds
        self._listening_recheck_seconds = listening_recheck_seconds
        self._health_check_seconds = health_check_seconds
        self._max_backoff_seconds = max_backoff_seconds
        self._users: dict[uuid.UUID, _UserStreams] = {}
        self._listening = asyncio.Event()
        self._backoff = _INITIAL_BACKOFF_SECONDS
        self._task: asyncio.Task[None] | None = None
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

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen_forever(), name="event-hub")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def drain(self) -> None:
        """Ends every open stream at its next step, so that a shutting-down server is not held by them."""
        self.draining = True
        self._wake_all()

    def register(self, user_id: uuid.UUID) -> Waiter:
        waiter = Waiter(user_id)
        self._users.setdefault(user_id, _UserStreams()).waiters.add(waiter)
        EVENT_SUBSCRIBERS.inc()
        return waiter

    def unregister(self, waiter: Waiter) -> None:
        streams = self._users.get(waiter.user_id)
        if streams is None or waiter not in streams.waiters:
            return
        streams.waiters.discard(waiter)
        EVENT_SUBSCRIBERS.dec()
        if not streams.waiters:
            del self._users[waiter.user_id]

    def head(self, user_id: uuid.UUID) -> int:
        """The newest seq known for a user with open streams (from reads and notifications)."""
        streams = self._users.get(user_id)
        return streams.head if streams else 0

    def observe(self, user_id: uuid.UUID, seq: int) -> None:
        streams = self._users.get(user_id)
        if streams is not None and seq > streams.head:
            streams.head = seq

    def _on_notification(self, connection: object, pid: int, channel: str, payload: str) -> None:
        user_text, _, seq_text = payload.partition(":")
        try:
            user_id, seq = uuid.UUID(user_text), int(seq_text)
        except ValueError:
            log.warning("unexpected signal event notification", extra={"payload": payload[:200]})
            return
        streams = self._users.get(user_id)
        if streams is None:
            return
        streams.head = max(streams.head, seq)
        for waiter in streams.waiters:
            waiter.woken.set()

    def _wake_all(self) -> None:
        for streams in self._users.values():
            for waiter in streams.waiters:
                waiter.woken.set()

    async def _listen_forever(self) -> None:
        while True:
            try:
                await self._listen_once()
                log.warning("signal event listener connection closed; reconnecting")
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                log.warning("signal event listener unavailable; retrying", extra={"error": repr(exc)})
            self._wake_all()
            await asyncio.sleep(self._backoff * random.uniform(0.5, 1.0))
            self._backoff = min(self._backoff * 2, self._max_backoff_seconds)

    async def _listen_once(self) -> None:
        """Listens until the connection is gone."""
        connection = await asyncpg.connect(
            self._dsn, timeout=10, server_settings={"application_name": "alerts-signal-events"}
        )
        lost = asyncio.Event()
        try:
            connection.add_termination_listener(lambda _connection: lost.set())
            await connection.add_listener(EVENTS_CHANNEL, self._on_notification)
            self._listening.set()
            EVENT_LISTENER_UP.set(1)
            self._backoff = _INITIAL_BACKOFF_SECONDS
            # Whatever committed while nobody listened: every stream looks at the table once.
            self._wake_all()
            while not lost.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lost.wait(), self._health_check_seconds)
                if not lost.is_set():
                    # A half-open connection never reports itself; a query times out instead.
                    await connection.fetchval("SELECT 1", timeout=10)
        finally:
            self._listening.clear()
            EVENT_LISTENER_UP.set(0)
            connection.terminate()


@dataclass(frozen=True, slots=True)
class StoredEvent:
    event: SignalEvent
    # The signal as it is now; None for events about no signal, or one since deleted.
    row: SignalRow | None


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
        self._live_from_seq = live_from_seq
        self._page_size = page_size
        self._max_pending = max_pending

    @property
    def start_cursor(self) -> str:
        """Where this stream starts: the request's cursor, or the user's newest event for "from now on"."""
        return format_cursor(self._start_seq)

    @property
    def cursor(self) -> str:
        return format_cursor(self._last_sent)

    async def batches(self) -> AsyncIterator[list[StoredEvent]]:
        """Pages of events in seq order, forever; a page counts as sent once the caller asks for the next."""
        while True:
            if self._hub.draining:
                raise UnavailableError(
                    "server shutting down; resume from the last cursor on another replica",
                    reason="SERVER_DRAINING",
                    metadata={"cursor": self.cursor},
                )
            self._ensure_keeping_up()
            # Cleared before the read: a commit after the read's snapshot rings the bell again.
            self._waiter.woken.clear()
            page = await self._read_page()
            if page:
                yield page
                self._last_sent = page[-1].event.seq
                self._hub.observe(self._user_id, self._last_sent)
                continue
            jitter = random.uniform(0.8, 1.2)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._waiter.woken.wait(), self._hub.recheck_seconds * jitter)

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

    async def _read_page(self) -> list[StoredEvent]:
        async with self._database.session() as session:
            events = await EventRepository(session).after(self._user_id, self._last_sent, self._page_size)
            signal_ids = [event.signal_id for event in events if event.signal_id is not None]
            rows = await SignalRepository(session).get_many(signal_ids) if signal_ids else []
        by_id = {row.signal.id: row for row in rows}
        return [
            StoredEvent(event, by_id.get(event.signal_id) if event.signal_id else None) for event in events
        ]


class EventFeed:
    """Opens subscriptions: checks the user and the cursor, then hands out a registered Subscription.

    Pages of up to 1000 events: a replay from far back costs a tenth of the round trips (two queries and
    one storage call a page) that pages of 100 did, 5.2 k -> 7.5 k events/s (docs/PERFORMANCE.md, "Scale");
    a live stream's pages hold only what is new anyway.
    """

    def __init__(
        self, *, database: Database, hub: EventHub, page_size: int = 1000, max_pending: int = 1000
    ) -> None:
        self._database = database
        self._hub = hub
        self._page_size = page_size
        self._max_pending = max_pending

    @contextlib.asynccontextmanager
    async def subscribe(self, user_id: uuid.UUID, after_cursor: str) -> AsyncIterator[Subscription]:
        after = parse_cursor(after_cursor)
        waiter = self._hub.register(user_id)
        try:
            async with self._database.session() as session:
                head = await EventRepository(session).head(user_id)
            if head is None:
                raise NotFoundError("no such user", reason="USER_NOT_FOUND")
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
