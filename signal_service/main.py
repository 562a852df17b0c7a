"""`alerts serve signal`: SignalService and UserService in one gRPC server, with the outbox relay."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import uvloop
from redis.asyncio import Redis

from apidevs.alerts.v1 import (
    api_key_service_pb2,
    api_key_service_pb2_grpc,
    signal_service_pb2,
    signal_service_pb2_grpc,
    storage_service_pb2_grpc,
    user_service_pb2,
    user_service_pb2_grpc,
)
from mesh import grpc as mesh_grpc
from mesh.crypto import CookieCipher
from mesh.logging import configure_logging
from mesh.loops import BackgroundLoop
from mesh.metrics import start_metrics_server
from mesh.queues import capture_workers_key, dramatiq_namespace
from signal_service.api_keys.service import ApiKeyManager
from signal_service.api_keys.servicer import ApiKeyServicer
from signal_service.audit.service import AuditWriter
from signal_service.captures.queued import CaptureMessages
from signal_service.captures.service import CaptureCoordinator
from signal_service.database import Database, create_engine, database_error
from signal_service.events.service import EventFeed, EventHub, listener_dsn
from signal_service.intake.ratelimit import RateLimiter
from signal_service.intake.service import QueueBacklog, WebhookIngestor
from signal_service.notifications.service import NotificationLedger
from signal_service.outbox.service import OutboxRelay, PipelinedRedisBroker
from signal_service.parsing import load_indicator_catalog
from signal_service.retention.service import RetentionJob
from signal_service.servicer import SignalServicer
from signal_service.sessions.service import SessionChecks, SessionCheckScheduler
from signal_service.settings import SignalSettings, get_settings
from signal_service.signals.service import SignalOutcomes, SignalReader
from signal_service.status import StatusReporter
from signal_service.storage_links import ScreenshotLinks
from signal_service.telegram_links.service import TelegramLinks
from signal_service.users.access import AccessTokenManager, access_tokens_from_settings
from signal_service.users.service import UserManager
from signal_service.users.servicer import UserServicer

SERVICE_NAMES = (
    signal_service_pb2.DESCRIPTOR.services_by_name["SignalService"].full_name,
    user_service_pb2.DESCRIPTOR.services_by_name["UserService"].full_name,
    api_key_service_pb2.DESCRIPTOR.services_by_name["ApiKeyService"].full_name,
)


@dataclass
class SignalApp:
    """Everything the signal process holds for its lifetime."""

    settings: SignalSettings
    database: Database
    redis: Redis
    audit: AuditWriter
    relay: OutboxRelay
    events: EventHub
    captures: CaptureCoordinator
    session_scheduler: SessionCheckScheduler
    retention: RetentionJob
    notifications: NotificationLedger
    signal_servicer: SignalServicer
    user_servicer: UserServicer
    access_tokens: AccessTokenManager
    api_keys: ApiKeyManager
    api_key_servicer: ApiKeyServicer

    @property
    def loops(self) -> tuple[BackgroundLoop, ...]:
        """Every background loop of the process (the audit writer is a queue consumer, not one of them)."""
        return (
            *self.relay.loops,
            self.events.listener,
            self.access_tokens.refresher,
            self.api_keys.refresher,
            self.captures.sweeper,
            self.session_scheduler.loop,
            *self.retention.loops,
            self.notifications.metrics_refresher,
        )

    def start_background(self) -> None:
        self.audit.start()
        for loop in self.loops:
            loop.start()

    async def close(self) -> None:
        await asyncio.gather(*(loop.stop() for loop in self.loops))
        # The audit writer last: stop() flushes whatever was recorded until then.
        await self.audit.stop()
        await self.redis.aclose()
        await self.database.dispose()


@contextlib.asynccontextmanager
async def signal_app(settings: SignalSettings) -> AsyncIterator[SignalApp]:
    if not settings.redis_url:
        raise RuntimeError("ALERTS_REDIS_URL is not set (only `alerts dev` provides an embedded one)")
    database = Database(create_engine(settings.database_url, pool_size=settings.database_pool_size))
    # A hung Redis must not hold ingest past the edge's deadline: the rate limiter fails open instead.
    redis = Redis.from_url(settings.redis_url, socket_timeout=1.0, socket_connect_timeout=1.0)
    broker = PipelinedRedisBroker(
        async_client=redis, url=settings.redis_url, namespace=dramatiq_namespace(settings), middleware=[]
    )
    storage_channel = mesh_grpc.open_channel(
        settings.storage_addr,
        settings.service_api_key.get_secret_value() if settings.service_api_key else None,
        tls=mesh_grpc.GrpcTls.from_settings(settings),
    )
    backlog = QueueBacklog()
    audit = AuditWriter(database)
    events = EventHub(
        listener_dsn(settings.database_url),
        max_streams_per_user=settings.stream_max_per_user,
        max_streams_per_key=settings.stream_max_per_key,
    )
    relay = OutboxRelay(
        database=database,
        broker=broker,
        redis=redis,
        namespace=dramatiq_namespace(settings),
        backlog=backlog,
        workers_key=capture_workers_key(settings),
        batch_size=settings.outbox_batch_size,
        poll_seconds=settings.outbox_poll_seconds,
    )
    catalog = load_indicator_catalog(settings.indicators_path)
    ingestor = WebhookIngestor(
        database=database,
        settings=settings,
        catalog=catalog,
        rate_limiter=RateLimiter(redis, settings.redis_namespace),
        audit=audit,
        backlog=backlog,
        on_commit=relay.wake,
    )
    captures = CaptureCoordinator(
        database=database,
        settings=settings,
        messages=CaptureMessages(redis, dramatiq_namespace(settings)),
        on_commit=relay.wake,
    )
    storage = storage_service_pb2_grpc.StorageServiceStub(storage_channel)
    sessions = SessionChecks(
        database=database, settings=settings, redis=redis, workers_key=capture_workers_key(settings)
    )
    notifications = NotificationLedger(database, on_commit=relay.wake)
    access_tokens = AccessTokenManager(
        database=database, settings=settings, tokens=access_tokens_from_settings(settings)
    )
    api_keys = ApiKeyManager(database=database, refresh_seconds=settings.api_key_refresh_seconds)
    app = SignalApp(
        access_tokens=access_tokens,
        api_keys=api_keys,
        api_key_servicer=ApiKeyServicer(api_keys),
        captures=captures,
        notifications=notifications,
        session_scheduler=SessionCheckScheduler(database=database, settings=settings, on_commit=relay.wake),
        retention=RetentionJob(database=database, settings=settings, storage=storage),
        settings=settings,
        database=database,
        redis=redis,
        audit=audit,
        relay=relay,
        events=events,
        signal_servicer=SignalServicer(
            ingestor=ingestor,
            reader=SignalReader(database, catalog),
            captures=captures,
            links=ScreenshotLinks(storage, ttl_seconds=settings.screenshot_url_ttl_seconds),
            status=StatusReporter(
                database=database, redis=redis, backlog=backlog, workers_key=capture_workers_key(settings)
            ),
            outcomes=SignalOutcomes(database),
            feed=EventFeed(database=database, hub=events),
            sessions=sessions,
            page_max_bytes=settings.list_page_max_bytes,
            notifications=notifications,
        ),
        user_servicer=UserServicer(
            UserManager(
                database=database,
                settings=settings,
                cipher=CookieCipher.from_settings(settings),
                captures=captures,
                sessions=sessions,
                on_commit=relay.wake,
            ),
            access_tokens,
            TelegramLinks(database=database, settings=settings),
        ),
    )
    try:
        yield app
    finally:
        await app.close()
        await storage_channel.close()
        broker.close()


def register(server: grpc.aio.Server, app: SignalApp) -> None:
    signal_service_pb2_grpc.add_SignalServiceServicer_to_server(app.signal_servicer, server)
    user_service_pb2_grpc.add_UserServiceServicer_to_server(app.user_servicer, server)
    api_key_service_pb2_grpc.add_ApiKeyServiceServicer_to_server(app.api_key_servicer, server)


async def serve(settings: SignalSettings) -> None:
    async with signal_app(settings) as app:
        server = mesh_grpc.create_server(
            settings,
            translate_error=database_error,
            access_tokens=app.access_tokens.tokens,
            runtime_keys=app.api_keys.table,
        )
        register(server, app)
        app.start_background()
        await mesh_grpc.serve(
            server,
            address=settings.signal_addr,
            service_names=SERVICE_NAMES,
            on_draining=app.events.drain,
            grace_seconds=settings.grpc_grace_seconds,
            tls=mesh_grpc.GrpcTls.from_settings(settings),
        )


def run() -> None:
    settings = get_settings()
    configure_logging("signal", settings.log_level)
    start_metrics_server(settings.metrics_port)
    uvloop.run(serve(settings))
