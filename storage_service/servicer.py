"""StorageService over gRPC: translates messages to and from the domain, nothing else."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from google.protobuf import timestamp_pb2

from apidevs.alerts.v1 import storage_service_pb2, storage_service_pb2_grpc
from mesh.auth import ensure_unscoped
from mesh.errors import InvalidArgumentError
from storage_service.objects import ObjectInfo
from storage_service.service import StorageService

_CANCELLATION_SETTLE_SECONDS = 0.01
# Header metadata under this name is the content's hex SHA-256 as the client computed it: the object is
# committed only if what arrived matches, and it is not stored as metadata (storage records its own).
DECLARED_SHA256_METADATA_KEY = "sha256"
SERVICE_NAME = storage_service_pb2.DESCRIPTOR.services_by_name["StorageService"].full_name


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def timestamp_fields(moment: datetime | None) -> dict[str, int] | None:
    """A Timestamp's fields for an aware datetime, by exact integer arithmetic (what FromDatetime gives)."""
    if moment is None:
        return None
    seconds, micros = divmod((moment - _EPOCH) // _MICROSECOND, 1_000_000)
    return {"seconds": seconds, "nanos": micros * 1000}


class StorageServicer(storage_service_pb2_grpc.StorageServiceServicer):
    def __init__(self, service: StorageService) -> None:
        self._service = service

    async def PutObject(
        self,
        request_iterator: AsyncIterator[storage_service_pb2.PutObjectRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> storage_service_pb2.ObjectInfo:
        ensure_unscoped()
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("part") != "header":
            raise InvalidArgumentError("the first message must be the header", reason="MISSING_HEADER")
        header = first.header
        metadata = dict(header.metadata)
        # A declared hash makes a cut-short stream detectable exactly; without one, see _chunks.
        expected_sha256 = metadata.pop(DECLARED_SHA256_METADATA_KEY, None)
        info = await self._service.put_object(
            header.key,
            content_type=header.content_type,
            metadata=metadata,
            chunks=_chunks(request_iterator, context, settle=expected_sha256 is None),
            expected_sha256=expected_sha256,
        )
        return object_info_message(info)

    async def GetObjectUrl(
        self, request: storage_service_pb2.GetObjectUrlRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> storage_service_pb2.GetObjectUrlResponse:
        ensure_unscoped()
        object_url = await self._service.get_object_url(request.key, request.expires_in_seconds)
        response = storage_service_pb2.GetObjectUrlResponse(url=object_url.url)
        if object_url.expires_at is not None:
            response.expires_at.FromDatetime(object_url.expires_at)
        return response

    async def GetObjectUrls(
        self, request: storage_service_pb2.GetObjectUrlsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> storage_service_pb2.GetObjectUrlsResponse:
        ensure_unscoped()
        keys = list(request.keys)
        response = storage_service_pb2.GetObjectUrlsResponse()
        for key, object_url in zip(
            keys, await self._service.get_object_urls(keys, request.expires_in_seconds), strict=True
        ):
            # The expiry's fields given to the constructor (set in C), not Timestamp.FromDatetime's Python:
            # a replay page asks for a thousand URLs.
            response.urls.add(key=key, url=object_url.url, expires_at=timestamp_fields(object_url.expires_at))
        return response

    async def GetObject(
        self, request: storage_service_pb2.GetObjectRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[storage_service_pb2.GetObjectResponse]:
        ensure_unscoped()
        async with contextlib.aclosing(self._service.read_object(request.key)) as parts:
            async for part in parts:
                if isinstance(part, ObjectInfo):
                    yield storage_service_pb2.GetObjectResponse(info=object_info_message(part))
                else:
                    yield storage_service_pb2.GetObjectResponse(chunk=part)

    async def DeleteObject(
        self, request: storage_service_pb2.DeleteObjectRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> storage_service_pb2.DeleteObjectResponse:
        ensure_unscoped()
        await self._service.delete_object(request.key)
        return storage_service_pb2.DeleteObjectResponse()

    async def DeleteObjects(
        self, request: storage_service_pb2.DeleteObjectsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> storage_service_pb2.DeleteObjectsResponse:
        ensure_unscoped()
        failed = await self._service.delete_objects(list(request.keys))
        return storage_service_pb2.DeleteObjectsResponse(failed_keys=failed)


async def _chunks(
    request_iterator: AsyncIterator[storage_service_pb2.PutObjectRequest],
    context: grpc.aio.ServicerContext[Any, Any],
    *,
    settle: bool,
) -> AsyncIterator[bytes]:
    async for message in request_iterator:
        if message.WhichOneof("part") != "chunk":
            raise InvalidArgumentError("only the first message may be a header", reason="UNEXPECTED_HEADER")
        yield message.chunk
    if settle:
        # grpc.aio ends the request stream alike when the client half-closes and when it cancels or drops
        # the connection; the cancellation of this task follows moments later. Waiting that long before
        # the object is committed keeps a client that went away from storing a prefix of its content.
        await asyncio.sleep(_CANCELLATION_SETTLE_SECONDS)
        if context.cancelled():
            raise asyncio.CancelledError


def object_info_message(info: ObjectInfo) -> storage_service_pb2.ObjectInfo:
    created_at = timestamp_pb2.Timestamp()
    created_at.FromDatetime(info.created_at)
    return storage_service_pb2.ObjectInfo(
        key=info.key,
        content_type=info.content_type,
        size_bytes=info.size_bytes,
        sha256=info.sha256,
        created_at=created_at,
        metadata=info.metadata,
    )
