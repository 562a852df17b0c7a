"""Issue 19's edge and browser findings, each attack done again against real processes (`alerts serve
edge`, `alerts serve capture`) and answered the new way: 3 and 2 (malformed tokens never spooled, spool
room per source with IPv6 per /64), 6 (`?chart=` validated), 8 (spool files 0600), 9 (header-read deadline,
head size cap, header limits on every route) and 4 (Chromium's environment)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psutil
import pytest

from alerts.processes import ManagedProcess, alerts_argv, free_port, http_ok
from alerts.stack import Stack
from tests.e2e.stacks import START_TIMEOUT_SECONDS, child_env
from tests.support import SAMPLE, create_user

pytestmark = pytest.mark.e2e

# What `alerts serve edge` gives a connection to send its request head (ALERTS_HEADER_READ_TIMEOUT_SECONDS).
HEADER_READ_TIMEOUT_SECONDS = 1.0
WELL_FORMED_UNKNOWN = "whk_" + "E" * 43


@pytest.fixture(scope="module")
def lone_edge(
    service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    """`alerts serve edge` before a signal address nobody serves, so every well-formed webhook is spooled;
    it believes loopback's X-Forwarded-For, so that tests can pose as any source. Returns (URL, data dir)."""
    data_dir = tmp_path_factory.mktemp("lone-edge")
    port = free_port()
    env = child_env(
        service_env,
        ALERTS_SIGNAL_ADDR=f"127.0.0.1:{free_port()}",
        ALERTS_STORAGE_ADDR=f"127.0.0.1:{free_port()}",
        ALERTS_EDGE_HOST="127.0.0.1",
        ALERTS_EDGE_PORT=str(port),
        ALERTS_DATA_DIR=str(data_dir),
        ALERTS_TRUSTED_PROXIES="127.0.0.0/8",
        ALERTS_SPOOL_MAX_BYTES_PER_SOURCE="4096",
        ALERTS_HEADER_READ_TIMEOUT_SECONDS=str(HEADER_READ_TIMEOUT_SECONDS),
    )
    url = f"http://127.0.0.1:{port}"
    process = ManagedProcess(
        "lone-edge",
        alerts_argv("serve", "edge"),
        env,
        ready=lambda: http_ok(f"{url}/health/live"),
        log_path=data_dir / "edge.log",
    )
    process.start()
    try:
        process.wait_ready(START_TIMEOUT_SECONDS)
        yield url, data_dir
    finally:
        process.stop()


@contextlib.asynccontextmanager
async def raw_connection(url: str) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        yield reader, writer
    finally:
        writer.close()


async def test_malformed_tokens_are_404_and_never_spooled_while_the_signal_service_is_away(
    lone_edge: tuple[str, Path],
) -> None:
    url, data_dir = lone_edge
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        for malformed in ("junk", "whk_" + "E" * 42, "whk_" + "E" * 200, "whk_" + "E" * 42 + "!"):
            answer = await http.post(
                f"/webhook/u/{malformed}", content=b"junk " * 500, headers={"x-forwarded-for": "203.0.113.9"}
            )
            assert answer.status_code == 404
            assert answer.json() == {"success": False, "error": "not_found"}
        # The same source still has its whole share: nothing of the junk was kept.
        queued = await http.post(
            f"/webhook/u/{WELL_FORMED_UNKNOWN}", content=SAMPLE, headers={"x-forwarded-for": "203.0.113.9"}
        )
        assert queued.status_code == 202
    spool = data_dir / "spool"
    files = [path for path in spool.iterdir() if path.is_file()]
    assert files
    assert {oct(path.stat().st_mode & 0o777) for path in files} == {"0o600"}
    assert oct(spool.stat().st_mode & 0o777) == "0o700"


async def test_one_ipv6_slash_64_cannot_fill_the_spool(lone_edge: tuple[str, Path]) -> None:
    url, _ = lone_edge
    body = b"y" * 3000  # one fits the 4 KiB share of a source, two do not
    prefix = f"2001:db8:{uuid.uuid4().int % 0xFFFF:x}:1"
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:

        async def from_address(address: str) -> httpx.Response:
            return await http.post(
                f"/webhook/u/{WELL_FORMED_UNKNOWN}", content=body, headers={"x-forwarded-for": address}
            )

        assert (await from_address(f"{prefix}::1")).status_code == 202
        rotated = [await from_address(f"{prefix}:{index:x}::{index:x}") for index in range(1, 6)]
        assert {answer.status_code for answer in rotated} == {503}
        assert {answer.json()["error"] for answer in rotated} == {"unavailable"}
        assert (await from_address(f"{prefix[:-1]}2::1")).status_code == 202


async def test_an_idle_connection_is_closed_at_the_header_read_deadline(lone_edge: tuple[str, Path]) -> None:
    url, _ = lone_edge
    async with raw_connection(url) as (reader, _):
        # uvicorn alone kept such a connection open for ever: this read would end in TimeoutError.
        assert await asyncio.wait_for(reader.read(), timeout=30) == b""


async def send_big_head(url: str, path: str, size: int) -> bytes:
    async with raw_connection(url) as (reader, writer):
        received = asyncio.create_task(asyncio.wait_for(reader.read(), timeout=30))
        writer.write(f"GET {path} HTTP/1.1\r\nHost: edge\r\nX-Big: ".encode())
        chunk = b"h" * 65536
        with contextlib.suppress(ConnectionError):
            for _ in range(0, size, len(chunk)):
                if received.done():
                    break
                writer.write(chunk)
                await writer.drain()
            writer.write(b"\r\n\r\n")
            await writer.drain()
        return await received


async def test_two_megabytes_of_headers_on_health_live_are_refused(edge_stack: Stack) -> None:
    answer = await send_big_head(edge_stack.edge_url, "/health/live", 2 * 1024 * 1024)
    assert answer.startswith(b"HTTP/1.1 431 ")
    async with httpx.AsyncClient(base_url=edge_stack.edge_url, timeout=10) as http:
        modest = await http.get("/health/live", headers={"x-big": "h" * 20_000})
        assert modest.status_code == 431
        assert modest.json() == {"success": False, "error": "headers_too_large"}
        assert (await http.get("/health/live")).status_code == 200


@pytest.mark.parametrize("chart", ["c" * 10_000, "c" * 65, "../../x", "a b", "<script>"])
async def test_a_chart_that_is_not_a_tradingview_layout_id_is_400(
    edge_stack: Stack, edge_stack_users, chart: str
) -> None:
    created = await create_user(edge_stack_users)
    async with httpx.AsyncClient(base_url=edge_stack.edge_url, timeout=10) as http:
        answer = await http.post(
            f"/webhook/u/{created.webhook_token}", params={"chart": chart}, content=SAMPLE
        )
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_chart"


SECRET_VALUES = ("e2e-browser-secret-api-key", "e2e-browser-db-password")


def chromium_under(pid: int) -> list[psutil.Process]:
    found = []
    for child in psutil.Process(pid).children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            if "chrom" in child.name():
                found.append(child)
    return found


def test_the_capture_workers_chromium_holds_no_secret_in_its_environment(
    service_env: dict[str, str], tmp_path: Path
) -> None:
    env = child_env(
        service_env,
        ALERTS_CAPTURE_WORKER_ID=f"e2e-env-{uuid.uuid4().hex[:8]}",
        ALERTS_METRICS_PORT=str(free_port()),
        ALERTS_SIGNAL_ADDR=f"127.0.0.1:{free_port()}",
        ALERTS_STORAGE_ADDR=f"127.0.0.1:{free_port()}",
        ALERTS_API_KEYS=f"{service_env['ALERTS_API_KEYS']},{SECRET_VALUES[0]}",
        AWS_SECRET_ACCESS_KEY=SECRET_VALUES[1],
    )
    process = ManagedProcess(
        "capture",
        alerts_argv("serve", "capture"),
        env,
        ready=lambda: bool(chromium_under(process.process.pid)),
        log_path=tmp_path / "capture.log",
    )
    process.start()
    try:
        process.wait_ready(START_TIMEOUT_SECONDS)
        environments = {
            chromium.pid: Path(f"/proc/{chromium.pid}/environ").read_bytes()
            for chromium in chromium_under(process.process.pid)
        }
    finally:
        process.stop()
    assert environments
    for pid, environ in environments.items():
        assert b"ALERTS_" not in environ, pid
        for secret in (*SECRET_VALUES, service_env["ALERTS_DATABASE_URL"], service_env["ALERTS_REDIS_URL"]):
            assert secret.encode() not in environ, (pid, secret)
