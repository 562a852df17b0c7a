"""The local backend through the real gRPC server, with objects fetched through the edge media route."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from apidevs.alerts.v1 import storage_service_pb2, storage_service_pb2_grpc
from mesh.errors import from_rpc_error
from mesh.grpc import open_channel
from mesh.signing import media_signature, media_signing_secret
from storage_service.service import build_service
from tests.integration.storage_service.storage_servers import (
    StorageServer,
    cancelled_puts,
    check_deleting_many,
    free_port,
    put_requests,
    read_object,
    serve_edge_media,
    serve_storage,
    settings_for,
    stalled_put_requests,
    wait_until,
    wait_until_async,
)
from tests.keys import SYSTEM_KEYS, open_system_channel

FIVE_MIB = 5 * 1024 * 1024


@pytest.fixture
async def local(tmp_path: Path) -> AsyncIterator[StorageServer]:
    settings = settings_for(tmp_path, public_url="http://edge.invalid")
    async with serve_storage(build_service(settings), settings) as server:
        yield server


@pytest.fixture
async def edge_url(local: StorageServer, tmp_path: Path) -> AsyncIterator[str]:
    async with serve_edge_media(local.stub, media_signing_secret(settings_for(tmp_path))) as url:
        yield url


def _on_edge(url: str, edge_url: str) -> str:
    """The signed URL as issued (public_url is the edge's external address), sent to the test's edge."""
    split = urlsplit(url)
    return f"{edge_url}{split.path}?{split.query}"


def _leftovers(tmp_path: Path) -> list[Path]:
    return list((tmp_path / "objects" / "tmp").iterdir())


async def test_five_mib_round_trip_through_the_edge(
    local: StorageServer, edge_url: str, tmp_path: Path
) -> None:
    content = os.urandom(FIVE_MIB)
    info = await local.stub.PutObject(put_requests("shots/u_1/a b.png", content, metadata={"signal-id": "7"}))
    assert info.size_bytes == FIVE_MIB
    assert info.sha256 == hashlib.sha256(content).hexdigest()
    assert dict(info.metadata) == {"signal-id": "7"}

    issued = await local.stub.GetObjectUrl(storage_service_pb2.GetObjectUrlRequest(key="shots/u_1/a b.png"))
    assert issued.url.startswith("http://edge.invalid/media/shots/u_1/a%20b.png?")
    assert issued.expires_at.seconds == pytest.approx(time.time() + 3600, abs=5)

    async with httpx.AsyncClient() as http:
        response = await http.get(_on_edge(issued.url, edge_url))
        assert response.status_code == 200
        assert response.content == content
        assert response.headers["content-type"] == "image/png"
        assert response.headers["content-length"] == str(FIVE_MIB)
        assert response.headers["etag"] == f'"{info.sha256}"'
        assert response.headers["x-content-type-options"] == "nosniff"
        cache_control = response.headers["cache-control"]
        assert cache_control.startswith("private, max-age=")
        assert 3500 <= int(cache_control.rsplit("=", 1)[1]) <= 3600

        revalidated = await http.get(
            _on_edge(issued.url, edge_url), headers={"If-None-Match": response.headers["etag"]}
        )
        assert revalidated.status_code == 304
        assert revalidated.content == b""
    assert _leftovers(tmp_path) == []


async def test_expired_and_tampered_urls_are_refused(
    local: StorageServer, edge_url: str, tmp_path: Path
) -> None:
    await local.stub.PutObject(put_requests("shots/a.png", b"png bytes"))
    await local.stub.PutObject(put_requests("shots/b.png", b"other bytes"))
    issued = await local.stub.GetObjectUrl(
        storage_service_pb2.GetObjectUrlRequest(key="shots/a.png", expires_in_seconds=60)
    )
    query = parse_qs(urlsplit(issued.url).query)
    expires, sig = query["expires"][0], query["sig"][0]
    secret = media_signing_secret(settings_for(tmp_path))
    past = int(time.time()) - 10
    altered = sig[:-1] + ("0" if sig[-1] != "0" else "1")
    foreign = media_signature("shots/a.png", int(expires), b"x" * 32)
    refused = {
        "another key": f"/media/shots/b.png?expires={expires}&sig={sig}",
        "later expiry": f"/media/shots/a.png?expires={int(expires) + 3600}&sig={sig}",
        "altered signature": f"/media/shots/a.png?expires={expires}&sig={altered}",
        "no signature": f"/media/shots/a.png?expires={expires}",
        "no expiry": f"/media/shots/a.png?sig={sig}",
        "signed with another secret": f"/media/shots/a.png?expires={expires}&sig={foreign}",
        "expired": f"/media/shots/a.png?expires={past}&sig={media_signature('shots/a.png', past, secret)}",
    }
    async with httpx.AsyncClient(base_url=edge_url) as http:
        assert (await http.get(_on_edge(issued.url, edge_url))).content == b"png bytes"
        for case, path in refused.items():
            response = await http.get(path)
            assert response.status_code == 403, case
            assert response.json()["error"] == ("link_expired" if case == "expired" else "link_invalid"), case


async def test_signed_url_for_a_deleted_object_is_not_found(local: StorageServer, edge_url: str) -> None:
    await local.stub.PutObject(put_requests("shots/gone.png", b"x"))
    issued = await local.stub.GetObjectUrl(storage_service_pb2.GetObjectUrlRequest(key="shots/gone.png"))
    await local.stub.DeleteObject(storage_service_pb2.DeleteObjectRequest(key="shots/gone.png"))
    async with httpx.AsyncClient() as http:
        assert (await http.get(_on_edge(issued.url, edge_url))).status_code == 404
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await local.stub.DeleteObject(storage_service_pb2.DeleteObjectRequest(key="shots/gone.png"))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_non_images_download_as_attachments_in_a_sandbox(local: StorageServer, edge_url: str) -> None:
    page = b"<script>alert(document.cookie)</script>"
    await local.stub.PutObject(put_requests("shots/page.html", page, content_type="text/html"))
    issued = await local.stub.GetObjectUrl(storage_service_pb2.GetObjectUrlRequest(key="shots/page.html"))
    async with httpx.AsyncClient() as http:
        response = await http.get(_on_edge(issued.url, edge_url))
    assert response.content == page
    assert response.headers["content-disposition"] == "attachment"
    assert response.headers["content-security-policy"].startswith("sandbox;")


async def test_edge_answers_503_while_storage_is_unreachable(tmp_path: Path) -> None:
    secret = media_signing_secret(settings_for(tmp_path))
    channel = open_system_channel(f"127.0.0.1:{free_port()}")
    try:
        async with serve_edge_media(storage_service_pb2_grpc.StorageServiceStub(channel), secret) as edge_url:
            expires = int(time.time()) + 60
            path = (
                f"/media/shots/a.png?expires={expires}&sig={media_signature('shots/a.png', expires, secret)}"
            )
            async with httpx.AsyncClient(base_url=edge_url) as http:
                response = await http.get(path)
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
    finally:
        await channel.close()


@pytest.mark.parametrize("key", ["../escape.png", "/etc/passwd", "a//b", "a\x00b", "x" * 513, ""])
async def test_bad_keys_are_invalid_argument_for_every_rpc(local: StorageServer, key: str) -> None:
    calls = {
        "PutObject": lambda: local.stub.PutObject(put_requests(key, b"x")),
        "GetObjectUrl": lambda: local.stub.GetObjectUrl(storage_service_pb2.GetObjectUrlRequest(key=key)),
        "DeleteObject": lambda: local.stub.DeleteObject(storage_service_pb2.DeleteObjectRequest(key=key)),
        "GetObject": lambda: read_object(local.stub, key),
    }
    for name, call in calls.items():
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call()
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, name


async def test_get_object_streams_info_then_content(local: StorageServer) -> None:
    content = os.urandom(FIVE_MIB)
    await local.stub.PutObject(put_requests("shots/c.png", content))
    info, received = await read_object(local.stub, "shots/c.png")
    assert (info.key, info.size_bytes, info.content_type) == ("shots/c.png", FIVE_MIB, "image/png")
    assert received == content


async def test_client_disconnect_halfway_leaves_nothing(local: StorageServer, tmp_path: Path) -> None:
    requests, sent = stalled_put_requests("shots/half.png", os.urandom(2 * 1024 * 1024))
    cancelled_before = cancelled_puts()
    call = local.stub.PutObject(requests)
    await sent.wait()
    # The server has the bytes once its part file holds them; then the client goes away.
    await wait_until_async(
        lambda: any(part.stat().st_size >= 2 * 1024 * 1024 for part in _leftovers(tmp_path)), what="part file"
    )
    call.cancel()
    await wait_until_async(
        lambda: cancelled_puts() > cancelled_before, what="the server to see the cancellation"
    )
    assert _leftovers(tmp_path) == []
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await read_object(local.stub, "shots/half.png")
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_declared_sha256_must_match_what_arrived(local: StorageServer, tmp_path: Path) -> None:
    content = os.urandom(3 * 1024 * 1024)
    digest = hashlib.sha256(content).hexdigest()
    info = await local.stub.PutObject(
        put_requests("shots/ok.png", content, metadata={"sha256": digest, "a": "b"})
    )
    assert info.sha256 == digest
    assert dict(info.metadata) == {"a": "b"}

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await local.stub.PutObject(put_requests("shots/bad.png", content[:-1], metadata={"sha256": digest}))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "sha256" in (raised.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await read_object(local.stub, "shots/bad.png")
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert _leftovers(tmp_path) == []


async def test_header_must_come_first_and_only_once(local: StorageServer) -> None:
    async def chunk_first() -> AsyncIterator[storage_service_pb2.PutObjectRequest]:
        yield storage_service_pb2.PutObjectRequest(chunk=b"x")

    async def two_headers() -> AsyncIterator[storage_service_pb2.PutObjectRequest]:
        header = storage_service_pb2.PutObjectHeader(key="shots/h.png", content_type="image/png")
        yield storage_service_pb2.PutObjectRequest(header=header)
        yield storage_service_pb2.PutObjectRequest(header=header)

    for requests in (chunk_first(), two_headers()):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await local.stub.PutObject(requests)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await read_object(local.stub, "shots/h.png")
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_calls_without_the_api_key_are_unauthenticated(local: StorageServer) -> None:
    channel = open_channel(local.address, None)
    try:
        stub = storage_service_pb2_grpc.StorageServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.GetObjectUrl(storage_service_pb2.GetObjectUrlRequest(key="shots/a.png"))
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
        health = health_pb2_grpc.HealthStub(channel)
        checked = await health.Check(
            health_pb2.HealthCheckRequest(service="apidevs.alerts.v1.StorageService")
        )
        assert checked.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await channel.close()


def test_run_serves_until_sigterm_and_exits_cleanly(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "ALERTS_STORAGE_ADDR": f"127.0.0.1:{port}",
        "ALERTS_API_KEYS": ",".join(SYSTEM_KEYS.entries()),
        "ALERTS_DATA_DIR": str(tmp_path),
    }
    process = subprocess.Popen(
        [sys.executable, "-c", "from storage_service.main import run; run()"],
        env=env,
        stderr=subprocess.PIPE,
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)

            def serving() -> bool:
                assert process.poll() is None, process.stderr.read() if process.stderr else ""
                try:
                    return health.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1
                except grpc.RpcError:
                    return False

            wait_until(serving, what="storage process health")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert b'"msg": "stopped"' in (process.stderr.read() if process.stderr else b"")


async def test_many_urls_in_one_call_in_key_order(local: StorageServer, edge_url: str) -> None:
    contents = {f"shots/many-{index}.png": f"bytes {index}".encode() for index in range(3)}
    for key, data in contents.items():
        await local.stub.PutObject(put_requests(key, data))
    keys = list(reversed(contents))
    single = await local.stub.GetObjectUrl(storage_service_pb2.GetObjectUrlRequest(key=keys[0]))
    issued = await local.stub.GetObjectUrls(storage_service_pb2.GetObjectUrlsRequest(keys=keys))
    assert [item.key for item in issued.urls] == keys
    # Same lifetime as one URL at a time (the default hour), and each URL serves its own object.
    assert abs(issued.urls[0].expires_at.seconds - single.expires_at.seconds) <= 2
    async with httpx.AsyncClient(base_url=edge_url) as http:
        for item in issued.urls:
            assert (await http.get(_on_edge(item.url, edge_url))).content == contents[item.key]

    empty = await local.stub.GetObjectUrls(storage_service_pb2.GetObjectUrlsRequest())
    assert list(empty.urls) == []
    for keys, reason in (
        (["shots/a.png", "/absolute.png"], "INVALID_OBJECT_KEY"),
        ([f"shots/{index}.png" for index in range(1001)], "TOO_MANY_KEYS"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await local.stub.GetObjectUrls(storage_service_pb2.GetObjectUrlsRequest(keys=keys))
        error = from_rpc_error(refused.value)
        assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, reason)


async def test_many_deletions_in_one_call_a_missing_object_counting_as_deleted(local: StorageServer) -> None:
    await check_deleting_many(local.stub, "shots/")

    for keys, reason in (
        (["shots/kept.png", "/absolute.png"], "INVALID_OBJECT_KEY"),
        ([f"shots/{index}.png" for index in range(1001)], "TOO_MANY_KEYS"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await local.stub.DeleteObjects(storage_service_pb2.DeleteObjectsRequest(keys=keys))
        error = from_rpc_error(refused.value)
        assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, reason)
