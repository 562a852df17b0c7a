"""`alerts demo`: the whole mission on one machine, from nothing, in a couple of minutes.

It starts everything `alerts dev` starts (embedded PostgreSQL and Redis when no URLs are configured, every
service as its own process, the local chart stub), creates a premium and a free user through UserService
with TradingView session cookies the stub accepts, fires a realistic mix of alerts at the real HTTP edge,
follows both users' SubscribeSignals streams while the captures complete, saves each screenshot as a PNG
and prints what became of every alert, including its Telegram delivery (the premium user has Telegram on;
the local Telegram stub plays the Bot API). The exit status is 0 only when every valid alert was stored and
captured, every malformed one was stored with its screenshot skipped, and every premium alert reached
Telegram.

The viewer (`/ui`) links carry an access token per user (UserService.CreateAccessToken): signed,
read-only, for that one user, accepted by the running services without any restart or configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import grpc
import httpx
from google.protobuf import struct_pb2

from alerts.demo_report import report, save_screenshots, short_id, telegram_alert
from alerts.dev import DevStack
from alerts.processes import free_port
from apidevs.alerts.v1 import (
    resources_pb2,
    signal_service_pb2,
    signal_service_pb2_grpc,
    user_service_pb2,
    user_service_pb2_grpc,
)
from mesh.auth import generate_key
from mesh.grpc import open_channel
from mesh.settings import CommonSettings

DEFAULT_TIMEOUT_SECONDS = 120.0
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

_STATUS = resources_pb2.ScreenshotStatus
# The premium demo user's Telegram chat (a group id, as a trader's channel would have).
DEMO_TELEGRAM_CHAT = "-1001234567890"
_FINISHED = frozenset((_STATUS.SCREENSHOT_STATUS_COMPLETED, _STATUS.SCREENSHOT_STATUS_FAILED))


@dataclass(frozen=True)
class DemoAlert:
    """One webhook call as TradingView would make it. `capturable` alerts must end with a screenshot."""

    label: str
    plan: str
    content_type: str
    body: bytes
    capturable: bool = True
    chart: str = ""


DEMO_ALERTS: tuple[DemoAlert, ...] = (
    DemoAlert(
        "APIDevs, Spanish",
        "premium",
        "text/plain; charset=utf-8",
        "🚨 ADX DEF [APIDEVS]\n📈 Señal: Divergencia Alcista\n🪙 Ticker: BINANCE:BTCUSDT\n"
        "💰 Precio: $67,890.50\n⏱️ Timeframe: 15\n🕒 Hora: 2026-11-27T14:30:00Z".encode(),
        chart="Xa1b2C3d",
    ),
    DemoAlert(
        "APIDevs, English",
        "premium",
        "text/plain; charset=utf-8",
        "🚨 RSI PRO+ [APIDEVS]\n📈 Signal: Oversold\n🪙 Ticker: NASDAQ:AAPL\n💰 Price: $189.32\n"
        "📊 RSI Value: 27.4\n⏱️ Timeframe: 60\n🕒 Time: 2026-11-27T14:31:00Z".encode(),
    ),
    DemoAlert(
        "JSON",
        "premium",
        "application/json",
        b'{"indicator": "Squeeze Momentum DEF [APIDEVS]", "ticker": "BINANCE:ETHUSDT", "price": "3456.78",'
        b' "signal": "Bullish Release", "interval": "5", "time": "2026-11-27T14:32:00Z", "momentum": "0.84"}',
    ),
    DemoAlert(
        "APIDevs, Spanish labels",
        "free",
        "text/plain; charset=utf-8",
        "Smart Money Zones [APIDEVS]\nSeñal: Toque de Zona de Demanda\nMoneda: OANDA:XAUUSD\n"
        "Precio: 2.315,40\nTimeframe: 240".encode(),
    ),
    DemoAlert("plain TradingView text", "free", "text/plain; charset=utf-8", b"ETHUSDT Crossing Up 3,500.00"),
    DemoAlert(
        "malformed binary",
        "free",
        "application/octet-stream",
        b"\xff\xfe\x00\x01\x02\x03\x04\x05\x9f\x92\x96\x00\x7f\x80",
        capturable=False,
    ),
)


@dataclass
class DemoUser:
    plan: str
    user_id: str
    webhook_url: str
    viewer_token: str


@dataclass
class Delivery:
    """One alert sent and what became of it."""

    number: int
    alert: DemoAlert
    user: DemoUser
    http_status: int = 0
    answer_ms: float = 0.0
    signal_id: str = ""
    signal: resources_pb2.Signal | None = None
    screenshot_png: bytes = b""
    screenshot_file: Path | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def status_name(self) -> str:
        if self.signal is None:
            return "not stored"
        return _STATUS.Name(self.signal.screenshot_status).removeprefix("SCREENSHOT_STATUS_").lower()


class Console:
    """Progress lines as they happen, flushed at once so `make demo` shows them live."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._started = time.monotonic()

    def say(self, message: str = "") -> None:
        print(message, file=self._out, flush=True)

    def step(self, message: str) -> None:
        self.say(f"[{time.monotonic() - self._started:6.1f}s] {message}")


def demo_settings(base: CommonSettings | None = None) -> CommonSettings:
    """The configured settings, except that a default port already taken is swapped for a free one.

    A newcomer may well run something on 8080 already; a port set explicitly is kept as it is.
    """
    settings = base or CommonSettings()
    explicit = settings.model_fields_set
    update: dict[str, object] = {}
    if "edge_port" not in explicit and _port_taken(settings.edge_port):
        update["edge_port"] = free_port()
    for name in ("signal_addr", "storage_addr"):
        address: str = getattr(settings, name)
        host, _, port = address.rpartition(":")
        if name not in explicit and _port_taken(int(port)):
            update[name] = f"{host}:{free_port()}"
    return settings.model_copy(update=update) if update else settings


def _port_taken(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM stops the demo the way Ctrl-C does, through the same clean-up."""
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    """A second Ctrl-C must not cut the clean-up short and leave processes behind."""
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def run_demo(
    settings: CommonSettings,
    *,
    out: TextIO = sys.stdout,
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    capture_workers: int = 1,
    stay: bool = False,
) -> int:
    """Runs the demo; returns the process exit status (0 all good, 1 something failed, 130 interrupted)."""
    console = Console(out)
    stack = DevStack(settings, capture_workers=capture_workers, on_progress=lambda m: console.step(f"  {m}"))
    with _sigterm_as_interrupt():
        try:
            console.step("starting PostgreSQL, Redis and every service (a first run initialises them)")
            stack.start()
            console.step(f"all services up; logs in {stack.log_dir}/")
            users = asyncio.run(_create_users(stack, console))
            deliveries = asyncio.run(_exercise(stack, users, console, timeout_seconds))
            save_screenshots(deliveries, settings.data_dir.resolve() / "demo" / _run_id())
            passed = report(stack, users, deliveries, console)
            if stay and not _stay_until_interrupted(stack, console):
                return 1
            return 0 if passed else 1
        except KeyboardInterrupt:
            console.say("\ninterrupted")
            return 130
        finally:
            console.step("stopping every process")
            with _signals_ignored():
                stack.stop()
            console.step("stopped")


def _stay_until_interrupted(stack: DevStack, console: Console) -> bool:
    """Keeps everything up for the viewer; False when a service died rather than the user stopping it."""
    console.say("\nEverything keeps running for the viewer. Press Ctrl-C to stop.")
    try:
        while all(process.alive() for process in stack.processes.values()):
            time.sleep(0.5)
    except KeyboardInterrupt:
        return True
    dead = ", ".join(name for name, process in stack.processes.items() if not process.alive())
    console.say(f"{dead} exited; see {stack.log_dir}/")
    return False


async def _create_users(stack: DevStack, console: Console) -> list[DemoUser]:
    run_id = _run_id()
    users = []
    async with open_channel(stack.signal_addr, stack.api_key) as channel:
        stub = user_service_pb2_grpc.UserServiceStub(channel)
        for plan in ("premium", "free"):
            # The premium user gets their alerts in Telegram (the stub plays the Bot API), chart included.
            preferences = struct_pb2.Struct()
            if plan == "premium":
                preferences.update({"telegram": {"chat_id": DEMO_TELEGRAM_CHAT, "with_screenshot": True}})
            created = await stub.CreateUser(
                user_service_pb2.CreateUserRequest(
                    external_id=f"demo-{plan}-{run_id}",
                    plan=resources_pb2.Plan.Value(f"PLAN_{plan.upper()}"),
                    default_chart_id=f"demo{plan.capitalize()}",
                    notification_preferences=preferences,
                ),
                timeout=10,
            )
            # The chart stub accepts any sessionid that does not start with "expired".
            await stub.SetTradingViewSession(
                user_service_pb2.SetTradingViewSessionRequest(
                    user_id=created.user.user_id,
                    sessionid=f"demo{plan}{generate_key()[3:19]}",
                    sessionid_sign=f"v1:{generate_key()[3:]}",
                ),
                timeout=10,
            )
            viewer = await stub.CreateAccessToken(
                user_service_pb2.CreateAccessTokenRequest(user_id=created.user.user_id), timeout=10
            )
            users.append(DemoUser(plan, created.user.user_id, created.webhook_url, viewer.access_token))
            telegram = f", Telegram chat {DEMO_TELEGRAM_CHAT}" if plan == "premium" else ""
            console.step(
                f"created {plan} user {created.user.user_id} with TradingView session cookies{telegram} "
                f"and a viewer token valid until {viewer.expires_at.ToDatetime(UTC):%H:%M} UTC"
            )
    return users


async def _exercise(
    stack: DevStack, users: list[DemoUser], console: Console, timeout_seconds: float
) -> list[Delivery]:
    by_plan = {user.plan: user for user in users}
    deliveries = [
        Delivery(number, alert, by_plan[alert.plan]) for number, alert in enumerate(DEMO_ALERTS, start=1)
    ]
    latest: dict[str, resources_pb2.Signal] = {}
    changed = asyncio.Event()

    def on_event(event: resources_pb2.SignalEvent) -> None:
        if event.HasField("signal"):
            latest[event.signal.signal_id] = event.signal
            changed.set()
            _narrate(event, deliveries, console)

    async with contextlib.AsyncExitStack() as resources:
        followers = []
        for user in users:
            channel = await resources.enter_async_context(open_channel(stack.signal_addr, user.viewer_token))
            follower = _Follower(signal_service_pb2_grpc.SignalServiceStub(channel), user.user_id, on_event)
            await follower.start()
            followers.append(follower)
        console.step("following SubscribeSignals for both users (with their access tokens)")

        async with httpx.AsyncClient(timeout=10) as client:
            console.step(f"firing {len(deliveries)} alerts at {stack.edge_url}")
            for delivery in deliveries:
                await _send(client, delivery, console)

            pending = {d.signal_id for d in deliveries if d.alert.capturable and d.signal_id}
            console.step(f"waiting up to {timeout_seconds:.0f} s for {len(pending)} screenshots")
            deadline = time.monotonic() + timeout_seconds
            while any(latest.get(s) is None or latest[s].screenshot_status not in _FINISHED for s in pending):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    console.step("gave up waiting; some captures did not finish")
                    break
                changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), timeout=min(remaining, 5.0))
            for follower in followers:
                await follower.stop()

            # Capture failures can use up the screenshot wait; Telegram still gets its own short one.
            await _wait_for_telegram(stack, deliveries, console, max(deadline, time.monotonic() + 45))
            await _collect(stack, deliveries, client)
    return deliveries


class _Follower:
    """One user's SubscribeSignals stream, resumed from its last cursor if it breaks."""

    def __init__(
        self,
        stub: signal_service_pb2_grpc.SignalServiceAsyncStub,
        user_id: str,
        on_event: Callable[[resources_pb2.SignalEvent], None],
    ) -> None:
        self._stub = stub
        self._user_id = user_id
        self._on_event = on_event
        self._cursor = ""
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._follow())
        # Alerts go out only once the stream is accepted, so the demo sees every event they cause.
        subscribed = asyncio.create_task(self._subscribed.wait())
        await asyncio.wait((self._task, subscribed), timeout=15, return_when=asyncio.FIRST_COMPLETED)
        subscribed.cancel()
        if self._task.done():
            self._task.result()
        if not self._subscribed.is_set():
            raise TimeoutError(f"SubscribeSignals for user {self._user_id} was not accepted within 15 s")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _follow(self) -> None:
        while True:
            call = self._stub.SubscribeSignals(
                signal_service_pb2.SubscribeSignalsRequest(user_id=self._user_id, after_cursor=self._cursor)
            )
            try:
                metadata = dict(await call.initial_metadata() or ())
                if "x-start-cursor" in metadata:
                    self._cursor = self._cursor or str(metadata["x-start-cursor"])
                    self._subscribed.set()
                async for event in call:
                    self._cursor = event.cursor
                    self._on_event(event)
            except grpc.aio.AioRpcError as exc:
                if exc.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                    raise
            finally:
                call.cancel()
            await asyncio.sleep(0.5)


async def _send(client: httpx.AsyncClient, delivery: Delivery, console: Console) -> None:
    alert = delivery.alert
    url = delivery.user.webhook_url + (f"?chart={alert.chart}" if alert.chart else "")
    started = time.perf_counter()
    try:
        answer = await client.post(url, content=alert.body, headers={"content-type": alert.content_type})
    except httpx.HTTPError as exc:
        delivery.problems.append(f"webhook call failed: {exc!r}")
        console.step(f"  #{delivery.number} {alert.plan:<7} {alert.label:<24} failed: {exc!r}")
        return
    delivery.answer_ms = (time.perf_counter() - started) * 1000
    delivery.http_status = answer.status_code
    body = answer.json() if answer.headers.get("content-type", "").startswith("application/json") else {}
    delivery.signal_id = str(body.get("signal_id", ""))
    if answer.status_code != 200 or not delivery.signal_id:
        delivery.problems.append(f"webhook answered {answer.status_code}: {answer.text[:200]}")
    console.step(
        f"  #{delivery.number} {alert.plan:<7} {alert.label:<24} -> HTTP {answer.status_code} in "
        f"{delivery.answer_ms:.0f} ms, signal {short_id(delivery.signal_id)}, "
        f"screenshot {body.get('screenshot_status', '?')}"
    )


def _narrate(event: resources_pb2.SignalEvent, deliveries: list[Delivery], console: Console) -> None:
    delivery = next((d for d in deliveries if d.signal_id == event.signal.signal_id), None)
    if delivery is None or event.type != resources_pb2.SIGNAL_EVENT_TYPE_SCREENSHOT_UPDATED:
        return
    status = _STATUS.Name(event.signal.screenshot_status).removeprefix("SCREENSHOT_STATUS_").lower()
    reason = f" ({event.signal.screenshot_error})" if event.signal.screenshot_error else ""
    console.step(
        f"  #{delivery.number} {delivery.alert.plan:<7} {event.signal.ticker:<18} screenshot {status}{reason}"
    )


def _run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S")


async def _collect(stack: DevStack, deliveries: list[Delivery], client: httpx.AsyncClient) -> None:
    """Reads every signal back, with a fresh screenshot URL, and downloads each screenshot through it."""
    async with open_channel(stack.signal_addr, stack.api_key) as channel:
        stub = signal_service_pb2_grpc.SignalServiceStub(channel)
        for delivery in deliveries:
            if not delivery.signal_id:
                continue
            try:
                delivery.signal = await stub.GetSignal(
                    signal_service_pb2.GetSignalRequest(signal_id=delivery.signal_id), timeout=10
                )
            except grpc.aio.AioRpcError as exc:
                delivery.problems.append(f"GetSignal: {exc.code().name} {exc.details()}")
                continue
            if delivery.signal.screenshot_url:
                answer = await client.get(delivery.signal.screenshot_url)
                if answer.status_code == 200 and answer.content.startswith(PNG_MAGIC):
                    delivery.screenshot_png = answer.content
                else:
                    delivery.problems.append(f"screenshot download answered {answer.status_code}, not a PNG")


async def _wait_for_telegram(
    stack: DevStack, deliveries: list[Delivery], console: Console, deadline: float
) -> None:
    """Waits (until `deadline`) for the Telegram alert of every signal of a user with Telegram on."""
    expected = [d.signal_id for d in deliveries if d.alert.plan == "premium" and d.signal_id]
    console.step(f"waiting for {len(expected)} Telegram deliveries (the Telegram stub plays the Bot API)")
    settled = (
        resources_pb2.DELIVERY_STATUS_DELIVERED,
        resources_pb2.DELIVERY_STATUS_FAILED,
        resources_pb2.DELIVERY_STATUS_DEAD,
    )
    async with open_channel(stack.signal_addr, stack.api_key) as channel:
        stub = signal_service_pb2_grpc.SignalServiceStub(channel)
        while time.monotonic() < deadline:
            rows = [
                await stub.GetSignal(signal_service_pb2.GetSignalRequest(signal_id=signal_id), timeout=10)
                for signal_id in expected
            ]
            alerts = [telegram_alert(row) for row in rows]
            if all(alert is not None and alert.status in settled for alert in alerts):
                return
            await asyncio.sleep(0.5)
    console.step("gave up waiting; some Telegram deliveries did not finish")
