"""SubscribeSignals replay: the next page read and prepared while the current one is sent, and streams that
ask for no screenshot URLs. Real PostgreSQL, a real signal server and storage service where URLs matter."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from apidevs.alerts.v1 import resources_pb2, signal_service_pb2, signal_service_pb2_grpc
from signal_service.database import Database, create_engine
from signal_service.events import service as events_service
from signal_service.events.repository import replay_page
from signal_service.events.service import EventFeed, StoredEvent, listener_dsn
from signal_service.storage_links import MAX_KEYS_PER_CALL, ScreenshotLinks
from storage_service.service import build_service
from tests.integration.signal_service.test_platform_api import (
    STREAM_GUARD_SECONDS,
    alert,
    create_user,
    ingest,
    listening_hub,
    read_events,
    set_outcome,
    signal_server_with,
)
from tests.integration.storage_service.storage_servers import serve_storage, settings_for
from tests.keys import open_system_channel
from tests.support import complete_capture, eventually


@contextlib.asynccontextmanager
async def feed_of(database_url: str, page_size: int) -> AsyncIterator[EventFeed]:
    database = Database(create_engine(database_url, pool_size=2))
    try:
        # A re-check far beyond the guard: pages must come from reads after full pages and from
        # notifications, never from the periodic look.
        async with listening_hub(database_url, listening_recheck_seconds=600) as hub:
            yield EventFeed(database=database, hub=hub, page_size=page_size)
    finally:
        await database.dispose()


def seqs(page: list[StoredEvent]) -> list[int]:
    return [stored["seq"] for stored in page]


async def user_with_events(signals, users, count: int) -> tuple[uuid.UUID, str]:
    """A new user with `count` events; their id and webhook token."""
    created = await create_user(users)
    for index in range(count):
        await ingest(signals, created.webhook_token, alert(index))
    return uuid.UUID(created.user.user_id), created.webhook_token


def recorded_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The seq after which each table read of the streams' pages begins, in the order they begin."""
    reads: list[int] = []

    async def recorded(connection, user_id: uuid.UUID, after_seq: int, limit: int) -> list[StoredEvent]:
        reads.append(after_seq)
        return await replay_page(connection, user_id, after_seq, limit)

    monkeypatch.setattr(events_service, "replay_page", recorded)
    return reads


class Recorder:
    """A page preparation that notes each page's seqs, in the order it is asked to prepare them."""

    def __init__(self) -> None:
        self.pages: list[list[int]] = []
        self._rung = asyncio.Event()

    async def __call__(self, page: list[StoredEvent]) -> list[int]:
        self.pages.append(seqs(page))
        self._rung.set()
        return seqs(page)

    async def wait_for(self, count: int) -> None:
        async with asyncio.timeout(STREAM_GUARD_SECONDS):
            while len(self.pages) < count:
                self._rung.clear()
                await self._rung.wait()


async def test_the_next_page_is_prepared_while_the_current_one_is_sent(signals, users, database_url) -> None:
    """Pages of 2 over 7 events: each page after a full one is read and prepared before the caller asks for
    it, in order, each event once; then a live event follows the replay's last page."""
    user_id, token = await user_with_events(signals, users, 7)
    prepare = Recorder()
    received: list[list[int]] = []
    async with (
        feed_of(database_url, page_size=2) as feed,
        feed.subscribe(user_id, "0", key="test") as subscription,
        contextlib.aclosing(subscription.batches(prepare)) as pages,
    ):
        async with asyncio.timeout(STREAM_GUARD_SECONDS):
            for _ in range(4):
                received.append(await anext(pages))
                if len(received[-1]) == 2:
                    # Still "sending" this page: the next one is read and prepared meanwhile, unasked.
                    await prepare.wait_for(len(received) + 1)
                    assert prepare.pages[-1][0] == received[-1][-1] + 1
            live = asyncio.create_task(anext(pages))
            await ingest(signals, token, alert(8))
            received.append(await live)
    assert received == [[1, 2], [3, 4], [5, 6], [7], [8]]
    assert prepare.pages == received


async def test_a_stream_whose_client_does_not_read_holds_one_page_prepared_and_one_read_ahead(
    signals, users, database_url, monkeypatch: pytest.MonkeyPatch
) -> None:
    user_id, _ = await user_with_events(signals, users, 8)
    reads = recorded_reads(monkeypatch)
    prepare = Recorder()
    async with (
        feed_of(database_url, page_size=2) as feed,
        feed.subscribe(user_id, "0", key="test") as subscription,
        contextlib.aclosing(subscription.batches(prepare)) as pages,
    ):
        first = await asyncio.wait_for(anext(pages), STREAM_GUARD_SECONDS)
        await prepare.wait_for(2)
        # The client takes its time with the first page; nothing more is prepared or read meanwhile.
        await asyncio.sleep(0.5)
        assert prepare.pages == [[1, 2], [3, 4]]
        assert reads == [0, 2, 4]
        assert subscription.cursor == "0"  # the first page is not sent until the next is asked for
        assert await asyncio.wait_for(anext(pages), STREAM_GUARD_SECONDS) == [3, 4]
        assert subscription.cursor == "2"
    assert first == [1, 2]


async def test_the_page_after_next_is_read_while_the_next_is_prepared(
    signals, users, database_url, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The read of a page does not wait for the preparation of the one before it (a storage call, say)."""
    user_id, _ = await user_with_events(signals, users, 5)
    reads = recorded_reads(monkeypatch)
    preparing, release = asyncio.Event(), asyncio.Event()

    async def prepare(page: list[StoredEvent]) -> list[int]:
        if seqs(page) == [3, 4]:
            preparing.set()
            await release.wait()
        return seqs(page)

    async with (
        feed_of(database_url, page_size=2) as feed,
        feed.subscribe(user_id, "0", key="test") as subscription,
        contextlib.aclosing(subscription.batches(prepare)) as pages,
    ):
        async with asyncio.timeout(STREAM_GUARD_SECONDS):
            assert await anext(pages) == [1, 2]
            await preparing.wait()
            await eventually(lambda: 4 in reads, what="the read after 4", within=STREAM_GUARD_SECONDS)
            release.set()
            assert [await anext(pages), await anext(pages)] == [[3, 4], [5]]
    assert reads == [0, 2, 4]


async def test_closing_a_stream_stops_the_page_it_prepares_ahead(signals, users, database_url) -> None:
    user_id, _ = await user_with_events(signals, users, 3)
    started, stopped = asyncio.Event(), asyncio.Event()

    async def prepare(page: list[StoredEvent]) -> list[int]:
        if seqs(page) != [1, 2]:
            started.set()
            try:
                await asyncio.Event().wait()  # a storage call that never answers
            except asyncio.CancelledError:
                stopped.set()
                raise
        return seqs(page)

    async with (
        feed_of(database_url, page_size=2) as feed,
        feed.subscribe(user_id, "0", key="test") as subscription,
    ):
        pages = subscription.batches(prepare)
        assert await asyncio.wait_for(anext(pages), STREAM_GUARD_SECONDS) == [1, 2]
        await asyncio.wait_for(started.wait(), STREAM_GUARD_SECONDS)
        await asyncio.wait_for(pages.aclose(), STREAM_GUARD_SECONDS)
        assert stopped.is_set()


@pytest.fixture
async def with_storage(
    service_env: dict[str, str], tmp_path: Path
) -> AsyncIterator[signal_service_pb2_grpc.SignalServiceStub]:
    """A signal server of its own whose storage service signs URLs (the session's has none to ask)."""
    settings = settings_for(tmp_path, public_url="http://edge.invalid")
    async with (
        serve_storage(build_service(settings), settings) as storage,
        signal_server_with(service_env, storage_addr=storage.address) as address,
    ):
        channel = open_system_channel(address)
        try:
            yield signal_service_pb2_grpc.SignalServiceStub(channel)
        finally:
            await channel.close()


async def test_a_stream_may_ask_for_no_screenshot_urls(users, with_storage) -> None:
    signals = with_storage
    created = await create_user(users)
    signal_id = await ingest(signals, created.webhook_token, alert(1))
    object_key = await complete_capture(signals, signal_id)
    events = {}
    for omit in (False, True):
        call = signals.SubscribeSignals(
            signal_service_pb2.SubscribeSignalsRequest(
                user_id=created.user.user_id,
                after_cursor="0",
                max_events_per_message=10,
                omit_screenshot_urls=omit,
            )
        )
        try:
            (message,) = await read_events(call, 1)
        finally:
            call.cancel()
        events[omit] = message.events[-1].signal
    assert events[False].screenshot_url.startswith("http://edge.invalid/")
    assert events[True].screenshot_url == ""
    for signal in events.values():
        assert signal.screenshot_status == resources_pb2.SCREENSHOT_STATUS_COMPLETED
        assert signal.screenshot_object_key == object_key


async def test_replayed_signals_are_the_signals_as_listed(users, with_storage, database_url) -> None:
    """The replay builds its messages from its own positional reads: each event's signal is field for field
    what ListSignals shows (URLs aside: each signing is fresh), with a completed screenshot and its URL, a
    failed one and its error, an outcome with a decimal, parse problems, and deliveries."""
    signals = with_storage
    created = await create_user(users)
    shot_id = await ingest(signals, created.webhook_token, alert(1))
    failed_id = await ingest(signals, created.webhook_token, alert(2))
    partial_id = await ingest(signals, created.webhook_token, b"no fields here at all")
    await complete_capture(signals, shot_id)
    await signals.ClaimCapture(signal_service_pb2.ClaimCaptureRequest(signal_id=failed_id))
    await signals.ReportCapture(
        signal_service_pb2.ReportCaptureRequest(
            signal_id=failed_id, status=resources_pb2.SCREENSHOT_STATUS_FAILED, error="timeout"
        )
    )
    await set_outcome(signals, shot_id, resources_pb2.SIGNAL_RESULT_WIN, "-12.50", "took it")
    connection = await asyncpg.connect(listener_dsn(database_url))
    try:
        await connection.execute(
            "INSERT INTO notification_deliveries (signal_id, user_id, channel, kind, status, attempts,"
            " last_error, with_photo, delivered_at)"
            " VALUES ($1, $2, 'telegram', 'alert', 'delivered', 2, 'flaky', true, now()),"
            " ($1, $2, 'discord', 'photo', 'pending', 0, NULL, false, NULL)",
            uuid.UUID(shot_id),
            uuid.UUID(created.user.user_id),
        )
    finally:
        await connection.close()
    listed = await signals.ListSignals(
        signal_service_pb2.ListSignalsRequest(user_id=created.user.user_id, page_size=10)
    )
    expected = {signal.signal_id: signal for signal in listed.signals}
    call = signals.SubscribeSignals(
        signal_service_pb2.SubscribeSignalsRequest(
            user_id=created.user.user_id, after_cursor="0", max_events_per_message=100
        )
    )
    try:
        (message,) = await read_events(call, 1)
    finally:
        call.cancel()
    replayed = [event for event in message.events if event.HasField("signal")]
    # Three created, two screenshot updates each (claimed, reported), one outcome.
    assert len(replayed) == 8
    assert {event.signal.signal_id for event in replayed} == {shot_id, failed_id, partial_id}
    for event in replayed:
        assert event.user_id == created.user.user_id
        want, got = resources_pb2.Signal(), resources_pb2.Signal()
        want.CopyFrom(expected[event.signal.signal_id])
        got.CopyFrom(event.signal)
        assert got.screenshot_url.startswith("http://edge.invalid/") == want.screenshot_url.startswith(
            "http://edge.invalid/"
        )
        want.ClearField("screenshot_url")
        got.ClearField("screenshot_url")
        assert got == want
    shot = expected[shot_id]
    assert shot.screenshot_url
    assert shot.profit_loss == "-12.50"
    assert [delivery.HasField("delivered_at") for delivery in shot.deliveries] == [True, False]
    assert expected[failed_id].screenshot_error == "timeout"
    assert expected[partial_id].parse_problems


async def test_screenshot_urls_for_more_keys_than_one_storage_call_takes(tmp_path: Path) -> None:
    """A page of 2,000 events can show more screenshots than GetObjectUrls takes in one call: every key
    still gets its URL (each once, however often the page shows it)."""
    settings = settings_for(tmp_path, public_url="http://edge.invalid")
    keys = [f"screenshots/{index}.png" for index in range(MAX_KEYS_PER_CALL + 500)]
    async with serve_storage(build_service(settings), settings) as storage:
        urls = await ScreenshotLinks(storage.stub, ttl_seconds=60).urls([*keys, keys[0], None, ""])
    assert sorted(urls) == sorted(keys)
    assert all(url.startswith(f"http://edge.invalid/media/{key}?") for key, url in urls.items())
