"""StorageService over gRPC: translates messages to and from the domain, nothing else."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import grpc
from google.protobuf import timestamp_pb2

from apidevs.alerts.v1 import storage_service_pb2, storage_service_pb2_grpc
from mesh.auth import ensure_unscoped
from mesh.errors import InvalidArgumentError
from storage_service.objects import ObjectInfo
from storage_service.service import StorageService

SERVICE_NAME = storage_service_pb2.DESCRIPTOR.services_by_name["StorageService"].full_name


class StorageServicer(storage_service_pb2_grpc.StorageServiceServicer):
    def __init__(self, service: StorageService) -> None:
        self._service = service

    async def PutObject(
        self,
        request_iterator: AsyncIterator[storage_service_pb2.PutObjectRequest],
        context: grpc.aio.ServicerContext,
    ) -> storage_service_pb2.ObjectInfo:
        ensure_unscoped()
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("part") != "header":
            raise InvalidArgumentError("the first message must be the header", reason="MISSING_HEADER")
        header = first.header
        info = await self._service.put_object(
            header.key,
            content_type=header.content_type,
            metadata=dict(header.metadata),
            chunks=_chunks(request_iterator),
        )
        return object_info_message(info)

    async def GetObjectUrl(
        self, request: storage_service_pb2.GetObjectUrlRequest, context: grpc.aio.ServicerContext
    ) -> storage_service_pb2.GetObjectUrlResponse:
        ensure_unscoped()
        object_url = await self._service.get_object_url(request.key, request.expires_in_seconds)
        response = storage_service_pb2.GetObjectUrlResponse(url=object_url.url)
        if object_url.expires_at is not None:
            response.expires_at.FromDatetime(object_url.expires_at)
        return response

    async def GetObject(
        self, request: storage_service_pb2.GetObjectRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[storage_service_pb2.GetObjectResponse]:
        ensure_unscoped()
        async with contextlib.aclosing(self._service.read_object(request.key)) as parts:
            async for part in parts:
                if isinstance(part, ObjectInfo):
                    yield storage_service_pb2.GetObjectResponse(info=object_info_message(part))
                else:
                    yield storage_service_pb2.GetObjectResponse(chunk=part)

    async def DeleteObject(
        self, request: storage_service_pb2.DeleteObjectRequest, context: grpc.aio.ServicerContext
    ) -> storage_service_pb2.DeleteObjectResponse:
        ensure_unscoped()
        await self._service.delete_object(request.key)
        return storage_service_pb2.DeleteObjectResponse()


async def _chunks(
    request_iterator: AsyncIterator[storage_service_pb2.PutObjectRequest],
) -> AsyncIterator[bytes]:
    async for message in request_iterator:
        if message.WhichOneof("part") != "chunk":
            raise InvalidArgumentError("only the first message may be a header", reason="UNEXPECTED_HEADER")
        yield message.chunk


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
