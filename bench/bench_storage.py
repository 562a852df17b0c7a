"""Storage latency through a real storage process (local-disk backend) and the edge media route.

Measures, sequentially: PutObject of a screenshot-sized object (with and without a declared sha256),
GetObjectUrl, GET of the object through the edge route, PutObject of a 5 MiB object, and DeleteObjects
of 1,000 keys (a tenth of them already gone, as retention finds them), with the storage process's CPU per
1,000 deletions. Prints p50/p90/p99/max per operation and the command.

    .venv/bin/python bench/bench_storage.py --rounds 200 --size-kib 300 --delete-batches 5
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

import grpc
import httpx
import psutil
import uvicorn
from grpc_health.v1 import health_pb2, health_pb2_grpc
from litestar import Litestar

from apidevs.alerts.v1 import storage_service_pb2, storage_service_pb2_grpc
from edge.errors import EXCEPTION_HANDLERS
from edge.media import get_media
from mesh.auth import Role, role_entry
from mesh.grpc import open_channel
from mesh.settings import CommonSettings
from mesh.signing import media_signing_secret

sys.path.insert(0, str(Path(__file__).resolve().parent))
from meta import command_line

# The workers' role: uploads, and the signal service's URL requests.
API_KEY = "bench-storage-key"
CHUNK_BYTES = 1024 * 1024


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def requests(
    key: str, content: bytes, metadata: dict[str, str]
) -> AsyncIterator[storage_service_pb2.PutObjectRequest]:
    async def stream() -> AsyncIterator[storage_service_pb2.PutObjectRequest]:
        header = storage_service_pb2.PutObjectHeader(key=key, content_type="image/png", metadata=metadata)
        yield storage_service_pb2.PutObjectRequest(header=header)
        for offset in range(0, len(content), CHUNK_BYTES):
            yield storage_service_pb2.PutObjectRequest(chunk=content[offset : offset + CHUNK_BYTES])

    return stream()


async def measure(rounds: int, operation: Callable[[int], Awaitable[object]]) -> list[float]:
    timings = []
    for round_number in range(rounds):
        started = time.perf_counter()
        await operation(round_number)
        timings.append((time.perf_counter() - started) * 1000)
    return timings


def report(name: str, timings: list[float]) -> None:
    figures = "  ".join(
        f"{label}={value:7.2f} ms"
        for label, value in (
            ("p50", percentile(timings, 50)),
            ("p90", percentile(timings, 90)),
            ("p99", percentile(timings, 99)),
            ("max", max(timings)),
        )
    )
    print(f"{name:<34} n={len(timings):<4} {figures}")


async def bench_deletions(
    stub: storage_service_pb2_grpc.StorageServiceStub, storage: psutil.Process, batches: int
) -> None:
    content = os.urandom(2048)
    timings: list[float] = []
    cpu_ms: list[float] = []
    for batch in range(batches):
        keys = [f"bench/expired/{batch}/{n}.png" for n in range(1000)]
        await asyncio.gather(*(stub.PutObject(requests(key, content, {})) for key in keys[:900]))
        cpu_before = sum(storage.cpu_times()[:2])
        started = time.perf_counter()
        answer = await stub.DeleteObjects(storage_service_pb2.DeleteObjectsRequest(keys=keys))
        timings.append((time.perf_counter() - started) * 1000)
        cpu_ms.append((sum(storage.cpu_times()[:2]) - cpu_before) * 1000)
        if answer.failed_keys:
            raise RuntimeError(f"{len(answer.failed_keys)} deletions failed")
    report("DeleteObjects 1,000 keys", timings)
    print(f"{'  storage CPU per 1,000 deletions':<34} median={statistics.median(cpu_ms):7.1f} ms")


async def bench(address: str, data_dir: Path, args: argparse.Namespace, storage: psutil.Process) -> None:
    rounds, size = args.rounds, args.size_kib * 1024
    channel = open_channel(address, API_KEY)
    stub = storage_service_pb2_grpc.StorageServiceStub(channel)
    content = os.urandom(size)
    digest = hashlib.sha256(content).hexdigest()
    large = os.urandom(5 * 1024 * 1024)

    app = Litestar(route_handlers=[get_media], exception_handlers=EXCEPTION_HANDLERS)
    app.state.storage_stub = stub
    app.state.media_signing_secret = media_signing_secret(CommonSettings(data_dir=data_dir))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn offers no start event
        await asyncio.sleep(0.01)
    edge = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"

    urls: list[str] = []

    async def put_plain(n: int) -> object:
        return await stub.PutObject(requests(f"bench/plain/{n}.png", content, {}))

    async def put_declared(n: int) -> object:
        return await stub.PutObject(requests(f"bench/declared/{n}.png", content, {"sha256": digest}))

    async def get_url(n: int) -> object:
        issued = await stub.GetObjectUrl(storage_service_pb2.GetObjectUrlRequest(key=f"bench/plain/{n}.png"))
        urls.append(issued.url)
        return issued

    async with httpx.AsyncClient() as http:

        async def fetch(n: int) -> object:
            split = urlsplit(urls[n])
            response = await http.get(f"{edge}{split.path}?{split.query}")
            if response.status_code != 200 or len(response.content) != size:
                raise RuntimeError(f"edge answered {response.status_code} with {len(response.content)} bytes")
            return response

        async def put_large(n: int) -> object:
            return await stub.PutObject(requests(f"bench/large/{n}.bin", large, {}))

        await put_plain(0)  # warm-up: connection, first files
        report(f"PutObject {size // 1024} KiB", await measure(rounds, put_plain))
        report(f"PutObject {size // 1024} KiB, sha256 declared", await measure(rounds, put_declared))
        report("GetObjectUrl", await measure(rounds, get_url))
        report(f"GET /media ({size // 1024} KiB) via edge", await measure(rounds, fetch))
        report("PutObject 5 MiB", await measure(max(10, rounds // 10), put_large))
        await bench_deletions(stub, storage, args.delete_batches)

    server.should_exit = True
    await serving
    await channel.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--size-kib", type=int, default=300)
    parser.add_argument("--delete-batches", type=int, default=5, help="DeleteObjects calls of 1,000 keys")
    args = parser.parse_args()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as directory:
        data_dir = Path(directory)
        port = free_port()
        env = {
            **os.environ,
            "ALERTS_STORAGE_ADDR": f"127.0.0.1:{port}",
            "ALERTS_API_KEYS": role_entry(API_KEY, Role.WORKER),
            "ALERTS_DATA_DIR": str(data_dir),
            "ALERTS_LOG_LEVEL": "WARNING",
        }
        process = subprocess.Popen(
            [sys.executable, "-c", "from storage_service.main import run; run()"], env=env
        )
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                health = health_pb2_grpc.HealthStub(channel)
                health.Check(health_pb2.HealthCheckRequest(), wait_for_ready=True, timeout=30)
            print(f"$ {command_line()}")
            machine = f"python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs"
            print(f"{machine}, local-disk backend")
            asyncio.run(bench(f"127.0.0.1:{port}", data_dir, args, psutil.Process(process.pid)))
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)


if __name__ == "__main__":
    main()
