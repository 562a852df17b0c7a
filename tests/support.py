"""Helpers shared by tests: the sample alert, shortcuts for common gRPC calls, an ASGI app in a thread, a wait
for what another process does."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import uvicorn
from google.protobuf import timestamp_pb2

from alerts.scratch_databases import ScratchDatabases
from apidevs.alerts.v1 import resources_pb2, signal_service_pb2, user_service_pb2

# The tests' databases; a session drops those a killed session left behind.
TEST_DATABASES = ScratchDatabases("alerts_test_")

SAMPLE = """🚨 ADX DEF [APIDEVS]
📈 Señal: Divergencia Alcista
🪙 Ticker: BINANCE:BTCUSDT
💰 Precio: $67,890.50
⏱️ Timeframe: 15
🕒 Hora: 2026-11-27T14:30:00Z
""".encode()


async def _holds(condition: Callable[[], bool | Awaitable[bool]]) -> bool:
    held = condition()
    return await held if inspect.isawaitable(held) else held


def now_timestamp() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(datetime.now(UTC))
    return stamp


async def create_user(
    users, plan=resources_pb2.PLAN_PREMIUM, **fields
) -> user_service_pb2.CreateUserResponse:
    return await users.CreateUser(user_service_pb2.CreateUserRequest(plan=plan, **fields))


def ingest_request(token: str, body: bytes = SAMPLE, **fields) -> signal_service_pb2.IngestWebhookRequest:
    fields.setdefault("content_type", "text/plain")
    fields.setdefault("source_ip", "203.0.113.7")
    return signal_service_pb2.IngestWebhookRequest(
        webhook_token=token, body=body, received_at=now_timestamp(), **fields
    )


async def complete_capture(
    signals: Any, signal_id: str, *, worker_id: str = "", size_bytes: int = 100
) -> str:
    """Claims the signal's capture and reports it completed, as a capture worker does; returns the object
    key the screenshot was stored under."""
    claim = await signals.ClaimCapture(
        signal_service_pb2.ClaimCaptureRequest(signal_id=signal_id, worker_id=worker_id)
    )
    await signals.ReportCapture(
        signal_service_pb2.ReportCaptureRequest(
            signal_id=signal_id,
            status=resources_pb2.SCREENSHOT_STATUS_COMPLETED,
            object_key=claim.object_key,
            size_bytes=size_bytes,
        )
    )
    return claim.object_key


@contextlib.contextmanager
def asgi_app_in_thread(app: Any) -> Iterator[str]:
    """`app` served by uvicorn in a thread of this process, on a socket bound before the server starts;
    yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the app did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


async def eventually(condition: Callable[[], bool | Awaitable[bool]], *, what: str, within: float) -> None:
    """Waits for something another process does (`condition` may be a coroutine function, e.g. a query);
    fails the test when it does not happen in time."""
    try:
        async with asyncio.timeout(within):
            while not await _holds(condition):  # noqa: ASYNC110 - the condition depends on other processes
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"gave up after {within:g} s waiting for {what}") from None
