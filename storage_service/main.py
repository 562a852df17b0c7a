"""The storage service process: `alerts serve storage` calls :func:`run`."""

from __future__ import annotations

import asyncio

from apidevs.alerts.v1 import storage_service_pb2_grpc
from mesh.grpc import GrpcTls, create_server, serve
from mesh.logging import configure_logging
from mesh.metrics import start_metrics_server
from storage_service.service import build_service
from storage_service.servicer import SERVICE_NAME, StorageServicer
from storage_service.settings import StorageSettings, get_settings


async def serve_storage(settings: StorageSettings) -> None:
    """Serves StorageService on settings.storage_addr until SIGTERM or SIGINT, then drains and stops."""
    service = build_service(settings)
    server = create_server(settings)
    storage_service_pb2_grpc.add_StorageServiceServicer_to_server(StorageServicer(service), server)
    await serve(
        server,
        address=settings.storage_addr,
        service_names=[SERVICE_NAME],
        on_stop=service.close,
        grace_seconds=settings.grpc_grace_seconds,
        tls=GrpcTls.from_settings(settings),
    )


def run() -> None:
    """Blocks serving until SIGTERM; returns after a graceful shutdown."""
    settings = get_settings()
    configure_logging("storage", settings.log_level)
    start_metrics_server(settings.metrics_port)
    asyncio.run(serve_storage(settings))
