"""The capture pipeline end to end: IngestWebhook on the real signal service stores a signal, its outbox
relay sends the capture job through Redis, a real `alerts serve capture` process claims it, drives
Chromium against the chart stub, uploads the PNG to the real storage service and reports back; the tests
read the outcome through GetSignal/ListSignals, the storage service and the stub's request log.

Each test gets its own Redis namespace and its own in-process signal service (settings below), and this
module its own database: the session-wide signal server relays `database_url`'s outbox into another
namespace and would take these captures. Users set their cookies with SetTradingViewSession while a
worker runs, so the session check that may follow (issue 13) is over, and off the stub's log, before the
first webhook.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import os
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import dramatiq
import pytest
import redis
from dramatiq.brokers.redis import RedisBroker
from sqlalchemy.engine import make_url

from alerts.processes import ManagedProcess, alerts_argv, free_port
from apidevs.alerts.v1 import (
    resources_pb2,
    signal_service_pb2,
    signal_service_pb2_grpc,
    storage_service_pb2,
    storage_service_pb2_grpc,
    user_service_pb2,
    user_service_pb2_grpc,
)
from capture_service.browser import BrowserPool
from capture_service.capture import TradingViewSession, capture_chart, chart_url
from capture_service.chart_stub import LEFT_TOOLBAR_PX, OVERLAY_RGB, TOP_TOOLBAR_PX
from mesh.crypto import generate_key_entry
from mesh.grpc import create_server, start
from mesh.queues import capture_workers_key, dramatiq_namespace
from mesh.settings import CommonSettings
from signal_service.captures.service import capture_job
from signal_service.main import SERVICE_NAMES, register, signal_app
from signal_service.migrate import upgrade
from signal_service.settings import SignalSettings
from storage_service.service import StorageService, build_service
from storage_service.servicer import SERVICE_NAME as STORAGE_SERVICE_NAME
from storage_service.servicer import StorageServicer
from storage_service.settings import StorageSettings
from tests.conftest import settings_from
from tests.integration.capture_service.conftest import (
    CANDLE_DOWN,
    CANDLE_UP,
    LEGEND_BOX,
    LEGEND_TEXT,
    VIEWPORT,
    ChartStub,
    count,
    picture,
)
from tests.keys import SYSTEM_KEYS, open_system_channel
from tests.support import eventually, now_timestamp

COOKIE_KEY = generate_key_entry("capture-test")
COMPLETED = resources_pb2.SCREENSHOT_STATUS_COMPLETED
FAILED = resources_pb2.SCREENSHOT_STATUS_FAILED
PLANS = {
    "free": resources_pb2.PLAN_FREE,
    "basic": resources_pb2.PLAN_BASIC,
    "pro": resources_pb2.PLAN_PRO,
    "premium": resources_pb2.PLAN_PREMIUM,
}
# Quotas and rate limits are not what these tests are about: no plan refuses their webhooks.
UNLIMITED_PLANS = {
    plan: {"signals_quota": 1_000_000, "rate_per_second": 1000, "rate_burst": 1000} for plan in PLANS
}
LAYOUT = "layoutA"


def admin_dsn(database_url: str) -> str:
    """The asyncpg form of a SQLAlchemy asyncpg URL (the same server, database and socket)."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


async def execute(dsn: str, statement: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@pytest.fixture(scope="module")
def capture_database_url(database_url: str) -> Iterator[str]:
    """A migrated database of this module's own, on the session's PostgreSQL server."""
    name = f"alerts_capture_{uuid.uuid4().hex[:10]}"
    asyncio.run(execute(admin_dsn(database_url), f'CREATE DATABASE "{name}"'))
    url = make_url(database_url).set(database=name).render_as_string(hide_password=False)
    upgrade(url)
    yield url
    asyncio.run(execute(admin_dsn(database_url), f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="module")
async def storage_addr(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """The storage service (local-disk backend) as a real gRPC server in this process."""
    settings = StorageSettings(
        api_keys=SYSTEM_KEYS.entries(), storage_local_dir=tmp_path_factory.mktemp("objects")
    )
    storage: StorageService = build_service(settings)
    server = create_server(settings)
    storage_service_pb2_grpc.add_StorageServiceServicer_to_server(StorageServicer(storage), server)
    port, _ = await start(server, address="127.0.0.1:0", service_names=[STORAGE_SERVICE_NAME])
    yield f"127.0.0.1:{port}"
    await server.stop(1)
    await storage.close()


@dataclass(frozen=True)
class Trader:
    user_id: str
    webhook_token: str
    cookies: dict[str, str]


@dataclass
class CaptureSystem:
    """The signal service, storage and chart stub of one test, and the capture workers it starts."""

    signal_addr: str
    storage_addr: str
    # The workers' key, which the worker processes present.
    service_key: str
    redis_url: str
    namespace: str
    chart_stub: ChartStub
    log_dir: Path
    signals: signal_service_pb2_grpc.SignalServiceStub
    users: user_service_pb2_grpc.UserServiceStub
    storage: storage_service_pb2_grpc.StorageServiceStub
    # Starts one more gRPC server for the same signal service at an address; returns it, for the test
    # to stop (a signal service that workers could not reach until then).
    serve_also: Callable[[str], Awaitable[Any]]
    processes: list[ManagedProcess] = field(default_factory=list)
    _prices: Iterator[int] = field(default_factory=lambda: itertools.count(100))

    # --- the platform's side: users, webhooks, reads -----------------------------------------------

    async def add_trader(self, plan: str, cookies: tuple[str, str] | None = None) -> Trader:
        created = await self.users.CreateUser(
            user_service_pb2.CreateUserRequest(plan=PLANS[plan], default_chart_id=LAYOUT)
        )
        user_id = created.user.user_id
        stored: dict[str, str] = {}
        if cookies is not None:
            sessionid, sessionid_sign = cookies
            await self.users.SetTradingViewSession(
                user_service_pb2.SetTradingViewSessionRequest(
                    user_id=user_id, sessionid=sessionid, sessionid_sign=sessionid_sign
                )
            )
            stored = {"sessionid": sessionid, "sessionid_sign": sessionid_sign}
        return Trader(user_id=user_id, webhook_token=created.webhook_token, cookies=stored)

    async def alert(self, trader: Trader, ticker: str, interval: str = "15", *, request_id: str = "") -> str:
        """Posts a TradingView alert as the edge does; returns the new signal's id."""
        # A different price each time: an identical body within the dedupe window is a re-send.
        body = (
            "🚨 ADX DEF [APIDEVS]\n📈 Señal: Divergencia Alcista\n"
            f"🪙 Ticker: {ticker}\n💰 Precio: ${next(self._prices)}.50\n⏱️ Timeframe: {interval}\n"
        ).encode()
        answer = await self.signals.IngestWebhook(
            signal_service_pb2.IngestWebhookRequest(
                webhook_token=trader.webhook_token,
                body=body,
                content_type="text/plain",
                source_ip="203.0.113.7",
                received_at=now_timestamp(),
            ),
            metadata=(("x-request-id", request_id),) if request_id else None,
        )
        assert not answer.duplicate
        assert answer.screenshot_status == resources_pb2.SCREENSHOT_STATUS_PENDING
        return answer.signal_id

    async def signal(self, signal_id: str) -> resources_pb2.Signal:
        return await self.signals.GetSignal(signal_service_pb2.GetSignalRequest(signal_id=signal_id))

    async def finished(self, signal_id: str, *, within: float) -> resources_pb2.Signal:
        """The signal once its capture is COMPLETED or FAILED."""
        try:
            async with asyncio.timeout(within):
                while True:
                    found = await self.signal(signal_id)
                    if found.screenshot_status in (COMPLETED, FAILED):
                        return found
                    await asyncio.sleep(0.1)
        except TimeoutError:
            raise AssertionError(
                f"capture {signal_id} not finished after {within:g} s\nworker logs:\n{self.worker_log()}"
            ) from None

    async def read_object(self, key: str) -> tuple[storage_service_pb2.ObjectInfo, bytes]:
        info, chunks = storage_service_pb2.ObjectInfo(), []
        async for part in self.storage.GetObject(storage_service_pb2.GetObjectRequest(key=key)):
            if part.HasField("info"):
                info = part.info
            else:
                chunks.append(part.chunk)
        return info, b"".join(chunks)

    async def settle(self, within: float = 60) -> None:
        """Until nothing is left to do: the outbox is sent, and every queued or running job acknowledged."""
        try:
            async with asyncio.timeout(within):
                while True:
                    status = await self.signals.GetServiceStatus(signal_service_pb2.GetServiceStatusRequest())
                    if status.outbox_backlog == 0 and self.unacknowledged() == 0:
                        return
                    await asyncio.sleep(0.1)
        except TimeoutError:
            raise AssertionError(f"jobs still open after {within:g} s\n{self.worker_log()}") from None

    async def relayed(self, within: float = 30) -> None:
        """Until the outbox relay has sent every committed job to Redis."""
        async with asyncio.timeout(within):
            while True:
                status = await self.signals.GetServiceStatus(signal_service_pb2.GetServiceStatusRequest())
                if status.outbox_backlog == 0:
                    return
                await asyncio.sleep(0.05)

    # --- the worker's side: processes and Dramatiq's keys -------------------------------------------

    def worker_env(self, worker_id: str, **overrides: str) -> dict[str, str]:
        return {
            **{key: value for key, value in os.environ.items() if not key.startswith("ALERTS_")},
            "ALERTS_ENV": "dev",
            "ALERTS_REDIS_URL": self.redis_url,
            "ALERTS_REDIS_NAMESPACE": self.namespace,
            "ALERTS_SIGNAL_ADDR": self.signal_addr,
            "ALERTS_STORAGE_ADDR": self.storage_addr,
            "ALERTS_SERVICE_API_KEY": self.service_key,
            "ALERTS_COOKIE_KEYS": COOKIE_KEY,
            "ALERTS_TRADINGVIEW_URL": self.chart_stub.base_url,
            "ALERTS_DATA_DIR": str(self.log_dir),
            "ALERTS_CAPTURE_WORKER_ID": worker_id,
            "ALERTS_CAPTURE_VIEWPORT_WIDTH": str(VIEWPORT[0]),
            "ALERTS_CAPTURE_VIEWPORT_HEIGHT": str(VIEWPORT[1]),
            **{f"ALERTS_{key.upper()}": value for key, value in overrides.items()},
        }

    async def start_worker(self, worker_id: str, **overrides: str) -> ManagedProcess:
        """`alerts serve capture`, once it has registered its heartbeat (its Chromium is up by then)."""
        client = redis.Redis.from_url(self.redis_url)
        workers_key = capture_workers_key(CommonSettings(redis_namespace=self.namespace))
        process = ManagedProcess(
            worker_id,
            alerts_argv("serve", "capture"),
            self.worker_env(worker_id, **overrides),
            ready=lambda: client.zscore(workers_key, worker_id) is not None,
            log_path=self.log_dir / f"{worker_id}.log",
        )
        process.start()
        self.processes.append(process)
        try:
            await asyncio.to_thread(process.wait_ready, 90)
        finally:
            client.close()
        return process

    def worker_log(self) -> str:
        return "\n".join(path.read_text()[-4000:] for path in sorted(self.log_dir.glob("*.log")))

    def log_entries(self, message: str) -> list[dict[str, Any]]:
        """The workers' JSON log lines with this message."""
        entries = []
        for path in sorted(self.log_dir.glob("*.log")):
            for line in path.read_text().splitlines():
                if line.startswith("{") and f'"msg": "{message}"' in line:
                    entries.append(json.loads(line))
        return entries

    def redis_call(self, call: Callable[[redis.Redis], Any]) -> Any:
        client = redis.Redis.from_url(self.redis_url)
        try:
            return call(client)
        finally:
            client.close()

    @property
    def dramatiq_prefix(self) -> str:
        return dramatiq_namespace(CommonSettings(redis_namespace=self.namespace))

    def unacknowledged(self, queue: str = "") -> int:
        """Messages enqueued, delayed or running and not yet acknowledged (dead letters excluded)."""
        pattern = f"{self.dramatiq_prefix}:{queue or '*'}*.msgs"

        def total(client: redis.Redis) -> int:
            names = [name for name in client.scan_iter(match=pattern) if not name.endswith(b".XQ.msgs")]
            return sum(int(client.hlen(name)) for name in names)

        return self.redis_call(total)

    def delayed(self, queue: str) -> int:
        """Retries waiting out their backoff."""
        return self.redis_call(lambda client: int(client.hlen(f"{self.dramatiq_prefix}:{queue}.DQ.msgs")))

    def dead_letters(self, queue: str) -> int:
        return self.redis_call(lambda client: int(client.zcard(f"{self.dramatiq_prefix}:{queue}.XQ")))

    def deliver_again(self, signal_id: str, plan: str) -> None:
        """Sends the capture message the relay sent for this signal a second time, as a relay that died
        between enqueueing and deleting its outbox row does."""
        job = capture_job(uuid.UUID(signal_id), plan)
        broker = RedisBroker(url=self.redis_url, namespace=self.dramatiq_prefix, middleware=[])
        try:
            broker.enqueue(
                dramatiq.Message(
                    queue_name=job.queue_name,
                    actor_name=job.actor_name,
                    args=tuple(job.args),
                    kwargs={},
                    options=dict(job.options),
                )
            )
        finally:
            broker.close()

    def is_registered(self, worker_id: str) -> bool:
        workers_key = capture_workers_key(CommonSettings(redis_namespace=self.namespace))
        return self.redis_call(lambda client: client.zscore(workers_key, worker_id)) is not None


@pytest.fixture
async def system(
    capture_database_url: str,
    redis_url: str,
    storage_addr: str,
    chart_stub: ChartStub,
    tmp_path: Path,
) -> AsyncIterator[CaptureSystem]:
    namespace = f"test-capture-{uuid.uuid4().hex[:10]}"
    settings = settings_from(
        {"ALERTS_ENV": "dev"},
        SignalSettings,
        database_url=capture_database_url,
        redis_url=redis_url,
        redis_namespace=namespace,
        api_keys=SYSTEM_KEYS.entries(),
        service_api_key=SYSTEM_KEYS.worker,
        cookie_keys=[COOKIE_KEY],
        storage_addr=storage_addr,
        signal_addr="127.0.0.1:0",
        data_dir=tmp_path / "signal",
        plan_limits=UNLIMITED_PLANS,
    )
    async with signal_app(settings) as app:
        server = create_server(settings)
        register(server, app)
        app.start_background()
        port, _ = await start(server, address="127.0.0.1:0", service_names=SERVICE_NAMES)
        signal_channel = open_system_channel(f"127.0.0.1:{port}")
        storage_channel = open_system_channel(storage_addr)
        extra_servers: list[Any] = []

        async def serve_also(address: str) -> Any:
            extra = create_server(settings)
            register(extra, app)
            await start(extra, address=address, service_names=SERVICE_NAMES)
            extra_servers.append(extra)
            return extra

        harness = CaptureSystem(
            signal_addr=f"127.0.0.1:{port}",
            storage_addr=storage_addr,
            service_key=SYSTEM_KEYS.worker,
            redis_url=redis_url,
            namespace=namespace,
            chart_stub=chart_stub,
            log_dir=tmp_path,
            signals=signal_service_pb2_grpc.SignalServiceStub(signal_channel),
            users=user_service_pb2_grpc.UserServiceStub(signal_channel),
            storage=storage_service_pb2_grpc.StorageServiceStub(storage_channel),
            serve_also=serve_also,
        )
        try:
            yield harness
        finally:
            await asyncio.gather(*(asyncio.to_thread(process.stop) for process in harness.processes))
            for extra in extra_servers:
                await extra.stop(1)
            await signal_channel.close()
            await storage_channel.close()
            await server.stop(1)

    def drop_namespace(client: redis.Redis) -> None:
        keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
        if keys:
            client.delete(*keys)

    harness.redis_call(drop_namespace)


async def ready_for_webhooks(system: CaptureSystem) -> None:
    """Once the session checks SetTradingViewSession queued are over, the stub's log starts empty."""
    await system.settle()
    await system.chart_stub.clear()


async def test_a_webhook_becomes_a_completed_capture_of_its_tickers_chart(
    system: CaptureSystem, chart_stub: ChartStub, shared_pool: BrowserPool
) -> None:
    await system.start_worker("worker-a")
    trader = await system.add_trader("premium", ("session-1", "sign-1"))
    await ready_for_webhooks(system)

    signal_id = await system.alert(trader, "BINANCE:BTCUSDT", "15", request_id="req-capture-e2e")
    captured = await system.finished(signal_id, within=60)

    assert (captured.screenshot_status, captured.screenshot_error) == (COMPLETED, "")
    created = captured.created_at.ToDatetime(dt.UTC)
    key = f"screenshots/{trader.user_id}/{created:%Y}/{created:%m}/{signal_id}.png"
    assert captured.screenshot_object_key == key
    assert captured.screenshot_url, "a COMPLETED signal links its screenshot"
    listed = await system.signals.ListSignals(signal_service_pb2.ListSignalsRequest(user_id=trader.user_id))
    assert [
        (entry.signal_id, entry.screenshot_status, entry.screenshot_object_key) for entry in listed.signals
    ] == [(signal_id, COMPLETED, key)]
    info, png = await system.read_object(key)
    assert (info.content_type, info.size_bytes) == ("image/png", len(png))
    image = picture(png)
    assert image.size == (VIEWPORT[0] - LEFT_TOOLBAR_PX, VIEWPORT[1] - TOP_TOOLBAR_PX)
    assert len(set(image.get_flattened_data())) > 50, "the screenshot is nearly blank"
    assert count(image, CANDLE_UP) > 1000
    assert count(image, CANDLE_DOWN) > 1000
    assert count(image.crop(LEGEND_BOX), LEGEND_TEXT) > 50, "no legend with the ticker"
    assert count(image, OVERLAY_RGB) == 0
    (received,) = await chart_stub.requests()
    assert received["path"] == f"/chart/{LAYOUT}/"
    assert received["query"] == {"symbol": "BINANCE:BTCUSDT", "interval": "15"}
    assert received["cookies"] == trader.cookies
    (finish,) = [entry for entry in system.log_entries("capture finished") if entry["signal_id"] == signal_id]
    assert (finish["outcome"], finish["request_id"]) == ("success", "req-capture-e2e")
    # The stub draws the same picture for the same URL: the stored one is this ticker's chart.
    reference = await capture_chart(
        shared_pool,
        chart_url(chart_stub.base_url, LAYOUT, "BINANCE:BTCUSDT", "15"),
        TradingViewSession(**trader.cookies),
        timeout_seconds=20,
    )
    assert picture(reference.png).tobytes() == image.tobytes()


async def test_a_redelivered_job_for_a_finished_capture_does_nothing(
    system: CaptureSystem, chart_stub: ChartStub
) -> None:
    await system.start_worker("worker-a")
    trader = await system.add_trader("free", ("session-1", "sign-1"))
    await ready_for_webhooks(system)
    signal_id = await system.alert(trader, "NASDAQ:AAPL")
    first = await system.finished(signal_id, within=60)
    assert first.screenshot_status == COMPLETED, first.screenshot_error

    system.deliver_again(signal_id, "free")
    await eventually(lambda: system.unacknowledged("capture.free") == 0, what="the ack", within=30)

    assert [entry["signal_id"] for entry in system.log_entries("capture skipped")] == [signal_id]
    again = await system.signal(signal_id)
    # The capture is as the first delivery left it (screenshot_url is signed afresh on every read).
    assert [
        (
            entry.screenshot_status,
            entry.screenshot_object_key,
            entry.screenshot_completed_at,
            entry.updated_at,
        )
        for entry in (first, again)
    ] == [(COMPLETED, first.screenshot_object_key, first.screenshot_completed_at, first.updated_at)] * 2
    assert len(await chart_stub.requests()) == 1
    assert system.dead_letters("capture.free") == 0


@pytest.mark.parametrize(
    ("cookies", "reason"),
    [(("expired-2025", "sign-1"), "tradingview_session_invalid"), (None, "tradingview_session_missing")],
    ids=["logged-out", "no-session"],
)
async def test_session_problems_fail_at_once_without_retries(
    system: CaptureSystem, chart_stub: ChartStub, cookies: tuple[str, str] | None, reason: str
) -> None:
    await system.start_worker("worker-a")
    trader = await system.add_trader("premium", cookies)
    await ready_for_webhooks(system)

    signal_id = await system.alert(trader, "BINANCE:BTCUSDT")
    failed = await system.finished(signal_id, within=60)
    await eventually(lambda: system.unacknowledged("capture.premium") == 0, what="the ack", within=30)

    assert (failed.screenshot_status, failed.screenshot_error, failed.screenshot_object_key) == (
        FAILED,
        reason,
        "",
    )
    assert system.delayed("capture.premium") == 0, "a retry was scheduled"
    assert system.dead_letters("capture.premium") == 0
    # One visit to TradingView when there are cookies to show it, none without.
    assert [entry["logged_in"] for entry in await chart_stub.requests()] == ([False] if cookies else [])
    session = (
        await system.users.GetUser(user_service_pb2.GetUserRequest(user_id=trader.user_id))
    ).tradingview_session
    if cookies is None:
        assert not session.configured
    else:
        assert (session.configured, session.checked, session.valid) == (True, True, False)


async def test_a_hanging_chart_is_retried_three_times_then_failed_and_dead_lettered(
    system: CaptureSystem, chart_stub: ChartStub
) -> None:
    # Shorter than production (20 s budget in a 30 s limit, backoff 2-16 s) to keep the suite fast; the
    # retry count is the production default.
    await system.start_worker(
        "worker-a",
        capture_timeout_seconds="2",
        capture_time_limit_seconds="8",
        capture_min_backoff_ms="100",
        capture_max_backoff_ms="400",
    )
    trader = await system.add_trader("basic", ("session-1", "sign-1"))
    await ready_for_webhooks(system)
    await chart_stub.configure(mode="hang")

    signal_id = await system.alert(trader, "BINANCE:BTCUSDT")
    failed = await system.finished(signal_id, within=90)

    assert (failed.screenshot_status, failed.screenshot_error) == (FAILED, "timeout")
    received = await chart_stub.requests()
    assert [entry["query"]["symbol"] for entry in received] == ["BINANCE:BTCUSDT"] * 4, "1 try + 3 retries"
    await eventually(lambda: system.dead_letters("capture.basic") == 1, what="the dead letter", within=30)


# The worker reaches the signal service only at an address where nothing listens until the test says so.
UNREACHABLE_FOR_NOW = {
    "capture_max_retries": "0",
    "capture_infrastructure_min_backoff_ms": "200",
    "capture_infrastructure_max_backoff_ms": "500",
}


async def test_a_job_that_cannot_reach_the_signal_service_waits_without_using_a_retry(
    system: CaptureSystem, chart_stub: ChartStub
) -> None:
    later_addr = f"127.0.0.1:{free_port()}"
    # No retries at all: before, the first unreachable claim would have failed the capture for good.
    await system.start_worker("worker-a", signal_addr=later_addr, **UNREACHABLE_FOR_NOW)
    trader = await system.add_trader("pro", ("session-1", "sign-1"))
    signal_id = await system.alert(trader, "BINANCE:BTCUSDT")

    def waits() -> list[dict[str, Any]]:
        return [
            entry
            for entry in system.log_entries("capture waiting for a dependency")
            if entry["signal_id"] == signal_id
        ]

    await eventually(lambda: len(waits()) >= 3, what="the job to wait for the signal service", within=60)
    assert {entry["reason"] for entry in waits()} == {"signal_unavailable"}
    await system.serve_also(later_addr)
    captured = await system.finished(signal_id, within=60)

    assert (captured.screenshot_status, captured.screenshot_error) == (COMPLETED, "")
    assert system.dead_letters("capture.pro") == 0


async def test_an_upload_that_finds_storage_unavailable_waits_without_using_a_retry(
    system: CaptureSystem, chart_stub: ChartStub, service_key: str, tmp_path: Path, capture_database_url: str
) -> None:
    later_addr = f"127.0.0.1:{free_port()}"
    await system.start_worker("worker-a", storage_addr=later_addr, **UNREACHABLE_FOR_NOW)
    trader = await system.add_trader("premium", ("session-1", "sign-1"))
    signal_id = await system.alert(trader, "NASDAQ:AAPL")

    def waits() -> list[dict[str, Any]]:
        return [
            entry
            for entry in system.log_entries("capture waiting for a dependency")
            if entry["signal_id"] == signal_id
        ]

    await eventually(lambda: len(waits()) >= 2, what="the job to wait for the storage service", within=60)
    assert {entry["reason"] for entry in waits()} == {"storage_unavailable"}
    settings = StorageSettings(api_keys=SYSTEM_KEYS.entries(), storage_local_dir=tmp_path / "later-objects")
    storage: StorageService = build_service(settings)
    server = create_server(settings)
    storage_service_pb2_grpc.add_StorageServiceServicer_to_server(StorageServicer(storage), server)
    await start(server, address=later_addr, service_names=[STORAGE_SERVICE_NAME])
    try:
        captured = await system.finished(signal_id, within=60)
    finally:
        await server.stop(1)
        await storage.close()

    assert (captured.screenshot_status, captured.screenshot_error) == (COMPLETED, "")
    stored = [path for path in (tmp_path / "later-objects").rglob("*") if path.is_file()]
    assert stored, "the screenshot went to the storage service that came up late"
    assert system.dead_letters("capture.premium") == 0
    # Every delivery after a wait claimed again, resuming the claim the wait interrupted: one attempt.
    connection = await asyncpg.connect(admin_dsn(capture_database_url))
    try:
        attempts, claims = await connection.fetchrow(
            "SELECT attempts, claim FROM screenshots WHERE signal_id = $1", uuid.UUID(signal_id)
        )
    finally:
        await connection.close()
    assert attempts == 1
    assert claims >= 3


async def test_a_job_past_its_infrastructure_deadline_fails_and_its_report_is_held_until_recorded(
    system: CaptureSystem, chart_stub: ChartStub
) -> None:
    later_addr = f"127.0.0.1:{free_port()}"
    await system.start_worker(
        "worker-a",
        signal_addr=later_addr,
        capture_infrastructure_deadline_seconds="2",
        **UNREACHABLE_FOR_NOW,
    )
    trader = await system.add_trader("basic", ("session-1", "sign-1"))
    signal_id = await system.alert(trader, "BINANCE:BTCUSDT")

    def held() -> list[dict[str, Any]]:
        return [
            entry for entry in system.log_entries("capture report held") if entry["signal_id"] == signal_id
        ]

    # Past the deadline the worker decides FAILED, but cannot tell the signal service: it keeps the report.
    await eventually(lambda: len(held()) >= 2, what="the FAILED report to be held", within=60)
    assert (await system.signal(signal_id)).screenshot_status not in (COMPLETED, FAILED)
    await system.serve_also(later_addr)
    failed = await system.finished(signal_id, within=60)

    assert (failed.screenshot_status, failed.screenshot_error) == (FAILED, "infrastructure_unavailable")
    started = [entry for entry in system.log_entries("capture started") if entry["signal_id"] == signal_id]
    assert started == [], "the browser was never used"
    await eventually(lambda: system.unacknowledged("capture.basic") == 0, what="the last ack", within=30)
    assert system.dead_letters("capture.basic") == 0


async def test_an_attempt_over_the_time_limit_is_interrupted_and_reported(
    system: CaptureSystem, capture_database_url: str, chart_stub: ChartStub
) -> None:
    trader = await system.add_trader("pro")
    signal_id = await system.alert(trader, "BINANCE:BTCUSDT")
    await system.relayed()
    # The signal service cannot answer ClaimCapture while another transaction holds the signal's row (a
    # long migration, an operator's session): the attempt outlives its time limit waiting for it.
    blocker = await asyncpg.connect(admin_dsn(capture_database_url))
    try:
        locking = blocker.transaction()
        await locking.start()
        await blocker.execute("SELECT 1 FROM signals WHERE id = $1 FOR UPDATE", uuid.UUID(signal_id))
        # Shorter than production's 30 s limit to keep the suite fast; no retries, so one attempt decides.
        await system.start_worker(
            "worker-a", capture_timeout_seconds="2", capture_time_limit_seconds="3", capture_max_retries="0"
        )
        await eventually(
            lambda: bool(system.log_entries("capture failed after its last retry")),
            what="the time limit",
            within=60,
        )
        await locking.rollback()
    finally:
        await blocker.close()

    failed = await system.finished(signal_id, within=60)

    assert (failed.screenshot_status, failed.screenshot_error) == (FAILED, "timeout")
    assert await chart_stub.requests() == []
    await eventually(lambda: system.dead_letters("capture.pro") == 1, what="the dead letter", within=30)


async def test_two_users_jobs_at_once_each_carry_only_their_own_cookies(
    system: CaptureSystem, chart_stub: ChartStub
) -> None:
    await system.start_worker("worker-a")
    alice = await system.add_trader("premium", ("alice-session", "alice-sign"))
    bob = await system.add_trader("free", ("bob-session", "bob-sign"))
    await ready_for_webhooks(system)
    await chart_stub.configure(render_delay_ms=4000)

    by_ticker = {"BINANCE:BTCUSDT": alice, "NASDAQ:AAPL": bob}
    signal_ids = [await system.alert(trader, ticker) for ticker, trader in by_ticker.items()]
    captured = [await system.finished(signal_id, within=60) for signal_id in signal_ids]

    assert [entry.screenshot_status for entry in captured] == [COMPLETED, COMPLETED]
    received = await chart_stub.requests()
    assert sorted(entry["query"]["symbol"] for entry in received) == sorted(by_ticker)
    for entry in received:
        assert entry["cookies"] == by_ticker[entry["query"]["symbol"]].cookies
    # Both were in the browser at once: each chart was requested before either capture completed.
    completed_at = [entry.screenshot_completed_at.ToDatetime(dt.UTC).timestamp() for entry in captured]
    assert max(entry["received_at"] for entry in received) < min(completed_at)


async def test_premium_jobs_overtake_queued_free_jobs(system: CaptureSystem, chart_stub: ChartStub) -> None:
    # No worker yet, so the backlog builds up; the session checks the cookies queued wait in it too.
    free = await system.add_trader("free", ("free-session", "free-sign"))
    premium = await system.add_trader("premium", ("premium-session", "premium-sign"))
    for _ in range(12):
        await system.alert(free, "BINANCE:ETHUSDT")
    premium_signal = await system.alert(premium, "NASDAQ:AAPL")
    await system.relayed()
    await chart_stub.configure(render_delay_ms=0)

    await system.start_worker("worker-a", capture_concurrency="3")
    captured = await system.finished(premium_signal, within=60)

    assert captured.screenshot_status == COMPLETED, captured.screenshot_error
    symbols = [entry["query"].get("symbol") for entry in await chart_stub.requests()]
    # Three threads may each have started a free job before the premium one was fetched. Those three end
    # together: the first thread free takes the premium job, and the other two may each start a free job
    # alongside it whose chart is requested first. In arrival order it would be 13th.
    assert symbols.index("NASDAQ:AAPL") <= 5, symbols


async def test_a_job_on_a_killed_worker_is_redelivered_and_completed(
    system: CaptureSystem, chart_stub: ChartStub
) -> None:
    doomed = await system.start_worker("worker-doomed")
    trader = await system.add_trader("premium", ("session-1", "sign-1"))
    await ready_for_webhooks(system)
    # Long enough that the first worker is mid-capture when it dies.
    await chart_stub.configure(render_delay_ms=15_000)
    signal_id = await system.alert(trader, "BINANCE:BTCUSDT")
    await eventually_async(chart_stub.requests, what="the chart request")
    assert (await system.signal(signal_id)).screenshot_status == resources_pb2.SCREENSHOT_STATUS_PROCESSING

    await asyncio.to_thread(doomed.kill)
    await chart_stub.configure(render_delay_ms=300)
    # Redelivery waits until the dead worker's Dramatiq heartbeat is older than the heartbeat timeout
    # (30 s in production), as seen by a broker running maintenance; 3 s and maintenance on every broker
    # call keep the suite fast.
    await system.start_worker(
        "worker-heir", dramatiq_heartbeat_timeout_ms="3000", dramatiq_maintenance_chance="1000000"
    )
    captured = await system.finished(signal_id, within=90)

    assert captured.screenshot_status == COMPLETED, captured.screenshot_error
    info, png = await system.read_object(captured.screenshot_object_key)
    assert info.size_bytes == len(png) > 0
    received = await chart_stub.requests()
    assert [entry["cookies"] for entry in received] == [trader.cookies, trader.cookies], "one try per worker"


async def test_sigterm_lets_the_running_job_finish_then_exits(
    system: CaptureSystem, chart_stub: ChartStub
) -> None:
    worker = await system.start_worker("worker-a")
    trader = await system.add_trader("premium", ("session-1", "sign-1"))
    await ready_for_webhooks(system)
    await chart_stub.configure(render_delay_ms=3_000)
    signal_id = await system.alert(trader, "BINANCE:BTCUSDT")
    await eventually_async(chart_stub.requests, what="the chart request")
    assert worker.process is not None

    # Kubernetes signals the worker process only, not its Chromium.
    os.kill(worker.process.pid, signal.SIGTERM)
    exit_code = await asyncio.to_thread(worker.process.wait, 60)

    assert exit_code == 0, system.worker_log()
    captured = await system.signal(signal_id)
    assert captured.screenshot_status == COMPLETED, captured.screenshot_error
    assert not system.is_registered("worker-a")


async def eventually_async(probe: Callable[[], Awaitable[object]], *, what: str, within: float = 30) -> None:
    try:
        async with asyncio.timeout(within):
            while not await probe():  # noqa: ASYNC110 - the probe asks another server
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"gave up after {within:g} s waiting for {what}") from None
