"""The edge's app factory: routes, one long-lived gRPC channel per service, OpenAPI at /schema."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast

from grpc_health.v1 import health_pb2_grpc
from litestar import Litestar
from litestar.datastructures import State
from litestar.enums import ScopeType
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.types import HTTPScope, LifeSpanReceive, LifeSpanScope, LifeSpanSend, Receive, Scope, Send

from apidevs.alerts.v1 import signal_service_pb2_grpc, storage_service_pb2_grpc, user_service_pb2_grpc
from edge import api, health, media, telegram, ui, webhooks
from edge.batching import IngestBatcher
from edge.errors import EXCEPTION_HANDLERS
from edge.header_limits import HeaderLimitMiddleware
from edge.settings import EdgeSettings, get_settings
from edge.spool import webhook_spool
from edge.webhook_fast_path import serve_webhook, webhook_target
from mesh.grpc import GrpcTls, open_channel
from mesh.runtime import freeze_startup_heap
from mesh.signing import media_signing_secret


class EdgeApp(Litestar):
    """The edge's Litestar app, with webhooks taken ahead of Litestar's request cycle
    (edge.webhook_fast_path); every other request, and every webhook that path leaves, goes to Litestar."""

    async def __call__(
        self,
        scope: Scope | LifeSpanScope,
        receive: Receive | LifeSpanReceive,
        send: Send | LifeSpanSend,
    ) -> None:
        if scope["type"] == ScopeType.HTTP:
            http = cast("HTTPScope", scope)
            if (target := webhook_target(http)) is not None:
                await serve_webhook(self.state, http, cast("Receive", receive), cast("Send", send), target)
                return
        await super().__call__(scope, receive, send)


def create_app(settings: EdgeSettings) -> Litestar:
    @asynccontextmanager
    async def channels(app: Litestar) -> AsyncIterator[None]:
        key = settings.service_api_key.get_secret_value() if settings.service_api_key else None
        tls = GrpcTls.from_settings(settings)
        signal_channel = open_channel(settings.signal_addr, key, tls=tls)
        storage_channel = open_channel(settings.storage_addr, key, tls=tls)
        app.state.signal_stub = signal_service_pb2_grpc.SignalServiceStub(signal_channel)
        app.state.user_stub = user_service_pb2_grpc.UserServiceStub(signal_channel)
        # Webhooks have a channel of their own: no interceptors on the hot path, and no head-of-line
        # blocking behind the read API's streams.
        ingest_channel = open_channel(settings.signal_addr, key, per_call_metadata=True, tls=tls)
        app.state.ingest_batcher = IngestBatcher(
            signal_service_pb2_grpc.SignalServiceStub(ingest_channel),
            api_key=key,
            timeout_seconds=settings.ingest_timeout_seconds,
            max_batch=settings.ingest_batch_max_size,
            max_inflight=settings.ingest_batch_max_inflight,
        )
        app.state.signal_health = health_pb2_grpc.HealthStub(signal_channel)
        app.state.storage_stub = storage_service_pb2_grpc.StorageServiceStub(storage_channel)
        app.state.storage_health = health_pb2_grpc.HealthStub(storage_channel)
        try:
            yield
        finally:
            await ingest_channel.close()
            await signal_channel.close()
            await storage_channel.close()

    return EdgeApp(
        route_handlers=[
            webhooks.receive_webhook,
            telegram.telegram_webhook,
            health.health,
            health.live,
            health.ready,
            health.metrics,
            media.get_media,
            api.router,
            *ui.route_handlers,
        ],
        # The spool's replayer sends through the signal channel: it starts after and stops before it.
        lifespan=[channels, webhook_spool],
        middleware=[HeaderLimitMiddleware(settings)],
        on_startup=[freeze_startup_heap],
        exception_handlers=EXCEPTION_HANDLERS,
        template_config=ui.template_config(),
        # Litestar would replace the process's JSON log handler (mesh.logging) with its own plain-text one.
        logging_config=None,
        state=State(
            {
                "settings": settings,
                "started_monotonic": time.monotonic(),
                "media_signing_secret": media_signing_secret(settings),
                "sse_heartbeat_seconds": api.SSE_HEARTBEAT_SECONDS,
            }
        ),
        openapi_config=OpenAPIConfig(
            title="APIDevs alerts edge",
            version="1.0.0",
            description="TradingView webhooks in; signals, stats and live events out.",
            path="/schema",
            components=Components(
                security_schemes={
                    "BearerApiKey": SecurityScheme(
                        type="http",
                        scheme="bearer",
                        description="A platform or user-scoped API key, or a user's read-only access token",
                    )
                }
            ),
        ),
    )


def app_from_environment() -> Litestar:
    """The uvicorn factory for `alerts serve edge`."""
    return create_app(get_settings())
