"""The S3 backend against a real moto server process, through the real gRPC server."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import grpc
import httpx
import pytest

from apidevs.alerts.v1 import storage_service_pb2
from mesh.errors import NotFoundError
from storage_service.backends.s3 import MULTIPART_THRESHOLD_BYTES, S3Backend
from storage_service.service import StorageService, build_service
from tests.integration.storage_service.storage_servers import (
    S3_BUCKET,
    StorageServer,
    cancelled_puts,
    check_deleting_many,
    put_requests,
    read_object,
    s3_client,
    serve_storage,
    settings_for,
    stalled_put_requests,
    wait_until_async,
)

MIB = 1024 * 1024


def _backend(endpoint: str) -> S3Backend:
    return S3Backend(
        S3_BUCKET,
        endpoint_url=endpoint,
        region="us-east-1",
        access_key_id="test",
        secret_access_key="test",
        addressing_style="path",
    )


@pytest.fixture
async def s3(tmp_path: Path, s3_endpoint: str) -> AsyncIterator[StorageServer]:
    settings = settings_for(tmp_path, storage_backend="s3", storage_s3_bucket=S3_BUCKET)
    service = StorageService(_backend(s3_endpoint), max_object_bytes=64 * MIB)
    async with serve_storage(service, settings) as server:
        yield server


def _pending_uploads(endpoint: str, key: str) -> list[dict[str, Any]]:
    return s3_client(endpoint).list_multipart_uploads(Bucket=S3_BUCKET, Prefix=key).get("Uploads", [])


def _unique(name: str) -> str:
    return f"shots/{os.urandom(4).hex()}/{name}"


@pytest.mark.parametrize("size", [5 * MIB, 20 * MIB + 123], ids=["single-put", "multipart"])
async def test_round_trip_through_a_presigned_url(s3: StorageServer, s3_endpoint: str, size: int) -> None:
    content = os.urandom(size)
    key = _unique("a b.png")
    info = await s3.stub.PutObject(put_requests(key, content, metadata={"signal-id": "3"}))
    assert (info.size_bytes, info.sha256) == (size, hashlib.sha256(content).hexdigest())

    raw = s3_client(s3_endpoint).head_object(Bucket=S3_BUCKET, Key=key)
    # A multipart object's ETag is "<md5 of part md5s>-<part count>".
    assert raw["ETag"].endswith('-3"') == (size > MULTIPART_THRESHOLD_BYTES)
    assert _pending_uploads(s3_endpoint, key) == []

    issued = await s3.stub.GetObjectUrl(
        storage_service_pb2.GetObjectUrlRequest(key=key, expires_in_seconds=900)
    )
    query = parse_qs(urlsplit(issued.url).query)
    assert query["X-Amz-Expires"] == ["900"]
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    async with httpx.AsyncClient() as http:
        response = await http.get(issued.url)
    assert response.status_code == 200
    assert response.content == content
    assert response.headers["content-type"] == "image/png"

    stored, streamed = await read_object(s3.stub, key)
    assert (stored.sha256, stored.size_bytes, dict(stored.metadata)) == (
        info.sha256,
        size,
        {"signal-id": "3"},
    )
    assert streamed == content


async def test_delete_and_not_found(s3: StorageServer) -> None:
    key = _unique("del.png")
    await s3.stub.PutObject(put_requests(key, b"x"))
    await s3.stub.DeleteObject(storage_service_pb2.DeleteObjectRequest(key=key))
    for call in (
        lambda: s3.stub.DeleteObject(storage_service_pb2.DeleteObjectRequest(key=key)),
        lambda: read_object(s3.stub, key),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call()
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_many_deletions_in_one_call_a_missing_object_counting_as_deleted(s3: StorageServer) -> None:
    await check_deleting_many(s3.stub, _unique("many-"))


async def test_client_disconnect_halfway_leaves_no_object_and_no_upload(
    s3: StorageServer, s3_endpoint: str
) -> None:
    key = _unique("half.png")
    requests, sent = stalled_put_requests(key, os.urandom(10 * MIB))
    cancelled_before = cancelled_puts()
    call = s3.stub.PutObject(requests)
    await sent.wait()
    call.cancel()
    await wait_until_async(
        lambda: cancelled_puts() > cancelled_before, what="the server to see the cancellation"
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await read_object(s3.stub, key)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert _pending_uploads(s3_endpoint, key) == []


async def _stream(content: bytes) -> AsyncIterator[bytes]:
    for offset in range(0, len(content), MIB):
        yield content[offset : offset + MIB]


def _fail_part(backend: S3Backend, part_number: int, failure: Callable[[], None]) -> None:
    """Makes one part upload of the real client misbehave; every other call goes to the server."""
    upload_part = backend.client.upload_part

    def upload_part_or_fail(**kwargs: Any) -> Any:
        if kwargs["PartNumber"] == part_number:
            failure()
        return upload_part(**kwargs)

    backend.client.upload_part = upload_part_or_fail


async def test_multipart_upload_failing_midway_is_aborted(s3_endpoint: str) -> None:
    backend = _backend(s3_endpoint)
    key = _unique("failing.bin")

    def refuse() -> None:
        raise ConnectionResetError("network dropped")

    _fail_part(backend, 2, refuse)
    with pytest.raises(ConnectionResetError):
        await backend.put(key, content_type="image/png", metadata={}, chunks=_stream(os.urandom(20 * MIB)))
    assert _pending_uploads(s3_endpoint, key) == []
    with pytest.raises(NotFoundError):
        await backend.stat(key)
    await backend.close()


async def test_multipart_upload_cancelled_midway_is_aborted(s3_endpoint: str) -> None:
    backend = _backend(s3_endpoint)
    key = _unique("cancelled.bin")
    second_part_started, release = threading.Event(), threading.Event()

    def hold() -> None:
        second_part_started.set()
        release.wait(timeout=30)

    _fail_part(backend, 2, hold)
    task = asyncio.create_task(
        backend.put(key, content_type="image/png", metadata={}, chunks=_stream(os.urandom(20 * MIB)))
    )
    await asyncio.to_thread(second_part_started.wait, 30)
    assert len(_pending_uploads(s3_endpoint, key)) == 1
    task.cancel()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _pending_uploads(s3_endpoint, key) == []
    with pytest.raises(NotFoundError):
        await backend.stat(key)
    await backend.close()


async def test_public_base_url_serves_cacheable_objects_without_signatures(
    tmp_path: Path, s3_endpoint: str
) -> None:
    public_bucket = f"public-{os.urandom(4).hex()}"
    client = s3_client(s3_endpoint)
    client.create_bucket(Bucket=public_bucket)
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": "*",
                "Action": "s3:GetObject",
                "Resource": f"arn:aws:s3:::{public_bucket}/*",
            }
        ],
    }
    client.put_bucket_policy(Bucket=public_bucket, Policy=json.dumps(policy))
    public_base = f"{s3_endpoint}/{public_bucket}"
    settings = settings_for(
        tmp_path,
        storage_backend="s3",
        storage_s3_bucket=public_bucket,
        storage_s3_endpoint_url=s3_endpoint,
        storage_s3_region="us-east-1",
        storage_s3_access_key_id="test",
        storage_s3_secret_access_key="test",
        storage_s3_addressing_style="path",
        storage_public_base_url=public_base,
    )
    key = _unique("public.png")
    content = os.urandom(200_000)
    async with serve_storage(build_service(settings), settings) as server:
        await server.stub.PutObject(put_requests(key, content))
        issued = await server.stub.GetObjectUrl(storage_service_pb2.GetObjectUrlRequest(key=key))
    assert issued.url == f"{public_base}/{key}"
    assert not issued.HasField("expires_at")
    async with httpx.AsyncClient() as http:
        response = await http.get(issued.url)
    assert response.content == content
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"


async def test_list_objects_by_prefix(s3: StorageServer) -> None:
    prefix = f"users/{os.urandom(4).hex()}/"
    for name, size in (("b", 3), ("a", 5)):
        await s3.stub.PutObject(put_requests(prefix + name, b"x" * size))
    listed = [(summary.key, summary.size_bytes) async for summary in s3.service.list_objects(prefix)]
    assert listed == [(prefix + "a", 5), (prefix + "b", 3)]
