"""Fresh, expiring screenshot URLs from the storage service; stored signals keep only object keys."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

import grpc

from apidevs.alerts.v1 import storage_service_pb2, storage_service_pb2_grpc

log = logging.getLogger(__name__)

# The most keys one GetObjectUrls call may carry (storage_service.proto).
MAX_KEYS_PER_CALL = 1000


class ScreenshotLinks:
    def __init__(self, stub: storage_service_pb2_grpc.StorageServiceAsyncStub, *, ttl_seconds: int) -> None:
        self._stub = stub
        self._ttl_seconds = ttl_seconds

    async def urls(self, keys: Iterable[str | None]) -> dict[str, str]:
        """URL per key: in one call for up to MAX_KEYS_PER_CALL distinct keys, else in calls of that many
        side by side (a replay page of 2,000 events can show more). The URLs that cannot be made now are
        left out rather than failing the read."""
        unique = sorted({key for key in keys if key})
        answers = await asyncio.gather(
            *(
                self._call(unique[start : start + MAX_KEYS_PER_CALL])
                for start in range(0, len(unique), MAX_KEYS_PER_CALL)
            )
        )
        return {key: url for answer in answers for key, url in answer.items()}

    async def _call(self, keys: list[str]) -> dict[str, str]:
        try:
            response = await self._stub.GetObjectUrls(
                storage_service_pb2.GetObjectUrlsRequest(keys=keys, expires_in_seconds=self._ttl_seconds),
                timeout=2.0,
            )
        except grpc.aio.AioRpcError as exc:
            log.warning("screenshot URLs unavailable", extra={"keys": len(keys), "code": exc.code().name})
            return {}
        return {item.key: item.url for item in response.urls}
