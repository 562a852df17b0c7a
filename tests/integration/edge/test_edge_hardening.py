"""Issue 19 at the edge, against the real HTTP server (uvicorn with the edge's protocol) and real gRPC:
malformed tokens never spooled, spool room per source, `?chart=` validated, and the HTTP server's own
limits (header-read deadline, head size cap, header limits on every route, connection cap)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from alerts.processes import free_port
from edge.spool import WebhookSpool
from tests.integration.edge.conftest import LOOPBACK_PROXY, audit_rows, edge_settings, running_edge
from tests.integration.edge.test_webhook_security import fresh_address
from tests.support import SAMPLE, create_user

# Long enough that nothing in a test waits on it by accident; the deadline tests set their own.
PATIENT_HEAD_SECONDS = 60.0


@contextlib.asynccontextmanager
async def edge_before_a_dead_signal_service(
    service_env: dict[str, str], data_dir: Path, **overrides: object
) -> AsyncIterator[httpx.AsyncClient]:
    """An edge whose signal service never answers: every well-formed webhook is spooled (202)."""
    settings = edge_settings(
        service_env,
        f"127.0.0.1:{free_port()}",
        data_dir=data_dir,
        trusted_proxies=[LOOPBACK_PROXY],
        **overrides,
    )
    async with running_edge(settings) as url, httpx.AsyncClient(base_url=url, timeout=10) as http:
        yield http


async def spooled_count(data_dir: Path) -> int:
    spool = WebhookSpool(data_dir / "spool", max_bytes=1)
    await spool.open()
    try:
        return (await spool.totals()).pending
    finally:
        await spool.close()


@contextlib.asynccontextmanager
async def raw_connection(url: str) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        yield reader, writer
    finally:
        writer.close()


async def test_a_malformed_token_is_404_like_an_unknown_one_and_never_spooled(
    service_env: dict[str, str], http: httpx.AsyncClient, tmp_path: Path
) -> None:
    unknown = await http.post(f"/webhook/u/whk_{'Q' * 43}", content=SAMPLE)
    async with edge_before_a_dead_signal_service(service_env, tmp_path) as down:
        for malformed in ("not-a-token", "whk_short", f"whk_{'Q' * 44}", f"{'Q' * 47}"):
            refused = await down.post(f"/webhook/u/{malformed}", content=SAMPLE)
            assert (refused.status_code, refused.content) == (unknown.status_code, unknown.content)
            assert refused.headers.get("cache-control") == unknown.headers.get("cache-control")
        assert await spooled_count(tmp_path) == 0
        well_formed = await down.post(f"/webhook/u/whk_{'Q' * 43}", content=SAMPLE)
        assert well_formed.status_code == 202
        assert await spooled_count(tmp_path) == 1
    assert unknown.status_code == 404


async def test_spool_room_is_capped_per_source_with_ipv6_per_64(
    service_env: dict[str, str], tmp_path: Path
) -> None:
    body = b"x" * 3000  # one spooled request fits a 4 KiB share, two do not
    async with edge_before_a_dead_signal_service(
        service_env, tmp_path, spool_max_bytes_per_source=4096
    ) as down:

        async def post_from(address: str) -> int:
            answer = await down.post(
                f"/webhook/u/whk_{'S' * 43}", content=body, headers={"x-forwarded-for": address}
            )
            return answer.status_code

        assert await post_from("2001:db8:aa:bb::1") == 202
        # Another address of the same /64 is the same source.
        assert await post_from("2001:db8:aa:bb:ffff:1:2:3") == 503
        assert await post_from("2001:db8:aa:bc::1") == 202
        assert await post_from("198.51.100.7") == 202
        assert await post_from("198.51.100.7") == 503
        assert await post_from("198.51.100.8") == 202
        assert await spooled_count(tmp_path) == 4


@pytest.mark.parametrize(
    "chart", ["a" * 65, "../../etc", "layout id", "ab\x00cd", "l%C3%A4yout", "x" * 20_000, "a.b"]
)
async def test_a_chart_that_is_not_a_layout_id_is_400(http: httpx.AsyncClient, users, chart: str) -> None:
    created = await create_user(users)
    answer = await http.post(f"/webhook/u/{created.webhook_token}", params={"chart": chart}, content=SAMPLE)
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_chart"
    assert "layout id" in answer.json()["message"]


async def test_a_layout_id_of_64_characters_is_taken(http: httpx.AsyncClient, users, signals) -> None:
    from apidevs.alerts.v1 import signal_service_pb2

    created = await create_user(users)
    chart = "Ab_-09" + "z" * 58
    answer = await http.post(f"/webhook/u/{created.webhook_token}", params={"chart": chart}, content=SAMPLE)
    assert answer.status_code == 200, answer.text
    signal = await signals.GetSignal(
        signal_service_pb2.GetSignalRequest(signal_id=answer.json()["signal_id"])
    )
    assert signal.chart_id == chart


async def test_malformed_tokens_and_charts_are_audited_under_their_own_reasons(
    http: httpx.AsyncClient, users, db
) -> None:
    created = await create_user(users)
    reasons = []
    for path, params in (
        ("/webhook/u/not-a-token", {}),
        (f"/webhook/u/{created.webhook_token}", {"chart": "a b"}),
    ):
        agent = f"hardening-probe-{uuid.uuid4()}"
        # A source of its own: refusals of callers the service cannot place merge per source and minute.
        headers = {"user-agent": agent, "x-forwarded-for": fresh_address()}
        await http.post(path, params=params, content=SAMPLE, headers=headers)
        [row] = await audit_rows(db, "user_agent = $1", agent)
        reasons.append(row["reason"])
    assert reasons == ["MALFORMED_TOKEN", "INVALID_CHART"]


@pytest.fixture(scope="module")
async def hasty_edge_url(service_env: dict[str, str], signal_server: str) -> AsyncIterator[str]:
    """An edge that gives a connection half a second to send its request head."""
    settings = edge_settings(service_env, signal_server, header_read_timeout_seconds=0.5)
    async with running_edge(settings) as url:
        yield url


async def test_an_idle_new_connection_is_closed_at_the_header_read_deadline(hasty_edge_url: str) -> None:
    async with raw_connection(hasty_edge_url) as (reader, _):
        # uvicorn alone never closes it: the read would wait for the 10 s and fail with TimeoutError.
        assert await asyncio.wait_for(reader.read(), timeout=10) == b""


async def test_a_head_trickled_a_byte_at_a_time_is_cut_at_the_deadline(hasty_edge_url: str) -> None:
    head = b"GET /health/live HTTP/1.1\r\nHost: edge\r\nX-Slow: " + b"s" * 40 + b"\r\n\r\n"
    async with raw_connection(hasty_edge_url) as (reader, writer):
        received = asyncio.create_task(asyncio.wait_for(reader.read(), timeout=10))
        sent = 0
        with contextlib.suppress(ConnectionError):
            for byte in head:
                if received.done():
                    break
                writer.write(bytes([byte]))
                await writer.drain()
                sent += 1
                await asyncio.sleep(0.05)
        assert await received == b""
    assert sent < len(head), "the whole head got through the deadline"


async def test_a_kept_alive_connection_is_served_and_its_next_head_has_the_deadline(
    hasty_edge_url: str,
) -> None:
    async with raw_connection(hasty_edge_url) as (reader, writer):
        writer.write(b"GET /health/live HTTP/1.1\r\nHost: edge\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
        assert head.startswith(b"HTTP/1.1 200")
        [length] = [
            line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
        ]
        await reader.readexactly(int(length))
        writer.write(b"GET /health/live HTTP/1.1\r\nHo")
        assert await asyncio.wait_for(reader.read(), timeout=10) == b""


async def send_head(url: str, path: str, header_value_size: int) -> bytes:
    """Sends a GET whose one header is `header_value_size` bytes; returns what the server answered."""
    async with raw_connection(url) as (reader, writer):
        received = asyncio.create_task(asyncio.wait_for(reader.read(), timeout=10))
        writer.write(f"GET {path} HTTP/1.1\r\nHost: edge\r\nX-Big: ".encode())
        chunk = b"b" * 65536
        with contextlib.suppress(ConnectionError):
            for _ in range(0, header_value_size, len(chunk)):
                if received.done():
                    break
                writer.write(chunk)
                await writer.drain()
            writer.write(b"\r\n\r\n")
            await writer.drain()
        return await received


@pytest.mark.parametrize("path", ["/health/live", "/metrics", "/schema", "/webhook/u/whk_x"])
async def test_two_megabytes_of_headers_are_refused_on_every_route(edge_url: str, path: str) -> None:
    answer = await send_head(edge_url, path, 2 * 1024 * 1024)
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert answer.endswith(b'{"success":false,"error":"headers_too_large"}')


@pytest.mark.parametrize("path", ["/health/live", "/health", "/metrics", "/schema", "/api/users/x/stats"])
async def test_header_limits_cover_every_route(http: httpx.AsyncClient, path: str) -> None:
    for headers in ({"x-big": "b" * 20_000}, {f"x-many-{index}": "v" for index in range(150)}):
        answer = await http.get(path, headers=headers)
        assert answer.status_code == 431, (path, len(headers))
        assert answer.json() == {"success": False, "error": "headers_too_large"}
    assert (await http.get(path, headers={"x-small": "s" * 1000})).status_code != 431


async def test_connections_past_the_cap_are_answered_503(
    service_env: dict[str, str], signal_server: str
) -> None:
    settings = edge_settings(
        service_env, signal_server, max_connections=2, header_read_timeout_seconds=PATIENT_HEAD_SECONDS
    )
    async with running_edge(settings) as url:
        async with raw_connection(url), raw_connection(url), httpx.AsyncClient(base_url=url) as http:
            assert (await http.get("/health/live")).status_code == 503
        # The server forgets the closed connections as it notices them.
        async with httpx.AsyncClient(base_url=url) as http:
            for _ in range(100):
                if (answer := await http.get("/health/live")).status_code == 200:
                    break
                await asyncio.sleep(0.05)
            assert answer.status_code == 200
