"""Capture throughput and memory of one browser pool against the local chart stub.

Runs the chart stub as a child process, then captures charts through one BrowserPool with a fixed number
of captures in flight (the worker's default concurrency, 3), and prints captures per minute, latency
percentiles, and the peak memory of this process plus its Chromium and Playwright children. RSS is summed
over processes and so counts shared pages more than once; PSS splits them and is the better total.

    .venv/bin/python bench/bench_capture.py --captures 60 --concurrency 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import psutil

from capture_service.browser import BrowserPool
from capture_service.capture import TradingViewSession, capture_chart, chart_url

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


async def run(
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--captures", type=int, default=60)
    parser.add_argument("--concurrency", type=int, default=3)
    parser.add_argument(
        "--render-delay-ms", type=int, default=300, help="the stub's simulated chart load time"
    )
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    options = parser.parse_args()
    viewport = (options.width, options.height)
    with chart_stub(options.render_delay_ms) as (base_url, stub_pid):
        asyncio.run(run(base_url, stub_pid, options.captures, options.concurrency, viewport))


if __name__ == "__main__":
    main()
