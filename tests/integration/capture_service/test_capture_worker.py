"""The capture worker as a real process (`alerts serve capture`): real Redis, Chromium, chart stub and
storage service; SignalService is the recording harness until the end-to-end tests replace it."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import dramatiq
import pytest
import redis
from dramatiq.brokers.redis import RedisBroker
from PIL import Image

from apidevs.alerts.v1 import (
    resources_pb2,
    signal_service_pb2,
    signal_service_pb2_grpc,
    storage_service_pb2,
    storage_service_pb2_grpc,
)
from capture_service.chart_stub import LEFT_TOOLBAR_PX, TOP_TOOLBAR_PX
from mesh.auth import generate_key
from mesh.crypto import CookieCipher, generate_key_entry
from mesh.grpc import create_server, open_channel, start
from mesh.processes import ManagedProcess, alerts_argv
from mesh.queues import capture_workers_key, dramatiq_namespace
from mesh.settings import CommonSettings
from storage_service.service import StorageService, build_service
from storage_service.servicer import SERVICE_NAME as STORAGE_SERVICE_NAME
from storage_service.servicer import StorageServicer
from storage_service.settings import StorageSettings
from tests.integration.capture_service.conftest import VIEWPORT, ChartStub
from tests.integration.capture_service.signal_harness import RecordingSignalService, eventually

API_KEY = generate_key()
COOKIE_KEY = generate_key_entry("capture-test")
SIGNAL_SERVICE_NAME = signal_service_pb2.DESCRIPTOR.services_by_name["SignalService"].full_name
COMPLETED = resources_pb2.SCREENSHOT_STATUS_COMPLETED
FAILED = resources_pb2.SCREENSHOT_STATUS_FAILED


@dataclass
class CaptureServices:
    signal_addr: str
    storage_addr: str
    signals: RecordingSignalService
    cipher: CookieCipher

    async def read_object(self, key: str) -> tuple[storage_service_pb2.ObjectInfo, bytes]:
        async with open_channel(self.storage_addr, API_KEY) as channel:
            stub = storage_service_pb2_grpc.StorageServiceStub(channel)
            info, chunks = storage_service_pb2.ObjectInfo(), []
            async for part in stub.GetObject(storage_service_pb2.GetObjectRequest(key=key)):
                if part.HasField("info"):
                    info = part.info
                else:
                    chunks.append(part.chunk)
        return info, b"".join(chunks)

    def session(self, sessionid: str, sessionid_sign: str) -> bytes:
        document = {"sessionid": sessionid, "sessionid_sign": sessionid_sign}
        return self.cipher.encrypt(json.dumps(document).encode())


@pytest.fixture(scope="session")
async def capture_services(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[CaptureServices]:
    settings = CommonSettings(api_keys=[API_KEY], cookie_keys=[COOKIE_KEY])
    signals = RecordingSignalService()
    signal_server = create_server(settings)
    signal_service_pb2_grpc.add_SignalServiceServicer_to_server(signals, signal_server)
    signal_port, _ = await start(signal_server, address="127.0.0.1:0", service_names=[SIGNAL_SERVICE_NAME])

    storage_settings = StorageSettings(
        api_keys=[API_KEY], storage_local_dir=tmp_path_factory.mktemp("objects")
    )
    storage: StorageService = build_service(storage_settings)
    storage_server = create_server(storage_settings)
    storage_service_pb2_grpc.add_StorageServiceServicer_to_server(StorageServicer(storage), storage_server)
    storage_port, _ = await start(storage_server, address="127.0.0.1:0", service_names=[STORAGE_SERVICE_NAME])

    yield CaptureServices(
        signal_addr=f"127.0.0.1:{signal_port}",
        storage_addr=f"127.0.0.1:{storage_port}",
        signals=signals,
        cipher=CookieCipher.from_settings(settings),
    )
    await signal_server.stop(1)
    await storage_server.stop(1)
    await storage.close()


@dataclass
class Workers:
    """Starts capture worker processes and sends them jobs, all under one fresh Redis namespace."""

    services: CaptureServices
    redis_url: str
    namespace: str
    chart_url: str
    log_dir: Path
    broker: RedisBroker
    processes: list[ManagedProcess]

    def env(self, worker_id: str, **overrides: str) -> dict[str, str]:
        return {
            **{key: value for key, value in os.environ.items() if not key.startswith("ALERTS_")},
            "ALERTS_ENV": "dev",
            "ALERTS_REDIS_URL": self.redis_url,
            "ALERTS_REDIS_NAMESPACE": self.namespace,
            "ALERTS_SIGNAL_ADDR": self.services.signal_addr,
            "ALERTS_STORAGE_ADDR": self.services.storage_addr,
            "ALERTS_SERVICE_API_KEY": API_KEY,
            "ALERTS_COOKIE_KEYS": COOKIE_KEY,
            "ALERTS_TRADINGVIEW_URL": self.chart_url,
            "ALERTS_DATA_DIR": str(self.log_dir),
            "ALERTS_CAPTURE_WORKER_ID": worker_id,
            "ALERTS_CAPTURE_VIEWPORT_WIDTH": str(VIEWPORT[0]),
            "ALERTS_CAPTURE_VIEWPORT_HEIGHT": str(VIEWPORT[1]),
            **{f"ALERTS_{key.upper()}": value for key, value in overrides.items()},
        }

    async def start(self, worker_id: str, **overrides: str) -> ManagedProcess:
        client = redis.Redis.from_url(self.redis_url)

        def registered() -> bool:
            return client.zscore(capture_workers_key_for(self.namespace), worker_id) is not None

        process = ManagedProcess(
            worker_id,
            alerts_argv("serve", "capture"),
            self.env(worker_id, **overrides),
            ready=registered,
            log_path=self.log_dir / f"{worker_id}.log",
        )
        process.start()
        self.processes.append(process)
        try:
            await asyncio.to_thread(process.wait_ready, 60)
        finally:
            client.close()
        return process

    def send(self, plan: str, signal_id: str, **options: str) -> None:
        """Enqueues a job exactly as signal_service's outbox relay does."""
        self.broker.enqueue(
            dramatiq.Message(
                queue_name=f"capture.{plan}",
                actor_name=f"capture_screenshot_{plan}",
                args=(signal_id,),
                kwargs={},
                options=dict(options),
            )
        )

    def redis_hash_size(self, name: str) -> int:
        client = redis.Redis.from_url(self.redis_url)
        try:
            return int(client.hlen(f"{dramatiq_namespace_for(self.namespace)}:{name}"))
        finally:
            client.close()

    def dead_letters(self, queue: str) -> int:
        client = redis.Redis.from_url(self.redis_url)
        try:
            return int(client.zcard(f"{dramatiq_namespace_for(self.namespace)}:{queue}.XQ"))
        finally:
            client.close()


def capture_workers_key_for(namespace: str) -> str:
    return capture_workers_key(CommonSettings(redis_namespace=namespace))


def dramatiq_namespace_for(namespace: str) -> str:
    return dramatiq_namespace(CommonSettings(redis_namespace=namespace))


@pytest.fixture
async def workers(
    capture_services: CaptureServices, chart_stub: ChartStub, redis_url: str, tmp_path: Path
) -> AsyncIterator[Workers]:
    namespace = f"test-capture-{uuid.uuid4().hex[:10]}"
    broker = RedisBroker(url=redis_url, namespace=dramatiq_namespace_for(namespace), middleware=[])
    harness = Workers(
        services=capture_services,
        redis_url=redis_url,
        namespace=namespace,
        chart_url=chart_stub.base_url,
        log_dir=tmp_path,
        broker=broker,
        processes=[],
    )
    yield harness
    await asyncio.gather(*(asyncio.to_thread(process.stop) for process in harness.processes))
    broker.close()
    capture_services.signals.reset()
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def worker_log(workers: Workers) -> str:
    return "\n".join(path.read_text()[-4000:] for path in workers.log_dir.glob("*.log"))


async def finish(
    workers: Workers, signal_id: str, *, within: float
) -> signal_service_pb2.ReportCaptureRequest:
    """The capture's final report, once the worker has sent it."""
    signals = workers.services.signals
    try:
        await eventually(
            lambda: bool(signals.finished(signal_id)), what=f"capture {signal_id}", within=within
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nworker logs:\n{worker_log(workers)}") from None
    (report,) = signals.finished(signal_id)
    return report


async def test_a_job_is_captured_uploaded_and_reported_completed(
    workers: Workers, capture_services: CaptureServices, chart_stub: ChartStub
) -> None:
    signals = capture_services.signals
    signals.add(
        "sig-1",
        user_id="user-1",
        ticker="BINANCE:BTCUSDT",
        interval="15",
        chart_id="layoutA",
        ciphertext=capture_services.session("session-1", "sign-1"),
    )
    await workers.start("worker-a")

    workers.send("premium", "sig-1", request_id="req-abc")
    report = await finish(workers, "sig-1", within=60)

    assert report.status == COMPLETED
    assert report.object_key == "screenshots/user-1/2026/11/sig-1.png"
    assert (report.width, report.height) == (VIEWPORT[0] - LEFT_TOOLBAR_PX, VIEWPORT[1] - TOP_TOOLBAR_PX)
    info, stored = await capture_services.read_object(report.object_key)
    assert info.content_type == "image/png"
    assert report.size_bytes == info.size_bytes == len(stored)
    assert Image.open(io.BytesIO(stored)).size == (report.width, report.height)
    assert report.duration_ms > 0
    (claim,) = signals.claims
    assert (claim.request.signal_id, claim.request.attempt, claim.request.worker_id) == (
        "sig-1",
        0,
        "worker-a",
    )
    assert claim.request_id == "req-abc"
    (received,) = await chart_stub.requests()
    assert received["path"] == "/chart/layoutA/"
    assert received["query"] == {"symbol": "BINANCE:BTCUSDT", "interval": "15"}
    assert received["cookies"] == {"sessionid": "session-1", "sessionid_sign": "sign-1"}


async def test_a_redelivered_job_for_a_finished_capture_does_nothing(
    workers: Workers, capture_services: CaptureServices, chart_stub: ChartStub
) -> None:
    signals = capture_services.signals
    signals.add(
        "sig-1", user_id="user-1", ticker="NASDAQ:AAPL", ciphertext=capture_services.session("s", "t")
    )
    await workers.start("worker-a")
    workers.send("free", "sig-1")
    await finish(workers, "sig-1", within=60)

    workers.send("free", "sig-1")
    await eventually(lambda: len(signals.claims) == 2, what="the second claim", within=30)
    await eventually(lambda: workers.redis_hash_size("capture.free.msgs") == 0, what="the ack", within=30)

    assert len(signals.reports) == 1
    assert len(await chart_stub.requests()) == 1


@pytest.mark.parametrize(
    ("sessionid", "reason"),
    [("expired-2025", "tradingview_session_invalid"), ("", "tradingview_session_missing")],
    ids=["logged-out", "no-session"],
)
async def test_session_problems_fail_at_once_without_retries(
    workers: Workers, capture_services: CaptureServices, sessionid: str, reason: str
) -> None:
    signals = capture_services.signals
    ciphertext = capture_services.session(sessionid, "sign-1") if sessionid else b""
    signals.add("sig-1", user_id="user-1", ticker="BINANCE:BTCUSDT", ciphertext=ciphertext)
    await workers.start("worker-a")

    workers.send("premium", "sig-1")
    report = await finish(workers, "sig-1", within=60)
    await eventually(lambda: workers.redis_hash_size("capture.premium.msgs") == 0, what="the ack", within=30)

    assert (report.status, report.error) == (FAILED, reason)
    assert workers.redis_hash_size("capture.premium.DQ.msgs") == 0, "a retry was scheduled"
    assert workers.dead_letters("capture.premium") == 0
    assert len(signals.claims) == 1


async def test_a_hanging_chart_is_retried_three_times_then_failed_and_dead_lettered(
    workers: Workers, capture_services: CaptureServices, chart_stub: ChartStub
) -> None:
    signals = capture_services.signals
    signals.add(
        "sig-1", user_id="user-1", ticker="BINANCE:BTCUSDT", ciphertext=capture_services.session("a", "b")
    )
    await chart_stub.configure(mode="hang")
    await workers.start(
        "worker-a",
        capture_timeout_seconds="2",
        capture_time_limit_seconds="8",
        capture_min_backoff_ms="100",
        capture_max_backoff_ms="400",
    )

    workers.send("basic", "sig-1")
    report = await finish(workers, "sig-1", within=90)

    assert (report.status, report.error, report.attempt) == (FAILED, "timeout", 3)
    assert [claim.request.attempt for claim in signals.claims] == [0, 1, 2, 3]
    await eventually(lambda: workers.dead_letters("capture.basic") == 1, what="the dead letter", within=30)


async def test_an_attempt_over_the_time_limit_is_interrupted_and_reported(
    workers: Workers, capture_services: CaptureServices
) -> None:
    signals = capture_services.signals
    signals.add(
        "sig-1", user_id="user-1", ticker="BINANCE:BTCUSDT", ciphertext=capture_services.session("a", "b")
    )
    signals.claim_delay_seconds = 15
    await workers.start(
        "worker-a", capture_timeout_seconds="5", capture_time_limit_seconds="6", capture_max_retries="0"
    )

    workers.send("pro", "sig-1")
    report = await finish(workers, "sig-1", within=60)

    assert (report.status, report.error, report.attempt) == (FAILED, "timeout", 0)
    await eventually(lambda: workers.dead_letters("capture.pro") == 1, what="the dead letter", within=30)


async def test_two_users_jobs_at_once_each_carry_only_their_own_cookies(
    workers: Workers, capture_services: CaptureServices, chart_stub: ChartStub
) -> None:
    signals = capture_services.signals
    users = {"ALICE:COIN": ("alice-session", "alice-sign"), "BOB:COIN": ("bob-session", "bob-sign")}
    for index, (ticker, cookies) in enumerate(users.items()):
        ciphertext = capture_services.session(*cookies)
        signals.add(f"sig-{index}", user_id=f"user-{index}", ticker=ticker, ciphertext=ciphertext)
    await chart_stub.configure(render_delay_ms=4000)
    await workers.start("worker-a")

    workers.send("premium", "sig-0")
    workers.send("free", "sig-1")
    reports = [await finish(workers, signal_id, within=60) for signal_id in ("sig-0", "sig-1")]

    assert [report.status for report in reports] == [COMPLETED, COMPLETED]
    received = await chart_stub.requests()
    assert sorted(entry["query"]["symbol"] for entry in received) == sorted(users)
    for entry in received:
        sessionid, sessionid_sign = users[entry["query"]["symbol"]]
        assert entry["cookies"] == {"sessionid": sessionid, "sessionid_sign": sessionid_sign}
    # Both were in the browser at once: each chart was requested before either capture was reported.
    assert max(entry["received_at"] for entry in received) < min(signals.reported_at.values())


async def test_premium_jobs_overtake_queued_free_jobs(
    workers: Workers, capture_services: CaptureServices, chart_stub: ChartStub
) -> None:
    signals = capture_services.signals
    ciphertext = capture_services.session("a", "b")
    free_ids = [f"free-{index}" for index in range(12)]
    for signal_id in [*free_ids, "premium-1"]:
        signals.add(signal_id, user_id="user-1", ticker="BINANCE:BTCUSDT", ciphertext=ciphertext)
    for signal_id in free_ids:
        workers.send("free", signal_id)
    workers.send("premium", "premium-1")
    await chart_stub.configure(render_delay_ms=0)

    await workers.start("worker-a", capture_concurrency="3")
    await finish(workers, "premium-1", within=60)

    claimed = [claim.request.signal_id for claim in signals.claims]
    # Three threads may each have taken a free job before the premium one was fetched; the next is premium.
    assert claimed.index("premium-1") <= 3, claimed


async def test_a_job_on_a_killed_worker_is_redelivered_and_completed(
    workers: Workers, capture_services: CaptureServices, chart_stub: ChartStub
) -> None:
    signals = capture_services.signals
    signals.add(
        "sig-1", user_id="user-1", ticker="BINANCE:BTCUSDT", ciphertext=capture_services.session("a", "b")
    )
    # Long enough that the first worker is mid-capture when it dies.
    await chart_stub.configure(render_delay_ms=15_000)
    doomed = await workers.start("worker-doomed")
    workers.send("premium", "sig-1")
    await eventually(lambda: len(signals.claims) == 1, what="the first claim", within=30)
    await eventually_async(chart_stub.requests, what="the chart request")

    await asyncio.to_thread(doomed.kill)
    await chart_stub.configure(render_delay_ms=300)
    await workers.start("worker-heir")
    # Redelivery waits for the dead worker's heartbeat to go stale (ALERTS_DRAMATIQ_HEARTBEAT_TIMEOUT_MS).
    report = await finish(workers, "sig-1", within=120)

    assert report.status == COMPLETED
    assert [claim.request.worker_id for claim in signals.claims] == ["worker-doomed", "worker-heir"]


async def test_sigterm_lets_the_running_job_finish_then_exits(
    workers: Workers, capture_services: CaptureServices, chart_stub: ChartStub
) -> None:
    signals = capture_services.signals
    ciphertext = capture_services.session("a", "b")
    signals.add("sig-1", user_id="user-1", ticker="BINANCE:BTCUSDT", ciphertext=ciphertext)
    await chart_stub.configure(render_delay_ms=3_000)
    worker = await workers.start("worker-a")
    workers.send("premium", "sig-1")
    await eventually_async(chart_stub.requests, what="the chart request")
    assert worker.process is not None

    # Kubernetes signals the worker process only, not its Chromium.
    os.kill(worker.process.pid, signal.SIGTERM)
    exit_code = await asyncio.to_thread(worker.process.wait, 60)

    assert exit_code == 0, worker_log(workers)
    (report,) = signals.finished("sig-1")
    assert report.status == COMPLETED
    client = redis.Redis.from_url(workers.redis_url)
    try:
        assert client.zscore(capture_workers_key_for(workers.namespace), "worker-a") is None
    finally:
        client.close()


async def eventually_async(probe: Callable[[], Awaitable[object]], *, what: str, within: float = 30) -> None:
    try:
        async with asyncio.timeout(within):
            while not await probe():  # noqa: ASYNC110 - the probe asks another server
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"gave up after {within:g} s waiting for {what}") from None
