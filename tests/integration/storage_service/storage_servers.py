"""Helpers for the storage integration tests: servers on loopback, request streams, settings."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import grpc
import httpx
import pytest
import uvicorn
from cryptography.hazmat.primitives.asymmetric import rsa
from litestar import Litestar
from prometheus_client import REGISTRY

from apidevs.alerts.v1 import storage_service_pb2, storage_service_pb2_grpc
from edge.errors import EXCEPTION_HANDLERS
from edge.media import get_media
from mesh.grpc import create_server, start
from storage_service.service import StorageService
from storage_service.servicer import SERVICE_NAME, StorageServicer
from storage_service.settings import StorageSettings
from tests.keys import SYSTEM_KEYS, open_system_channel

GCS_BUCKET = "alerts-test"
S3_BUCKET = "alerts-test"
CHUNK_BYTES = 1024 * 1024


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(condition: Callable[[], bool], *, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what}")
        time.sleep(0.05)


async def wait_until_async(condition: Callable[[], bool], *, what: str) -> None:
    try:
        async with asyncio.timeout(20):
            while not condition():  # noqa: ASYNC110 - the conditions are files and other processes
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise TimeoutError(f"gave up waiting for {what}") from None


@contextlib.contextmanager
def child_process(
    command: list[str], *, ready: Callable[[], bool], what: str
) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:

        def started() -> bool:
            if process.poll() is not None:
                stderr = process.stderr.read().decode() if process.stderr else ""
                raise RuntimeError(f"{what} exited: {stderr}")
            return ready()

        wait_until(started, what=what)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code < 500
    except httpx.TransportError:
        return False


def script(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    assert found, f"{name} is not installed"
    return found


def s3_client(endpoint: str) -> Any:
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


@dataclass(frozen=True)
class ServiceAccount:
    path: Path
    public_key: rsa.RSAPublicKey
    email: str


@dataclass
class StorageServer:
    address: str
    stub: storage_service_pb2_grpc.StorageServiceStub
    channel: grpc.aio.Channel
    service: StorageService


@asynccontextmanager
async def serve_storage(service: StorageService, settings: StorageSettings) -> AsyncIterator[StorageServer]:
    """The real gRPC server (mesh interceptors, health, reflection) on a loopback port, and a client."""
    server = create_server(settings)
    storage_service_pb2_grpc.add_StorageServiceServicer_to_server(StorageServicer(service), server)
    port, _ = await start(server, address="127.0.0.1:0", service_names=[SERVICE_NAME])
    address = f"127.0.0.1:{port}"
    channel = open_system_channel(address)
    try:
        yield StorageServer(
            address=address,
            stub=storage_service_pb2_grpc.StorageServiceStub(channel),
            channel=channel,
            service=service,
        )
    finally:
        await channel.close()
        await server.stop(grace=None)
        await service.close()


@asynccontextmanager
async def serve_edge_media(
    stub: storage_service_pb2_grpc.StorageServiceStub, secret: bytes
) -> AsyncIterator[str]:
    """A minimal edge app holding only the media route, on a real uvicorn server; yields its base URL."""
    app = Litestar(route_handlers=[get_media], exception_handlers=EXCEPTION_HANDLERS)
    app.state.storage_stub = stub
    app.state.media_signing_secret = secret
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    serving = asyncio.create_task(server.serve())
    await wait_until_async(lambda: server.started, what="edge server start")
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await serving


def put_requests(
    key: str, content: bytes, *, content_type: str = "image/png", metadata: dict[str, str] | None = None
) -> AsyncIterator[storage_service_pb2.PutObjectRequest]:
    async def requests() -> AsyncIterator[storage_service_pb2.PutObjectRequest]:
        header = storage_service_pb2.PutObjectHeader(
            key=key, content_type=content_type, metadata=metadata or {}
        )
        yield storage_service_pb2.PutObjectRequest(header=header)
        for offset in range(0, len(content), CHUNK_BYTES):
            yield storage_service_pb2.PutObjectRequest(chunk=content[offset : offset + CHUNK_BYTES])

    return requests()


def stalled_put_requests(
    key: str, first_bytes: bytes
) -> tuple[AsyncIterator[storage_service_pb2.PutObjectRequest], asyncio.Event]:
    """A client that sends a header and some chunks, then hangs; the event is set once all are sent."""
    sent = asyncio.Event()

    async def requests() -> AsyncIterator[storage_service_pb2.PutObjectRequest]:
        header = storage_service_pb2.PutObjectHeader(key=key, content_type="image/png")
        yield storage_service_pb2.PutObjectRequest(header=header)
        for offset in range(0, len(first_bytes), CHUNK_BYTES):
            yield storage_service_pb2.PutObjectRequest(chunk=first_bytes[offset : offset + CHUNK_BYTES])
        sent.set()
        await asyncio.Event().wait()

    return requests(), sent


def cancelled_puts() -> float:
    """How many PutObject calls this process's gRPC servers have seen cancelled by their client."""
    value = REGISTRY.get_sample_value(
        "alerts_grpc_server_handled_total", {"method": "PutObject", "code": "CANCELLED"}
    )
    return value or 0.0


async def read_object(stub: storage_service_pb2_grpc.StorageServiceStub, key: str) -> tuple[Any, bytes]:
    parts = [message async for message in stub.GetObject(storage_service_pb2.GetObjectRequest(key=key))]
    return parts[0].info, b"".join(part.chunk for part in parts[1:])


async def check_deleting_many(stub: storage_service_pb2_grpc.StorageServiceStub, prefix: str) -> None:
    """DeleteObjects removes the named objects, counts a missing one as deleted, and leaves the rest."""
    doomed = [f"{prefix}del-a.png", f"{prefix}never.png", f"{prefix}del-b.png"]
    for key, content in ((doomed[0], b"a"), (doomed[2], b"b"), (f"{prefix}kept.png", b"k")):
        await stub.PutObject(put_requests(key, content))
    answer = await stub.DeleteObjects(storage_service_pb2.DeleteObjectsRequest(keys=doomed))
    assert list(answer.failed_keys) == []
    for key in (doomed[0], doomed[2]):
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await read_object(stub, key)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert (await read_object(stub, f"{prefix}kept.png"))[1] == b"k"


def settings_for(tmp_path: Path, **overrides: Any) -> StorageSettings:
    return StorageSettings(api_keys=SYSTEM_KEYS.entries(), data_dir=tmp_path, **overrides)
