"""The GCS backend against a real gcp-storage-emulator process, through the real gRPC server."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlsplit

import grpc
import httpx
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from apidevs.alerts.v1 import storage_service_pb2
from storage_service.backends.gcs import GcsBackend
from storage_service.service import StorageService
from tests.integration.storage_service.storage_servers import (
    GCS_BUCKET,
    ServiceAccount,
    StorageServer,
    cancelled_puts,
    check_deleting_many,
    put_requests,
    read_object,
    serve_storage,
    settings_for,
    stalled_put_requests,
    wait_until_async,
)

FIVE_MIB = 5 * 1024 * 1024


@pytest.fixture
async def gcs(
    tmp_path: Path, gcs_endpoint: str, gcs_service_account: ServiceAccount
) -> AsyncIterator[StorageServer]:
    settings = settings_for(
        tmp_path,
        storage_backend="gcs",
        storage_gcs_bucket=GCS_BUCKET,
        storage_gcs_endpoint=gcs_endpoint,
        storage_gcs_credentials_file=str(gcs_service_account.path),
    )
    backend = GcsBackend(
        GCS_BUCKET,
        endpoint=gcs_endpoint,
        credentials_file=str(gcs_service_account.path),
        project="alerts-test",
    )
    async with serve_storage(StorageService(backend, max_object_bytes=64 * 1024 * 1024), settings) as server:
        yield server


def _verify_v4_signature(url: str, account: ServiceAccount) -> dict[str, str]:
    """Checks the URL's GOOG4-RSA-SHA256 signature with the account's public key; returns its query."""
    split = urlsplit(url)
    query = dict(parse_qsl(split.query, keep_blank_values=True))
    signature = bytes.fromhex(query.pop("X-Goog-Signature"))
    canonical_query = "&".join(
        f"{quote(name, safe='-_.~')}={quote(value, safe='-_.~')}" for name, value in sorted(query.items())
    )
    canonical_request = "\n".join(
        ["GET", split.path, canonical_query, f"host:{split.netloc}", "", "host", "UNSIGNED-PAYLOAD"]
    )
    scope = query["X-Goog-Credential"].split("/", 1)[1]
    string_to_sign = "\n".join(
        [
            "GOOG4-RSA-SHA256",
            query["X-Goog-Date"],
            scope,
            hashlib.sha256(canonical_request.encode()).hexdigest(),
        ]
    )
    account.public_key.verify(signature, string_to_sign.encode(), padding.PKCS1v15(), hashes.SHA256())
    return query


async def test_five_mib_round_trip_through_a_v4_signed_url(
    gcs: StorageServer, gcs_endpoint: str, gcs_service_account: ServiceAccount
) -> None:
    content = os.urandom(FIVE_MIB)
    key = f"shots/{os.urandom(4).hex()}/a b.png"
    info = await gcs.stub.PutObject(put_requests(key, content, metadata={"signal-id": "9"}))
    assert info.size_bytes == FIVE_MIB
    assert info.sha256 == hashlib.sha256(content).hexdigest()

    issued = await gcs.stub.GetObjectUrl(
        storage_service_pb2.GetObjectUrlRequest(key=key, expires_in_seconds=600)
    )
    assert issued.url.startswith(f"{gcs_endpoint}/{GCS_BUCKET}/shots/")
    query = _verify_v4_signature(issued.url, gcs_service_account)
    signed_at = datetime.strptime(query["X-Goog-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert query["X-Goog-Expires"] == "600"
    assert int(signed_at.timestamp()) + 600 >= issued.expires_at.seconds
    assert query["X-Goog-Credential"].startswith(gcs_service_account.email + "/")
    assert issued.expires_at.seconds == pytest.approx(time.time() + 600, abs=5)

    async with httpx.AsyncClient() as http:
        response = await http.get(issued.url)
    assert response.status_code == 200
    assert response.content == content
    assert response.headers["content-type"] == "image/png"

    stored, streamed = await read_object(gcs.stub, key)
    assert (stored.sha256, stored.size_bytes, dict(stored.metadata)) == (
        info.sha256,
        FIVE_MIB,
        {"signal-id": "9"},
    )
    assert streamed == content


async def test_tampered_v4_url_fails_signature_verification(
    gcs: StorageServer, gcs_service_account: ServiceAccount
) -> None:
    issued = await gcs.stub.GetObjectUrl(storage_service_pb2.GetObjectUrlRequest(key="shots/x.png"))
    expires = dict(parse_qsl(urlsplit(issued.url).query))["X-Goog-Expires"]
    tampered = issued.url.replace(f"X-Goog-Expires={expires}", "X-Goog-Expires=604800")
    assert tampered != issued.url
    _verify_v4_signature(issued.url, gcs_service_account)
    with pytest.raises(InvalidSignature):
        _verify_v4_signature(tampered, gcs_service_account)


async def test_delete_and_not_found(gcs: StorageServer) -> None:
    await gcs.stub.PutObject(put_requests("shots/del.png", b"x"))
    await gcs.stub.DeleteObject(storage_service_pb2.DeleteObjectRequest(key="shots/del.png"))
    for call in (
        lambda: gcs.stub.DeleteObject(storage_service_pb2.DeleteObjectRequest(key="shots/del.png")),
        lambda: read_object(gcs.stub, "shots/del.png"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call()
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_many_deletions_in_one_call_a_missing_object_counting_as_deleted(gcs: StorageServer) -> None:
    await check_deleting_many(gcs.stub, "shots/many-")


async def test_bad_keys_are_refused(gcs: StorageServer) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await gcs.stub.PutObject(put_requests("../x.png", b"x"))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_client_disconnect_halfway_leaves_no_object(gcs: StorageServer) -> None:
    key = f"shots/{os.urandom(4).hex()}/half.png"
    requests, sent = stalled_put_requests(key, os.urandom(2 * 1024 * 1024))
    cancelled_before = cancelled_puts()
    call = gcs.stub.PutObject(requests)
    await sent.wait()
    call.cancel()
    await wait_until_async(
        lambda: cancelled_puts() > cancelled_before, what="the server to see the cancellation"
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await read_object(gcs.stub, key)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_list_objects_by_prefix(gcs: StorageServer) -> None:
    prefix = f"users/{os.urandom(4).hex()}/"
    for name, size in (("b", 3), ("a", 5)):
        await gcs.stub.PutObject(put_requests(prefix + name, b"x" * size))
    usage = await gcs.service.usage(prefix)
    listed = [summary.key async for summary in gcs.service.list_objects(prefix)]
    assert listed == [prefix + "a", prefix + "b"]
    assert (usage.objects, usage.bytes) == (2, 8)
