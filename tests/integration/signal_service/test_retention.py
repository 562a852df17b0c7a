"""Screenshot retention by plan against a real storage service (local disk) and PostgreSQL: only what is
due is deleted and marked EXPIRED, a missing object counts as deleted, a storage outage deletes nothing,
one replica at a time; and the stored-bytes figures by plan and per user."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import asyncpg
import grpc
import pytest
import sqlalchemy as sa
from prometheus_client import REGISTRY

from alerts.processes import free_port
from apidevs.alerts.v1 import (
    resources_pb2,
    signal_service_pb2,
    signal_service_pb2_grpc,
    storage_service_pb2,
    storage_service_pb2_grpc,
    user_service_pb2_grpc,
)
from mesh import grpc as mesh_grpc
from signal_service.clock import utcnow
from signal_service.events.service import listener_dsn
from signal_service.main import SERVICE_NAMES, SignalApp, register, signal_app
from signal_service.retention.repository import RetentionRepository
from signal_service.retention.service import RETENTION_LOCK_KEY, RetentionJob, RetentionPass
from signal_service.settings import SignalSettings
from storage_service.service import build_service
from storage_service.servicer import SERVICE_NAME as STORAGE_SERVICE_NAME
from storage_service.servicer import StorageServicer
from storage_service.settings import StorageSettings
from tests.conftest import settings_from
from tests.e2e.stacks import fresh_database
from tests.keys import SYSTEM_KEYS, open_system_channel
from tests.support import create_user, ingest_request

pytestmark = pytest.mark.asyncio(loop_scope="session")

COMPLETED = resources_pb2.SCREENSHOT_STATUS_COMPLETED
EXPIRED = resources_pb2.SCREENSHOT_STATUS_EXPIRED
FAILED = resources_pb2.SCREENSHOT_STATUS_FAILED


@dataclass
class Stack:
    app: SignalApp
    users: user_service_pb2_grpc.UserServiceStub
    signals: signal_service_pb2_grpc.SignalServiceStub
    storage: storage_service_pb2_grpc.StorageServiceStub
    database_dsn: str

    def job(self, storage: storage_service_pb2_grpc.StorageServiceStub | None = None) -> RetentionJob:
        return RetentionJob(
            database=self.app.database, settings=self.app.settings, storage=storage or self.storage
        )

    async def screenshot(self, token: str, user_id: str, *, age_days: float, size: int = 0) -> str:
        """A signal with a COMPLETED screenshot stored `age_days` ago; `size` 0 stores no object."""
        answer = await self.signals.IngestWebhook(
            ingest_request(token, f"Ticker: BINANCE:ETHUSDT\nPrice: 2\nid: {uuid.uuid4()}".encode())
        )
        signal_id = answer.signal_id
        claim = await self.signals.ClaimCapture(signal_service_pb2.ClaimCaptureRequest(signal_id=signal_id))
        key = claim.object_key
        if size:
            await self.put(key, b"p" * size)
        await self.signals.ReportCapture(
            signal_service_pb2.ReportCaptureRequest(
                signal_id=signal_id, status=COMPLETED, object_key=key, size_bytes=size or 100
            )
        )
        await self.sql(
            "UPDATE screenshots SET completed_at = now() - make_interval(secs => $2) WHERE signal_id = $1",
            uuid.UUID(signal_id),
            age_days * 86400,
        )
        return signal_id

    async def put(self, key: str, data: bytes) -> None:
        async def parts() -> AsyncIterator[storage_service_pb2.PutObjectRequest]:
            yield storage_service_pb2.PutObjectRequest(
                header=storage_service_pb2.PutObjectHeader(key=key, content_type="image/png")
            )
            yield storage_service_pb2.PutObjectRequest(chunk=data)

        await self.storage.PutObject(parts())

    async def stored(self, signal_id: str) -> bool:
        signal = await self.signals.GetSignal(signal_service_pb2.GetSignalRequest(signal_id=signal_id))
        try:
            async for _ in self.storage.GetObject(
                storage_service_pb2.GetObjectRequest(key=signal.screenshot_object_key)
            ):
                pass
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise
            return False
        return True

    async def head_cursor(self, user_id: str) -> str:
        stream = self.signals.SubscribeSignals(signal_service_pb2.SubscribeSignalsRequest(user_id=user_id))
        cursor = dict(await stream.initial_metadata())["x-start-cursor"]
        stream.cancel()
        return cursor

    async def events_since(self, user_id: str, cursor: str) -> list[resources_pb2.SignalEvent]:
        """The user's events after `cursor` up to their newest one."""
        head = await self.head_cursor(user_id)
        events: list[resources_pb2.SignalEvent] = []
        if head == cursor:
            return events
        stream = self.signals.SubscribeSignals(
            signal_service_pb2.SubscribeSignalsRequest(user_id=user_id, after_cursor=cursor)
        )
        async for event in stream:
            events.append(event)
            if event.cursor == head:
                break
        stream.cancel()
        return events

    async def status(self, signal_id: str) -> int:
        signal = await self.signals.GetSignal(signal_service_pb2.GetSignalRequest(signal_id=signal_id))
        return signal.screenshot_status

    async def sql(self, statement: str, *args: object) -> None:
        connection = await asyncpg.connect(self.database_dsn)
        try:
            await connection.execute(statement, *args)
        finally:
            await connection.close()


@pytest.fixture(scope="module")
def own_database_url(database_url: str) -> Iterator[str]:
    with fresh_database(database_url) as url:
        yield url


@pytest.fixture(scope="module")
async def stack(
    own_database_url: str, service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    """Storage (local disk) and a signal server without background tasks, on a database of their own."""
    storage_settings = StorageSettings(
        api_keys=SYSTEM_KEYS.entries(), storage_local_dir=tmp_path_factory.mktemp("objects")
    )
    storage_service = build_service(storage_settings)
    storage_server = mesh_grpc.create_server(storage_settings)
    storage_service_pb2_grpc.add_StorageServiceServicer_to_server(
        StorageServicer(storage_service), storage_server
    )
    storage_port, _ = await mesh_grpc.start(
        storage_server, address="127.0.0.1:0", service_names=[STORAGE_SERVICE_NAME]
    )
    settings = settings_from(
        {
            **service_env,
            "ALERTS_DATABASE_URL": own_database_url,
            "ALERTS_STORAGE_ADDR": f"127.0.0.1:{storage_port}",
        },
        SignalSettings,
        retention_batch_size=2,
    )
    async with signal_app(settings) as app:
        server = mesh_grpc.create_server(settings)
        register(server, app)
        port, _ = await mesh_grpc.start(server, address="127.0.0.1:0", service_names=SERVICE_NAMES)
        channel = open_system_channel(f"127.0.0.1:{port}")
        storage_channel = open_system_channel(f"127.0.0.1:{storage_port}")
        yield Stack(
            app=app,
            users=user_service_pb2_grpc.UserServiceStub(channel),
            signals=signal_service_pb2_grpc.SignalServiceStub(channel),
            storage=storage_service_pb2_grpc.StorageServiceStub(storage_channel),
            database_dsn=listener_dsn(own_database_url),
        )
        await channel.close()
        await storage_channel.close()
        await server.stop(1)
    await storage_server.stop(1)
    await storage_service.close()


async def test_retention_deletes_and_expires_only_what_its_plan_has_outlived(stack: Stack) -> None:
    free = await create_user(stack.users, plan=resources_pb2.PLAN_FREE)
    premium = await create_user(stack.users, plan=resources_pb2.PLAN_PREMIUM)
    f_id, p_id = free.user.user_id, premium.user.user_id
    free_old = await stack.screenshot(free.webhook_token, f_id, age_days=31, size=1000)
    free_older = await stack.screenshot(free.webhook_token, f_id, age_days=45, size=1500)
    free_gone = await stack.screenshot(free.webhook_token, f_id, age_days=40)  # object already deleted
    free_new = await stack.screenshot(free.webhook_token, f_id, age_days=29, size=2000)
    premium_kept = await stack.screenshot(premium.webhook_token, p_id, age_days=300, size=3000)
    premium_old = await stack.screenshot(premium.webhook_token, p_id, age_days=366, size=4000)
    failed_old = (
        await stack.signals.IngestWebhook(ingest_request(free.webhook_token, b"Ticker: X:Y\nid: 1"))
    ).signal_id
    await stack.signals.ReportCapture(
        signal_service_pb2.ReportCaptureRequest(signal_id=failed_old, status=FAILED, error="timeout")
    )
    await stack.sql(
        "UPDATE screenshots SET completed_at = now() - interval '400 days' WHERE signal_id = $1",
        uuid.UUID(failed_old),
    )
    before = await stack.signals.GetUserStats(signal_service_pb2.GetUserStatsRequest(user_id=f_id))
    assert (before.storage_objects, before.storage_bytes) == (4, 1000 + 1500 + 100 + 2000)

    premium_cursor = await stack.head_cursor(p_id)
    free_cursor = await stack.head_cursor(f_id)
    # Batches of 2: the pass goes on until nothing is due.
    assert await stack.job().expire_due() == 4

    for signal_id in (free_old, free_older, free_gone, premium_old):
        assert await stack.status(signal_id) == EXPIRED
        assert not await stack.stored(signal_id)
    for signal_id in (free_new, premium_kept):
        assert await stack.status(signal_id) == COMPLETED
        assert await stack.stored(signal_id)
    assert await stack.status(failed_old) == FAILED
    after = await stack.signals.GetUserStats(signal_service_pb2.GetUserStatsRequest(user_id=f_id))
    assert (after.storage_objects, after.storage_bytes) == (1, 2000)
    expired = await stack.signals.GetSignal(signal_service_pb2.GetSignalRequest(signal_id=free_old))
    assert not expired.screenshot_url
    assert await stack.job().expire_due() == 0

    # Each expiry is one SCREENSHOT_UPDATED event in its user's log.
    expiry_events = await stack.events_since(p_id, premium_cursor)
    assert [(event.type, event.signal.signal_id) for event in expiry_events] == [
        (resources_pb2.SIGNAL_EVENT_TYPE_SCREENSHOT_UPDATED, premium_old)
    ]
    # A user with several expiries in one batch gets consecutive sequence numbers, one event each.
    free_events = await stack.events_since(f_id, free_cursor)
    assert {event.signal.signal_id for event in free_events} == {free_old, free_older, free_gone}
    assert {event.type for event in free_events} == {resources_pb2.SIGNAL_EVENT_TYPE_SCREENSHOT_UPDATED}
    assert [int(event.cursor) for event in free_events] == [int(free_cursor) + n for n in (1, 2, 3)]
    assert all(event.signal.screenshot_status == EXPIRED for event in free_events)

    await stack.job().refresh_usage()
    assert REGISTRY.get_sample_value("alerts_storage_bytes", {"plan": "free"}) == 2000
    assert REGISTRY.get_sample_value("alerts_storage_objects", {"plan": "premium"}) == 1
    assert REGISTRY.get_sample_value("alerts_storage_bytes", {"plan": "basic"}) == 0


async def test_nothing_is_expired_while_storage_is_down_or_another_replica_runs_the_job(stack: Stack) -> None:
    user = await create_user(stack.users, plan=resources_pb2.PLAN_BASIC)
    due = await stack.screenshot(user.webhook_token, user.user.user_id, age_days=91, size=10)

    async with mesh_grpc.open_channel(f"127.0.0.1:{free_port()}", "unused") as dead_channel:
        down = stack.job(storage_service_pb2_grpc.StorageServiceStub(dead_channel))
        assert await down.run_pass() == RetentionPass(expired=0, failed_deletions=1)
    assert await stack.status(due) == COMPLETED
    assert await stack.stored(due)

    connection = await asyncpg.connect(stack.database_dsn)
    try:
        async with connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock($1)", RETENTION_LOCK_KEY)
            assert await stack.job().expire_due() == 0
            assert await stack.status(due) == COMPLETED
    finally:
        await connection.close()
    assert await stack.job().expire_due() == 1
    assert await stack.status(due) == EXPIRED
    assert not await stack.stored(due)


class StorageAwayOnce:
    """The storage service, refusing the first deletion call as an unreachable one would."""

    def __init__(self, storage: storage_service_pb2_grpc.StorageServiceStub) -> None:
        self._storage = storage
        self.refused = 0

    async def DeleteObjects(
        self, request: storage_service_pb2.DeleteObjectsRequest, **kwargs: object
    ) -> object:
        if not self.refused:
            self.refused += 1
            raise grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata())
        return await self._storage.DeleteObjects(request, **kwargs)


async def test_a_failed_pass_is_retried_after_the_retry_delay_not_the_interval(stack: Stack) -> None:
    user = await create_user(stack.users, plan=resources_pb2.PLAN_BASIC)
    due = await stack.screenshot(user.webhook_token, user.user.user_id, age_days=91, size=10)
    storage = StorageAwayOnce(stack.storage)
    settings = stack.app.settings.model_copy(
        update={"retention_interval_seconds": 3600.0, "retention_retry_seconds": 0.1}
    )
    job = RetentionJob(database=stack.app.database, settings=settings, storage=storage)  # type: ignore[arg-type]
    expiries = stack.signals.SubscribeSignals(
        signal_service_pb2.SubscribeSignalsRequest(
            user_id=user.user.user_id, after_cursor=await stack.head_cursor(user.user.user_id)
        )
    )
    job.expiry.start()
    try:
        async with asyncio.timeout(30):
            event = await expiries.read()
    finally:
        expiries.cancel()
        await job.expiry.stop()
    assert (event.type, event.signal.signal_id) == (resources_pb2.SIGNAL_EVENT_TYPE_SCREENSHOT_UPDATED, due)
    assert storage.refused == 1
    assert await stack.status(due) == EXPIRED
    assert not await stack.stored(due)


async def test_an_expiry_rewrites_its_signal_heap_only(stack: Stack) -> None:
    """No index of signals names screenshot_status, and fillfactor leaves each page room for the row's new
    version: the expiry writes no index entry for the signal (migration 0016_retention_bytes)."""
    user = await create_user(stack.users, plan=resources_pb2.PLAN_FREE)
    due = await stack.screenshot(user.webhook_token, user.user.user_id, age_days=31)
    # The backend's counts not yet reported (earlier transactions' too, since PostgreSQL 15): the difference.
    counted = sa.text(
        "SELECT pg_stat_get_xact_tuples_updated('signals'::regclass),"
        " pg_stat_get_xact_tuples_hot_updated('signals'::regclass)"
    )
    async with stack.app.database.transaction() as session:
        retention = RetentionRepository(session)
        expiring = [
            item
            for item in await retention.expired(stack.job().cutoffs(utcnow()), limit=100)
            if item.signal_id == uuid.UUID(due)
        ]
        updated_before, heap_only_before = (await session.execute(counted)).one()
        await retention.mark_expired(expiring)
        updated, heap_only = (await session.execute(counted)).one()
    assert (len(expiring), updated - updated_before, heap_only - heap_only_before) == (1, 1, 1)
    assert await stack.status(due) == EXPIRED
