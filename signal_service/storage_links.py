"""Fresh, expiring screenshot URLs from the storage service; stored signals keep only object keys."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

import grpc

from apidevs.alerts.v1 import storage_service_pb2, storage_service_pb2_grpc

log = logging.getLogger(__name__)


class ScreenshotLinks:
    def __init__(self, stub: storage_service_pb2_grpc.StorageServiceStub, *, ttl_seconds: int) -> None:
        self._stub = stub
        self._ttl_seconds = ttl_seconds

    async def urls(self, keys: Iterable[str]) -> dict[str, str]:
        """URL per key; a key whose URL cannot be made now is left out rather than failing the read."""
        unique = sorted({key for key in keys if key})
        if not unique:
            return {}
        answers = await asyncio.gather(*(self._url(key) for key in unique))
        return {key: url for key, url in zip(unique, answers, strict=True) if url}

    async def _url(self, key: str) -> str:
        try:
            response = await self._stub.GetObjectUrl(
                storage_service_pb2.GetObjectUrlRequest(key=key, expires_in_seconds=self._ttl_seconds),
                timeout=2.0,
            )
        except grpc.aio.AioRpcError as exc:
            log.warning("screenshot URL unavailable", extra={"key": key, "code": exc.code().name})
            return ""
        return response.url
