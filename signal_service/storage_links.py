"""Fresh, expiring screenshot URLs from the storage service; stored signals keep only object keys."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import grpc

from apidevs.alerts.v1 import storage_service_pb2, storage_service_pb2_grpc

log = logging.getLogger(__name__)


class ScreenshotLinks:
    def __init__(self, stub: storage_service_pb2_grpc.StorageServiceAsyncStub, *, ttl_seconds: int) -> None:
        self._stub = stub
        self._ttl_seconds = ttl_seconds

    async def urls(self, keys: Iterable[str | None]) -> dict[str, str]:
        """URL per key, in one call however many keys; when the URLs cannot be made now they are left
        out rather than failing the read."""
        unique = sorted({key for key in keys if key})
        if not unique:
            return {}
        try:
            response = await self._stub.GetObjectUrls(
                storage_service_pb2.GetObjectUrlsRequest(keys=unique, expires_in_seconds=self._ttl_seconds),
                timeout=2.0,
            )
        except grpc.aio.AioRpcError as exc:
            log.warning("screenshot URLs unavailable", extra={"keys": len(unique), "code": exc.code().name})
            return {}
        return {item.key: item.url for item in response.urls}
