"""Capture throughput and memory of one browser pool, and how long a premium capture waits behind a
backlog of free ones, against the local chart stub.

Pool: runs the chart stub as a child process, then captures charts through one BrowserPool with a fixed
number of captures in flight (the worker's default concurrency, 3), and prints captures per minute,
latency percentiles, and the peak memory of this process plus its Chromium and Playwright children. RSS is
summed over processes and so counts shared pages more than once; PSS splits them and is the better total.

Premium wait: the whole system as processes (bench/harness.py: storage, signal, edge and one capture
worker at that concurrency, pointed at the stub with ALERTS_TRADINGVIEW_URL), a free user's webhooks
through the edge until `--free-jobs` captures are queued, then premium webhooks one at a time while that
backlog is still there. Each premium capture's wait is counted from the edge's receipt of its webhook
(signals.created_at) to its claim by the worker (screenshots.claimed_at), both stamped by the system.

    .venv/bin/python bench/bench_capture.py --captures 60 --concurrency 3
    .venv/bin/python bench/bench_capture.py --parts premium-wait --free-jobs 500 --premium-samples 10
    .venv/bin/python bench/bench_capture.py --parts pool premium-wait     # all three figures
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import psutil
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import Stack, unlimited_plans_env

from apidevs.alerts.v1 import (
    resources_pb2,
    signal_service_pb2,
    signal_service_pb2_grpc,
    user_service_pb2,
    user_service_pb2_grpc,
)
from capture_service.browser import BrowserPool
from capture_service.capture import TradingViewSession, capture_chart, chart_url
from mesh.grpc import open_channel
from mesh.queues import capture_queue, capture_workers_key, dramatiq_namespace
from mesh.settings import CommonSettings

TICKERS = ("BINANCE:BTCUSDT", "NASDAQ:AAPL", "FX:EURUSD", "NYSE:BRK.B", "BINANCE:ETHUSDT")


@dataclass
class MemoryPeak:
    rss_bytes: int = 0
    pss_bytes: int = 0
    processes: int = 0


def process_tree_memory(excluded_pid: int) -> tuple[int, int, int]:
    """(summed RSS, summed PSS, process count) of this process and its descendants, less the stub's."""
    rss = pss = count = 0
    for process in [psutil.Process(), *psutil.Process().children(recursive=True)]:
        if process.pid == excluded_pid:
            continue
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            info = process.memory_full_info()
            rss += info.rss
            pss += getattr(info, "pss", info.rss)
            count += 1
    return rss, pss, count


class MemorySampler(threading.Thread):
    def __init__(self, excluded_pid: int, interval_seconds: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.excluded_pid = excluded_pid
        self.interval_seconds = interval_seconds
        self.peak = MemoryPeak()
        self._finished = threading.Event()

    def run(self) -> None:
        while not self._finished.wait(self.interval_seconds):
            rss, pss, count = process_tree_memory(self.excluded_pid)
            self.peak.rss_bytes = max(self.peak.rss_bytes, rss)
            self.peak.pss_bytes = max(self.peak.pss_bytes, pss)
            self.peak.processes = max(self.peak.processes, count)

    def stop(self) -> MemoryPeak:
        self._finished.set()
        self.join()
        return self.peak


@contextlib.contextmanager
def chart_stub(render_delay_ms: int) -> Iterator[tuple[str, int]]:
    """The stub as a child process (not measured): its base URL and pid."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = (
        "from capture_service.chart_stub import run_chart_stub; "
        f"run_chart_stub('127.0.0.1', {port}, render_delay_ms={render_delay_ms})"
    )
    process = subprocess.Popen([sys.executable, "-c", code])
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{base_url}/_stub/mode", timeout=1):  # noqa: S310 (loopback)
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("chart stub did not start") from None
                time.sleep(0.1)
        yield base_url, process.pid
    finally:
        process.terminate()
        process.wait(10)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def pool_throughput(
    base_url: str, stub_pid: int, captures: int, concurrency: int, viewport: tuple[int, int]
) -> None:
    pool = BrowserPool(viewport=viewport)
    await pool.start()
    session = TradingViewSession(sessionid="bench-session", sessionid_sign="bench-sign")
    slots = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    sizes: list[int] = []

    async def one(index: int) -> None:
        url = chart_url(base_url, f"layout{index % 7}", TICKERS[index % len(TICKERS)], "60")
        async with slots:
            started = time.perf_counter()
            shot = await capture_chart(pool, url, session, timeout_seconds=20)
            latencies.append(time.perf_counter() - started)
            sizes.append(len(shot.png))

    try:
        # Warm-up: the first contexts pay for Chromium's caches; not what a long-running worker sees.
        await asyncio.gather(*(one(index) for index in range(concurrency)))
        latencies.clear()
        sizes.clear()
        sampler = MemorySampler(excluded_pid=stub_pid)
        sampler.start()
        started = time.perf_counter()
        await asyncio.gather(*(one(index) for index in range(captures)))
        elapsed = time.perf_counter() - started
        peak = sampler.stop()
    finally:
        await pool.close()

    print(f"captures: {captures} at concurrency {concurrency}, viewport {viewport[0]}x{viewport[1]}")
    print(f"CPUs: {os.cpu_count()}, Chromium launches: {pool.launches}")
    print(f"throughput: {captures / elapsed * 60:.1f} captures/minute ({elapsed:.1f} s)")
    print(
        "latency per capture (s): "
        f"median {statistics.median(latencies):.2f}, p90 {percentile(latencies, 0.9):.2f}, "
        f"p99 {percentile(latencies, 0.99):.2f}, max {max(latencies):.2f}"
    )
    print(f"PNG size: median {statistics.median(sizes) / 1024:.0f} KiB")
    print(
        f"peak memory of this process and its children ({peak.processes} processes at most): "
        f"RSS {peak.rss_bytes / 2**20:.0f} MiB, PSS {peak.pss_bytes / 2**20:.0f} MiB"
    )


def alert_body(ticker: str, price: int) -> bytes:
    """A TradingView alert in the standard format; the price makes each body distinct (no dedupe)."""
    lines = (
        "🚨 ADX DEF [APIDEVS]",
        "📈 Señal: Divergencia Alcista",
        f"🪙 Ticker: {ticker}",
        f"💰 Precio: ${price}",
    )
    return "\n".join(lines).encode()


@dataclass
class PremiumSample:
    signal_id: str
    free_queued: int


async def _trader(stack: Stack, plan: int, cookies: tuple[str, str]) -> str:
    """A user with a TradingView session; returns their webhook URL."""
    async with open_channel(stack.signal_addr, stack.key) as channel:
        users = user_service_pb2_grpc.UserServiceStub(channel)
        created = await users.CreateUser(
            user_service_pb2.CreateUserRequest(plan=plan, default_chart_id="bench")
        )
        await users.SetTradingViewSession(
            user_service_pb2.SetTradingViewSessionRequest(
                user_id=created.user.user_id, sessionid=cookies[0], sessionid_sign=cookies[1]
            )
        )
    return created.webhook_url


async def _post(client: httpx.AsyncClient, url: str, body: bytes) -> str:
    answer = await client.post(url, content=body, headers={"content-type": "text/plain"})
    if answer.status_code != 200:
        raise RuntimeError(f"webhook answered {answer.status_code}: {answer.text[:200]}")
    return str(answer.json()["signal_id"])


async def relayed(signals: signal_service_pb2_grpc.SignalServiceStub) -> None:
    """Until the outbox relay has sent every committed capture job to Redis."""
    while True:
        status = await signals.GetServiceStatus(signal_service_pb2.GetServiceStatusRequest())
        if status.outbox_backlog == 0:
            return
        await asyncio.sleep(0.05)


async def measure_premium_wait(stack: Stack, free_jobs: int, samples: int, concurrency: int) -> None:
    namespace = stack.env["ALERTS_REDIS_NAMESPACE"]
    settings = CommonSettings(redis_namespace=namespace)
    free_queue = f"{dramatiq_namespace(settings)}:{capture_queue('free')}"
    broker_redis = redis.Redis.from_url(stack.env["ALERTS_REDIS_URL"])
    deadline = time.monotonic() + 120
    while not broker_redis.zcard(capture_workers_key(settings)):
        if time.monotonic() > deadline:
            raise RuntimeError("the capture worker did not start; see its log under the work directory")
        await asyncio.sleep(0.2)
    free_url = await _trader(stack, resources_pb2.PLAN_FREE, ("bench-free", "bench-free-sign"))
    premium_url = await _trader(stack, resources_pb2.PLAN_PREMIUM, ("bench-premium", "bench-premium-sign"))
    prices = iter(range(1_000, 10_000_000))

    async with (
        httpx.AsyncClient(timeout=30) as client,
        open_channel(stack.signal_addr, stack.key) as channel,
    ):
        signals = signal_service_pb2_grpc.SignalServiceStub(channel)
        posting = asyncio.Semaphore(16)

        async def post_free() -> None:
            async with posting:
                await _post(client, free_url, alert_body("BINANCE:ETHUSDT", next(prices)))

        await asyncio.gather(*(post_free() for _ in range(free_jobs)))
        await relayed(signals)

        taken: list[PremiumSample] = []
        for _ in range(samples):
            # Arrive at a random point of the running captures, not just after one finished.
            await asyncio.sleep(random.uniform(0, 1.5))
            queued = int(broker_redis.llen(free_queue))
            signal_id = await _post(client, premium_url, alert_body("NASDAQ:AAPL", next(prices)))
            taken.append(PremiumSample(signal_id=signal_id, free_queued=queued))
            while True:
                found = await signals.GetSignal(signal_service_pb2.GetSignalRequest(signal_id=signal_id))
                if found.screenshot_status in (
                    resources_pb2.SCREENSHOT_STATUS_COMPLETED,
                    resources_pb2.SCREENSHOT_STATUS_FAILED,
                ):
                    if found.screenshot_status != resources_pb2.SCREENSHOT_STATUS_COMPLETED:
                        raise RuntimeError(f"premium capture failed: {found.screenshot_error}")
                    break
                await asyncio.sleep(0.02)
    broker_redis.close()

    connection = await asyncpg.connect(stack.dsn)
    try:
        rows = await connection.fetch(
            "SELECT s.id::text AS signal_id,"
            " extract(epoch FROM c.claimed_at - s.created_at) AS wait_s,"
            " extract(epoch FROM c.completed_at - s.created_at) AS done_s"
            " FROM signals s JOIN screenshots c ON c.signal_id = s.id WHERE s.id = ANY($1::uuid[])",
            [sample.signal_id for sample in taken],
        )
        capture_ms = await connection.fetchval(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms) FROM screenshots"
            " WHERE status = 'completed'"
        )
        completed = await connection.fetchval("SELECT count(*) FROM screenshots WHERE status = 'completed'")
    finally:
        await connection.close()
    waits = [float(row["wait_s"]) for row in rows]
    totals = [float(row["done_s"]) for row in rows]
    ahead = [sample.free_queued for sample in taken]
    print(
        f"premium wait with free jobs queued ahead ({samples} premium webhooks, one worker process at "
        f"concurrency {concurrency}, {free_jobs} free webhooks sent first; "
        f"{min(ahead)}-{max(ahead)} free jobs still queued when each premium webhook was sent)"
    )
    print(
        "  webhook received -> capture claimed (s): "
        f"median {statistics.median(waits):.2f}, p90 {percentile(waits, 0.9):.2f}, max {max(waits):.2f}"
    )
    print(
        "  webhook received -> screenshot COMPLETED (s): "
        f"median {statistics.median(totals):.2f}, p90 {percentile(totals, 0.9):.2f}, max {max(totals):.2f}"
    )
    print(f"  one capture (median duration_ms, {completed} captures completed): {capture_ms / 1000:.2f} s")


def premium_wait(render_delay_ms: int, free_jobs: int, samples: int, concurrency: int) -> None:
    with (
        chart_stub(render_delay_ms) as (base_url, _),
        tempfile.TemporaryDirectory(prefix="bench-capture-") as workdir,
        Stack(
            Path(workdir),
            capture_workers=1,
            extra_env={
                **unlimited_plans_env(),
                "ALERTS_TRADINGVIEW_URL": base_url,
                "ALERTS_CAPTURE_CONCURRENCY": str(concurrency),
            },
        ) as stack,
    ):
        asyncio.run(measure_premium_wait(stack, free_jobs, samples, concurrency))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    # The premium wait starts the whole stack (about two minutes on two loaded cores), so it is asked for.
    parser.add_argument("--parts", nargs="+", choices=("pool", "premium-wait"), default=["pool"])
    parser.add_argument("--captures", type=int, default=60)
    parser.add_argument("--concurrency", type=int, default=3)
    parser.add_argument(
        "--render-delay-ms", type=int, default=300, help="the stub's simulated chart load time"
    )
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--free-jobs", type=int, default=500)
    parser.add_argument("--premium-samples", type=int, default=10)
    options = parser.parse_args()
    viewport = (options.width, options.height)
    if "pool" in options.parts:
        with chart_stub(options.render_delay_ms) as (base_url, stub_pid):
            asyncio.run(pool_throughput(base_url, stub_pid, options.captures, options.concurrency, viewport))
    if "premium-wait" in options.parts:
        premium_wait(options.render_delay_ms, options.free_jobs, options.premium_samples, options.concurrency)


if __name__ == "__main__":
    main()
