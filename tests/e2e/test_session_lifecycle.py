"""The TradingView session lifecycle through real processes: storage, two signal replicas, an edge, two
capture workers with Chromium, and the chart stub playing TradingView.

The stub runs in this process behind a wrapper that plays TradingView revoking a session: a sessionid
revoked there reaches the stub as an expired one, so the same cookies that worked start being refused.
Session checks run every few seconds here (ALERTS_SESSION_CHECK_INTERVAL_SECONDS) to see several.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import redis

from alerts.processes import ManagedProcess, alerts_argv, free_port, grpc_serving, http_ok
from apidevs.alerts.v1 import (
    resources_pb2,
    signal_service_pb2,
    signal_service_pb2_grpc,
    user_service_pb2,
    user_service_pb2_grpc,
)
from capture_service.chart_stub import create_chart_stub_app
from mesh.queues import capture_workers_key
from mesh.settings import CommonSettings
from tests.e2e.stacks import START_TIMEOUT_SECONDS, child_env, fresh_database
from tests.keys import SYSTEM_KEYS, open_system_channel, with_service_key
from tests.support import asgi_app_in_thread

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

CHECK_INTERVAL_SECONDS = 4.0
GUARD_SECONDS = 90.0
SESSION_EVENT = resources_pb2.SIGNAL_EVENT_TYPE_TRADINGVIEW_SESSION_UPDATED
COMPLETED = resources_pb2.SCREENSHOT_STATUS_COMPLETED
FAILED = resources_pb2.SCREENSHOT_STATUS_FAILED


class RevokingTradingView:
    """The chart stub behind TradingView's side of the session: revoked sessionids arrive expired."""

    def __init__(self) -> None:
        self.stub = create_chart_stub_app(render_delay_ms=100)
        self.revoked: set[str] = set()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self.revoked:
            headers = [
                (name, self._revoke(value) if name == b"cookie" else value)
                for name, value in scope["headers"]
            ]
            scope = {**scope, "headers": headers}
        await self.stub(scope, receive, send)

    def _revoke(self, header: bytes) -> bytes:
        cookies = []
        for part in header.decode("latin-1").split(";"):
            name, _, value = part.strip().partition("=")
            if name == "sessionid" and value in self.revoked:
                value = f"expired-{value}"
            cookies.append(f"{name}={value}")
        return "; ".join(cookies).encode("latin-1")


@dataclass
class Stack:
    signal_a: str
    signal_b: str
    edge_url: str
    chart_url: str
    tradingview: RevokingTradingView
    key: str
    log_dir: Path
    processes: dict[str, ManagedProcess] = field(default_factory=dict)

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}"
            for path in sorted(self.log_dir.glob("*.log"))
        )

    async def requests_with(self, sessionid: str, *, checks: bool) -> list[float]:
        """When the stub received a request with this sessionid (revoked or not), in order: session checks
        (the home page) when `checks`, else chart pages (captures)."""
        async with httpx.AsyncClient(base_url=self.chart_url) as client:
            answer = await client.get("/_stub/requests")
        answer.raise_for_status()
        return sorted(
            entry["received_at"]
            for entry in answer.json()
            if (entry["path"] == "/" if checks else entry["path"].startswith("/chart"))
            and entry["cookies"].get("sessionid", "").removeprefix("expired-") == sessionid
        )

    async def post_webhook(self, token: str, body: bytes) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=self.edge_url) as client:
            answer = await client.post(
                f"/webhook/u/{token}", content=body, headers={"content-type": "text/plain"}
            )
        answer.raise_for_status()
        return answer.json()


def worker_registered(redis_url: str, namespace: str, worker_id: str) -> bool:
    client = redis.Redis.from_url(redis_url)
    try:
        key = capture_workers_key(CommonSettings(redis_namespace=namespace))
        return client.zscore(key, worker_id) is not None
    finally:
        client.close()


@pytest.fixture(scope="module")
def stack(
    database_url: str, redis_url: str, service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    log_dir = tmp_path_factory.mktemp("session-lifecycle")
    namespace = f"test-sessions-{uuid.uuid4().hex[:8]}"
    tradingview = RevokingTradingView()
    with fresh_database(database_url) as url, asgi_app_in_thread(tradingview) as chart_url:
        signal_a, signal_b = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        storage_addr, edge_port = f"127.0.0.1:{free_port()}", free_port()
        env = child_env(
            service_env,
            ALERTS_DATABASE_URL=url,
            ALERTS_REDIS_NAMESPACE=namespace,
            ALERTS_STORAGE_ADDR=storage_addr,
            ALERTS_STORAGE_LOCAL_DIR=str(log_dir / "objects"),
            ALERTS_TRADINGVIEW_URL=chart_url,
            ALERTS_SESSION_CHECK_INTERVAL_SECONDS=str(CHECK_INTERVAL_SECONDS),
            ALERTS_SESSION_CHECK_MIN_SPACING_SECONDS=str(CHECK_INTERVAL_SECONDS / 2),
            ALERTS_SESSION_CHECK_TICK_SECONDS="0.5",
            # Generous for a loaded machine; the answer normally comes within a few seconds.
            ALERTS_SESSION_CHECK_WAIT_SECONDS="60",
            ALERTS_CAPTURE_CONCURRENCY="2",
        )
        stack = Stack(
            signal_a=signal_a,
            signal_b=signal_b,
            edge_url=f"http://127.0.0.1:{edge_port}",
            chart_url=chart_url,
            tradingview=tradingview,
            key=SYSTEM_KEYS.operator,
            log_dir=log_dir,
        )
        specs: dict[str, tuple[list[str], dict[str, str], Callable[[], bool]]] = {
            "storage": (alerts_argv("serve", "storage"), {}, lambda: grpc_serving(storage_addr)),
            "signal-a": (
                alerts_argv("serve", "signal"),
                {"ALERTS_SIGNAL_ADDR": signal_a},
                lambda: grpc_serving(signal_a),
            ),
            "signal-b": (
                alerts_argv("serve", "signal"),
                {"ALERTS_SIGNAL_ADDR": signal_b},
                lambda: grpc_serving(signal_b),
            ),
            "edge": (
                alerts_argv("serve", "edge"),
                {
                    "ALERTS_SIGNAL_ADDR": signal_a,
                    "ALERTS_EDGE_HOST": "127.0.0.1",
                    "ALERTS_EDGE_PORT": str(edge_port),
                    "ALERTS_DATA_DIR": str(log_dir / "edge-data"),
                },
                lambda: http_ok(f"{stack.edge_url}/health/live"),
            ),
        }
        for worker, signal_addr in (("capture-1", signal_a), ("capture-2", signal_b)):
            specs[worker] = (
                alerts_argv("serve", "capture"),
                {"ALERTS_SIGNAL_ADDR": signal_addr, "ALERTS_CAPTURE_WORKER_ID": worker},
                lambda worker=worker: worker_registered(redis_url, namespace, worker),
            )
        try:
            for name, (argv, overrides, ready) in specs.items():
                process_env = with_service_key({**env, **overrides}, name)
                process = ManagedProcess(
                    name, argv, process_env, ready=ready, log_path=log_dir / f"{name}.log"
                )
                stack.processes[name] = process
                process.start()
            for process in stack.processes.values():
                process.wait_ready(START_TIMEOUT_SECONDS)
            yield stack
        finally:
            for process in reversed(stack.processes.values()):
                process.stop()
            print(stack.logs())
            client = redis.Redis.from_url(redis_url)
            with contextlib.suppress(redis.RedisError):
                keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
                if keys:
                    client.delete(*keys)
            client.close()


@pytest.fixture(scope="module")
async def channels(stack: Stack) -> AsyncIterator[tuple[grpc.aio.Channel, grpc.aio.Channel]]:
    async with (
        open_system_channel(stack.signal_a) as on_a,
        open_system_channel(stack.signal_b) as on_b,
    ):
        yield on_a, on_b


@pytest.fixture(scope="module")
def users(channels: tuple[grpc.aio.Channel, grpc.aio.Channel]) -> user_service_pb2_grpc.UserServiceStub:
    return user_service_pb2_grpc.UserServiceStub(channels[0])


@pytest.fixture(scope="module")
def signals_a(
    channels: tuple[grpc.aio.Channel, grpc.aio.Channel],
) -> signal_service_pb2_grpc.SignalServiceStub:
    return signal_service_pb2_grpc.SignalServiceStub(channels[0])


@pytest.fixture(scope="module")
def signals_b(
    channels: tuple[grpc.aio.Channel, grpc.aio.Channel],
) -> signal_service_pb2_grpc.SignalServiceStub:
    return signal_service_pb2_grpc.SignalServiceStub(channels[1])


async def eventually(check: Callable[[], Awaitable[bool]], what: str, stack: Stack) -> None:
    deadline = time.monotonic() + GUARD_SECONDS
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {GUARD_SECONDS:g} s\n{stack.logs()}")
        await asyncio.sleep(0.25)


async def new_user(
    users, plan: int, sessionid: str
) -> tuple[user_service_pb2.CreateUserResponse, resources_pb2.User]:
    created = await users.CreateUser(
        user_service_pb2.CreateUserRequest(plan=plan, default_chart_id="layout-e2e")
    )
    stored = await users.SetTradingViewSession(
        user_service_pb2.SetTradingViewSessionRequest(
            user_id=created.user.user_id, sessionid=sessionid, sessionid_sign="sign-e2e"
        )
    )
    return created, stored


def idle_alert() -> bytes:
    """An alert without a ticker: the user is active, and no capture opens a chart."""
    return f"heartbeat {uuid.uuid4()}".encode()


def capturable_alert() -> bytes:
    return f"Ticker: BINANCE:BTCUSDT\nPrice: 1.5\nSignal: buy\nid: {uuid.uuid4()}".encode()


async def test_a_revoked_session_is_found_by_the_periodic_check_and_announced_live(
    stack: Stack, users, signals_b
) -> None:
    sessionid = f"sess-{uuid.uuid4().hex[:10]}"
    created, stored = await new_user(users, resources_pb2.PLAN_FREE, sessionid)
    user_id = created.user.user_id
    # SetTradingViewSession answered with its first check's result.
    assert stored.tradingview_session.checked
    assert stored.tradingview_session.valid
    await stack.post_webhook(created.webhook_token, idle_alert())

    grpc_events: list[resources_pb2.SignalEvent] = []
    sse_events: list[dict[str, Any]] = []
    stream = signals_b.SubscribeSignals(signal_service_pb2.SubscribeSignalsRequest(user_id=user_id))
    await stream.initial_metadata()
    sse_open = asyncio.Event()

    async def follow_grpc() -> None:
        async for event in stream:
            grpc_events.append(event)

    async def follow_sse() -> None:
        headers = {"authorization": f"Bearer {stack.key}"}
        async with (
            httpx.AsyncClient(base_url=stack.edge_url, timeout=httpx.Timeout(10.0, read=None)) as client,
            client.stream("GET", f"/api/users/{user_id}/events", headers=headers) as response,
        ):
            async for line in response.aiter_lines():
                if line.startswith(": stream open") or line == ":stream open":
                    sse_open.set()
                if line.startswith("data:"):
                    sse_events.append(json.loads(line.removeprefix("data:").strip()))

    followers = [asyncio.create_task(follow_grpc()), asyncio.create_task(follow_sse())]
    try:
        await asyncio.wait_for(sse_open.wait(), 30)
        revoked_at = datetime.now(UTC)
        stack.tradingview.revoked.add(sessionid)

        def invalid_in_grpc() -> bool:
            return any(
                e.type == SESSION_EVENT and e.tradingview_session.checked and not e.tradingview_session.valid
                for e in grpc_events
            )

        def invalid_in_sse() -> bool:
            return any(
                e["type"] == "tradingview_session_updated"
                and e["tradingview_session"]["checked"]
                and not e["tradingview_session"]["valid"]
                for e in sse_events
            )

        async def both() -> bool:
            return invalid_in_grpc() and invalid_in_sse()

        await eventually(both, "the invalid session event on both streams", stack)
    finally:
        stream.cancel()
        for task in followers:
            task.cancel()
        await asyncio.gather(*followers, return_exceptions=True)

    (event,) = [e for e in grpc_events if e.type == SESSION_EVENT]
    assert sessionid.encode() not in event.SerializeToString()
    assert all(sessionid not in json.dumps(e) for e in sse_events)
    user = await users.GetUser(user_service_pb2.GetUserRequest(user_id=user_id))
    assert user.tradingview_session.checked
    assert not user.tradingview_session.valid
    assert user.tradingview_session.changed_at.ToDatetime(tzinfo=UTC) >= revoked_at
    assert user.tradingview_session == event.tradingview_session


async def test_fresh_cookies_are_validated_at_once_and_bring_back_the_failed_captures(
    stack: Stack, users, signals_a
) -> None:
    created, stored = await new_user(users, resources_pb2.PLAN_BASIC, f"expired-{uuid.uuid4().hex[:8]}")
    assert stored.tradingview_session.checked
    assert not stored.tradingview_session.valid
    signal_ids = [
        (await stack.post_webhook(created.webhook_token, capturable_alert()))["signal_id"] for _ in range(2)
    ]

    async def all_have(status: int) -> bool:
        found = [
            await signals_a.GetSignal(signal_service_pb2.GetSignalRequest(signal_id=signal_id))
            for signal_id in signal_ids
        ]
        return all(signal.screenshot_status == status for signal in found)

    await eventually(lambda: all_have(FAILED), "captures failing for the expired session", stack)
    for signal_id in signal_ids:
        signal = await signals_a.GetSignal(signal_service_pb2.GetSignalRequest(signal_id=signal_id))
        assert signal.screenshot_error == "tradingview_session_invalid"

    fresh = f"sess-{uuid.uuid4().hex[:10]}"
    renewed = await users.SetTradingViewSession(
        user_service_pb2.SetTradingViewSessionRequest(
            user_id=created.user.user_id, sessionid=fresh, sessionid_sign="sign-fresh"
        )
    )
    assert renewed.tradingview_session.checked
    assert renewed.tradingview_session.valid
    await eventually(lambda: all_have(COMPLETED), "the re-queued captures completing", stack)
    # Both captures went out with the new cookies.
    assert len(await stack.requests_with(fresh, checks=False)) >= 2


async def test_each_user_is_checked_once_per_interval_with_two_workers_and_two_schedulers(
    stack: Stack, users
) -> None:
    sessionids = [f"sess-{uuid.uuid4().hex[:10]}" for _ in range(3)]
    for sessionid in sessionids:
        created, _ = await new_user(users, resources_pb2.PLAN_PRO, sessionid)
        await stack.post_webhook(created.webhook_token, idle_alert())

    async def several_checks_each() -> bool:
        counts = [len(await stack.requests_with(sessionid, checks=True)) for sessionid in sessionids]
        return min(counts) >= 4

    await eventually(several_checks_each, "four checks of every session", stack)
    for sessionid in sessionids:
        times = await stack.requests_with(sessionid, checks=True)
        gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
        # A user is due again one interval after their last result, and results come after requests.
        assert min(gaps) >= CHECK_INTERVAL_SECONDS, (sessionid, gaps)
    assert all(stack.processes[name].alive() for name in ("capture-1", "capture-2", "signal-a", "signal-b"))
